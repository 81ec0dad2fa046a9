"""``LaneSystem.submit_many``: several commands in one call, all accepted or none."""

from __future__ import annotations

import functools
import pathlib

import attrs
import pytest
import trio
import trio.testing

import lanes
from lanes import LaneConfig
from lanes.storage import MemoryStorage, SqliteStorage, WriteBatch

WORK = [LaneConfig("work", 0, max_concurrency=1, inbox_size=4)]


@lanes.command(name="many-job")
@attrs.define
class Job:
    text: str

    async def execute(self) -> str:
        await trio.sleep(1)
        return self.text


async def echo(value: int, log: list[int]) -> int:
    await trio.sleep(1)
    log.append(value)
    return value


async def test_results_in_order_and_fifo_among_them(autojump_clock: trio.abc.Clock) -> None:
    log: list[int] = []
    async with lanes.open_lane_system(WORK) as system:
        handles = await system.submit_many(
            "work", [functools.partial(echo, i, log) for i in range(4)]
        )
        assert [h.lane for h in handles] == ["work"] * 4
        assert [await h.result() for h in handles] == [0, 1, 2, 3]
    assert log == [0, 1, 2, 3]  # one slot: they ran in the order given
    assert trio.current_time() == 4


async def test_delay_and_timeout_apply_to_every_item(autojump_clock: trio.abc.Clock) -> None:
    log: list[int] = []

    async def slow() -> None:
        await trio.sleep(100)

    async with lanes.open_lane_system([LaneConfig("work", 0, max_concurrency=4)]) as system:
        fast = await system.submit_many(
            "work", [functools.partial(echo, i, log) for i in range(2)], delay=10
        )
        assert [h.status for h in fast] == [lanes.CommandStatus.PENDING] * 2
        timed = await system.submit_many("work", [slow, slow], timeout=5)
        for handle in timed:
            with pytest.raises(lanes.CommandTimeout):
                await handle.result()
        assert [await h.result() for h in fast] == [0, 1]
        assert trio.current_time() == 11


async def test_a_bad_item_is_named_and_nothing_is_accepted(
    autojump_clock: trio.abc.Clock,
) -> None:
    log: list[int] = []

    def sync_function() -> None:
        pass

    async def needs_one(x: int) -> None:
        pass

    async with lanes.open_lane_system(WORK) as system:
        good = functools.partial(echo, 1, log)
        with pytest.raises(lanes.LaneUsageError, match=r"submit_many \(item 1\)"):
            await system.submit_many("work", [good, sync_function, good])  # type: ignore[list-item]
        with pytest.raises(lanes.LaneUsageError, match=r"item 2"):
            await system.submit_many("work", [good, good, needs_one])  # type: ignore[list-item]
        with pytest.raises(lanes.LaneConfigError, match="timeout"):
            await system.submit_many("work", [good], timeout=-1)
        with pytest.raises(lanes.UnknownLaneError, match="nope"):
            await system.submit_many("nope", [good])
        assert system.statistics().lanes["work"].submitted == 0
        # the inbox is untouched: four places are still free
        await system.submit_many("work", [good] * 4)
    assert log == [1, 1, 1, 1]


@pytest.mark.parametrize(
    "calls", ["abc", b"abc", 42, None, Job("single")], ids=["str", "bytes", "int", "none", "cmd"]
)
async def test_calls_must_be_a_collection_of_commands(calls: object) -> None:
    async with lanes.open_lane_system(WORK) as system:
        with pytest.raises(lanes.LaneUsageError, match="submit_many: calls="):
            await system.submit_many("work", calls)  # type: ignore[arg-type]
        with pytest.raises(lanes.LaneUsageError, match="submit_many: calls="):
            await system.submit_many("work", noop)  # type: ignore[arg-type]


async def noop() -> None:
    await trio.lowlevel.checkpoint()


async def test_more_than_the_inbox_can_hold_is_refused_at_once() -> None:
    async with lanes.open_lane_system(WORK) as system:
        with pytest.raises(lanes.LaneUsageError, match=r"5 commands .* inbox_size is 4"):
            await system.submit_many("work", [noop] * 5)


async def test_an_empty_batch_returns_no_handles_and_checkpoints() -> None:
    async with lanes.open_lane_system(WORK) as system:
        with trio.CancelScope() as scope:
            scope.cancel()
            await system.submit_many("work", [])
        assert scope.cancelled_caught  # a checkpoint, like every async call
        assert await system.submit_many("work", []) == []


async def test_waits_for_a_place_for_each_and_a_cancel_gives_them_back(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(WORK) as system:
        system.pause("work")
        await system.submit("work", noop)
        await system.submit("work", noop)  # two of four places left
        with trio.move_on_after(5) as scope:
            await system.submit_many("work", [noop] * 3)
        assert scope.cancelled_caught
        assert system.statistics().lanes["work"].submitted == 2  # nothing of the batch
        # both free places are free again
        system.submit_nowait("work", noop)
        system.submit_nowait("work", noop)
        with pytest.raises(lanes.LaneFull):
            system.submit_nowait("work", noop)


async def test_a_waiting_batch_is_accepted_once_places_free_up(
    autojump_clock: trio.abc.Clock,
) -> None:
    log: list[int] = []
    async with lanes.open_lane_system(WORK) as system:
        first = await system.submit_many(
            "work", [functools.partial(echo, i, log) for i in range(4)]
        )
        with trio.testing.assert_checkpoints():
            second = await system.submit_many(
                "work", [functools.partial(echo, i, log) for i in range(4, 7)]
            )
        # three places freed as the first three started, one by one
        assert trio.current_time() == 2
        for handle in [*first, *second]:
            await handle.result()
    assert log == list(range(7))


async def test_refused_once_the_system_stops_accepting(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(WORK) as system:
        pass
    with pytest.raises(lanes.ShutdownInProgress):
        await system.submit_many("work", [noop])


async def test_refused_outside_the_owning_run() -> None:
    async with lanes.open_lane_system(WORK) as system:
        with pytest.raises(lanes.LaneUsageError, match="submit_many"):
            await trio.to_thread.run_sync(trio.run, system.submit_many, "work", [noop])
        with pytest.raises(lanes.LaneUsageError, match="submit_many"):
            await trio.to_thread.run_sync(trio.run, system.submit_many, "work", [])


# -- durable --------------------------------------------------------------------------------------


async def test_durable_items_are_written_in_one_transaction(tmp_path: pathlib.Path) -> None:
    many = [LaneConfig("work", 0, inbox_size=100)]
    async with lanes.open_lane_system(many, storage=tmp_path / "db", commands=[Job]) as system:
        system.pause("work")
        journal = system._core.durable.journal  # type: ignore[union-attr]
        before = journal.batches
        handles = await system.submit_many("work", [Job(str(i)) for i in range(100)])
        assert journal.batches == before + 1
        assert len(handles) == 100
        system.close_now()
    storage = SqliteStorage(tmp_path / "db")
    await storage.open()
    recovered = await storage.recover()
    await storage.close()
    assert [row.payload for row in recovered.commands] == [f'{{"text": "{i}"}}' for i in range(100)]


class PickyStorage(MemoryStorage):
    """Refuses any batch that saves a "poison" command (a row that passes the checks and
    still fails its transaction)."""

    async def write(self, batch: WriteBatch) -> None:
        await trio.lowlevel.checkpoint()
        if any('"poison' in row.payload for row in batch.save):
            raise lanes.StorageError("the storage refuses poison")
        self.apply(batch)


async def test_durable_batch_is_all_or_none(autojump_clock: trio.abc.Clock) -> None:
    store = PickyStorage(clock=trio.current_time)
    async with lanes.open_lane_system(WORK, storage=store, commands=[Job]) as system:
        system.pause("work")
        alone: list[lanes.CommandHandle[str]] = []
        async with trio.open_nursery() as nursery:

            async def single() -> None:
                alone.append(await system.submit("work", Job("alone")))

            nursery.start_soon(single)
            # in the same batch as the single submit: the batch fails, is split by task
            with pytest.raises(lanes.StorageError, match="poison"):
                await system.submit_many("work", [Job("a"), Job("poison"), Job("b")])
        assert [row.payload for row in store.commands.values()] == ['{"text": "alone"}']
        assert system.statistics().lanes["work"].submitted == 1
        # the three places were given back: four in all minus the single one
        system.resume("work")
        assert await alone[0].result() == "alone"
        handles = await system.submit_many("work", [Job(str(i)) for i in range(4)])
        assert [await h.result() for h in handles] == ["0", "1", "2", "3"]


async def test_cancelled_during_the_write_waits_for_it(autojump_clock: trio.abc.Clock) -> None:
    store = MemoryStorage(clock=trio.current_time)
    async with lanes.open_lane_system(WORK, storage=store, commands=[Job]) as system:
        with trio.CancelScope() as scope:

            async def cancel_soon() -> None:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_soon)
                handles = await system.submit_many("work", [Job("x"), Job("y")])
                await trio.sleep_forever()
        assert [await h.result() for h in handles] == ["x", "y"]


async def test_a_plain_callable_in_a_durable_batch_needs_durable_false(
    autojump_clock: trio.abc.Clock,
) -> None:
    log: list[int] = []
    store = MemoryStorage(clock=trio.current_time)
    async with lanes.open_lane_system(WORK, storage=store, commands=[Job]) as system:
        with pytest.raises(lanes.NotDurableError, match=r"item 1"):
            await system.submit_many("work", [Job("a"), functools.partial(echo, 1, log)])
        assert not store.commands
        handles = await system.submit_many(
            "work", [functools.partial(echo, i, log) for i in range(2)], durable=False
        )
        assert [await h.result() for h in handles] == [0, 1]
        assert not store.commands


async def test_journal_save_all_saves_every_row_or_none() -> None:
    from lanes._journal import Journal
    from lanes.storage import StoredCommand

    def row(i: int, payload: str) -> StoredCommand:
        return StoredCommand(
            f"c{i}", i, "work", "many-job", payload, None, "pending", 0, None, None, 0.0
        )

    store = MemoryStorage()
    journal = Journal(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        journal.save_all([row(1, '{"text": "a"}'), row(2, '{"text": "\ud800"}')])
        with pytest.raises(lanes.StorageError, match="nothing of it was stored"):
            await journal.commit()
        journal.save_all([row(3, '{"text": "b"}'), row(4, '{"text": "c"}')])
        await journal.commit()
        nursery.cancel_scope.cancel()
    await journal.close()
    assert sorted(store.commands) == ["c3", "c4"]
