"""``python -m lanes demo``: an agent session in miniature on the default lanes."""

from __future__ import annotations

import random

import trio

from . import events as ev
from ._system import LaneSystem, open_lane_system

__all__ = ["run_demo"]

LLM_SECONDS = 3.0
INTERRUPT_AT = 1.0


async def _llm_call(turn: int) -> str:
    await trio.sleep(LLM_SECONDS)  # a slow model call
    return f"answer #{turn}"


async def _query(n: int, seconds: float) -> int:
    await trio.sleep(seconds)  # a quick tool or page fetch
    return n


async def _user_interrupt(system: LaneSystem) -> int:
    return await system.cancel_lane("prompt")


async def _print_events(
    system: LaneSystem,
    start: float,
    out: list[str],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    wanted = (ev.Started, ev.Completed, ev.Cancelled)
    async with system.subscribe(*wanted) as stream:
        task_status.started()
        async for event in stream:
            if event.lane in ("prompt", "control") or isinstance(event, ev.Cancelled):
                verb = type(event).__name__.lower()
                at = event.timestamp - system._core.wall_offset - start  # wall -> Trio time
                _say(out, at, f"{event.lane:<8} {verb:<9} {event.command_id}")


def _say(out: list[str], at: float, text: str) -> None:
    line = f"{at:7.3f}s  {text}"
    out.append(line)
    print(line, flush=True)


async def run_demo(seed: int = 1) -> list[str]:
    """Run the demo, print what happens, and return the printed lines."""
    rng = random.Random(seed)
    out: list[str] = []
    async with open_lane_system() as system, trio.open_nursery() as watchers:
        start = trio.current_time()
        await watchers.start(_print_events, system, start, out)
        prompts = [await system.submit("prompt", _llm_call, turn) for turn in range(6)]
        queries = [
            await system.submit("query", _query, n, rng.uniform(0.05, 0.3)) for n in range(30)
        ]
        _say(
            out,
            0.0,
            f"submitted 6 LLM calls ({LLM_SECONDS:.0f} s each; prompt lane runs 2 "
            "at a time) and 30 quick queries",
        )
        await trio.sleep(INTERRUPT_AT)
        _say(out, trio.current_time() - start, "user presses stop: control command submitted")
        submitted = trio.current_time()
        handle = await system.submit("control", _user_interrupt, system)
        cancelled = await handle.result()
        took = (trio.current_time() - submitted) * 1000
        _say(
            out,
            trio.current_time() - start,
            f"control cancelled {cancelled} prompt commands in {took:.2f} ms",
        )
        for q in queries:
            await q.result()
        _say(out, trio.current_time() - start, "all 30 queries answered meanwhile")
        watchers.cancel_scope.cancel()
    assert all(p.status == "cancelled" for p in prompts)
    _report(system, out)
    return out


def _report(system: LaneSystem, out: list[str]) -> None:
    stats = system.statistics()
    header = f"{'lane':<8} {'prio':>4} {'done':>5} {'cancelled':>9} {'failed':>6}"
    lines = ["", header, "-" * len(header)]
    for name, lane in stats.lanes.items():
        lines.append(
            f"{name:<8} {lane.priority:>4} {lane.completed:>5} {lane.cancelled:>9} {lane.failed:>6}"
        )
    for line in lines:
        out.append(line)
        print(line)
