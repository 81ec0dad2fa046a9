"""An idle lane system costs no CPU: no task wakes up while nothing is pending or running."""

from __future__ import annotations

import contextlib

import trio
import trio.testing

import lanes
from lanes.storage import MemoryStorage

from .helpers import noop


class StepCounter(trio.abc.Instrument):
    """Counts task steps of every task except the ones it is told to ignore."""

    def __init__(self) -> None:
        self.steps = 0
        self.ignore: set[trio.lowlevel.Task] = set()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task not in self.ignore:
            self.steps += 1


async def steps_while_sleeping(seconds: float) -> int:
    """Task steps of every other task while this one sleeps ``seconds``."""
    counter = StepCounter()
    counter.ignore.add(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(counter)
    try:
        await trio.sleep(seconds)
    finally:
        trio.lowlevel.remove_instrument(counter)
    return counter.steps


async def test_a_thousand_idle_systems_never_wake(autojump_clock: trio.abc.Clock) -> None:
    async with contextlib.AsyncExitStack() as stack:
        systems = [await stack.enter_async_context(lanes.open_lane_system()) for _ in range(1000)]
        # Use each once (worker tasks come and go), with a delayed command and a retry timer
        # that have finished, so every code path that arms timers has run.
        for system in systems[:50]:
            await system.run("query", noop)
            await system.run("query", noop, delay=1)
        await trio.sleep(5)
        assert await steps_while_sleeping(10) == 0


async def test_an_idle_durable_system_never_wakes(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(storage=MemoryStorage(), commands=[]) as system:
        await system.run("query", noop, durable=False)
        await trio.sleep(1)
        assert await steps_while_sleeping(10) == 0
