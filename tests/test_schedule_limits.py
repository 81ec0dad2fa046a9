"""Schedules' repeat limit (``times=``), intervals after completion, and cron with seconds."""

from __future__ import annotations

import pathlib
import sqlite3
from datetime import UTC, datetime

import attrs
import pytest
import trio
import trio.testing

import lanes
from lanes import LaneConfig, RetryPolicy
from lanes._cli_schedules import schedules_command
from lanes._inspect import read_schedules
from lanes.storage import MIGRATIONS, MemoryStorage, SqliteStorage

from .helpers import noop

BASE = datetime(2026, 1, 5, 0, 0, tzinfo=UTC).timestamp()  # a Monday, midnight UTC
ONE = [LaneConfig("work", 0, max_concurrency=3)]
RUNS: list[tuple[str, float]] = []


def wall() -> float:
    return BASE + trio.current_time()


@lanes.command(name="job")
@attrs.define
class Job:
    name: str = "job"
    seconds: float = 0.0
    fail: bool = False

    async def execute(self) -> str:
        RUNS.append((self.name, wall() - BASE))
        await trio.sleep(self.seconds)
        if self.fail:
            raise RuntimeError(f"{self.name} failed")
        return self.name


@pytest.fixture(autouse=True)
def _clear_runs() -> None:
    RUNS.clear()


def times() -> list[float]:
    return [t for _, t in RUNS]


def memory() -> MemoryStorage:
    return MemoryStorage(clock=wall)


# -- repeat limit ----------------------------------------------------------------------------------


async def test_times_ends_the_schedule_after_that_many_firings(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        handle = await system.schedule("work", Job(), every=10, times=3)
        assert (handle.times, handle.runs, handle.remaining, handle.finished) == (3, 0, 3, False)
        await handle.wait_finished()
        assert trio.current_time() == 30.0  # ends as its third firing is submitted
        assert handle.finished and handle.remaining == 0 and handle.runs == 3
        assert handle.next_run is None
        await trio.sleep(100)
        assert times() == [10.0, 20.0, 30.0]
        assert handle.fired == 3 and "schedule-1" in system.schedules  # ended, not cancelled
        handle.pause()
        assert not handle.paused  # nothing left to pause
        await handle.wait_finished()  # returns at once


async def test_times_counts_firings_across_restarts(autojump_clock: trio.abc.Clock) -> None:
    store = memory()
    async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
        await system.schedule("work", Job(), every=10, key="k", times=3)
        await trio.sleep(25)
    assert store.schedules["k"].runs == 2 and store.schedules["k"].times == 3
    async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
        handle = system.schedules["k"]
        assert (handle.runs, handle.remaining, handle.fired) == (2, 1, 0)
        await handle.wait_finished()
        await trio.sleep(50)
    assert times() == [10.0, 20.0, 30.0]
    assert store.schedules["k"].runs == 3  # kept, finished: declaring it again fires nothing
    async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
        again = await system.schedule("work", Job(), every=10, key="k", times=3)
        assert again.finished and again.next_run is None
        await trio.sleep(50)
        assert times() == [10.0, 20.0, 30.0]
        more = await system.schedule("work", Job(), every=10, key="k", times=4)
        assert more is again and more.remaining == 1 and not more.finished
        assert more.skipped == 10  # the slots 40..130 passed while it had ended
        await more.wait_finished()  # a higher limit: one more firing, at the next slot
    assert times() == [10.0, 20.0, 30.0, 140.0]


async def test_times_with_run_all_stops_at_the_limit(autojump_clock: trio.abc.Clock) -> None:
    store = memory()
    async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
        await system.schedule("work", Job(), every=10, key="k", times=3, misfire="run_all")
        await trio.sleep(15)
    await trio.sleep(40)  # down from 15 to 55: the slots of 20..50 are missed
    async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
        handle = system.schedules["k"]
        await handle.wait_finished()
        await trio.sleep(30)
        assert handle.fired == 2 and handle.skipped == 2  # the last two missed slots: skipped
    assert times() == [10.0, 55.0, 55.0]


async def test_the_count_is_written_with_the_firing(autojump_clock: trio.abc.Clock) -> None:
    store = memory()
    with pytest.raises(KeyError):
        async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
            system.pause("work")
            await system.schedule("work", Job(), every=10, key="k", times=1)
            await trio.sleep(11)
            raise KeyError("crash")  # the firing is stored, not run
    assert store.schedules["k"].runs == 1
    async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
        assert system.schedules["k"].finished
        await trio.sleep(30)
    assert times() == [11.0]  # the stored firing ran once; the schedule never fired again


# -- after completion ------------------------------------------------------------------------------


async def test_after_completion_counts_from_the_end_of_the_previous_firing(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        fixed = await system.schedule("work", Job("fixed", seconds=7), every=10)
        after = await system.schedule(
            "work", Job("after", seconds=7), every=10, after_completion=True, times=3
        )
        await after.wait_finished()
        await trio.sleep(10)
        fixed.cancel()
    assert [t for n, t in RUNS if n == "after"] == [10.0, 27.0, 44.0]  # 7 s runs + 10 s gaps
    assert [t for n, t in RUNS if n == "fixed"] == [10.0, 20.0, 30.0, 40.0, 50.0]


async def test_after_completion_waits_for_retries(autojump_clock: trio.abc.Clock) -> None:
    lane = LaneConfig("work", 0, retry=RetryPolicy.fixed(1, delay=5))
    async with lanes.open_lane_system([lane], clock=wall) as system:
        handle = await system.schedule(
            "work", Job(fail=True), every=10, after_completion=True, times=2
        )
        await handle.wait_finished()
        assert handle.last is not None
        with pytest.raises(lanes.CommandFailed):
            await handle.last.result()
    assert times() == [10.0, 15.0, 25.0, 30.0]  # dead-lettered at 15, next at 15 + 10


async def test_after_completion_across_a_restart(autojump_clock: trio.abc.Clock) -> None:
    store = memory()
    with pytest.raises(KeyError):
        async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
            await system.schedule("work", Job(seconds=30), every=10, key="k", after_completion=True)
            await trio.sleep(12)
            raise KeyError("crash")  # the firing of 10 was running
    await trio.sleep(8)  # down from 12 to 20
    async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
        handle = system.schedules["k"]
        assert handle.last is system.recovered[0]  # requeued: the schedule waits for it
        await trio.sleep(45)  # it runs again from 20 to 50; the next firing is at 60
        handle.pause()
        assert store.schedules["k"].anchor == BASE + 50  # when the requeued firing ended
    assert times() == [10.0, 20.0, 60.0]
    assert trio.current_time() == 90.0  # the drain let the firing of 60 end
    await trio.sleep(100)
    async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
        handle = system.schedules["k"]
        handle.resume()  # its firing has ended: the next one is 10 s from now
        assert handle.next_run == datetime.fromtimestamp(BASE + 200, UTC)
        await trio.sleep(11)
    assert times() == [10.0, 20.0, 60.0, 200.0]


async def test_pausing_while_the_firing_runs(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        handle = await system.schedule("work", Job(seconds=10), every=10, after_completion=True)
        await trio.sleep(15)
        handle.pause()  # the firing of 10 runs until 20
        await trio.sleep(20)
        handle.resume()  # its slot (30) passed while paused: next at 35 + 10
        await trio.sleep(11)
        handle.cancel()
    assert times() == [10.0, 45.0]


# -- cron with a seconds field ---------------------------------------------------------------------


async def test_cron_with_seconds_fires_at_exact_seconds(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        handle = await system.schedule("work", Job(), cron="*/15 * * * * *", times=5)
        assert handle.next_run == datetime.fromtimestamp(BASE + 15, UTC)
        await handle.wait_finished()
    assert times() == [15.0, 30.0, 45.0, 60.0, 75.0]


# -- bad input and cancellation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"every": 1, "times": 0}, "times=0 is invalid; expected an integer >= 1"),
        ({"every": 1, "times": -2}, "times=-2 is invalid"),
        ({"every": 1, "times": True}, "times=True is invalid"),
        ({"every": 1, "times": 2.0}, "times=2.0 is invalid"),
        ({"cron": "* * * * *", "after_completion": True}, "only applies to every="),
        ({"every": 1, "after_completion": 1.0}, "after_completion=1.0 is invalid"),
        (
            {"every": 1, "after_completion": True, "overlap": "allow"},
            "overlap='allow' cannot be combined with after_completion=True",
        ),
        ({"cron": "0 0 9 * * * 2026"}, "has 7 fields; expected 5"),
        ({"cron": "75 * * * * *"}, "bad seconds field '75'; expected seconds 0-59"),
    ],
)
async def test_bad_arguments(
    autojump_clock: trio.abc.Clock, kwargs: dict[str, object], words: str
) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        with pytest.raises(lanes.LaneConfigError, match=words.replace("*", r"\*")):
            await system.schedule("work", noop, **kwargs)  # type: ignore[arg-type]
        assert dict(system.schedules) == {}


async def test_cancel_while_waiting_for_the_previous_firing(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = memory()
    async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
        handle = await system.schedule(
            "work", Job(seconds=30), every=10, key="k", after_completion=True
        )
        await trio.sleep(15)
        first = handle.last
        handle.cancel()
        await trio.sleep(60)
        assert first is not None and first.status == "done"  # the firing itself went on
        assert times() == [10.0]
    assert store.schedules == {}


async def test_cancelling_wait_finished_leaves_the_schedule(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        handle = await system.schedule("work", Job(), every=10, times=3)
        with trio.move_on_after(15):
            await handle.wait_finished()
        assert handle.runs == 1 and not handle.finished
        await handle.wait_finished()
    assert times() == [10.0, 20.0, 30.0]


async def test_cancelling_the_schedule_ends_wait_finished(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        handle = await system.schedule("work", Job(), every=10, times=3)
        with trio.fail_after(100):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(handle.wait_finished)
                await trio.sleep(15)
                handle.cancel()  # the waiter returns: the schedule has ended, unfinished
        assert trio.current_time() == 15.0
        assert handle.cancelled and not handle.finished and handle.runs == 1
        await handle.wait_finished()  # at once


async def test_an_outer_cancel_while_waiting_for_completion(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.move_on_after(25):
        async with lanes.open_lane_system(ONE, clock=wall) as system:
            await system.schedule("work", Job(seconds=100), every=10, after_completion=True)
            await trio.sleep_forever()
    assert times() == [10.0]
    await trio.testing.wait_all_tasks_blocked()


# -- SQLite ----------------------------------------------------------------------------------------


async def test_sqlite_keeps_the_limit_and_the_mode(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "queue.db"
    async with lanes.open_lane_system(ONE, storage=path, commands=[Job]) as system:
        handle = await system.schedule(
            "work", Job(), every=0.01, key="k", times=2, after_completion=True
        )
        await handle.wait_finished()
        assert handle.last is not None
        await handle.last.result()
    (row,) = read_schedules(path)
    assert (row.times, row.runs, row.after_completion) == (2, 2, True)
    assert "every 0.01 s after completion, 2/2 firings" in schedules_command(str(path))
    async with lanes.open_lane_system(ONE, storage=path, commands=[Job]) as system:
        assert system.schedules["k"].finished


async def test_sqlite_upgrades_a_version_2_schedule(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    MIGRATIONS[0](db)
    MIGRATIONS[1](db)
    db.execute(
        "INSERT INTO schedules VALUES ('k', 'work', 'job', '{}', 10.0, NULL, NULL, 0.0, "
        "'run_once', 100, 'skip', 1000.0, 0, 1010.0, NULL)"
    )
    db.execute("PRAGMA application_id=1279348293")
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    (old,) = read_schedules(path)  # read-only: the columns are still missing
    assert (old.times, old.runs, old.after_completion) == (None, 0, False)
    storage = SqliteStorage(path)
    await storage.open()
    (row,) = (await storage.recover()).schedules
    await storage.close()
    assert row == old
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (lanes.storage.SCHEMA_VERSION,)
