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
    InvariantViolation,
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
    promises (``check_results``). The log carries the priorities (``Submitted.priority``,
    ``Reprioritized``), so a reprioritized command is checked with its new priority."""
    configs, cap = system
    work = data.draw(workloads(configs, max_size=16, priorities=True), label="workload")
    events, results, stats, letters = _run(configs, cap, work, [])
    # The answers and the events first: a bug they show also misorders the log, and one
    # failure to shrink is found sooner than two.
    _check_results(events, results, stats, configs, letters)
    _check_priority_events(events, results)
    check_invariants(events, configs, cap)


def _check_priority_events(events: list[ev.Event], results: list[WorkloadResult]) -> None:
    """Each ``Submitted`` carries its item's priority; a ``reprioritize`` answered True
    with another priority is one ``Reprioritized`` event, any other call none."""
    submitted = {e.command_id: e.priority for e in events if isinstance(e, ev.Submitted)}
    moved = collections.Counter(e.command_id for e in events if isinstance(e, ev.Reprioritized))
    for result in results:
        cid = result.handle.id
        assert submitted[cid] == result.item.priority
        call = result.reprioritized
        changed = call is not None and call.answer and call.priority != result.item.priority
        assert moved[cid] == (1 if changed else 0), (cid, call, result.item)
    assert priorities(results) == {  # what the log's events say, as the helper says it
        cid: None if moved[cid] else priority for cid, priority in submitted.items()
    }


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
    """The ``lane_system`` fixture checks a lane's order by command priority, which the
    events carry (``Submitted.priority``, ``Reprioritized``); ``log.priorities`` gives
    each command's submitted priority, None for one reprioritized while it waited."""
    async with lane_system(_ONE) as system:
        first = await system.submit("work", trio.sleep, 1)
        low = await system.submit("work", trio.sleep, 1, priority=1)
        moved = await system.submit("work", trio.sleep, 1)
        await trio.sleep(0.5)
        plain = await system.submit("work", trio.sleep, 1)  # starts before low, after moved
        assert moved.reprioritize(2)
    # left normally: drained, and the log checked with these priorities
    assert lane_system.log.priorities == {first.id: 0, low.id: 1, moved.id: None, plain.id: 0}


async def test_the_fixture_checks_a_priority_changed_and_changed_back(
    lane_system: LaneSystemFactory, autojump_clock: trio.testing.MockClock
) -> None:
    """``a`` waits at priority 5 while ``later`` starts, then goes back to 0 before it
    starts itself. The check must compare them at ``later``'s start with a's priority then
    (5), not with the one it had at submit and at its own start (0): by that, ``later``
    would have overtaken ``a`` against FIFO (a listener noting priorities at submit, as
    the fixture once had, could not see the change and failed this test)."""
    async with lane_system(_ONE) as system:
        await system.submit("work", trio.sleep, 1)  # runs from 0 to 1
        a = await system.submit("work", trio.sleep, 1)
        await trio.sleep(0.25)
        later = await system.submit("work", trio.sleep, 1)
        assert a.reprioritize(5)
        await trio.sleep(1)
        assert later.status == lanes.CommandStatus.RUNNING  # started at 1, before a
        assert a.reprioritize(0)  # and back, while it still waits
    # left normally: drained, and the log checked (this raised InvariantViolation before)
    log = lane_system.log
    moves = [(e.previous, e.priority) for e in log.events if isinstance(e, ev.Reprioritized)]
    assert moves == [(0, 5), (5, 0)]
    assert log.priorities[a.id] is None
    assert lane_system.log.events[-1].command_id == a.id  # a ran last


def _log_with_a_change(at: float) -> list[ev.Event]:
    """``a`` and ``b`` queued at priority 0; ``b`` reprioritized to -1 at ``at``; ``a``
    starts at 1 while ``b`` waits."""
    return [
        ev.Submitted("work", "a", 0.0, priority=0),
        ev.Submitted("work", "b", 0.5, priority=0),
        ev.Reprioritized("work", "b", at, priority=-1, previous=0),
        ev.Started("work", "a", 1.0, waited=1.0),
        ev.Completed("work", "a", 2.0),
        ev.Started("work", "b", 2.0, waited=1.5),
        ev.Completed("work", "b", 3.0),
    ]


def test_the_log_checker_follows_reprioritized_events() -> None:
    with pytest.raises(AssertionError, match="command priority within a lane") as found:
        check_invariants(_log_with_a_change(0.75), _ONE)  # b: -1 since 0.75, more urgent
    assert "b (priority -1) waited in lane 'work'" in str(found.value)
    check_invariants(_log_with_a_change(1.0), _ONE)  # at the instant of a's start: unknown
    check_invariants(_log_with_a_change(1.5), _ONE)  # after it: a started by FIFO
    events = _log_with_a_change(0.75)
    events[1] = ev.Submitted("work", "b", 0.5, priority=1)  # b went from 1 ...
    events[2] = ev.Reprioritized("work", "b", 0.75, priority=0, previous=1)  # ... to 0
    check_invariants(events, _ONE)  # then FIFO: a first
    # A log without priorities on Submitted takes them from priorities= (0 by default).
    bare = [ev.Submitted("work", "a", 0.0), ev.Submitted("work", "b", 0.5), *events[2:]]
    check_invariants(bare, _ONE, priorities={"b": 1})
    with pytest.raises(AssertionError, match="previous is the priority the command had"):
        check_invariants(bare, _ONE)  # b had 0, says Reprioritized from 1


def test_the_log_checker_refuses_a_reprioritized_running_command() -> None:
    events = _log_with_a_change(1.5)
    events.insert(4, ev.Reprioritized("work", "a", 1.5, priority=3, previous=0))
    found = _violation(events)
    assert found.rule == "reprioritize: only a waiting command takes another priority"
    assert "Reprioritized while running" in found.detail
    events = _log_with_a_change(1.5)
    events.append(ev.Reprioritized("work", "a", 3.0, priority=3, previous=0))
    assert "after the command completed" in _violation(events).detail


def _violation(events: list[ev.Event]) -> InvariantViolation:
    with pytest.raises(InvariantViolation) as found:
        check_invariants(events, _ONE)
    return found.value
