"""control_latency: submit -> start latency of control commands while prompt is busy.

"Saturated": the prompt lane runs long commands in all of its slots and has 10K more queued
behind them. One client then submits control commands one at a time, each awaited; the
latency of one is ``time.perf_counter()`` at the first line of its body minus
``time.perf_counter()`` just before ``submit`` (real clock: that is the point).

"Draining": prompt has 10K trivial commands (no checkpoint) to run; control commands are
sampled, one at a time, until the last of them is done. This catches a lane that runs its
backlog back to back without letting other tasks in.

Reference rows: the same client on an idle lane system, and on plain trio (10 idle workers
on one memory channel, a reply channel). Each sample is flagged if a GC ran or the OS
preempted the thread meanwhile, and the p99 of the undisturbed samples is reported too.
Target (issue 7): p99 < 1 ms.
"""

from __future__ import annotations

import functools
import gc
import math
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import attrs
import trio

import lanes

from ._harness import Options, Result, interleaved, median, print_table
from ._workloads import WORKERS, Request, trivial

NAME = "control_latency"
CONTROL = 1_000
QUICK_CONTROL = 300
QUEUED = 10_000
LIMIT_P99_US = 1000.0
ISSUE_19_P99_US = 300.0  # issue 19: prompt saturated, p99 under 0.3 ms


async def started_at() -> float:
    """A control command: its first line reads the clock."""
    return time.perf_counter()


async def long_command(started: trio.Event) -> None:
    """Occupies a prompt slot until the system closes."""
    started.set()
    await trio.sleep_forever()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in (0, 1])."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class Sample:
    latency: float
    gc: bool  # a garbage collection ran while it was measured
    preempted: bool  # the OS switched this thread out involuntarily meanwhile


class _GcCounter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.count += 1


def _involuntary_switches() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw


async def measure(
    count: int, one: Callable[[], Awaitable[float]], until: Callable[[], bool] = lambda: False
) -> list[Sample]:
    """Time ``one()`` (which returns the command's start time) ``count`` times, in sequence.

    Stops early once ``until()`` is true.
    """
    collections = _GcCounter()
    gc.callbacks.append(collections)
    samples = []
    try:
        for _ in range(count):
            if until():
                break
            gcs, switches = collections.count, _involuntary_switches()
            before = time.perf_counter()
            latency = await one() - before
            disturbed_gc = collections.count != gcs
            samples.append(Sample(latency, disturbed_gc, _involuntary_switches() != switches))
    finally:
        gc.callbacks.remove(collections)
    return samples


def summary(samples: list[Sample]) -> dict[str, float]:
    latencies = [s.latency for s in samples]
    clean = [s.latency for s in samples if not (s.gc or s.preempted)] or [math.nan]
    return {
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies),
        "clean_p99": percentile(clean, 0.99),
        "count": len(latencies),
        "over_1ms": sum(1 for x in latencies if x > 1e-3),
        "with_gc": sum(1 for s in samples if s.gc),
        "preempted": sum(1 for s in samples if s.preempted),
    }


SATURATED, DRAINING, IDLE = "saturated", "draining", "idle"


def lanes_latency(count: int, queued: int, *, prompt: str) -> dict[str, float]:
    return summary(trio.run(_lanes_main, count, queued, prompt))


async def _lanes_main(count: int, queued: int, prompt: str) -> list[Sample]:
    """``prompt``: SATURATED (long commands in every slot, ``queued`` behind them),
    DRAINING (``queued`` trivial commands to run; sampling stops when they are done), IDLE.
    """
    configs = tuple(
        attrs.evolve(c, inbox_size=queued + 10) if c.name == "prompt" else c
        for c in lanes.DEFAULT_LANES
    )
    slots = next(c.max_concurrency for c in configs if c.name == "prompt")
    async with lanes.open_lane_system(configs) as system:

        async def one() -> float:
            handle = await system.submit("control", started_at)
            return await handle.result()

        if prompt == SATURATED:
            await _saturate_prompt(system, slots, queued)
            samples = await measure(count, one)
            state = system.statistics().lanes["prompt"]
            if (state.active, state.pending) != (slots, queued):
                raise AssertionError(f"prompt was not saturated throughout: {state}")
            await system.cancel_lane("prompt")
        elif prompt == DRAINING:
            backlog = [system.submit_nowait("prompt", trivial, i) for i in range(queued)]
            samples = await measure(count, one, until=backlog[-1].done)
            for handle in backlog:
                await handle.result()
        else:
            samples = await measure(count, one)
    return samples


async def _saturate_prompt(system: lanes.LaneSystem, slots: int, queued: int) -> None:
    events = [trio.Event() for _ in range(slots)]
    for event in events:
        await system.submit("prompt", long_command, event)
    for event in events:
        await event.wait()
    for i in range(queued):
        system.submit_nowait("prompt", trivial, i)


def trio_latency(count: int) -> dict[str, float]:
    return summary(trio.run(_trio_main, count))


async def _trio_main(count: int) -> list[Sample]:
    send, receive = trio.open_memory_channel[Request](math.inf)

    async def worker() -> None:
        async for fn, args, reply in receive:
            reply.send_nowait(await fn(*args))

    async def one() -> float:
        reply_send, reply_receive = trio.open_memory_channel[Any](1)
        await send.send((started_at, (), reply_send))
        started: float = await reply_receive.receive()
        return started

    async with trio.open_nursery() as nursery:
        for _ in range(WORKERS):
            nursery.start_soon(worker)
        samples = await measure(count, one)
        send.close()
    return samples


def run(options: Options) -> Result:
    result = Result(NAME)
    count = QUICK_CONTROL if options.quick else CONTROL
    print(
        f"{NAME}: up to {count:,} control commands, one at a time; prompt saturated (long "
        f"commands, {QUEUED:,} queued behind them) or draining {QUEUED:,} trivial commands; "
        "latency = submit -> first line (real clock)"
    )
    runners = {
        "lanes, prompt saturated": functools.partial(
            lanes_latency, count, QUEUED, prompt=SATURATED
        ),
        "lanes, prompt draining": functools.partial(lanes_latency, count, QUEUED, prompt=DRAINING),
        "lanes, idle": functools.partial(lanes_latency, count, QUEUED, prompt=IDLE),
        "plain trio, idle": functools.partial(trio_latency, count),
    }
    samples = interleaved(runners, options.repeat)
    base = median([s["p99"] for s in samples["plain trio, idle"]])
    rows = []
    for name, runs in samples.items():
        mid = {key: median([s[key] for s in runs]) for key in ("p50", "p99", "max", "clean_p99")}
        total = {
            key: int(sum(s[key] for s in runs))
            for key in ("count", "over_1ms", "with_gc", "preempted")
        }
        result.rows.append(
            {
                "system": name,
                "control_commands": count,
                "queued_prompt": QUEUED if "prompt" in name else 0,
                "samples": total["count"],
                "p50_us": mid["p50"] * 1e6,
                "p99_us": mid["p99"] * 1e6,
                "max_us": mid["max"] * 1e6,
                "p99_ratio_to_plain_trio": mid["p99"] / base,
                "p99_undisturbed_us": mid["clean_p99"] * 1e6,
                "samples_over_1ms": total["over_1ms"],
                "samples_with_gc": total["with_gc"],
                "samples_preempted_by_os": total["preempted"],
                "runs": runs,
            }
        )
        rows.append(
            (
                name,
                mid["p50"] * 1e6,
                mid["p99"] * 1e6,
                mid["max"] * 1e6,
                mid["p99"] / base,
                mid["clean_p99"] * 1e6,
                f"{total['over_1ms']}/{total['with_gc']}/{total['preempted']} of {total['count']}",
            )
        )
    print_table(
        f"median over {options.repeat} runs of each run's percentiles; last column: samples "
        "over 1 ms / during a GC / preempted by the OS, of all samples",
        ("system", "p50 us", "p99 us", "max us", "p99 x trio", "undisturbed p99", ">1ms/gc/os"),
        rows,
    )
    p99 = {row["system"]: row["p99_us"] for row in result.rows}
    result.target(
        "control p99 submit->start, prompt saturated, < 1000 us",
        p99["lanes, prompt saturated"],
        LIMIT_P99_US,
        unit=" us",
    )
    result.target(
        f"control p99 submit->start, prompt saturated, < {ISSUE_19_P99_US:.0f} us (issue 19)",
        p99["lanes, prompt saturated"],
        ISSUE_19_P99_US,
        unit=" us",
    )
    result.target(
        "control p99 submit->start, prompt draining, < 1000 us",
        p99["lanes, prompt draining"],
        LIMIT_P99_US,
        unit=" us",
    )
    return result
