"""Finished commands kept for listings: ``open_lane_system(retention=lanes.Retention(...))``."""

from __future__ import annotations

import pathlib

import attrs
import pytest
import trio
import trio.testing

import lanes
from lanes import LaneConfig, Retention
from lanes.storage import MemoryStorage, SqliteStorage

WORK = [LaneConfig("work", 0, max_concurrency=2), LaneConfig("other", 1)]


async def value(x: object) -> object:
    await trio.sleep(1)
    return x


async def boom() -> None:
    raise ValueError("no luck")


@lanes.command(name="retained-job")
@attrs.define
class Job:
    x: int

    async def execute(self) -> dict[str, int]:
        await trio.sleep(1)
        return {"x": self.x}


def test_bad_values() -> None:
    with pytest.raises(lanes.LaneConfigError, match=r"Retention: count=0 is invalid"):
        Retention(count=0)
    with pytest.raises(lanes.LaneConfigError, match=r"Retention: count=1.5 is invalid"):
        Retention(count=1.5)  # type: ignore[arg-type]
    with pytest.raises(lanes.LaneConfigError, match=r"Retention: seconds=-1 is invalid"):
        Retention(seconds=-1)
    with pytest.raises(lanes.LaneConfigError, match=r"retention=100 is invalid"):
        lanes.open_lane_system(WORK, retention=100)  # type: ignore[arg-type]


async def test_finished_commands_are_listed_with_their_outcome(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(WORK, retention=Retention(count=10)) as system:
        done = await system.submit("work", value, 42, key="answer")
        failed = await system.submit("work", boom)
        cancelled = await system.submit("other", value, 1, delay=5)
        cancelled.cancel()
        await done.result()
        with pytest.raises(lanes.CommandFailed):
            await failed.result()
        assert system.commands() == []  # the default lists the live ones only
        await trio.sleep(2)
        infos = system.commands(state=["done", "failed", "cancelled"])
        assert {(i.id, i.state) for i in infos} == {
            (cancelled.id, "cancelled"),
            (failed.id, "failed"),
            (done.id, "done"),
        }
        assert infos[-1].id == done.id  # in the order they ended: it ended last
        by_state = {i.state: i for i in infos}
        assert by_state["done"].result == 42
        assert by_state["done"].key == "answer"
        assert by_state["done"].finished_for == 2
        assert by_state["done"].age == 3
        assert by_state["failed"].error == "ValueError('no luck')"
        assert by_state["failed"].result is None
        assert [i.id for i in system.commands("other", state="cancelled")] == [cancelled.id]
        # live and finished together, paged across both
        running = await system.submit("work", value, 7)
        page = system.commands(state=["running", "done"], limit=1)
        assert [i.id for i in page] == [running.id]
        page = system.commands(state=["running", "done"], offset=1, limit=5)
        assert [i.id for i in page] == [done.id]


async def test_bounded_by_count_and_by_time(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(WORK, retention=Retention(count=3, seconds=10)) as system:
        for i in range(5):
            await system.run("work", value, i)
        infos = system.commands(state="done")
        assert [i.result for i in infos] == [2, 3, 4]  # the oldest dropped first
        await trio.sleep(8.5)  # the first of them ended 10.5 s ago
        assert [i.result for i in system.commands(state="done")] == [3, 4]
        await trio.sleep(10)
        assert system.commands(state="done") == []


async def test_without_retention_finished_states_are_refused(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(WORK) as system:
        await system.run("work", value, 1)
        refused = r"state=.done. is invalid here: .* keeps none; open it with"
        with pytest.raises(lanes.LaneConfigError, match=refused):
            system.commands(state="done")
        with pytest.raises(lanes.LaneConfigError, match=r"state='finished' is invalid"):
            system.commands(state="finished")
        assert type(system._core.live) is dict  # nothing installed, nothing paid


async def test_cancelled_while_waiting_is_kept_too(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(WORK, retention=Retention(count=5)) as system:
        with trio.move_on_after(0.5):
            await system.run("work", value, 1)  # run() cancels its command
        await trio.testing.wait_all_tasks_blocked()  # its attempt exits
        [info] = system.commands(state="cancelled")
        assert info.attempts == 1


async def test_durable_records_survive_a_restart(autojump_clock: trio.abc.Clock) -> None:
    storage = MemoryStorage(clock=trio.current_time)
    keep = Retention(count=2)
    async with lanes.open_lane_system(
        WORK, storage=storage, commands=[Job], retention=keep
    ) as system:
        for i in range(3):
            await system.run("work", Job(i))
        await system.run("work", value, object(), durable=False)  # memory only
    assert [f.result for f in storage.finished.values()] == ['{"x": 2}']
    async with lanes.open_lane_system(
        WORK, storage=storage, commands=[Job], retention=keep
    ) as system:
        infos = system.commands(state="done")
        assert [i.result for i in infos] == [{"x": 2}]  # the memory-only one is gone
        await system.run("work", Job(9))
        await system.run("work", Job(10))
        assert [i.result for i in system.commands(state="done")] == [{"x": 9}, {"x": 10}]
    assert sorted(f.result or "" for f in storage.finished.values()) == [
        '{"x": 10}',
        '{"x": 9}',
    ]


async def test_sqlite_keeps_records_and_non_json_values(tmp_path: pathlib.Path) -> None:
    @lanes.command(name="odd-job")
    @attrs.define
    class Odd:
        async def execute(self) -> object:
            return {1, 2}  # not JSON

    path = tmp_path / "lanes.db"
    keep = Retention(count=10)
    async with lanes.open_lane_system(
        WORK, storage=SqliteStorage(path), commands=[Odd], retention=keep
    ) as system:
        assert await system.run("work", Odd()) == {1, 2}
        [info] = system.commands(state="done")
        assert info.result == {1, 2}  # in memory, the value itself
    async with lanes.open_lane_system(
        WORK, storage=SqliteStorage(path), commands=[Odd], retention=keep
    ) as system:
        [info] = system.commands(state="done")
        assert info.type == "odd-job" and info.result is None  # not JSON: not kept
