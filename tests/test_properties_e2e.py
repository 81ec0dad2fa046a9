"""End-to-end properties: random lanes and workloads on the real async system.

Each example runs in its own ``trio.run`` with a fresh autojump ``MockClock`` (robust: no clock
shared across examples, no function-scoped fixture under ``@given``), records every event and
checks the log with ``lanes.testing.check_invariants``.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import lanes
from lanes import LaneConfig, RetryPolicy
from lanes import events as ev
from lanes.testing import (
    LaneSystemFactory,
    WorkItem,
    WorkloadResult,
    check_invariants,
    check_results,
    lane_configs,
    lane_systems,
    priorities,
    record_events,
    run_workload,
    seconds,
    workloads,
)

pytestmark = pytest.mark.property

_LIVENESS = 1000.0
Pause = tuple[float, int, float]  # (at, lane index, for how long)
_COUNTERS = {
    ev.Submitted: "submitted",
    ev.Completed: "completed",
    ev.Failed: "failed",
    ev.TimedOut: "timed_out",
    ev.Retrying: "retried",
    ev.DeadLettered: "dead_lettered",
    ev.Cancelled: "cancelled",
    ev.Preempted: "preempted",
}


def _run(
    configs: Sequence[LaneConfig], cap: int | None, work: list[WorkItem], pauses: list[Pause]
) -> tuple[list[ev.Event], list[WorkloadResult], lanes.SystemStatistics, list[str]]:
    async def main() -> tuple[
        list[ev.Event], list[WorkloadResult], lanes.SystemStatistics, list[str]
    ]:
        # run_workload fails a hang (its time limit) or a livelock (its step budget) with a
        # WorkloadHang naming what is unresolved; the drain has its own timeout.
        async with lanes.open_lane_system(configs, max_concurrency=cap) as system:
            async with record_events(system) as log:
                async with trio.open_nursery() as nursery:
                    for at, lane, length in pauses:
                        nursery.start_soon(_pause, system, configs[lane].name, at, length)
                    results = await run_workload(system, work, time_limit=_LIVENESS)
                await system.drain(_LIVENESS)
            stats = system.statistics()
            letters = [letter.id for letter in system.dead_letters.list()]
        return log.events, results, stats, letters

    clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(main, clock=clock)


async def _pause(system: lanes.LaneSystem, lane: str, at: float, length: float) -> None:
    await trio.sleep(at)
    system.pause(lane)
    await trio.sleep(length)
    system.resume(lane)


def _check_results(
    events: list[ev.Event],
    results: list[WorkloadResult],
    stats: lanes.SystemStatistics,
    configs: Sequence[LaneConfig],
    letters: list[str],
) -> None:
    starts = collections.Counter(e.command_id for e in events if isinstance(e, ev.Started))
    check_results(results, configs, dead_letters=letters)
    for result in results:
        # A command starts when it is granted; one preempted (or cancelled) before its body
        # ran has a Started event without a call, never the other way round.
        assert result.calls <= starts[result.handle.id], "a call without a Started event"
        assert result.handle.attempts <= starts[result.handle.id]
    counted: collections.Counter[tuple[str, str]] = collections.Counter()
    for event in events:
        name = _COUNTERS.get(type(event))
        if name is not None:
            counted[event.lane, name] += 1
    for lane, lane_stats in stats.lanes.items():
        for name in _COUNTERS.values():
            assert getattr(lane_stats, name) == counted[lane, name], (lane, name)
        assert lane_stats.pending == lane_stats.active == 0
    assert stats.events_dropped == 0


_pauses = st.lists(st.tuples(seconds(0.0, 3.0), st.integers(0, 3), seconds(0.0, 2.0)), max_size=2)


@given(system=lane_systems(lane_configs(2, 4)), data=st.data())
def test_random_workloads_keep_the_rules(
    system: tuple[tuple[LaneConfig, ...], int | None], data: st.DataObject
) -> None:
    configs, cap = system
    work = data.draw(workloads(configs, max_size=16), label="workload")
    pauses = [(at, lane % len(configs), n) for at, lane, n in data.draw(_pauses, label="pauses")]
    events, results, stats, letters = _run(configs, cap, work, pauses)
    paused = {configs[lane].name for _, lane, _ in pauses}
    check_invariants(events, configs, cap, paused=paused)
    _check_results(events, results, stats, configs, letters)


@given(system=lane_systems(lane_configs(2, 3)), data=st.data())
def test_prioritized_workloads_keep_the_rules(
    system: tuple[tuple[LaneConfig, ...], int | None], data: st.DataObject
) -> None:
    """Commands with priorities of their own, some reprioritized while they wait (or
    after: refused), some with a priority out of range (an error): each lane starts by
    command priority, FIFO among equals, and every ``reprioritize`` answers as the API
    promises (``check_results``)."""
    configs, cap = system
    work = data.draw(workloads(configs, max_size=16, priorities=True), label="workload")
    events, results, stats, letters = _run(configs, cap, work, [])
    check_invariants(events, configs, cap, priorities=priorities(results))
    _check_results(events, results, stats, configs, letters)


@st.composite
def _preemption_setups(
    draw: st.DrawFn,
) -> tuple[tuple[LaneConfig, ...], int, list[WorkItem]]:
    """A preemptible, least urgent lane fills the cap; urgent work arrives later."""
    cap = draw(st.integers(1, 3))
    retry = draw(st.sampled_from([RetryPolicy.none(), RetryPolicy.fixed(1, 0.25)]))
    background = LaneConfig(
        "background", 5, max_concurrency=cap, preemptible=True, retry=retry, timeout=4.0
    )
    urgent = LaneConfig("urgent", draw(st.integers(0, 4)), max_concurrency=draw(st.integers(1, 2)))
    long_runs = draw(
        st.lists(
            st.builds(
                WorkItem,
                lane=st.just("background"),
                at=seconds(0.0, 0.5),
                outcome=st.sampled_from(["success", "flaky", "fail", "permanent"]),
                duration=seconds(1.0, 2.0),
                failures=st.just(1),
            ),
            min_size=cap,
            max_size=cap + 2,
        )
    )
    quick = draw(
        st.lists(
            st.builds(
                WorkItem,
                lane=st.just("urgent"),
                at=seconds(0.5, 0.9375),  # the cap is full of background work then
                outcome=st.sampled_from(["success", "fail", "cancel"]),
                duration=seconds(0.0, 0.5),
                cancel_after=seconds(0.0, 1.0),
            ),
            min_size=1,
            max_size=4,
        )
    )
    first = attrs.evolve(quick[0], outcome="success")  # at least one never cancelled
    work = [*long_runs, first, *quick[1:]]
    return (background, urgent), cap, sorted(work, key=lambda item: item.at)


@given(setup=_preemption_setups())
def test_preemption_requeues_without_counting_an_attempt(
    setup: tuple[tuple[LaneConfig, ...], int, list[WorkItem]],
) -> None:
    configs, cap, work = setup
    events, results, stats, letters = _run(configs, cap, work, [])
    check_invariants(events, configs, cap)
    _check_results(events, results, stats, configs, letters)
    assert stats.lanes["background"].preempted >= 1, "the setup always preempts"


_ONE = (LaneConfig("work", 0, max_concurrency=1),)


def _prioritized_log() -> list[ev.Event]:
    """``a`` (queued at 0) starts at 1 while ``b`` (queued at 0.5) waits, then ``b``."""
    return [
        ev.Submitted("work", "a", 0.0),
        ev.Submitted("work", "b", 0.5),
        ev.Started("work", "a", 1.0, waited=1.0),
        ev.Completed("work", "a", 2.0),
        ev.Started("work", "b", 2.0, waited=1.5),
        ev.Completed("work", "b", 3.0),
    ]


def test_the_log_checker_orders_a_lane_by_command_priority() -> None:
    events = _prioritized_log()
    check_invariants(events, _ONE)  # FIFO: a was queued first
    check_invariants(events, _ONE, priorities={"a": -1, "b": 0})
    with pytest.raises(AssertionError, match="command priority within a lane") as found:
        check_invariants(events, _ONE, priorities={"a": 1})  # b: 0, more urgent
    assert "b (priority 0) waited in lane 'work'" in str(found.value)
    check_invariants(events, _ONE, priorities={"a": 1, "b": None})  # b was reprioritized
    b_first = [
        *events[:2],
        ev.Started("work", "b", 1.0, waited=0.5),
        ev.Completed("work", "b", 2.0),
        ev.Started("work", "a", 2.0, waited=2.0),
        ev.Completed("work", "a", 3.0),
    ]
    check_invariants(b_first, _ONE, priorities={"b": -1})
    with pytest.raises(AssertionError, match="FIFO within a lane"):
        check_invariants(b_first, _ONE, priorities={"a": 1, "b": 1})  # equals: FIFO


async def test_the_fixture_knows_command_priorities(
    lane_system: LaneSystemFactory, autojump_clock: trio.testing.MockClock
) -> None:
    """The ``lane_system`` fixture checks a lane's order by command priority: it learns
    each command's priority as it is submitted (the events do not carry it), and leaves
    out of the order check one reprioritized while it waited."""
    async with lane_system(_ONE) as system:
        first = await system.submit("work", trio.sleep, 1)
        low = await system.submit("work", trio.sleep, 1, priority=1)
        moved = await system.submit("work", trio.sleep, 1)
        await trio.sleep(0.5)
        plain = await system.submit("work", trio.sleep, 1)  # starts before low, after moved
        assert moved.reprioritize(2)
    # left normally: drained, and the log checked with these priorities
    assert lane_system.log.priorities == {first.id: 0, low.id: 1, moved.id: None, plain.id: 0}
