"""Scheduling: rate limits, a global cap with reserved slots, preemption, priority boosting,
and priorities of commands within a lane.

Run it with ``python examples/scheduling.py``.
"""

from __future__ import annotations

import trio

import lanes
from lanes import LaneConfig, PriorityBoost, RateLimit
from lanes import events as ev

LANES = (
    # A "pause" from the user must never wait behind an LLM call.
    LaneConfig("control", 0, max_concurrency=2),
    # Tool calls to a provider that allows 5 requests per second (bursts of 5).
    LaneConfig("tools", 2, max_concurrency=4, rate_limit=RateLimit.per_second(5)),
    # Background summaries: least urgent, boosted when they wait long, one slot reserved.
    LaneConfig(
        "summaries", 6, max_concurrency=2, min_concurrency=1, boost=PriorityBoost.standard(8)
    ),
    # LLM calls give their slot back when a more urgent command is blocked by the cap.
    LaneConfig("llm", 5, max_concurrency=3, preemptible=True),
    # One browser for page fetches: one at a time, the most urgent first.
    LaneConfig("browser", 3, max_concurrency=1),
)


async def work(seconds: float) -> float:
    await trio.sleep(seconds)
    return seconds


async def rate_limit(system: lanes.LaneSystem) -> None:
    async with system.subscribe(ev.Started) as stream:
        handles = [await system.submit("tools", work, 0.01) for _ in range(10)]
        for handle in handles:
            await handle.result()
        stamps = [stream.receive_nowait().timestamp for _ in handles]  # wall time
        starts = [t - stamps[0] for t in stamps]  # seconds since the first start
    print("rate limit: tool calls started at " + ", ".join(f"{t:.1f}" for t in starts))
    print("            (a burst of 5, then one every 0.2 s)")


async def preemption(system: lanes.LaneSystem) -> None:
    llm = [await system.submit("llm", work, 5) for _ in range(3)]
    summary = await system.submit("summaries", work, 5)  # its reserved slot: cap is full
    await trio.sleep(1)
    start = trio.current_time()
    await system.run("control", work, 0.2)
    took = trio.current_time() - start
    print(f"preemption: the control command finished {took:.1f} s after it was submitted,")
    print(
        f"            under a full cap of {system.statistics().max_concurrency}; "
        f"LLM calls preempted: {system.statistics().lanes['llm'].preempted}"
    )
    for handle in [*llm, summary]:
        await handle.result()
    print(f"            every LLM call still completed: {[h.status.value for h in llm]}")


async def boosting(system: lanes.LaneSystem) -> None:
    system.pause("summaries")
    summary = await system.submit("summaries", work, 1)
    llm = [await system.submit("llm", work, 1) for _ in range(6)]
    await trio.sleep(6)  # the summary waits 6 s: boost points at 2, 4 and 6 s have passed
    print(
        f"boosting:   summaries' effective priority after 6 s: "
        f"{system.statistics().lanes['summaries'].effective_priority} (base 6)"
    )
    # An urgent summary becomes the lane's head with a fresh clock; the boost still counts
    # from the summary that has waited longest.
    urgent = await system.submit("summaries", work, 1, priority=-1)
    print(
        f"            with an urgent summary just queued ahead of it: "
        f"{system.statistics().lanes['summaries'].effective_priority}"
    )
    system.resume("summaries")
    for handle in [summary, urgent, *llm]:
        await handle.result()


async def within_a_lane(system: lanes.LaneSystem) -> None:
    # Three page fetches wait on the paused browser lane: the retry of a failed fetch goes
    # first, and a prefetch that was submitted as routine is demoted while it waits.
    system.pause("browser")
    order: list[str] = []

    async def call(name: str) -> None:
        order.append(name)
        await trio.sleep(0.1)

    prefetch = await system.submit("browser", call, "prefetch")
    await system.submit("browser", call, "search")
    await system.submit("browser", call, "retry", priority=-1)
    prefetch.reprioritize(1)
    print(f"within a lane: positions retry 0, search 1, prefetch {prefetch.position}")
    system.resume("browser")
    await prefetch.result()
    print(f"               started in the order {order}")


async def main() -> None:
    async with lanes.open_lane_system(LANES, max_concurrency=4) as system:
        await rate_limit(system)
        await preemption(system)
        await boosting(system)
        await within_a_lane(system)


if __name__ == "__main__":
    trio.run(main)
