"""An idle lane system costs no CPU: no task wakes up while nothing is pending or running."""

from __future__ import annotations

import contextlib

import trio
import trio.testing

import lanes
from lanes._dispatcher import REAP_AFTER
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
        await trio.sleep(REAP_AFTER + 1)  # its parked worker is reaped after REAP_AFTER
        assert await steps_while_sleeping(10) == 0


async def test_parked_workers_outlive_the_last_command_by_reap_after(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A command soon after the last one reuses its parked worker; then the pool is reaped."""
    async with lanes.open_lane_system() as system:
        pool = system._core.pools["query"]
        await system.run("query", noop)
        await trio.testing.wait_all_tasks_blocked()
        assert pool.parked == 1  # kept for a command that comes soon
        await trio.sleep(REAP_AFTER / 2)
        await system.run("query", noop)  # reuses it: no new worker task
        assert pool.workers == 1
        await trio.sleep(REAP_AFTER * 0.75)  # idle since the second: not reaped yet
        assert pool.parked == 1
        await trio.sleep(REAP_AFTER)
        await trio.testing.wait_all_tasks_blocked()
        assert pool.workers == pool.parked == 0  # idle for REAP_AFTER: reaped
        assert trio.lowlevel.current_statistics().seconds_to_next_deadline == float("inf")


async def test_a_system_busy_when_the_reap_timer_fires_keeps_its_workers(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system() as system:
        pool = system._core.pools["query"]
        await system.run("query", noop)
        release = trio.Event()

        async def hold() -> None:
            await release.wait()

        handle = await system.submit("query", hold)
        await trio.sleep(REAP_AFTER * 2)
        assert pool.workers == 1  # busy all along
        release.set()
        await handle.result()
        await trio.sleep(REAP_AFTER / 2)
        assert pool.parked == 1
        await trio.sleep(REAP_AFTER)
        await trio.testing.wait_all_tasks_blocked()
        assert pool.workers == 0
