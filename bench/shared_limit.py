"""shared_limit: agent sessions on one SharedLimit, in process, against plain Trio.

What the agent server does, without the web stack around it (so the figures are the lane
systems' own cost, not hypercorn's or httpx's): N sessions at once, each a lane system with
one ``prompt`` lane (``max_concurrency=1``) on one app-wide ``lanes.SharedLimit(50)``, run
three turns: a turn of 10 "tokens" (each ``trio.sleep(0.001)`` then ``lanes.pause_point()``,
standing for a streamed token and its websocket write), awaited; a long turn cancelled after
a few tokens (``cancel_lane(queued=False)``, "stop this turn", timed from the call to its
return); another short turn. Each turn's ``on_done`` callback reports its end, as the
example does.

The plain twin (the same as bench/_plain_agent.py, without the web stack): a nursery per
session, a task and a ``trio.CancelScope`` per turn, a ``trio.CapacityLimiter(1)`` per
session and one app-wide ``trio.CapacityLimiter(50)``; cancel is ``scope.cancel()`` and a
wait for the turn's exit event.

Figures per N, medians over interleaved rounds: process CPU seconds for the whole run, CPU
per turn, cancel p50/p99, and the ratio to plain Trio. With N above the 50 slots, most
sessions wait for the shared limit: the CPU per turn as N grows shows what a grant costs
with many waiters.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import time
from typing import Any

import trio

import lanes

from ._harness import Options, Result, interleaved, median, paired_ratio, print_table

NAME = "shared_limit"
SIZES = (100, 1000)
QUICK_SIZES = (50, 200)
SLOTS = 50
TOKENS = 10
LONG = 1000  # tokens of the turn that is cancelled (it never gets that far)
TOKEN = 0.001
TURNS = 3


async def _tokens(count: int, started: trio.Event | None = None) -> int:
    if started is not None:
        started.set()
    for _ in range(count):
        await trio.sleep(TOKEN)
        await lanes.pause_point()
    return count


async def _report(handle: lanes.CommandHandle[int]) -> None:
    with contextlib.suppress(lanes.CommandCancelled):
        await handle.result()
    await trio.lowlevel.checkpoint()  # the "done" frame


async def _lanes_session(lane: lanes.LaneConfig, i: int, cancels: list[float]) -> None:
    async with lanes.open_lane_system([lane]) as session:
        handle = await session.submit("prompt", _tokens, TOKENS, on_done=_report)
        await handle.result()
        started = trio.Event()
        await session.submit("prompt", _tokens, LONG, started, on_done=_report)
        await started.wait()
        await trio.sleep(TOKEN * (1 + i % 5))
        sent = time.perf_counter()
        await session.cancel_lane("prompt", queued=False)
        cancels.append(time.perf_counter() - sent)
        handle = await session.submit("prompt", _tokens, TOKENS, on_done=_report)
        await handle.result()
        session.close_now()


class _Turns:
    def __init__(self) -> None:
        self.limiter = trio.CapacityLimiter(1)
        self.running: dict[trio.CancelScope, trio.Event] = {}
        self.resumed: trio.Event | None = None

    async def pause_point(self) -> None:
        if self.resumed is not None:
            await self.resumed.wait()
        else:
            await trio.lowlevel.checkpoint()


async def _plain_turn(
    turns: _Turns, llm: trio.CapacityLimiter, count: int, started: trio.Event | None = None
) -> None:
    async with turns.limiter, llm:
        stopped = trio.Event()
        with trio.CancelScope() as scope:
            turns.running[scope] = stopped
            if started is not None:
                started.set()
            try:
                for _ in range(count):
                    await trio.sleep(TOKEN)
                    await turns.pause_point()
            finally:
                del turns.running[scope]
                stopped.set()
    await trio.lowlevel.checkpoint()  # the "done" frame


async def _plain_session(llm: trio.CapacityLimiter, i: int, cancels: list[float]) -> None:
    turns = _Turns()
    async with trio.open_nursery() as nursery:
        await _plain_turn(turns, llm, TOKENS)
        started = trio.Event()
        nursery.start_soon(_plain_turn, turns, llm, LONG, started)
        await started.wait()
        await trio.sleep(TOKEN * (1 + i % 5))
        sent = time.perf_counter()
        running = list(turns.running.items())
        for scope, _ in running:
            scope.cancel()
        for _, stopped in running:
            await stopped.wait()
        cancels.append(time.perf_counter() - sent)
        await _plain_turn(turns, llm, TOKENS)


async def _sessions(kind: str, n: int) -> dict[str, float]:
    cancels: list[float] = []
    if kind == "lanes":
        limit = lanes.SharedLimit(SLOTS, name="llm")
        lane = lanes.LaneConfig("prompt", 5, max_concurrency=1, shared_limit=limit)
        start: Any = functools.partial(_lanes_session, lane)
    else:
        start = functools.partial(_plain_session, trio.CapacityLimiter(SLOTS))
    pauses: list[float] = []  # the full (generation 2) collections of the run, in seconds
    began = [0.0]

    def timed(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - began[0])

    gc.collect()
    gc.callbacks.append(timed)
    cpu = time.process_time()
    try:
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(start, i, cancels)
    finally:
        cpu = time.process_time() - cpu
        gc.callbacks.remove(timed)
    cancels.sort()
    return {
        "cpu_s": cpu,
        "cancel_p50_ms": cancels[len(cancels) // 2] * 1e3,
        "cancel_p99_ms": cancels[min(len(cancels) - 1, int(len(cancels) * 0.99))] * 1e3,
        "gc_full": float(len(pauses)),
        "gc_worst_ms": max(pauses, default=0.0) * 1e3,
    }


def run(options: Options) -> Result:
    result = Result(NAME)
    sizes = QUICK_SIZES if options.quick else SIZES
    print(
        f"{NAME}: N sessions x {TURNS} turns ({TOKENS} tokens of {TOKEN * 1e3:g} ms; the "
        f"second cancelled), one SharedLimit({SLOTS}) vs trio.CapacityLimiter({SLOTS})"
    )
    for n in sizes:
        runners = {
            kind: functools.partial(trio.run, _sessions, kind, n) for kind in ("lanes", "plain")
        }
        samples = interleaved(runners, options.repeat)
        table = []
        for key, label in (
            ("cpu_s", "CPU s"),
            ("cancel_p50_ms", "cancel p50 ms"),
            ("cancel_p99_ms", "cancel p99 ms"),
            ("gc_full", "full GC runs"),
            ("gc_worst_ms", "longest full GC ms"),
        ):
            ours = [s[key] for s in samples["lanes"]]
            theirs = [s[key] for s in samples["plain"]]
            row = {
                "figure": label,
                "n": n,
                "lanes": median(ours),
                "plain": median(theirs),
                "ratio": paired_ratio(ours, theirs) if min(theirs) > 0 else None,
                "runs": {"lanes": ours, "plain": theirs},
            }
            result.rows.append(row)
            table.append([label, row["lanes"], row["plain"], row["ratio"]])
        per_turn = {k: median([s["cpu_s"] for s in v]) / (n * TURNS) for k, v in samples.items()}
        row = {
            "figure": "CPU us per turn",
            "n": n,
            "lanes": per_turn["lanes"] * 1e6,
            "plain": per_turn["plain"] * 1e6,
            "ratio": per_turn["lanes"] / per_turn["plain"],
        }
        result.rows.append(row)
        table.append([row["figure"], row["lanes"], row["plain"], row["ratio"]])
        print_table(
            f"{n} sessions (median of {options.repeat})",
            ["figure", "trio-lanes", "plain", "ratio"],
            table,
        )
    result.note(
        "in process, no web stack: the lane systems' own cost; the agent_server benchmark "
        "measures the same sessions behind hypercorn, websockets and httpx"
    )
    return result
