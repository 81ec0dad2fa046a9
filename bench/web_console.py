"""web_console: what the web console costs an app with many sessions, and how fast it renders.

Opens ``SYSTEMS`` lane systems (the six default lanes) and runs a steady load on them: every
10 ms, ``RATE / 100`` no-op commands submitted to systems picked in turn. The app's CPU time
(``time.process_time``: every thread of the process, so hypercorn's serving counts) is
measured over ``SECONDS`` of wall time in three phases, in rounds with the order rotated:

- ``no console``: the baseline, in the same run;
- ``console, idle``: every system added to a ``lanes.web.console()``, served by hypercorn,
  and no browser connected;
- ``console, page open``: the same with one events stream open (the page's server-sent
  events at the default 1 s interval), read by a client in another process (whose CPU is
  not the app's).

Figures are CPU seconds per wall second, and their ratio to the baseline (on a shared
machine these move by several percent between rounds; with 10,000 sessions a frame is
rare, see below, so "page open" differs from "idle" by less than that noise). Then the render
times at ``SYSTEMS`` sessions, in process (httpx's ASGI transport, no socket): the page
(``GET /``, first 50 systems by depth, rendered on the server), a page of systems as JSON,
a search, and one events frame, each next to the baseline of the same run: ``statistics()``
of every system (what any per-system view pays before rendering anything). From the frame's
cost follows how often an open page is updated: the stream waits max(1 s, 60 x the frame's
cost), so the console's share of the app's time is at most 1/60 (1.7%).

Run: ``python -m bench.web_console [--quick]``.
"""

from __future__ import annotations

import functools
import itertools
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import httpx
import trio

import lanes
import lanes.web
from lanes.web._app import COST_FACTOR

from ._harness import Options, Result, median, print_table

NAME = "web_console"
SYSTEMS = 10_000
QUICK_SYSTEMS = 500
SECONDS = 4.0
QUICK_SECONDS = 1.0
RATE = 2_000  # commands a second
ROUNDS = 3
RENDER_REPEAT = 5

CLIENT = """
import sys, httpx
with httpx.stream("GET", sys.argv[1], timeout=None) as response:
    for line in response.iter_lines():
        if line.startswith("event:"):
            print("event", flush=True)
"""


async def _noop() -> None:
    pass


async def _load(systems: list[lanes.LaneSystem], seconds: float) -> None:
    """Submit ``RATE`` no-op commands a second, round robin over ``systems`` (catching up
    after any stall, so every phase does the same work)."""
    turn = itertools.cycle(systems)
    start = trio.current_time()
    total = int(RATE * seconds)
    submitted = 0
    while submitted < total:
        due = min(total, int((trio.current_time() - start) * RATE))
        for _ in range(due - submitted):
            next(turn).submit_nowait("query", _noop)
        submitted = max(submitted, due)
        await trio.sleep(0.01)


async def _cpu(systems: list[lanes.LaneSystem], seconds: float) -> float:
    """CPU seconds per wall second of the whole process while ``_load`` runs."""
    wall, cpu = time.perf_counter(), time.process_time()
    await _load(systems, seconds)
    return (time.process_time() - cpu) / (time.perf_counter() - wall)


async def _phase(phase: str, systems: list[lanes.LaneSystem], seconds: float) -> tuple[float, int]:
    """One measurement of ``phase``; returns (CPU per wall second, events the page got)."""
    if phase == "no console":
        return await _cpu(systems, seconds), 0
    console = lanes.web.console()
    for index, system in enumerate(systems):
        console.add(system, label=f"session-{index:05d}")
    events = 0
    try:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(lanes.web.serve_console, console, 0)
            if phase == "console, idle":
                cpu = await _cpu(systems, seconds)
            else:
                url = server.url + "api/events"
                client = functools.partial(
                    trio.run_process,
                    [sys.executable, "-c", CLIENT, url],
                    stdout=subprocess.PIPE,
                    check=False,
                )
                process = await nursery.start(client)
                assert process.stdout is not None
                await process.stdout.receive_some(100)  # the first frame arrived
                cpu = await _cpu(systems, seconds)
                process.kill()
                events = console.streams
            nursery.cancel_scope.cancel()
    finally:
        for system in systems:
            console.remove(system)
    return cpu, events


async def _timed(repeat: int, fn: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return median(times)


async def _render(systems: list[lanes.LaneSystem], repeat: int) -> list[dict[str, object]]:
    console = lanes.web.console()
    for index, system in enumerate(systems):
        console.add(system, label=f"session-{index:05d}")
    for index, system in enumerate(systems[: len(systems) // 10]):
        for _ in range(index % 5):  # some sessions have a backlog, so sorting has work to do
            system.pause("prompt")
            system.submit_nowait("prompt", _noop)
    count = len(systems)

    async def baseline() -> None:
        for system in systems:
            system.statistics()

    rows: list[dict[str, object]] = []
    base = await _timed(repeat, baseline)
    rows.append({"figure": f"baseline: statistics() of {count} systems", "seconds": base})
    transport = httpx.ASGITransport(app=console)
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        cases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("the page (GET /, 50 systems by depth)", lambda: client.get("/")),
            (
                "a page of systems as JSON, by wait",
                lambda: client.get("/api/systems", params={"sort": "wait"}),
            ),
            ("a search (q=session-0999)", lambda: client.get("/api/systems?q=session-0999")),
            (
                "one events frame (overview, page, a system)",
                lambda: console.frame("", "depth", 0, 50, "s1", "prompt"),
            ),
        ]
        for figure, fn in cases:
            answer = await fn()
            if isinstance(answer, httpx.Response):
                assert answer.status_code == 200, answer.text
            seconds = await _timed(repeat, fn)
            rows.append(
                {
                    "figure": f"{figure}, {count} systems",
                    "seconds": seconds,
                    "ratio": seconds / base,
                }
            )
    for system in systems[: len(systems) // 10]:
        await system.cancel_lane("prompt")
        system.resume("prompt")
    return rows


async def _measure(count: int, seconds: float, rounds: int) -> tuple[list[dict[str, object]], ...]:
    phases = ["no console", "console, idle", "console, page open"]
    async with AsyncExitStack() as stack:
        systems = [await stack.enter_async_context(lanes.open_lane_system()) for _ in range(count)]
        for system in systems:
            await system.run("query", _noop)
        samples: dict[str, list[float]] = {phase: [] for phase in phases}
        streams: list[int] = []
        for round_ in range(rounds):
            order = phases[round_ % 3 :] + phases[: round_ % 3]
            for phase in order:
                cpu, open_streams = await _phase(phase, systems, seconds)
                samples[phase].append(cpu)
                if phase == "console, page open":
                    streams.append(open_streams)
        assert all(streams), "the page's events stream was not open while measuring"
        base = median(samples["no console"])
        cpu_rows: list[dict[str, object]] = [
            {
                "figure": phase,
                "cpu_per_second": median(samples[phase]),
                "ratio": median(samples[phase]) / base,
            }
            for phase in phases
        ]
        render_rows = await _render(systems, RENDER_REPEAT)
        for system in systems:
            system.close_now()
    return cpu_rows, render_rows


def run(options: Options) -> Result:
    count = QUICK_SYSTEMS if options.quick else SYSTEMS
    seconds = QUICK_SECONDS if options.quick else SECONDS
    rounds = 1 if options.quick else ROUNDS
    cpu_rows, render_rows = trio.run(_measure, count, seconds, rounds)
    result = Result(NAME, cpu_rows + render_rows)
    print_table(
        f"app CPU with {count} sessions under {RATE} commands/s "
        f"(median of {rounds} x {seconds:g} s, order rotated)",
        ["phase", "CPU s / s", "x no console"],
        [
            [row["figure"], f"{row['cpu_per_second']:.3f}", f"{row['ratio']:.3f}"]
            for row in cpu_rows
        ],
    )
    print_table(
        f"render times at {count} sessions (median of {RENDER_REPEAT})",
        ["figure", "ms", "x baseline"],
        [
            [
                row["figure"],
                f"{float(row['seconds']) * 1000:.1f}",  # type: ignore[arg-type]
                f"{row['ratio']:.2f}" if "ratio" in row else "1",
            ]
            for row in render_rows
        ],
    )
    frame = next(row for row in render_rows if str(row["figure"]).startswith("one events"))
    cost = float(frame["seconds"])  # type: ignore[arg-type]
    period = max(1.0, COST_FACTOR * cost)  # what the events stream waits after such a frame
    share = cost / period
    print(
        f"  an open page: a frame of {cost * 1000:.0f} ms every {period:.1f} s, "
        f"{share:.2%} of the app's time"
    )
    result.rows.append({"figure": "open page: frame period (s)", "seconds": period})
    opened = next(row for row in cpu_rows if row["figure"] == "console, page open")
    result.target(
        "app CPU with a page open, x no console",
        float(opened["ratio"]),  # type: ignore[arg-type]
        1.02,
    )
    result.target("open page: console frames, share of the app's time", share, 0.02)
    page = next(row for row in render_rows if str(row["figure"]).startswith("the page"))
    result.target("the page at 10,000 sessions (s)", float(page["seconds"]), 1.0, unit="s")  # type: ignore[arg-type]
    return result


if __name__ == "__main__":
    run(Options(quick="--quick" in sys.argv[1:]))
