"""End-to-end properties: random lanes and workloads on the real async system.

Each example runs in its own ``trio.run`` with a fresh autojump ``MockClock`` (robust: no clock
shared across examples, no function-scoped fixture under ``@given``), records every event and
checks the log with ``lanes.testing.check_invariants``.
"""

from __future__ import annotations

import collections
import time
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
    WorkItem,
    WorkloadResult,
    check_invariants,
    lane_configs,
    lane_systems,
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


class _SpinGuard(trio.abc.Instrument):
    """Cancels ``scope`` when tasks keep running at one virtual instant (a livelock).

    ``fail_after`` cannot see a livelock: virtual time stands still while tasks run. These
    workloads spend milliseconds of real time at any one virtual instant; the guard trips
    after ``seconds`` of it.
    """

    def __init__(self, seconds: float = 5.0) -> None:
        self.seconds = seconds
        self.scope = trio.CancelScope()
        self.at = -1.0
        self.since = 0.0
        self.tripped = False

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        now = trio.current_time()
        if now != self.at:
            self.at, self.since = now, time.perf_counter()
        elif time.perf_counter() - self.since > self.seconds and not self.tripped:
            self.tripped = True
            self.scope.cancel()


def _run(
    configs: Sequence[LaneConfig], cap: int | None, work: list[WorkItem], pauses: list[Pause]
) -> tuple[list[ev.Event], list[WorkloadResult], lanes.SystemStatistics]:
    guard = _SpinGuard()

    async def main() -> tuple[list[ev.Event], list[WorkloadResult], lanes.SystemStatistics]:
        with trio.fail_after(_LIVENESS), guard.scope:  # a stuck command fails the test
            return await run()
        raise AssertionError(f"livelock: {guard.seconds} s of work at virtual time {guard.at}")

    async def run() -> tuple[list[ev.Event], list[WorkloadResult], lanes.SystemStatistics]:
        async with lanes.open_lane_system(configs, max_concurrency=cap) as system:
            async with record_events(system) as log:
                async with trio.open_nursery() as nursery:
                    for at, lane, length in pauses:
                        nursery.start_soon(_pause, system, configs[lane].name, at, length)
                    results = await run_workload(system, work)
                await system.drain()
            stats = system.statistics()
        return log.events, results, stats

    clock = trio.testing.MockClock(autojump_threshold=0)
    return trio.run(main, clock=clock, instruments=[guard])


async def _pause(system: lanes.LaneSystem, lane: str, at: float, length: float) -> None:
    await trio.sleep(at)
    system.pause(lane)
    await trio.sleep(length)
    system.resume(lane)


def _allowed(item: WorkItem, config: LaneConfig) -> set[str]:
    """The outcomes a work item may end with."""
    timeout = config.timeout
    tries = config.retry.max_retries + 1
    if timeout is not None and item.duration >= timeout:
        return {"timed_out", "cancelled"} if item.outcome == "cancel" else {"timed_out"}
    if item.outcome == "cancel":
        return {"cancelled", "completed"}
    if item.outcome == "slow":
        return {"completed"} if timeout is None else {"timed_out"}
    if item.outcome == "fail" or (item.outcome == "flaky" and item.failures >= tries):
        return {"failed"}
    return {"completed"}


def _check_results(
    events: list[ev.Event],
    results: list[WorkloadResult],
    stats: lanes.SystemStatistics,
    configs: Sequence[LaneConfig],
) -> None:
    by_name = {c.name: c for c in configs}
    starts = collections.Counter(e.command_id for e in events if isinstance(e, ev.Started))
    for result in results:
        allowed = _allowed(result.item, by_name[result.item.lane])
        assert result.outcome in allowed, (result, allowed)
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
    events, results, stats = _run(configs, cap, work, pauses)
    paused = {configs[lane].name for _, lane, _ in pauses}
    check_invariants(events, configs, cap, paused=paused)
    _check_results(events, results, stats, configs)


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
                outcome=st.sampled_from(["success", "flaky", "fail"]),
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
    events, results, stats = _run(configs, cap, work, [])
    check_invariants(events, configs, cap)
    _check_results(events, results, stats, configs)
    assert stats.lanes["background"].preempted >= 1, "the setup always preempts"
