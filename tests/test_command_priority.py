"""Priority per command within a lane: ``submit(priority=)``, ``handle.reprioritize()``,
``handle.reschedule()``; FIFO among equals, durable across restarts."""

from __future__ import annotations

import functools
import pathlib
import sqlite3

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import lanes
from lanes import LaneConfig
from lanes._config import LaneConfig as _Config
from lanes._policy import Job, JobState, Policy
from lanes.storage import MIGRATIONS, SqliteStorage

ONE = [LaneConfig("work", 0, max_concurrency=1)]


async def record(name: str, log: list[str]) -> str:
    log.append(name)
    await trio.sleep(1)
    return name


async def test_lower_priority_starts_first_fifo_among_equals(
    autojump_clock: trio.abc.Clock,
) -> None:
    log: list[str] = []
    async with lanes.open_lane_system(ONE) as system:
        system.pause("work")
        for name, priority in [("a", 5), ("b", 0), ("c", -1), ("d", 5), ("e", 0)]:
            handle = await system.submit("work", record, name, log, priority=priority)
            assert handle.priority == priority
        assert (await system.submit("work", record, "f", log)).priority == 0
        system.resume("work")
    assert log == ["c", "b", "e", "f", "a", "d"]


async def test_position_counts_what_starts_before_it(autojump_clock: trio.abc.Clock) -> None:
    log: list[str] = []
    async with lanes.open_lane_system(ONE) as system:
        system.pause("work")
        low = await system.submit("work", record, "low", log, priority=9)
        plain = await system.submit("work", record, "plain", log)
        urgent = await system.submit("work", record, "urgent", log, priority=-9)
        assert [low.position, plain.position, urgent.position] == [2, 1, 0]
        system.close_now()


async def test_a_bad_priority_is_refused_and_nothing_is_accepted() -> None:
    async with lanes.open_lane_system(ONE) as system:
        for bad in [True, 1.5, "1", 2**31, -(2**31), None]:
            with pytest.raises(lanes.LaneConfigError, match=r"priority=.* is invalid"):
                await system.submit("work", trio.sleep, 0, priority=bad)  # type: ignore[arg-type]
            with pytest.raises(lanes.LaneConfigError, match=r"priority="):
                system.submit_nowait("work", trio.sleep, 0, priority=bad)  # type: ignore[arg-type]
        assert system.statistics().lanes["work"].submitted == 0
        handle = await system.submit("work", trio.sleep, 0, priority=2**31 - 1)
        await handle.result()


async def test_reprioritize_moves_a_queued_command(autojump_clock: trio.abc.Clock) -> None:
    log: list[str] = []
    async with lanes.open_lane_system(ONE) as system:
        system.pause("work")
        handles = {n: await system.submit("work", record, n, log) for n in "abcd"}
        assert handles["d"].reprioritize(-1)
        assert handles["a"].reprioritize(1)
        assert handles["c"].reprioritize(0)  # same priority: keeps its place among equals
        assert [handles[n].position for n in "abcd"] == [3, 1, 2, 0]
        system.resume("work")
    assert log == ["d", "b", "c", "a"]
    # finished: nothing changes
    assert not handles["a"].reprioritize(-5)
    assert handles["a"].priority == 1


async def test_reprioritize_a_running_or_delayed_command(autojump_clock: trio.abc.Clock) -> None:
    log: list[str] = []
    async with lanes.open_lane_system(ONE) as system:
        running = await system.submit("work", record, "running", log)
        await trio.testing.wait_all_tasks_blocked()
        assert running.status == lanes.CommandStatus.RUNNING
        assert not running.reprioritize(-3)  # it keeps its slot
        assert running.priority == 0
        later = await system.submit("work", record, "later", log, delay=5)
        queued = await system.submit("work", record, "queued", log)
        assert later.reprioritize(-1)  # takes effect when it is due
        assert later.position is None
        await trio.sleep(4.5)  # queued ran from t=1 to 2; later is due at 5
        assert later.status == lanes.CommandStatus.PENDING
        await later.result()
        await queued.result()
    assert log == ["running", "queued", "later"]


async def test_reprioritize_checks_its_argument_and_its_run() -> None:
    async with lanes.open_lane_system(ONE) as system:
        system.pause("work")
        handle = await system.submit("work", trio.sleep, 0)
        with pytest.raises(lanes.LaneConfigError, match=r"handle.reprioritize: priority=1.5"):
            handle.reprioritize(1.5)  # type: ignore[arg-type]
        with pytest.raises(lanes.LaneUsageError, match=r"handle\.reprioritize"):
            await trio.to_thread.run_sync(handle.reprioritize, 1)
        with pytest.raises(lanes.LaneConfigError, match=r"handle.reschedule: delay=-1"):
            handle.reschedule(-1)
        with pytest.raises(lanes.LaneUsageError, match=r"handle\.reschedule"):
            await trio.to_thread.run_sync(handle.reschedule, 1)
        assert handle.priority == 0
        assert handle.position == 0
        system.close_now()


async def clock() -> float:
    await trio.lowlevel.checkpoint()
    return trio.current_time()


async def test_reschedule_moves_a_delayed_command(autojump_clock: trio.abc.Clock) -> None:
    start = trio.current_time()
    async with lanes.open_lane_system([LaneConfig("work", 0, max_concurrency=4)]) as system:
        sooner = await system.submit("work", clock, delay=100)
        later = await system.submit("work", clock, delay=10)
        now = await system.submit("work", clock, delay=50)
        await trio.sleep(1)
        assert sooner.reschedule(9)  # due at 10 instead of 101
        assert later.reschedule(29)  # due at 30 instead of 11
        assert now.reschedule(0)
        assert await now.result() == start + 1
        assert await sooner.result() == start + 10
        assert await later.result() == start + 30
        assert not later.reschedule(1)  # finished


async def test_reschedule_a_queued_command_delays_it(autojump_clock: trio.abc.Clock) -> None:
    log: list[str] = []
    start = trio.current_time()
    async with lanes.open_lane_system(ONE) as system:
        system.pause("work")
        first = await system.submit("work", record, "first", log)
        second = await system.submit("work", record, "second", log)
        assert first.reschedule(5)
        assert first.position is None  # delayed: no place in the queue
        assert second.position == 0
        assert second.reschedule(0)  # already due: keeps its place
        assert second.position == 0
        system.resume("work")
        assert await second.result() == "second"
        assert await first.result() == "first"
        assert trio.current_time() == start + 6  # due at 5, then one second of work
    assert log == ["second", "first"]


async def test_a_cancelled_prioritized_command_never_starts(
    autojump_clock: trio.abc.Clock,
) -> None:
    log: list[str] = []
    async with lanes.open_lane_system(ONE) as system:
        system.pause("work")
        a = await system.submit("work", record, "a", log, priority=-1)
        await system.submit("work", record, "b", log, priority=2)
        c = await system.submit("work", record, "c", log)
        c.reprioritize(1)
        a.cancel()
        # cancel_lane(queued) returns the queued commands in the order they would start
        assert await system.cancel_lane("work", running=False) == 2
        system.resume("work")
        await trio.sleep(5)
    assert log == []


async def test_submit_many_takes_a_priority_for_every_item(
    autojump_clock: trio.abc.Clock,
) -> None:
    log: list[str] = []
    async with lanes.open_lane_system(ONE) as system:
        system.pause("work")
        await system.submit("work", record, "plain", log)
        handles = await system.submit_many(
            "work", [functools.partial(record, n, log) for n in "xy"], priority=-1
        )
        assert [h.priority for h in handles] == [-1, -1]
        system.resume("work")
    assert log == ["x", "y", "plain"]


def test_policy_requeues_a_preempted_job_first_among_its_equals() -> None:
    policy = Policy([_Config("work", 0, max_concurrency=1)], None)
    jobs = {name: Job("work", priority) for name, priority in [("p", 1), ("u", -1), ("e", 1)]}
    assert policy.add(jobs["p"], 0.0)  # starts at once
    policy.add(jobs["u"], 0.0)
    policy.add(jobs["e"], 0.0)
    policy.requeue_front(jobs["p"], 1.0)
    state = policy.lanes["work"]
    assert state.queued() == [jobs["u"], jobs["p"], jobs["e"]]
    assert [policy.position(jobs[n]) for n in "upe"] == [0, 1, 2]


# -- boosting counts from the longest-waiting command ----------------------------------------


async def test_a_trickle_of_urgent_commands_keeps_the_lane_boost(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Each new, more urgent command becomes the lane's head with a fresh clock; the lane's
    boost still counts from its oldest command, so it overtakes a less urgent lane."""
    log: list[str] = []
    release = trio.Event()

    async def blocker() -> None:
        await release.wait()

    configs = [
        LaneConfig("block", 0),
        LaneConfig("mid", 2),
        LaneConfig("lo", 4, boost=lanes.PriorityBoost.custom(10, [2, 4, 6])),
    ]
    async with lanes.open_lane_system(configs, max_concurrency=1) as system:
        async with lanes.testing.record_events(system) as events:
            t0 = trio.current_time()
            await system.submit("block", blocker)
            await system.submit("lo", record, "old", log)  # waits from t0
            await trio.sleep(0.5)
            await system.submit("mid", record, "mid", log)
            for k in range(1, 7):  # each one more urgent than the last: the new head
                await trio.sleep_until(t0 + k)
                await system.submit("lo", record, f"lo{k}", log, priority=-k)
            await trio.sleep_until(t0 + 6.5)  # the head waited 0.5 s, "old" 6.5 s
            assert system.statistics().lanes["lo"].effective_priority == 1  # 4 - 3 levels
            assert system.statistics().lanes["mid"].effective_priority == 2
            release.set()
            await system.drain()
            assert system.statistics().lanes["lo"].effective_priority == 4  # nothing queued
        events.check()
    # "lo" stays boosted by "old" until "old" itself starts; then "mid" gets the slot.
    assert log == ["lo6", "lo5", "lo4", "lo3", "lo2", "lo1", "old", "mid"]


async def test_a_delayed_command_joins_the_lane_clock_when_due(
    autojump_clock: trio.abc.Clock,
) -> None:
    configs = [LaneConfig("lo", 4, boost=lanes.PriorityBoost.custom(10, [2, 4]))]
    async with lanes.open_lane_system(configs) as system:
        system.pause("lo")
        t0 = trio.current_time()
        await system.submit("lo", record, "plain", [])
        late = await system.submit("lo", record, "late", [], delay=3, priority=-1)
        await trio.sleep_until(t0 + 2.5)  # "late" is not due: only "plain" (2.5 s) counts
        assert system.statistics().lanes["lo"].effective_priority == 3
        await trio.sleep_until(t0 + 5)  # "late" heads the lane (2 s), "plain" waited 5 s
        assert late.position == 0
        assert system.statistics().lanes["lo"].effective_priority == 2
        system.close_now()


def _boosted_policy() -> tuple[Policy, dict[str, Job]]:
    boost = lanes.PriorityBoost.custom(100, [10, 20, 30])
    config = _Config("lo", 5, max_concurrency=1, boost=boost, preemptible=True)
    policy = Policy([config], 1)
    jobs = {name: Job("lo", priority) for name, priority in [("a", 0), ("b", 0), ("c", -1)]}
    policy.add(jobs["a"], 0.0)
    assert policy.schedule(0.0).start == [jobs["a"]]
    policy.add(jobs["b"], 1.0)
    policy.add(jobs["c"], 2.0)
    return policy, jobs


def test_the_lane_clock_is_its_oldest_queued_job_whatever_moves() -> None:
    # b (priority 0, queued at t=1) and c (priority -1, the head, t=2) wait; a runs.
    policy, jobs = _boosted_policy()
    state = policy.lanes["lo"]
    assert state.head() is jobs["c"]
    assert policy.effective_priority("lo", 21.0) == 3  # b waited 20 s: two levels
    assert policy.reprioritize(jobs["b"], 1)  # b leaves the FIFO: still the oldest
    assert policy.effective_priority("lo", 21.0) == 3
    assert policy.remove(jobs["b"])  # cancelled: c (19 s) is the oldest now
    assert policy.effective_priority("lo", 21.0) == 4
    assert policy.move(jobs["c"], 21.0, 25.0)  # delayed: nothing queued
    assert policy.effective_priority("lo", 21.0) == 5
    assert policy.next_wakeup(21.0) == 25.0
    policy.schedule(25.0)  # c is due: it waits from t=25, not from t=2
    assert policy.effective_priority("lo", 36.0) == 4
    assert policy.next_wakeup(36.0) == 45.0  # its next boost point (a preemptible lane)


def test_a_preempted_job_keeps_its_clock_at_the_front() -> None:
    policy, jobs = _boosted_policy()
    assert policy.remove(jobs["b"])
    policy.finish(jobs["a"])
    assert policy.schedule(3.0).start == [jobs["c"]]
    late = Job("lo", -1)
    policy.add(late, 4.0)
    policy.requeue_front(jobs["c"], 12.0)  # c waits from t=2 again, ahead of late
    assert policy.lanes["lo"].queued() == [jobs["c"], late]
    assert policy.effective_priority("lo", 12.0) == 4
    assert policy.reprioritize(jobs["c"], 3)  # late is the head; c still the oldest
    assert policy.lanes["lo"].head() is late
    assert policy.effective_priority("lo", 12.0) == 4


def test_two_preempted_jobs_at_the_front_the_older_clock_counts() -> None:
    # The later requeue sits in front, but the earlier one has waited longer.
    boost = lanes.PriorityBoost.custom(100, [10, 20, 30])
    config = _Config("lo", 5, max_concurrency=2, boost=boost, preemptible=True)
    policy = Policy([config], 2)
    older, younger = Job("lo"), Job("lo")
    policy.add(older, 0.0)
    assert policy.schedule(0.0).start == [older]
    policy.add(younger, 5.0)
    assert policy.schedule(5.0).start == [younger]
    policy.requeue_front(older, 6.0)
    policy.requeue_front(younger, 7.0)
    state = policy.lanes["lo"]
    assert state.queued() == [younger, older]
    assert policy.effective_priority("lo", 21.0) == 3  # older waited 21 s, younger 16 s
    assert policy.schedule(21.0).start == [younger, older]
    assert policy.effective_priority("lo", 21.0) == 5  # nothing queued
    assert state.waiting == []  # the stale entries went with the look


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-3, 3), min_size=1, max_size=12),
    st.lists(st.tuples(st.integers(0, 11), st.integers(-3, 3)), max_size=6),
    st.lists(st.integers(0, 11), max_size=3),
)
def test_start_order_is_priority_then_queue_order(
    priorities: list[int], moves: list[tuple[int, int]], cancels: list[int]
) -> None:
    """Any mix of priorities, reprioritizations and cancels: the commands start by
    (priority, submission), the cancelled ones never."""
    n = len(priorities)
    expected = {i: priorities[i] for i in range(n)}

    async def main() -> list[int]:
        log: list[int] = []

        async def body(i: int) -> None:
            log.append(i)
            await trio.sleep(1)

        async with lanes.open_lane_system(ONE) as system:
            system.pause("work")
            handles = [
                await system.submit("work", body, i, priority=p) for i, p in enumerate(priorities)
            ]
            for index, priority in moves:
                if index < n:
                    assert handles[index].reprioritize(priority)
                    expected[index] = priority
            for index in cancels:
                if index < n:
                    handles[index].cancel()
                    expected.pop(index, None)
            system.resume("work")
        return log

    started = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert started == sorted(expected, key=lambda i: (expected[i], i))


# -- durable --------------------------------------------------------------------------------------


@lanes.command(name="prio-job")
@attrs.define
class Job2:
    name: str

    async def execute(self) -> str:
        await trio.sleep(1)
        return self.name


async def test_priorities_and_moves_survive_a_restart(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    async with lanes.open_lane_system(
        ONE, storage=path, commands=[Job2], drain_timeout=0
    ) as system:
        system.pause("work")
        await system.submit("work", Job2("late"), priority=3)
        moved = await system.submit("work", Job2("moved"))
        assert moved.reprioritize(-2)
        delayed = await system.submit("work", Job2("delayed"), priority=1)
        assert delayed.reschedule(3600)
        await system._core.commit()  # the changes ride with the next write
        system.close_now()
    async with lanes.open_lane_system(
        ONE, storage=path, commands=[Job2], drain_timeout=0
    ) as system:
        by_name = {h.command.name: h for h in system.recovered}
        assert {n: h.priority for n, h in by_name.items()} == {
            "late": 3,
            "moved": -2,
            "delayed": 1,
        }
        assert by_name["delayed"].position is None  # still delayed (by about an hour)
        assert by_name["moved"].position == 0
        system.close_now()


async def test_a_version_2_database_gains_the_priority_column(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "v2.db"
    db = sqlite3.connect(path)
    MIGRATIONS[0](db)
    MIGRATIONS[1](db)
    db.execute("PRAGMA application_id=1279348293")
    db.execute("PRAGMA user_version=2")
    db.execute(
        "INSERT INTO commands VALUES ('old-1', 1, 'work', 'prio-job', '{\"name\": \"old\"}', "
        "NULL, 'pending', 0, NULL, NULL, 0.0)"
    )
    db.commit()
    db.close()
    storage = SqliteStorage(path)
    await storage.open()
    recovered = await storage.recover()
    await storage.close()
    assert [(row.id, row.priority) for row in recovered.commands] == [("old-1", 0)]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (lanes.storage.SCHEMA_VERSION,)
    db.close()
    async with lanes.open_lane_system(ONE, storage=path, commands=[Job2]) as system:
        assert [await h.result() for h in system.recovered] == ["old"]


async def test_a_removed_job_state_is_gone_for_the_policy() -> None:
    # remove() of a prioritized queued job: it leaves the queue lazily and never heads it
    policy = Policy([_Config("work", 0, max_concurrency=1)], None)
    policy.pause("work")
    a, b = Job("work", -1), Job("work", 0)
    policy.add(a, 0.0)
    policy.add(b, 0.0)
    assert policy.remove(a)
    assert a.state is JobState.GONE
    assert policy.lanes["work"].head() is b
