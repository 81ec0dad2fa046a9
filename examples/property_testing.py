"""Property-testing your lanes: model-check the scheduler on your lane set, then run random
workloads on the real system and check its event log.

Run it with ``python examples/property_testing.py``; put the ``Test*`` and ``test_*`` names in
a test module to have pytest run them (see docs/testing.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio.testing

import lanes

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ModuleNotFoundError as missing:  # one line saying what to install, not a traceback
    from lanes._extras import exit_missing_extra

    exit_missing_extra(missing, "examples/property_testing.py", "test")
from lanes import LaneConfig, RateLimit, RetryPolicy
from lanes.events import Event, Started
from lanes.testing import (
    LaneSystemFactory,
    PolicyStateMachine,
    WorkItem,
    WorkloadResult,
    check_invariants,
    check_results,
    record_events,
    run_workload,
    workloads,
)

MY_LANES = (
    LaneConfig("control", 0, max_concurrency=2),
    LaneConfig("query", 2, max_concurrency=4, min_concurrency=1, retry=RetryPolicy.fixed(2, 0.5)),
    LaneConfig(
        "llm",
        5,
        max_concurrency=2,
        timeout=3.0,
        rate_limit=RateLimit.per_second(2),
        retry=RetryPolicy.exponential(3, initial_delay=0.25),
        preemptible=True,
    ),
)
MAX_CONCURRENCY = 4


# 1. The scheduling policy, model-checked on these lanes: every start, preemption and
#    wake-up is compared with the reference model, step by step.
class MyLanesMachine(PolicyStateMachine):
    lane_configs = st.just(MY_LANES)

    @classmethod
    def max_concurrency(cls, configs: Sequence[LaneConfig]) -> st.SearchStrategy[int | None]:
        return st.just(MAX_CONCURRENCY)


TestMyLanes = MyLanesMachine.TestCase  # pytest runs this like any unittest class


# 2. The real system under random workloads: succeeding, failing, flaky, slow (timed out)
#    and cancelled commands, with priorities of their own and some reprioritized while
#    they wait, under a mock clock; its event log must keep every rule. The events carry
#    each command's priority (Submitted.priority, Reprioritized), so the log check orders
#    each lane by them with nothing more to pass.
async def run_checked(work: list[WorkItem]) -> tuple[list[WorkloadResult], list[Event]]:
    """Run ``work`` on a fresh system and check its results and its event log."""
    system_cm = lanes.open_lane_system(MY_LANES, max_concurrency=MAX_CONCURRENCY)
    async with system_cm as system, record_events(system) as log:
        results = await run_workload(system, work)
    check_invariants(log.events, MY_LANES, MAX_CONCURRENCY)
    check_results(results, MY_LANES)  # outcomes, attempts, each reprioritize's answer
    return results, log.events


async def run_and_check(work: list[WorkItem]) -> list[str]:
    results, _ = await run_checked(work)
    return [result.outcome for result in results]


@settings(max_examples=20, deadline=None)
@given(workloads(MY_LANES, max_size=12, priorities=True))
def test_my_lanes_keep_the_rules(work: list[WorkItem]) -> None:
    trio.run(run_and_check, work, clock=trio.testing.MockClock(autojump_threshold=0))


# 3. With the pytest plugin: the lane_system fixture records and checks a system for you.
async def test_with_the_fixture(
    lane_system: LaneSystemFactory, autojump_clock: trio.testing.MockClock
) -> None:
    async with lane_system(MY_LANES, max_concurrency=MAX_CONCURRENCY) as system:
        for _ in range(6):
            await system.submit("llm", trio.sleep, 1.0)
        await system.run("control", trio.sleep, 0.1)
    # On exit the system was drained and its event log checked; look at it if you like:
    assert lane_system.log.events


# 4. A workload with priorities, by hand: two long commands fill "control"; then "bulk"
#    (priority 1), "report" (0, demoted to 2 while it waits) and "page" (-1) queue.
PRIORITIZED = [
    WorkItem("control", 0.0, "success", duration=1.0),
    WorkItem("control", 0.0, "success", duration=1.0),
    WorkItem("control", 0.1, "success", duration=0.5, priority=1),
    WorkItem("control", 0.2, "success", duration=0.5, reprioritize_after=0.1, new_priority=2),
    WorkItem("control", 0.3, "success", duration=0.5, priority=-1),
]
NAMES = ["long", "long", "bulk", "report", "page"]


async def start_order(work: list[WorkItem]) -> list[str]:
    """Run ``work`` (checked) and name the queued commands in the order they started."""
    results, events = await run_checked(work)
    names = {result.handle.id: name for result, name in zip(results, NAMES, strict=True)}
    started = [names[e.command_id] for e in events if isinstance(e, Started)]
    return started[2:]  # after the two long ones


def main() -> None:
    test_case = MyLanesMachine.TestCase
    test_case.settings = settings(max_examples=20, deadline=None)
    test_case("runTest").runTest()
    print("model check: 20 random runs of the policy on MY_LANES agree with the model")
    test_my_lanes_keep_the_rules()
    print("end to end: 20 random workloads kept every scheduling rule")
    work = [WorkItem("llm", 0.0, "slow"), WorkItem("control", 0.5, "success", duration=0.1)]
    outcomes = trio.run(run_and_check, work, clock=trio.testing.MockClock(autojump_threshold=0))
    print(f"a slow LLM call and a control command: {outcomes}")
    order = trio.run(start_order, PRIORITIZED, clock=trio.testing.MockClock(autojump_threshold=0))
    print(f"control starts by command priority: {order}")


if __name__ == "__main__":
    main()
