"""An agent server in miniature: one lane system per session, one LLM limit for all of them.

Each session holds a short conversation: model calls on its ``prompt`` lane (at most 20 at
once across *all* sessions, granted fairly between them by one :class:`lanes.SharedLimit`),
tool calls on ``skill``, and now and then a user interrupt on ``control`` that cancels
everything queued or running on the session's ``prompt`` lane. Sessions come and go; a session
leaving its ``async with`` takes all it held with it.

It prints a summary: sessions, commands, the control lane's submit->start latency (p50, p99)
and the most LLM calls that ever ran at once.

Run it with ``python examples/agent_sessions.py [SESSIONS]`` (default 1,000).
"""

from __future__ import annotations

import random
import statistics
import sys
from typing import Any

import attrs
import trio

import lanes
from lanes import DEFAULT_LANES, SharedLimit

LLM_SLOTS = 20


class Server:
    """What the sessions share: the LLM limit, and the figures for the summary."""

    def __init__(self, seed: int) -> None:
        self.llm = SharedLimit(LLM_SLOTS, name="llm")
        self.lanes = tuple(
            attrs.evolve(lane, shared_limit=self.llm) if lane.name == "prompt" else lane
            for lane in DEFAULT_LANES
        )
        self.random = random.Random(seed)
        self.calls_running = 0
        self.calls_peak = 0
        self.control_waits: list[float] = []
        self.counts = {"completed": 0, "cancelled": 0}

    async def model_call(self, seconds: float) -> str:
        self.calls_running += 1
        self.calls_peak = max(self.calls_peak, self.calls_running)
        try:
            await trio.sleep(seconds)  # stands in for an LLM request
        finally:
            self.calls_running -= 1
        return "answer"

    async def interrupt(self, system: lanes.LaneSystem, submitted: float) -> int:
        self.control_waits.append(trio.current_time() - submitted)
        return await system.cancel_lane("prompt")

    async def session(self, number: int) -> None:
        rng = random.Random(self.random.random())
        await trio.sleep(rng.uniform(0, 1))  # users arrive over a second
        async with lanes.open_lane_system(self.lanes) as system:
            handles: list[lanes.CommandHandle[Any]] = []
            for _turn in range(rng.randint(2, 4)):
                call = rng.uniform(0.02, 0.06)  # a model call (shortened for the demo)
                handles.append(await system.submit("prompt", self.model_call, call))
                handles.append(await system.submit("skill", trio.sleep, rng.uniform(0.005, 0.02)))
            if rng.random() < 0.2:  # the user hits "stop" after a while
                await trio.sleep(rng.uniform(0.05, 3))
                await system.run("control", self.interrupt, system, trio.current_time())
            for handle in handles:
                try:
                    await handle.result()
                    self.counts["completed"] += 1
                except lanes.CommandCancelled:
                    self.counts["cancelled"] += 1


async def main(sessions: int = 1000, seed: int = 7) -> None:
    server = Server(seed)
    start = trio.current_time()  # Trio's clock has an arbitrary origin
    async with trio.open_nursery() as nursery:
        for number in range(sessions):
            nursery.start_soon(server.session, number)
    waits = sorted(server.control_waits) or [0.0]
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
    print(f"sessions: {sessions}")
    print(
        f"commands: {sum(server.counts.values())} "
        f"(completed {server.counts['completed']}, cancelled {server.counts['cancelled']})"
    )
    print(
        f"control lane submit->start: p50 {statistics.median(waits) * 1000:.3f} ms, "
        f"p99 {p99 * 1000:.3f} ms over {len(server.control_waits)} interrupts"
    )
    print(f"LLM calls at once: at most {server.calls_peak} (limit {LLM_SLOTS})")
    print(f"simulated time: {trio.current_time() - start:.1f} s")
    stats = server.llm.statistics()
    print(f"after all sessions left: llm in use {stats.in_use}, members {stats.members}")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
