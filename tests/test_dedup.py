"""Deduplication modes of idempotency keys: ``submit(key=..., dedup=lanes.Dedup...)``."""

from __future__ import annotations

import math
import pathlib

import attrs
import pytest
import trio
import trio.testing

import lanes
from lanes import Dedup, LaneConfig
from lanes.storage import MemoryStorage, SqliteStorage

WORK = [LaneConfig("work", 0, max_concurrency=1, inbox_size=4)]
WIDE = [LaneConfig("work", 0, max_concurrency=4)]
RAN: list[str] = []


async def job(name: str, seconds: float = 1.0) -> str:
    await trio.sleep(seconds)
    RAN.append(name)
    return name


@lanes.command(name="dedup-job")
@attrs.define
class Job:
    name: str
    seconds: float = 1.0

    async def execute(self) -> str:
        await trio.sleep(self.seconds)
        RAN.append(self.name)
        return self.name


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()


# -- the values ------------------------------------------------------------------------------------


def test_factories_and_bad_values() -> None:
    assert Dedup.hold(ttl=30) == Dedup("hold", 30.0)
    assert Dedup.replace().mode == "replace"
    assert Dedup.keep_last(ttl=math.inf).ttl == math.inf
    with pytest.raises(lanes.LaneConfigError, match=r"ttl=-1 is invalid"):
        Dedup.hold(ttl=-1)
    with pytest.raises(lanes.LaneConfigError, match=r"ttl=0 is invalid"):
        Dedup.replace(ttl=0)
    with pytest.raises(lanes.LaneConfigError, match=r"ttl='5' is invalid"):
        Dedup.hold(ttl="5")  # type: ignore[arg-type]
    with pytest.raises(lanes.LaneConfigError, match=r"mode='debounce' is invalid"):
        Dedup("debounce")  # type: ignore[arg-type]


async def test_bad_submits_accept_nothing(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(WORK) as system:
        with pytest.raises(lanes.LaneConfigError, match=r"dedup='replace' is invalid"):
            await system.submit("work", job, "a", key="k", dedup="replace")  # type: ignore[arg-type]
        with pytest.raises(lanes.LaneConfigError, match=r"needs key="):
            await system.submit("work", job, "a", dedup=Dedup.replace())
        with pytest.raises(lanes.LaneConfigError, match=r"key='  ' is invalid"):
            system.submit_nowait("work", job, "a", key="  ", dedup=Dedup.hold(ttl=1))
        with pytest.raises(lanes.UnknownLaneError):
            await system.submit("nope", job, "a", key="k", dedup=Dedup.keep_last())
        with pytest.raises(lanes.LaneConfigError, match=r"key=3 is invalid"):
            system.release_key(3)  # type: ignore[arg-type]
        with pytest.raises(lanes.LaneConfigError, match=r"ttl=-2 is invalid"):
            system.extend_key("k", -2)
        with pytest.raises(lanes.LaneConfigError, match=r"ttl=None is invalid"):
            system.extend_key("k", None)  # type: ignore[arg-type]
        assert system.statistics().lanes["work"].submitted == 0


# -- a time to live -------------------------------------------------------------------------------


async def test_ttl_keeps_a_finished_key_then_expires(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(WORK) as system:
        first = await system.submit("work", job, "a", key="k", dedup=Dedup.hold(ttl=10))
        assert await first.result() == "a"  # finished at t=1
        again = await system.submit("work", job, "b", key="k")  # any submit with the key
        assert again is first
        assert system.handle_for("k") is first
        await trio.sleep(9.5)  # t=10.5: still kept
        assert await system.submit("work", job, "c", key="k", dedup=Dedup.hold()) is first
        await trio.sleep(1)  # t=11.5: the time is up
        assert system.handle_for("k") is None
        fresh = await system.submit("work", job, "d", key="k")
        assert fresh is not first
        assert await fresh.result() == "d"
    assert RAN == ["a", "d"]


async def test_ttl_counts_from_the_end_of_every_outcome(autojump_clock: trio.abc.Clock) -> None:
    async def boom() -> None:
        raise ValueError("no")

    async with lanes.open_lane_system(WORK) as system:
        failed = await system.submit("work", boom, key="f", dedup=Dedup.hold(ttl=5))
        with pytest.raises(lanes.CommandFailed):
            await failed.result()
        assert await system.submit("work", boom, key="f") is failed
        waiting = await system.submit("work", job, "w", 20, key="c", dedup=Dedup.hold(ttl=5))
        waiting.cancel()
        assert await system.submit("work", job, "x", key="c") is waiting
        await trio.sleep(5)
        assert system.handle_for("f") is None
        assert system.handle_for("c") is None


async def test_extend_and_release_by_hand(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(WORK) as system:
        assert not system.extend_key("k", 5)  # nothing holds it
        assert not system.release_key("k")
        first = await system.submit("work", job, "a", key="k", dedup=Dedup.hold(ttl=2))
        assert system.extend_key("k", 50)  # live: kept 50 s after it finishes
        await first.result()  # t=1
        await trio.sleep(40)
        assert system.handle_for("k") is first
        assert system.extend_key("k", 100)  # kept: 100 s from now (t=141)
        await trio.sleep(99)
        assert system.handle_for("k") is first
        assert system.extend_key("k", 1)  # shorter too
        await trio.sleep(1)
        assert system.handle_for("k") is None
        plain = await system.submit("work", job, "b", key="p")  # no dedup=: live only
        assert system.extend_key("p", 10)
        await plain.result()
        assert system.handle_for("p") is plain
        assert system.release_key("p")
        assert system.handle_for("p") is None
        assert not system.release_key("p")


async def test_release_a_live_key(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(WIDE) as system:
        first = await system.submit("work", job, "a", 5, key="k", dedup=Dedup.hold(ttl=60))
        assert system.release_key("k")  # it keeps running, without the key
        second = await system.submit("work", job, "b", key="k")
        assert second is not first
        assert await first.result() == "a"
        assert system.handle_for("k") is None  # the released holder's end keeps nothing
        assert await second.result() == "b"


async def test_keyless_submits_never_touch_the_table(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(WORK) as system:
        await system.run("work", job, "a")
        core = system._core
        assert type(core.keys) is dict  # no dedup= yet: the core's plain dict
        await system.run("work", job, "b", key="x", dedup=Dedup.hold(ttl=1))
        assert type(core.keys) is not dict


# -- replace -------------------------------------------------------------------------------------


async def test_replace_a_waiting_command(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(WORK) as system:
        busy = await system.submit("work", job, "busy", 10)
        old = await system.submit("work", job, "old", key="k", dedup=Dedup.replace())
        new = await system.submit("work", job, "new", key="k", dedup=Dedup.replace())
        assert new is not old
        assert old.status == lanes.CommandStatus.CANCELLED
        with pytest.raises(lanes.CommandCancelled, match=rf"replaced by command {new.id}"):
            await old.result()
        assert system.handle_for("k") is new
        assert new.key == "k"
        assert await new.result() == "new"
        await busy.result()
    assert RAN == ["busy", "new"]


async def test_replace_keeps_a_running_command(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(WORK) as system:
        running = await system.submit("work", job, "a", 5, key="k", dedup=Dedup.replace())
        await trio.testing.wait_all_tasks_blocked()
        assert running.status == lanes.CommandStatus.RUNNING
        again = await system.submit("work", job, "b", key="k", dedup=Dedup.replace())
        assert again is running
        assert await running.result() == "a"
        assert system.statistics().lanes["work"].submitted == 1
    assert RAN == ["a"]


async def test_replace_a_delayed_command_and_nowait(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(WORK) as system:
        old = system.submit_nowait("work", job, "old", key="k", delay=5, dedup=Dedup.replace())
        new = system.submit_nowait("work", job, "new", key="k", delay=5, dedup=Dedup.replace())
        assert old.status == lanes.CommandStatus.CANCELLED
        assert await new.result() == "new"
        assert trio.current_time() == 6
    assert RAN == ["new"]


async def test_cancelled_submitter_replaces_nothing(autojump_clock: trio.abc.Clock) -> None:
    full = [LaneConfig("work", 0, max_concurrency=1, inbox_size=1)]
    async with lanes.open_lane_system(full) as system:
        busy = await system.submit("work", job, "busy", 10)
        old = await system.submit("work", job, "old", key="k", dedup=Dedup.replace())
        # The inbox is full: the replacing submit waits for room, and is cancelled there.
        with trio.move_on_after(1):
            await system.submit("work", job, "new", key="k", dedup=Dedup.replace())
        assert old.status == lanes.CommandStatus.PENDING
        assert system.handle_for("k") is old
        await busy.result()
        assert await old.result() == "old"
        assert system.statistics().lanes["work"].submitted == 2
    assert RAN == ["busy", "old"]


# -- keep the last -------------------------------------------------------------------------------


async def test_keep_last_runs_the_newest_after_the_running_one(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(WIDE) as system:  # 4 slots: yet one per key at a time
        first = await system.submit("work", job, "1", 5, key="k", dedup=Dedup.keep_last())
        await trio.testing.wait_all_tasks_blocked()
        second = await system.submit("work", job, "2", key="k", dedup=Dedup.keep_last())
        third = await system.submit("work", job, "3", key="k", dedup=Dedup.keep_last())
        assert second.status == lanes.CommandStatus.CANCELLED
        with pytest.raises(lanes.CommandCancelled, match=rf"replaced by command {third.id}"):
            await second.result()
        [info] = system.commands(state="delayed")
        assert info.id == third.id
        assert system.handle_for("k") is first  # the holder, until it ends
        assert await first.result() == "1"  # t=5
        assert system.handle_for("k") is third
        assert await third.result() == "3"
        assert trio.current_time() == 6
    assert RAN == ["1", "3"]


async def test_keep_last_with_a_waiting_holder_replaces_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(WORK) as system:
        busy = await system.submit("work", job, "busy", 3)
        old = await system.submit("work", job, "old", key="k", dedup=Dedup.keep_last())
        new = await system.submit("work", job, "new", key="k", dedup=Dedup.keep_last())
        assert old.status == lanes.CommandStatus.CANCELLED
        await busy.result()
        assert await new.result() == "new"
    assert RAN == ["busy", "new"]


async def test_keep_last_follower_cancelled_or_released(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(WIDE) as system:
        first = await system.submit("work", job, "1", 5, key="k", dedup=Dedup.keep_last())
        await trio.testing.wait_all_tasks_blocked()
        follower = await system.submit("work", job, "2", key="k", dedup=Dedup.keep_last())
        follower.cancel()
        await first.result()
        assert system.handle_for("k") is None
        # release_key lets a waiting follower go at once
        holder = await system.submit("work", job, "3", 5, key="j", dedup=Dedup.keep_last())
        await trio.testing.wait_all_tasks_blocked()
        waiting = await system.submit("work", job, "4", key="j", dedup=Dedup.keep_last())
        assert system.release_key("j")
        assert await waiting.result() == "4"
        assert not holder.done()
        await holder.result()
    assert RAN == ["1", "4", "3"]


async def test_keep_last_with_ttl_keeps_the_last_key(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(WIDE) as system:
        first = await system.submit("work", job, "1", 2, key="k", dedup=Dedup.keep_last(ttl=10))
        await trio.testing.wait_all_tasks_blocked()
        last = await system.submit("work", job, "2", key="k", dedup=Dedup.keep_last(ttl=10))
        await first.result()
        await last.result()  # t=3
        assert system.handle_for("k") is last
        assert await system.submit("work", job, "x", key="k", dedup=Dedup.keep_last()) is last
        await trio.sleep(10)
        assert system.handle_for("k") is None


# -- durable ---------------------------------------------------------------------------------------


async def test_ttl_key_survives_a_restart(autojump_clock: trio.abc.Clock) -> None:
    storage = MemoryStorage(clock=trio.current_time)
    async with lanes.open_lane_system(WORK, storage=storage, commands=[Job]) as system:
        handle = await system.submit("work", Job("a"), key="k", dedup=Dedup.hold(ttl=30))
        assert storage.keys["k"].expires_at is None  # stored with its command
        await handle.result()  # t=1
    assert storage.keys["k"].status == "done"
    assert not storage.commands
    await trio.sleep(10)
    async with lanes.open_lane_system(WORK, storage=storage, commands=[Job]) as system:
        kept = system.handle_for("k")
        assert kept is not None and kept.id == handle.id and kept.done()
        assert kept.status == lanes.CommandStatus.DONE
        assert await system.submit("work", Job("b"), key="k") is kept
        await trio.sleep(21)  # past t=31
        fresh = await system.submit("work", Job("c"), key="k")
        assert fresh.id != handle.id
        await fresh.result()
    assert "k" not in storage.keys
    assert RAN == ["a", "c"]


async def test_a_live_ttl_key_is_recovered_with_its_command(
    autojump_clock: trio.abc.Clock,
) -> None:
    storage = MemoryStorage(clock=trio.current_time)
    async with lanes.open_lane_system(WORK, storage=storage, commands=[Job]) as system:
        await system.submit("work", Job("busy", 10))
        await system.submit("work", Job("a"), key="k", dedup=Dedup.hold(ttl=30))
        system.close_now()  # both stay stored
    async with lanes.open_lane_system(WORK, storage=storage, commands=[Job]) as system:
        recovered = system.handle_for("k")
        assert recovered is not None
        await recovered.result()
        assert system.handle_for("k") is recovered  # its ttl was recovered with it
    assert storage.keys["k"].expires_at is not None


async def test_keep_last_follower_survives_a_restart(autojump_clock: trio.abc.Clock) -> None:
    storage = MemoryStorage(clock=trio.current_time)
    async with lanes.open_lane_system(WIDE, storage=storage, commands=[Job]) as system:
        await system.submit("work", Job("1", 5), key="k", dedup=Dedup.keep_last())
        await trio.testing.wait_all_tasks_blocked()
        await system.submit("work", Job("2"), key="k", dedup=Dedup.keep_last())
        system.close_now()
    RAN.clear()
    async with lanes.open_lane_system(WIDE, storage=storage, commands=[Job]) as system:
        first, follower = system.recovered
        assert follower.status == lanes.CommandStatus.PENDING
        assert await first.result() == "1"
        assert await follower.result() == "2"
        assert trio.current_time() >= 6  # it waited for the first one
    assert RAN == ["1", "2"]


async def test_replaced_command_row_is_deleted(autojump_clock: trio.abc.Clock) -> None:
    storage = MemoryStorage(clock=trio.current_time)
    async with lanes.open_lane_system(WORK, storage=storage, commands=[Job]) as system:
        await system.submit("work", Job("busy", 10))
        old = await system.submit("work", Job("old"), key="k", dedup=Dedup.replace())
        new = await system.submit("work", Job("new"), key="k", dedup=Dedup.replace())
        await trio.sleep(0.1)
        assert old.id not in storage.commands
        assert storage.commands[new.id].key == "k"
        system.close_now()
    async with lanes.open_lane_system(WORK, storage=storage, commands=[Job]) as system:
        assert [h.id for h in system.recovered][1:] == [new.id]
        assert system.handle_for("k") is not None


async def test_sqlite_stores_keys(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "lanes.db"
    async with lanes.open_lane_system(WORK, storage=SqliteStorage(path), commands=[Job]) as system:
        handle = await system.submit("work", Job("a", 0), key="k", dedup=Dedup.hold(ttl=3600))
        await handle.result()
    RAN.clear()
    async with lanes.open_lane_system(WORK, storage=SqliteStorage(path), commands=[Job]) as system:
        kept = system.handle_for("k")
        assert kept is not None and kept.id == handle.id
        assert await kept.result() is None  # the value is not stored
        assert system.release_key("k")
        await system.run("work", Job("b", 0), key="k")
    assert RAN == ["b"]
    storage = SqliteStorage(path)
    await storage.open()
    try:
        assert (await storage.recover()).keys == ()
    finally:
        await storage.close()


def test_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_examples import run_example

    run_example("dedup_modes")
    out = capsys.readouterr().out
    assert out.count("charged order-42") == 2
    assert "webhook retried: same charge? True" in out
    assert "replaced: ['cancelled', 'cancelled', 'cancelled']" in out
    assert "indexed version 1\nindexed version 4\nlast indexed: 4" in out
    assert "statuses: ['done', 'cancelled', 'cancelled', 'done']" in out
    assert "new charge: True" in out


async def test_follower_waits_again_after_an_exit_by_exception(
    autojump_clock: trio.abc.Clock,
) -> None:
    storage = MemoryStorage(clock=trio.current_time)
    with pytest.raises(KeyError):
        async with lanes.open_lane_system(WIDE, storage=storage, commands=[Job]) as system:
            await system.submit("work", Job("1", 5), key="k", dedup=Dedup.keep_last())
            await trio.testing.wait_all_tasks_blocked()
            await system.submit("work", Job("2"), key="k", dedup=Dedup.keep_last())
            raise KeyError("boom")
    assert [row.ready_at for row in storage.commands.values()] == [None, math.inf]
    async with lanes.open_lane_system(WIDE, storage=storage, commands=[Job]) as system:
        first, follower = system.recovered
        await first.result()
        await follower.result()
    assert RAN == ["1", "2"]


async def test_replace_a_command_between_retries(autojump_clock: trio.abc.Clock) -> None:
    tries: list[int] = []

    async def flaky() -> None:
        tries.append(1)
        raise OSError("down")

    retrying = [LaneConfig("work", 0, retry=lanes.RetryPolicy.fixed(3, 10))]
    async with lanes.open_lane_system(retrying) as system:
        old = await system.submit("work", flaky, key="k", dedup=Dedup.replace())
        await trio.sleep(1)  # failed once, waiting 10 s for its retry
        assert old.status == lanes.CommandStatus.RETRYING
        new = await system.submit("work", job, "new", key="k", dedup=Dedup.replace())
        with pytest.raises(lanes.CommandCancelled, match="replaced"):
            await old.result()
        assert await new.result() == "new"
    assert len(tries) == 1


class GatedStorage(MemoryStorage):
    """A MemoryStorage whose writes wait for ``gate`` (to cancel a submit mid-write)."""

    def __init__(self) -> None:
        super().__init__(clock=trio.current_time)
        self.gate = trio.Event()
        self.gate.set()

    async def write(self, batch: lanes.storage.WriteBatch) -> None:
        await self.gate.wait()
        await super().write(batch)


async def test_submitter_cancelled_during_the_write(autojump_clock: trio.abc.Clock) -> None:
    storage = GatedStorage()
    async with lanes.open_lane_system(WORK, storage=storage, commands=[Job]) as system:
        await system.submit("work", Job("busy", 10))
        old = await system.submit("work", Job("old"), key="k", dedup=Dedup.replace())
        storage.gate = trio.Event()  # the next write waits
        got: list[lanes.CommandHandle[str]] = []

        async def replace(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                got.append(await system.submit("work", Job("new"), key="k", dedup=Dedup.replace()))
                await trio.lowlevel.checkpoint()  # the cancellation arrives here

        async with trio.open_nursery() as nursery:
            scope = await nursery.start(replace)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()  # while its write waits: it is not abandoned
            await trio.testing.wait_all_tasks_blocked()
            assert old.status == lanes.CommandStatus.PENDING  # not replaced before the write
            storage.gate.set()
        [new] = got
        assert old.status == lanes.CommandStatus.CANCELLED
        assert system.handle_for("k") is new
        assert await new.result() == "new"
    assert RAN == ["busy", "new"]


async def test_storage_failure_replaces_nothing(autojump_clock: trio.abc.Clock) -> None:
    class Failing(MemoryStorage):
        fail = False

        async def write(self, batch: lanes.storage.WriteBatch) -> None:
            if self.fail:
                raise lanes.StorageError("disk full")
            await super().write(batch)

    storage = Failing(clock=trio.current_time)
    async with lanes.open_lane_system(WORK, storage=storage, commands=[Job]) as system:
        await system.submit("work", Job("busy", 10))
        old = await system.submit("work", Job("old"), key="k", dedup=Dedup.keep_last(ttl=5))
        storage.fail = True
        with pytest.raises(lanes.StorageError, match="disk full"):
            await system.submit("work", Job("new"), key="k", dedup=Dedup.keep_last(ttl=5))
        storage.fail = False
        assert old.status == lanes.CommandStatus.PENDING
        assert system.handle_for("k") is old
        assert await old.result() == "old"
        assert system.handle_for("k") is old  # its ttl is kept
    assert RAN == ["busy", "old"]
