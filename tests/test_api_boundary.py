"""The API boundary: what submit, requeue, drain and the handles accept, refuse and report."""

from __future__ import annotations

import functools
import logging
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import lanes
from lanes import LaneConfig, StorageError
from lanes.storage import MemoryStorage, SqliteStorage, WriteBatch

from .helpers import noop

ONE = [LaneConfig("work", 0, max_concurrency=1)]


@lanes.command(name="api-job")
@attrs.define
class Job:
    name: str
    fail: bool = False
    seconds: float = 1.0

    async def execute(self) -> str:
        await trio.sleep(self.seconds)
        if self.fail:
            raise RuntimeError(f"{self.name} failed")
        return self.name


async def add(a: int, b: int = 0) -> int:
    return a + b


# -- CommandTimeout is a CommandFailed ------------------------------------------------------------


async def test_a_timeout_is_caught_as_a_failure(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit("work", trio.sleep, 10, timeout=1)
        with pytest.raises(lanes.CommandFailed) as info:
            await handle.result()
        assert isinstance(info.value, lanes.CommandTimeout)
        assert isinstance(info.value.__cause__, trio.TooSlowError)
        stats = system.statistics().lanes["work"]
        assert (stats.failed, stats.timed_out, stats.dead_lettered) == (1, 1, 1)


# -- keys -----------------------------------------------------------------------------------------

BAD_KEYS = ["", "  ", "\t\n", "\ud800", "a\udfffb"]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_blank_or_unstorable_keys_are_refused_everywhere(key: str) -> None:
    async with lanes.open_lane_system(ONE) as system:
        errors = []
        with pytest.raises(lanes.LaneConfigError) as info:
            await system.submit("work", noop, key=key)
        errors.append(str(info.value))
        with pytest.raises(lanes.LaneConfigError) as info:
            system.submit_nowait("work", noop, key=key)
        errors.append(str(info.value))
        with pytest.raises(lanes.LaneConfigError) as info:
            await system.run("work", noop, key=key)
        errors.append(str(info.value))
        with pytest.raises(lanes.LaneConfigError) as info:
            await system.schedule("work", noop, every=1, key=key)
        errors.append(str(info.value).replace("schedule:", "submit:", 1))
        assert len(set(errors)) == 1, errors  # one message, whichever the entry point
        assert repr(key) in errors[0]
        assert system.statistics().lanes["work"].submitted == 0
        assert not system.schedules


async def test_blank_key_message_says_what_is_expected() -> None:
    async with lanes.open_lane_system(ONE) as system:
        with pytest.raises(lanes.LaneConfigError, match="non-blank string"):
            await system.submit("work", noop, key=" ")
        with pytest.raises(lanes.LaneConfigError, match="cannot be stored"):
            await system.submit("work", noop, key="\ud800")
        with pytest.raises(lanes.LaneConfigError, match="expected a non-blank string"):
            await system.submit("work", noop, key=3)  # type: ignore[arg-type]


async def test_an_unstorable_key_fails_alone_in_a_durable_batch(
    tmp_path: pathlib.Path, autojump_clock: trio.abc.Clock
) -> None:
    async with lanes.open_lane_system(
        ONE, storage=tmp_path / "db", commands=[Job], drain_timeout=0
    ) as system:
        system.pause("work")
        results: list[object] = []

        async def submit(key: str) -> None:
            try:
                results.append(await system.submit("work", Job(key), key=key))
            except lanes.LaneError as exc:
                results.append(exc)

        async with trio.open_nursery() as nursery:
            for key in ["a", "b", "\ud800", "c"]:
                nursery.start_soon(submit, key)
        assert sum(isinstance(r, lanes.LaneConfigError) for r in results) == 1
        assert sum(isinstance(r, lanes.CommandHandle) for r in results) == 3


# -- what submit accepts --------------------------------------------------------------------------


class AsyncCallable:
    async def __call__(self, x: int) -> int:
        return x


class SyncCallable:
    def __call__(self, x: int) -> int:
        return x


class Service:
    async def method(self, x: int) -> int:
        return x


def sync_add(a: int, b: int = 0) -> int:
    return a + b


ACCEPTED: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = [
    ("async function", add, (1,)),
    ("partial of an async function", functools.partial(add, 1), ()),
    ("callable object with async __call__", AsyncCallable(), (1,)),
    ("bound async method", Service().method, (1,)),
    ("trio.sleep", trio.sleep, (0,)),
]


@pytest.mark.parametrize(("what", "fn", "args"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
async def test_async_callables_are_accepted(
    what: str, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit("work", fn, *args)
        await handle.result()


REFUSED: list[tuple[str, Any, tuple[Any, ...]]] = [
    ("print", print, ("hello",)),
    ("len", len, ([],)),
    ("sync function", sync_add, (1,)),
    ("lambda", lambda: noop(), ()),
    ("sync callable object", SyncCallable(), (1,)),
    ("partial of a sync function", functools.partial(sync_add, 1), ()),
    ("a class", Service, ()),
    ("sync bound method", [].append, (1,)),
]


@pytest.mark.parametrize(("what", "fn", "args"), REFUSED, ids=[r[0] for r in REFUSED])
async def test_synchronous_callables_are_refused_with_a_fix(
    what: str, fn: Any, args: tuple[Any, ...]
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        with pytest.raises(lanes.LaneUsageError, match="not an async") as info:
            await system.submit("work", fn, *args)
        message = str(info.value)
        assert "trio.to_thread.run_sync" in message
        assert "executor='process'" in message
        with pytest.raises(lanes.LaneUsageError):
            system.submit_nowait("work", fn, *args)
        with pytest.raises(lanes.LaneUsageError):
            await system.schedule("work", fn, every=1)
        assert system.statistics().lanes["work"].submitted == 0


async def test_refusal_names_the_callable() -> None:
    async with lanes.open_lane_system(ONE) as system:
        with pytest.raises(lanes.LaneUsageError, match="print"):
            await system.submit("work", print, "x")  # type: ignore[call-overload]
        with pytest.raises(lanes.LaneUsageError, match="SyncCallable"):
            await system.submit("work", SyncCallable(), 1)
        with pytest.raises(lanes.LaneUsageError, match="sync_add"):
            await system.submit("work", functools.partial(sync_add, 1))


# -- the number of arguments ----------------------------------------------------------------------


async def needs_keyword(*, flag: bool) -> bool:
    return flag


async def varargs(*items: int) -> int:
    return len(items)


@pytest.mark.parametrize(
    ("fn", "args", "expected"),
    [
        (add, (), "1 to 2"),
        (add, (1, 2, 3), "1 to 2"),
        (noop, (1,), "0"),
        (functools.partial(add, 1, 2), (3,), "0"),
        (Service().method, (), "1"),
        (AsyncCallable(), (1, 2), "1"),
        (functools.partial(add, b=2), (1, 2), "1"),  # b is bound: a positional would collide
    ],
)
async def test_wrong_number_of_arguments_is_refused_at_submit(
    fn: Any, args: tuple[Any, ...], expected: str
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        with pytest.raises(lanes.LaneUsageError, match="positional argument") as info:
            await system.submit("work", fn, *args)
        message = str(info.value)
        assert f"takes {expected}" in message
        assert f"{len(args)} given" in message
        assert system.statistics().lanes["work"].submitted == 0


async def test_a_required_keyword_argument_points_to_partial() -> None:
    async with lanes.open_lane_system(ONE) as system:
        with pytest.raises(lanes.LaneUsageError, match=r"functools\.partial") as info:
            await system.submit("work", needs_keyword)
        assert "flag" in str(info.value)
        assert await system.run("work", functools.partial(needs_keyword, flag=True)) is True


async def test_varargs_and_defaults_are_accepted() -> None:
    async with lanes.open_lane_system(ONE) as system:
        assert await system.run("work", varargs) == 0
        assert await system.run("work", varargs, 1, 2, 3) == 3
        assert await system.run("work", add, 1) == 1
        assert await system.run("work", add, 1, 2) == 3
        assert await system.run("work", functools.partial(add, b=2), 1) == 3
        assert await system.run("work", functools.partial(add, 1, 2)) == 3


# -- dead-letter requeue --------------------------------------------------------------------------


_CRASHED = "the process crashed: this batch never reached the disk"


class Crashing:
    """Lets ``budget`` more batches reach the disk once armed, then loses every later one."""

    def __init__(self) -> None:
        self.budget: int | None = None  # None: not armed

    def gate(self) -> None:
        if self.budget is not None:
            if self.budget == 0:
                raise StorageError(_CRASHED)
            self.budget -= 1


def thread_written(path: pathlib.Path, crash: Crashing) -> SqliteStorage:
    """A SqliteStorage written by the journal's writer thread, with a crash gate."""
    storage = SqliteStorage(path)
    write = storage.write_blocking

    def gated(batch: WriteBatch) -> None:
        crash.gate()
        write(batch)

    storage.write_blocking = gated  # type: ignore[method-assign]
    return storage


class TaskWritten(SqliteStorage):
    """A SqliteStorage written by the journal's Trio task (it has its own ``write``)."""

    crash = Crashing()

    async def write(self, batch: WriteBatch) -> None:
        self.crash.gate()
        await super().write(batch)


async def _dead_letter(path: pathlib.Path) -> str:
    async with lanes.open_lane_system(ONE, storage=path, commands=[Job]) as system:
        with pytest.raises(lanes.CommandFailed):
            await system.run("work", Job("x", fail=True), key="x")
        return system.dead_letters.list()[0].id


@pytest.mark.parametrize("writer", ["thread", "task"])
@pytest.mark.parametrize("budget", [0, 1, 2])
async def test_requeue_is_atomic_across_a_crash(
    tmp_path: pathlib.Path, autojump_clock: trio.abc.Clock, writer: str, budget: int
) -> None:
    path = tmp_path / "db"
    letter_id = await _dead_letter(path)
    crash = Crashing()
    storage: SqliteStorage
    if writer == "thread":
        storage = thread_written(path, crash)
    else:
        storage = TaskWritten(path)
        storage.crash = crash
    async with lanes.open_lane_system(
        ONE, storage=storage, commands=[Job], drain_timeout=0
    ) as system:
        system.pause("work")  # the requeued command stays stored
        assert [letter.id for letter in system.dead_letters.list()] == [letter_id]
        crash.budget = budget
        requeued = True
        try:
            await system.dead_letters.requeue(letter_id)
        except StorageError:
            requeued = False
        in_memory = [letter.id for letter in system.dead_letters.list()]
    check = SqliteStorage(path)
    await check.open()
    recovered = await check.recover()
    await check.close()
    letters = [letter.id for letter in recovered.letters]
    commands = [row.type for row in recovered.commands]
    # Exactly one of the two is stored, and the system told the truth about which.
    assert [letters, commands] == ([[], ["api-job"]] if requeued else [[letter_id], []])
    assert in_memory == ([] if requeued else [letter_id])
    assert requeued == (budget > 0)


async def test_requeue_under_a_live_key_is_refused_and_keeps_the_letter(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        failing = await system.submit("work", Job("x", fail=True).execute, key="session-1")
        with pytest.raises(lanes.CommandFailed):
            await failing.result()
        letter = system.dead_letters.list()[0]
        holder = await system.submit("work", Job("y").execute, key="session-1")
        with pytest.raises(lanes.KeyInUse) as info:
            await system.dead_letters.requeue(letter.id)
        message = str(info.value)
        assert "'session-1'" in message
        assert holder.id in message
        assert system.dead_letters.list() == [letter]
        assert await holder.result() == "y"
        again = await system.dead_letters.requeue(letter.id)  # the holder finished
        assert again.key == "session-1"
        assert len(system.dead_letters) == 0


async def test_durable_requeue_under_a_live_key_keeps_the_stored_letter(
    tmp_path: pathlib.Path, autojump_clock: trio.abc.Clock
) -> None:
    path = tmp_path / "db"
    letter_id = await _dead_letter(path)
    async with lanes.open_lane_system(ONE, storage=path, commands=[Job], drain_timeout=0) as system:
        system.pause("work")
        await system.submit("work", Job("holder"), key="x")
        with pytest.raises(lanes.KeyInUse):
            await system.dead_letters.requeue(letter_id)
        assert [letter.id for letter in system.dead_letters.list()] == [letter_id]
    check = SqliteStorage(path)
    await check.open()
    recovered = await check.recover()
    await check.close()
    assert [letter.id for letter in recovered.letters] == [letter_id]
    assert [row.key for row in recovered.commands] == ["x"]  # the holder, stored once


# -- handles: key, command, lookup by key ---------------------------------------------------------


async def test_handles_carry_their_key_and_command(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE) as system:
        system.pause("work")  # both stay pending until the lookups are done
        job = Job("a")
        plain = await system.submit("work", add, 1, key="k-plain")
        assert plain.key == "k-plain"
        assert plain.command is add
        unkeyed = await system.submit("work", job)
        assert unkeyed.key is None
        assert unkeyed.command is job
        assert system.handle_for("k-plain") is plain
        assert system.handle_for("nobody") is None
        system.resume("work")
        assert await plain.result() == 1
        assert system.handle_for("k-plain") is None  # finished: the key is free
        with pytest.raises(lanes.LaneConfigError):
            system.handle_for(" ")


async def test_recovered_handles_map_back_by_key(autojump_clock: trio.abc.Clock) -> None:
    store = MemoryStorage(clock=trio.current_time)  # no writer thread: the clock stays put
    async with lanes.open_lane_system(
        ONE, storage=store, commands=[Job], drain_timeout=0
    ) as system:
        system.pause("work")
        for session in ["s1", "s2"]:
            await system.submit("work", Job(f"work of {session}"), key=session)
    async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
        assert [h.key for h in system.recovered] == ["s1", "s2"]
        for handle in system.recovered:
            assert isinstance(handle.command, Job)
            assert handle.command.name == f"work of {handle.key}"
        s2 = system.handle_for("s2")
        assert s2 is system.recovered[1]
        assert await s2.result() == "work of s2"
        assert system.handle_for("s2") is None


# -- drain and paused lanes -----------------------------------------------------------------------


async def test_leaving_with_a_paused_lane_warns_and_names_it(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="lanes")
    async with lanes.open_lane_system(ONE, drain_timeout=5) as system:
        system.pause("work")
        handles = [await system.submit("work", noop) for _ in range(3)]
        start = trio.current_time()
    assert trio.current_time() - start == pytest.approx(5)
    assert all(h.status == "cancelled" for h in handles)
    messages = [r.getMessage() for r in caplog.records if r.name == "lanes"]
    assert any("paused" in m and "'work'" in m and "3" in m for m in messages), messages
    assert any("drain timed out" in m and "cancelled 3" in m for m in messages), messages


async def test_drain_timeout_names_the_paused_lanes(autojump_clock: trio.abc.Clock) -> None:
    lanes_ = [LaneConfig("work", 0), LaneConfig("other", 1)]
    async with lanes.open_lane_system(lanes_) as system:
        system.pause("work")
        for _ in range(2):
            await system.submit("work", noop)
        await system.submit("other", trio.sleep, 100)
        with pytest.raises(lanes.DrainTimeout) as info:
            await system.drain(1)
        message = str(info.value)
        assert "cancelled 3" in message
        assert "paused" in message
        assert "'work' (2 pending)" in message


async def test_drain_of_a_paused_lane_warns_at_once(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="lanes")
    async with lanes.open_lane_system(ONE) as system:
        system.pause("work")
        await system.submit("work", noop)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(system.drain)
            await trio.testing.wait_all_tasks_blocked()
            assert any("'work'" in r.getMessage() for r in caplog.records)
            system.resume("work")  # the drain then ends by itself
        assert system.statistics().lanes["work"].completed == 1


async def test_a_clean_drain_logs_nothing(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="lanes")
    async with lanes.open_lane_system(ONE) as system:
        await system.submit("work", trio.sleep, 1)
    assert [r for r in caplog.records if r.name == "lanes"] == []


# -- a closed system; commands= without storage ---------------------------------------------------


async def test_a_closed_system_refuses_control_calls() -> None:
    async with lanes.open_lane_system(ONE) as system:
        pass
    for call in [
        lambda: system.pause("work"),
        lambda: system.resume("work"),
    ]:
        with pytest.raises(lanes.ShutdownInProgress, match="closed"):
            call()
    with pytest.raises(lanes.ShutdownInProgress, match="closed"):
        await system.cancel_lane("work")
    with pytest.raises(lanes.ShutdownInProgress, match="closed"):
        await system.drain()
    with pytest.raises(lanes.ShutdownInProgress):
        await system.submit("work", noop)


async def test_control_calls_still_work_while_draining(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE) as system:
        system.pause("work")
        await system.submit("work", noop)
        await system.shutdown()
        system.resume("work")  # after shutdown, before the block ends: still allowed
        await system.drain()
        assert await system.cancel_lane("work") == 0


async def test_commands_without_storage_is_refused() -> None:
    with pytest.raises(lanes.LaneConfigError, match="storage") as info:
        lanes.open_lane_system(ONE, commands=[Job])
    assert "Job" in str(info.value)
    async with lanes.open_lane_system(ONE, commands=()):  # empty: fine
        pass


async def test_a_zero_drain_timeout_with_nothing_left_is_no_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="lanes")
    async with lanes.open_lane_system(ONE, drain_timeout=0) as system:
        await system.drain(0)  # idle: no DrainTimeout
    assert [r for r in caplog.records if r.name == "lanes"] == []
