"""Recurring schedules end to end: exact times, DST, restarts, misfire, overlap, control."""

from __future__ import annotations

import pathlib
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import attrs
import pytest
import trio
import trio.testing

import lanes
from lanes import LaneConfig
from lanes.storage import MIGRATIONS, MemoryStorage, SqliteStorage, WriteBatch

from .helpers import noop

RUNS: list[tuple[str, float]] = []  # (name, wall-clock time) of every execution
BASE = datetime(2026, 1, 5, 0, 0, tzinfo=UTC).timestamp()  # a Monday, midnight UTC
ONE = [LaneConfig("work", 0, max_concurrency=3)]


def wall() -> float:
    return BASE + trio.current_time()


@lanes.command(name="tick")
@attrs.define
class Tick:
    name: str = "tick"
    seconds: float = 0.0
    fail: bool = False

    async def execute(self) -> str:
        RUNS.append((self.name, wall()))
        await trio.sleep(self.seconds)
        if self.fail:
            raise RuntimeError(f"{self.name} failed")
        return self.name


@pytest.fixture(autouse=True)
def _clear_runs() -> None:
    RUNS.clear()


def recorder(name: str = "job", seconds: float = 0.0) -> Callable[[], object]:
    async def job() -> None:
        RUNS.append((name, wall()))
        await trio.sleep(seconds)

    return job


def times(name: str | None = None) -> list[float]:
    """The runs' times, relative to BASE."""
    return [t - BASE for n, t in RUNS if name is None or n == name]


def memory(clock: Callable[[], float] = wall) -> MemoryStorage:
    return MemoryStorage(clock=clock)


# -- exact times -----------------------------------------------------------------------------------


async def test_interval_fires_at_exact_times(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        handle = await system.schedule("work", recorder(), every=10)
        assert handle.next_run == datetime.fromtimestamp(BASE + 10, UTC)
        await trio.sleep(35)
        assert times() == [10.0, 20.0, 30.0]
        assert handle.fired == 3 and handle.skipped == 0
        assert handle.next_run == datetime.fromtimestamp(BASE + 40, UTC)
        assert handle.last is not None and handle.last.status == "done"
        assert system.schedules == {handle.key: handle}


async def test_cron_fires_at_exact_times(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        await system.schedule("work", recorder(), cron="*/20 9-10 * * MON-FRI")
        await trio.sleep(2 * 86400)
    day = 86400.0
    hours = [9 * 3600 + m * 60 for m in (0, 20, 40, 60, 80, 100)]
    assert times() == hours + [day + h for h in hours]


async def test_jitter_delays_each_firing_within_bounds(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        await system.schedule("work", recorder(), every=100, jitter=5)
        await trio.sleep(1006)
    got = times()
    assert len(got) == 10
    offsets = [t - 100 * (i + 1) for i, t in enumerate(got)]
    assert all(0 <= o <= 5 for o in offsets)
    assert len(set(offsets)) > 1


@pytest.mark.parametrize(
    ("zone", "start", "expected"),
    [
        (  # spring forward: 02:00 -> 03:00 on 2026-03-29
            "Europe/Berlin",
            datetime(2026, 3, 28, 12, 0),
            ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
        ),
        (  # fall back: 03:00 -> 02:00 on 2026-10-25; 02:30 happens twice
            "Europe/Berlin",
            datetime(2026, 10, 24, 12, 0),
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
        ),
        (  # fall back in New York: 02:00 -> 01:00 on 2026-11-01 (02:30 happens once)
            "America/New_York",
            datetime(2026, 10, 31, 12, 0),
            ["2026-11-01T02:30:00-05:00", "2026-11-02T02:30:00-05:00"],
        ),
    ],
)
async def test_daily_job_runs_once_per_day_across_dst(
    autojump_clock: trio.abc.Clock, zone: str, start: datetime, expected: list[str]
) -> None:
    tz = ZoneInfo(zone)
    origin = start.replace(tzinfo=tz).timestamp()

    def clock() -> float:
        return origin + trio.current_time()

    fired: list[str] = []

    async def job() -> None:
        fired.append(datetime.fromtimestamp(clock(), tz).isoformat())

    async with lanes.open_lane_system(ONE, clock=clock) as system:
        await system.schedule("work", job, cron="30 2 * * *", tz=zone)
        await trio.sleep(2 * 86400)
    assert fired == expected


async def test_a_sleeping_schedule_never_wakes_in_between(autojump_clock: trio.abc.Clock) -> None:
    from .test_idle import steps_while_sleeping

    async with lanes.open_lane_system(ONE, clock=wall) as system:
        for i in range(100):  # many schedules, all due far away
            await system.schedule("work", recorder(), every=3600 + i)
        await trio.sleep(1)
        assert await steps_while_sleeping(3000) == 0  # no polling: no task ran at all
        assert times() == []


# -- lanes apply -----------------------------------------------------------------------------------


async def test_firings_are_ordinary_commands(autojump_clock: trio.abc.Clock) -> None:
    config = [LaneConfig("work", 0, retry=lanes.RetryPolicy.fixed(1, 1.0))]
    async with lanes.open_lane_system(config, clock=wall) as system:
        async with system.subscribe(lanes.events.Completed, lanes.events.DeadLettered) as events:
            await system.schedule("work", Tick("bad", fail=True), every=10)
            await trio.sleep(15)
            event = await events.receive()
        assert isinstance(event, lanes.events.DeadLettered)
        stats = system.statistics().lanes["work"]
        assert (stats.retried, stats.dead_lettered) == (1, 1)
        assert times("bad") == [10.0, 11.0]
        system.pause("work")  # a paused lane holds the firings
        await trio.sleep(20)
        assert system.statistics().lanes["work"].pending == 1  # overlap "skip": the second waits
        system.resume("work")


# -- misfire across restarts -----------------------------------------------------------------------


async def _first_run_then_stop(store: MemoryStorage, misfire: str, **kw: object) -> None:
    async with lanes.open_lane_system(ONE, storage=store, commands=[Tick]) as system:
        await system.schedule(
            "work",
            Tick(),
            every=10,
            key="k",
            misfire=misfire,  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )
        await trio.sleep(15)
    assert times() == [10.0]
    assert store.schedules["k"].last_slot == BASE + 10


@pytest.mark.parametrize(
    ("misfire", "limit", "after_restart", "skipped"),
    [
        ("skip", 100, [60.0], 4),  # 20..50 missed: none fire; the next slot does
        ("run_once", 100, [55.0, 60.0], 3),  # one firing for the four missed slots
        ("run_all", 100, [55.0] * 4 + [60.0], 0),  # each missed slot fires
        ("run_all", 2, [55.0] * 2 + [60.0], 2),  # bounded: the latest two
    ],
)
async def test_misfire_policies_across_a_restart(
    autojump_clock: trio.abc.Clock,
    misfire: str,
    limit: int,
    after_restart: list[float],
    skipped: int,
) -> None:
    store = memory()
    await _first_run_then_stop(store, misfire, misfire_limit=limit)
    await trio.sleep(40)  # down from 15 to 55: slots 20, 30, 40 and 50 pass
    async with lanes.open_lane_system(ONE, storage=store, commands=[Tick]) as system:
        handle = system.schedules["k"]  # restored by itself
        await trio.sleep(6)
        assert times()[1:] == after_restart
        assert handle.skipped == skipped
        assert handle.next_run == datetime.fromtimestamp(BASE + 70, UTC)
    assert store.schedules["k"].last_slot == BASE + 60


async def test_scheduling_the_same_key_again_keeps_the_last_slot(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = memory()
    await _first_run_then_stop(store, "run_once")
    await trio.sleep(20)  # down from 15 to 35
    async with lanes.open_lane_system(ONE, storage=store, commands=[Tick]) as system:
        restored = system.schedules["k"]
        again = await system.schedule("work", Tick(), every=10, key="k", misfire="run_once")
        assert again is restored  # same definition: the same schedule
        await trio.sleep(1)
        assert times() == [10.0, 35.0]  # slots 20 and 30 missed: fired once
        changed = await system.schedule("work", Tick("slow"), every=100, key="k")
        assert changed is restored
        await trio.sleep(100)
        assert times("slow") == [130.0]  # the new rhythm counts from the last slot (30)


async def test_slot_and_command_are_written_in_one_batch(autojump_clock: trio.abc.Clock) -> None:
    batches: list[WriteBatch] = []

    class Spy(MemoryStorage):
        async def write(self, batch: WriteBatch) -> None:
            batches.append(batch)
            await super().write(batch)

    store = Spy(clock=wall)
    with pytest.raises(KeyError):
        async with lanes.open_lane_system(ONE, storage=store, commands=[Tick]) as system:
            system.pause("work")
            await system.schedule("work", Tick(seconds=10), every=10, key="k")
            await trio.sleep(11)
            raise KeyError("crash")  # the firing is stored, not run
    (firing,) = [b for b in batches if b.save]
    (row,) = firing.save_schedules
    assert row.last_slot == BASE + 10
    assert row.last_command == firing.save[0].id
    await trio.sleep(3)  # down from 11 to 14: no slot passes
    async with lanes.open_lane_system(ONE, storage=store, commands=[Tick]) as system:
        assert [h.id for h in system.recovered] == [row.last_command]
        handle = system.schedules["k"]
        assert handle.last is system.recovered[0]  # overlap sees the recovered firing
        await trio.sleep(17)
        assert handle.skipped == 1  # the slot of 20 came while it still ran
    assert times() == [14.0, 30.0]  # the slot of 10 ran once (recovered), never fired twice


async def test_sqlite_schedule_survives_a_restart(tmp_path: pathlib.Path) -> None:
    # The real clock: SQLite runs in a thread, which an autojump clock would take for idleness.
    path = tmp_path / "queue.db"
    system = lanes.open_lane_system(ONE, storage=path, commands=[Tick])
    async with system as running, running.subscribe(lanes.events.Completed) as completed:
        await running.schedule("work", Tick(), every=0.05, key="beat", misfire="skip")
        await completed.receive()
        await completed.receive()
    db = sqlite3.connect(path)
    rows = db.execute("SELECT key, every, misfire, paused, last_slot FROM schedules").fetchall()
    assert [r[:4] for r in rows] == [("beat", 0.05, "skip", 0)]
    assert rows[0][4] is not None
    await trio.sleep(0.2)  # down for about four slots
    async with lanes.open_lane_system(ONE, storage=path, commands=[Tick]) as system:
        async with system.subscribe(lanes.events.Completed) as completed:
            restored = system.schedules["beat"]
            await completed.receive()
        assert restored.fired >= 1
        assert restored.skipped >= 2  # the slots missed while down were skipped, and counted
    assert db.execute("SELECT last_slot FROM schedules").fetchone()[0] > rows[0][4]


async def test_sqlite_upgrades_a_version_1_database(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    MIGRATIONS[0](db)
    db.execute("PRAGMA application_id=1279348293")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    storage = SqliteStorage(path)
    await storage.open()
    assert (await storage.recover()).schedules == ()
    await storage.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (lanes.storage.SCHEMA_VERSION,)
    assert db.execute("SELECT count(*) FROM schedules").fetchone() == (0,)


async def test_a_stored_schedule_that_cannot_run_is_kept(autojump_clock: trio.abc.Clock) -> None:
    store = memory()
    await _first_run_then_stop(store, "run_once")
    async with lanes.open_lane_system(ONE, storage=store, commands=[]) as system:
        handle = system.schedules["k"]
        assert handle.problem is not None and "'tick' is unknown" in handle.problem
        assert handle.next_run is None
        await trio.sleep(30)
    assert times() == [10.0]
    assert "k" in store.schedules  # never dropped


# -- overlap ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overlap", "expected"),
    [
        ("skip", [10.0, 40.0]),  # 20 and 30 come while the first runs
        ("queue", [10.0, 35.0]),  # 20 waits for the first; 30 passes meanwhile (missed, skip)
        ("allow", [10.0, 20.0, 30.0, 40.0]),
    ],
)
async def test_overlap_policies(
    autojump_clock: trio.abc.Clock, overlap: str, expected: list[float]
) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        await system.schedule(
            "work",
            recorder(seconds=25),
            every=10,
            misfire="skip",
            overlap=overlap,  # type: ignore[arg-type]
        )
        await trio.sleep(45)
    assert times() == expected


async def test_queue_overlap_fires_every_slot_in_turn_with_run_all(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        handle = await system.schedule(
            "work", recorder(seconds=15), every=10, misfire="run_all", overlap="queue"
        )
        await trio.sleep(59)
        assert times() == [10.0, 25.0, 40.0, 55.0]  # one after another, none lost
        assert handle.skipped == 0


# -- control ---------------------------------------------------------------------------------------


async def test_pause_resume_and_cancel(autojump_clock: trio.abc.Clock) -> None:
    store = memory()
    async with lanes.open_lane_system(ONE, storage=store, commands=[Tick]) as system:
        handle = await system.schedule("work", Tick(), every=10, key="k")
        await trio.sleep(15)
        handle.pause()
        assert handle.paused and handle.next_run is None
        await trio.sleep(30)  # slots 20, 30 and 40 pass while paused
        assert times() == [10.0]
        await trio.lowlevel.checkpoint()
        assert store.schedules["k"].paused
        handle.resume()
        assert handle.skipped == 3
        assert handle.next_run == datetime.fromtimestamp(BASE + 50, UTC)
        await trio.sleep(10)
        assert times() == [10.0, 50.0]
        handle.cancel()
        assert handle.cancelled and handle.next_run is None
        assert dict(system.schedules) == {}
        await trio.sleep(30)
        assert times() == [10.0, 50.0]
    assert store.schedules == {}


async def test_cancel_while_a_queued_firing_waits(autojump_clock: trio.abc.Clock) -> None:
    store = memory()
    async with lanes.open_lane_system(ONE, storage=store, commands=[Tick]) as system:
        handle = await system.schedule("work", Tick(seconds=25), every=10, key="k", overlap="queue")
        await trio.sleep(22)  # the slot of 20 waits for the firing of 10 (until 35)
        first = handle.last
        handle.cancel()
        await trio.sleep(30)
        assert first is not None and first.status == "done"  # the firing itself went on
        assert times() == [10.0]  # the waiting slot never fired
        assert "k" not in store.schedules
    assert store.schedules == {}


async def test_paused_schedule_stays_paused_across_a_restart(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = memory()
    async with lanes.open_lane_system(ONE, storage=store, commands=[Tick]) as system:
        handle = await system.schedule("work", Tick(), every=10, key="k")
        handle.pause()
    await trio.sleep(30)
    async with lanes.open_lane_system(ONE, storage=store, commands=[Tick]) as system:
        handle = system.schedules["k"]
        assert handle.paused
        again = await system.schedule("work", Tick(), every=10, key="k")
        assert again is handle and again.paused  # declaring it again does not resume it
        await trio.sleep(30)
        assert times() == []
        handle.resume()
        await trio.sleep(11)
        assert times() == [70.0]


async def test_closing_the_system_stops_schedules(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        handle = await system.schedule("work", recorder(seconds=25), every=10, overlap="queue")
        await trio.sleep(15)  # the slot of 20 will wait for the first firing
    assert times() == [10.0]
    assert handle.fired == 1
    with pytest.raises(lanes.ShutdownInProgress):
        await system.schedule("work", recorder(), every=10)


async def test_cancelling_an_outer_scope_leaves_nothing_running(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.move_on_after(25):
        async with lanes.open_lane_system(ONE, clock=wall) as system:
            await system.schedule("work", recorder(seconds=100), every=10, overlap="queue")
            await trio.sleep_forever()
    assert times() == [10.0]
    await trio.testing.wait_all_tasks_blocked()


# -- bad input -------------------------------------------------------------------------------------


async def test_bad_arguments_raise_lane_config_error(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        bad: list[tuple[dict[str, object], str]] = [
            ({"every": 0}, "every=0 is invalid"),
            ({"every": -1.5}, r"every=-1.5 is invalid"),
            ({"cron": "0 25 * * *"}, r"cron='0 25 \* \* \*' is not a valid cron expression"),
            ({}, "exactly one of every"),
            ({"every": 1, "jitter": -1}, "jitter=-1 is invalid"),
            ({"every": 1, "misfire": "later"}, "misfire='later' is invalid"),
            ({"every": 1, "overlap": "merge"}, "overlap='merge' is invalid"),
            ({"every": 1, "misfire_limit": 0}, "misfire_limit=0 is invalid"),
            ({"every": 1, "key": ""}, "key='' is invalid"),
            ({"cron": "0 9 * * *", "tz": "Nowhere/City"}, "tz='Nowhere/City' is not a known"),
        ]
        for kwargs, words in bad:
            with pytest.raises(lanes.LaneConfigError, match=words):
                await system.schedule("work", noop, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(lanes.UnknownLaneError, match="unknown lane 'nope'"):
            await system.schedule("nope", noop, every=1)
        with pytest.raises(lanes.LaneUsageError):
            await system.schedule("work", "not callable", every=1)  # type: ignore[arg-type]
        assert dict(system.schedules) == {}


async def test_durable_schedule_needs_a_command_object_and_a_key(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE, storage=memory(), commands=[Tick]) as system:
        with pytest.raises(lanes.NotDurableError, match="plain callable"):
            await system.schedule("work", noop, every=10, key="k")
        with pytest.raises(lanes.LaneConfigError, match="needs key="):
            await system.schedule("work", Tick(), every=10)


async def test_durable_false_makes_a_memory_only_schedule(autojump_clock: trio.abc.Clock) -> None:
    store = memory()
    async with lanes.open_lane_system(ONE, storage=store, commands=[Tick]) as system:
        handle = await system.schedule("work", recorder(), every=10, durable=False)
        await trio.sleep(25)
        assert times() == [10.0, 20.0]
        assert store.schedules == {} and store.commands == {}
        handle.pause()
        assert store.schedules == {}
        with pytest.raises(lanes.LaneConfigError, match="durable='yes' is invalid"):
            await system.schedule("work", noop, every=10, durable="yes")  # type: ignore[arg-type]
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        with pytest.raises(lanes.LaneConfigError, match="durable=True needs a storage"):
            await system.schedule("work", Tick(), every=10, durable=True)


def test_a_clock_with_storage_is_refused() -> None:
    with pytest.raises(lanes.LaneConfigError, match="pass it to the storage"):
        lanes.open_lane_system(storage=memory(), clock=wall)
    with pytest.raises(lanes.LaneConfigError, match="clock=3 is invalid"):
        lanes.open_lane_system(clock=3)  # type: ignore[arg-type]


async def test_a_big_durable_firing_is_stored_whole(autojump_clock: trio.abc.Clock) -> None:
    """A firing whose command is encoded off the event loop (big) is stored with its JSON."""
    store = memory()
    big = "x" * 300_000  # above OFF_LOOP_BYTES: the pipeline encodes it in a thread
    async with lanes.open_lane_system(ONE, storage=store, commands=[Tick]) as system:
        system.pause("work")
        async with system.subscribe(lanes.events.Submitted) as submitted:
            handle = await system.schedule("work", Tick(big), every=10, key="k")
            await submitted.receive()  # once it is stored (the clock may jump meanwhile)
        assert handle.fired == 1 and handle.last is not None
        (row,) = store.commands.values()
        assert row.id == handle.last.id and len(row.payload) > 300_000
        system.resume("work")
        assert await handle.last.result() == big
        handle.cancel()
    assert [name for name, _ in RUNS] == [big]


async def test_closing_while_a_big_firing_is_encoded_does_not_hang(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The system closes while a thread encodes a firing: nothing is written, nothing hangs.

    The schedule's task lives in the system's nursery; had it gone on to wait for a write
    once the journal's writer had stopped, the system could never have closed.
    """
    store = memory()
    encoding = trio.Event()
    gate = threading.Event()

    async def release_once_closing() -> None:
        await encoding.wait()
        await trio.testing.wait_all_tasks_blocked()  # the system waits for the schedule task
        gate.set()

    opened = lanes.open_lane_system(ONE, storage=store, commands=[Tick])
    async with trio.open_nursery() as outer, opened as system:
        registry = system._core.durable.registry  # type: ignore[union-attr]
        encode = registry.encode

        def slow_encode(obj: object) -> tuple[str, str]:
            if threading.current_thread() is not threading.main_thread():  # off the loop
                trio.from_thread.run_sync(encoding.set)
                gate.wait()
            return encode(obj)

        registry.encode = slow_encode  # type: ignore[method-assign]
        handle = await system.schedule("work", Tick("x" * 300_000), every=10, key="k")
        outer.start_soon(release_once_closing)
        await encoding.wait()  # the first firing is being encoded off the loop now
    assert handle.fired == 0 and handle.skipped == 0
    assert store.commands == {}  # closed before it was written: the slot is due again
    assert store.schedules["k"].last_slot is None


# -- trigger: fire now ---------------------------------------------------------------------------


async def test_trigger_fires_now_outside_the_slots(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        handle = await system.schedule("work", recorder(seconds=5), every=10, times=2)
        await trio.sleep(3)
        fired = await handle.trigger()
        assert handle.last is fired and handle.fired == 1
        assert handle.runs == 0 and handle.remaining == 2  # no slot taken
        await fired.result()
        await trio.sleep(30)
        assert times() == [3.0, 10.0, 20.0]  # the slots still fire, both of them
        assert handle.finished and handle.fired == 3


async def test_a_triggered_firing_counts_for_the_next_slots_overlap(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        handle = await system.schedule("work", recorder(seconds=8), every=10, overlap="skip")
        await trio.sleep(5)
        await handle.trigger()  # runs from 5 to 13: the slot at 10 is skipped
        await trio.sleep(20)
        assert times() == [5.0, 20.0]
        assert handle.skipped == 1


async def test_trigger_works_while_paused_and_not_once_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        handle = await system.schedule("work", recorder(), every=10)
        handle.pause()
        await (await handle.trigger()).result()
        assert times() == [0.0]
        handle.cancel()
        with pytest.raises(lanes.LaneUsageError, match="was cancelled"):
            await handle.trigger()


async def test_trigger_of_a_stored_schedule_is_durable(autojump_clock: trio.abc.Clock) -> None:
    storage = memory()
    async with lanes.open_lane_system(ONE, storage=storage, commands=[Tick]) as system:
        handle = await system.schedule("work", Tick("stored"), every=60, key="hourly")
        system.pause("work")
        fired = await handle.trigger()
        assert handle.runs == 0
        system.close_now()  # it stays stored, as any durable command left pending
    async with lanes.open_lane_system(ONE, storage=storage, commands=[Tick]) as system:
        assert [h.id for h in system.recovered] == [fired.id]
        assert await system.recovered[0].result() == "stored"


async def test_trigger_cancelled_while_the_inbox_is_full_submits_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    small = [LaneConfig("work", 0, max_concurrency=1, inbox_size=1)]
    async with lanes.open_lane_system(small, clock=wall) as system:
        handle = await system.schedule("work", recorder(), every=1000)
        await system.submit("work", trio.sleep, 100)  # running; its inbox place is back
        await system.submit("work", trio.sleep, 100)  # queued: the inbox is full
        with trio.move_on_after(1) as scope:
            await handle.trigger()
        assert scope.cancelled_caught
        assert handle.fired == 0 and handle.last is None
        assert system.statistics().lanes["work"].pending == 1
        system.close_now()


async def test_trigger_after_the_system_closed_raises_shutdown(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE, clock=wall) as system:
        handle = await system.schedule("work", recorder(), every=10)
    with pytest.raises(lanes.LaneError):
        await handle.trigger()
