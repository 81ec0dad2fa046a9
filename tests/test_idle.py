"""An idle lane system costs no CPU: no task wakes up while nothing is pending or running."""

from __future__ import annotations

import contextlib

import pytest
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
        await system.run("query", noop)
        pool = system._core.pools["query"]  # (made with the lane's first command)
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
        await system.run("query", noop)
        pool = system._core.pools["query"]  # (made with the lane's first command)
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


async def test_workers_are_reaped_reap_after_the_last_command_not_later(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Commands now and then while the reap timer runs: it counts from the last idle moment.

    (A timer re-armed from the moment it found the system had been busy in between reaped
    up to twice REAP_AFTER after the last command: an agent server saw its idle sessions
    keep their workers.)
    """
    async with lanes.open_lane_system() as system:
        await system.run("query", noop)
        pool = system._core.pools["query"]
        for _ in range(4):
            await system.run("query", noop)
            await trio.sleep(REAP_AFTER * 0.6)  # idle, but not for long enough
        assert pool.parked == 1
        await system.run("query", noop)
        last = trio.current_time()
        await trio.sleep(REAP_AFTER * 0.99)
        assert pool.parked == 1
        await trio.sleep(REAP_AFTER * 0.02)
        await trio.testing.wait_all_tasks_blocked()
        assert pool.workers == 0
        assert trio.current_time() - last < REAP_AFTER * 1.02


def system_tasks(system: lanes.LaneSystem) -> list[str]:
    """The names of the tasks the system's own nursery holds (its lanes, its timer task)."""
    nursery = system._lane_nursery
    assert nursery is not None
    return [task.name for task in nursery.child_tasks]


async def test_an_idle_system_holds_no_task_of_its_own(autojump_clock: trio.abc.Clock) -> None:
    """Workers, the timer task: each comes while needed and goes once the system is idle."""
    limit = lanes.SharedLimit(1)
    lane = lanes.LaneConfig("query", 2, max_concurrency=2, shared_limit=limit)
    retrying = lanes.LaneConfig("retry", 3, retry=lanes.RetryPolicy.fixed(1, 0.5))
    attempts = 0

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ValueError("first attempt fails")

    async with lanes.open_lane_system([lane, retrying]) as system:
        assert system_tasks(system) == []  # never used
        first = await system.submit("query", trio.sleep, 1)
        second = await system.submit("query", noop)  # waits for the shared slot
        later = await system.submit("query", noop, delay=2)  # a timer
        await system.run("retry", flaky)  # a retry after its backoff
        await first.result()
        await second.result()
        await later.result()
        assert attempts == 2
        await trio.testing.wait_all_tasks_blocked()
        assert system_tasks(system) != []  # parked workers, the reap timer
        await trio.sleep(REAP_AFTER + 0.1)
        await trio.testing.wait_all_tasks_blocked()
        assert system_tasks(system) == []
        # And it comes back on demand: a delayed command on the idle system still runs.
        handle = await system.submit("query", noop, delay=3)
        await trio.sleep(3)
        await handle.result()


async def _held_per_idle_system(count: int, commands: int, *, traced: bool) -> float:
    """What each of ``count`` one-lane systems holds once idle after ``commands`` commands:
    bytes (``traced``: measured with tracemalloc, slow) or Python memory blocks."""
    import gc
    import sys
    import tracemalloc

    config = lanes.LaneConfig("prompt", 5, max_concurrency=1)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(lanes.open_lane_system([config]))  # warm caches
        gc.collect()
        if traced:
            tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot() if traced else None
            blocks = sys.getallocatedblocks()
            systems = [
                await stack.enter_async_context(lanes.open_lane_system([config]))
                for _ in range(count)
            ]
            for system in systems:
                for _ in range(commands):
                    await system.run("prompt", noop)
            await trio.sleep(3 * REAP_AFTER)  # idle: workers reaped, memory handed back
            gc.collect()
            if before is None:
                return (sys.getallocatedblocks() - blocks) / count
            after = tracemalloc.take_snapshot()
        finally:
            if traced:
                tracemalloc.stop()
        held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        return held / count


async def test_an_idle_system_gives_back_what_its_commands_used(
    autojump_clock: trio.abc.Clock,
) -> None:
    # What an idle session holds does not grow with the commands it ran: queues, pending
    # latency samples and timer events are handed back when it goes idle; what stays is
    # bounded (the latest RECENT_STARTS waits in an array, and the histograms' buckets).
    one = await _held_per_idle_system(20, 1, traced=False)
    many = await _held_per_idle_system(10, 500, traced=False)
    more = await _held_per_idle_system(10, 1000, traced=False)
    assert many < one + 32, (one, many)  # blocks (a float sample is one)
    assert abs(more - many) < 8, (many, more)
    size = await _held_per_idle_system(20, 1, traced=True)
    # bytes: the whole one-lane system, nursery and all (one record per lane, no per-lane
    # dicts, no suspended generator, no dead-letter queue, schedules' owner or empty
    # histogram buckets until used; about 6.5 KB on CPython 3.11, 7.3 KB and 11 KB before)
    assert size < 7 * 1024, size


class Spawns(trio.abc.Instrument):
    """Counts the tasks spawned, by name."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.name)


async def test_a_busy_systems_grants_do_not_start_a_task_each(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A shared limit's grants wake a busy system's timer task; it is not started anew."""
    limit = lanes.SharedLimit(1)
    lane = lanes.LaneConfig("query", 2, shared_limit=limit)
    spawns = Spawns()
    async with lanes.open_lane_system([lane]) as a, lanes.open_lane_system([lane]) as b:
        trio.lowlevel.add_instrument(spawns)
        handles = []
        for _ in range(10):  # the two systems take turns on the one slot
            handles.append(await a.submit("query", trio.sleep, 1))
            handles.append(await b.submit("query", trio.sleep, 1))
        for handle in handles:
            await handle.result()
        trio.lowlevel.remove_instrument(spawns)
        assert trio.current_time() == pytest.approx(20)
        timers = [name for name in spawns.names if name.endswith("Dispatcher.run")]
        assert len(timers) <= 2, spawns.names  # once per system, not once per grant


async def test_a_reap_and_a_quiet_completion_make_no_decision_round(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A lane on a shared limit: its submit decides (the limit's slot is taken in a round),
    but the completion that leaves nothing pending, and the reap after it, decide nothing."""
    limit = lanes.SharedLimit(2)
    lane = lanes.LaneConfig("query", 2, shared_limit=limit)
    async with lanes.open_lane_system([lane]) as system:
        dispatcher = system.dispatcher
        assert dispatcher is not None
        for _ in range(3):
            before = dispatcher.rounds
            await system.run("query", trio.sleep, 1)
            assert dispatcher.rounds == before + 1  # the submit's round only
            before = dispatcher.rounds
            await trio.sleep(REAP_AFTER + 0.1)
            await trio.testing.wait_all_tasks_blocked()
            assert system_tasks(system) == []  # reaped...
            assert dispatcher.rounds == before  # ...without a round
        # What a quiet completion leaves owed is decided with the next change: the lane
        # (one at a time) still runs each of three commands back to back.
        began = trio.current_time()
        handles = [await system.submit("query", trio.sleep, 1) for _ in range(3)]
        for handle in handles:
            await handle.result()
        assert trio.current_time() - began == pytest.approx(3)


async def test_a_lane_has_a_worker_pool_only_once_it_has_had_a_command(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An unused lane allocates no pool; its first command makes it, in the system's nursery."""
    async with lanes.open_lane_system() as system:  # six lanes
        assert system._core.pools == {}
        await system.run("query", noop)
        assert list(system._core.pools) == ["query"]
        assert system._core.pools["query"]._parent is system._lane_nursery
        await system.run("query", noop)
        assert list(system._core.pools) == ["query"]  # the same pool, kept
    assert system._core.new_pool(system._core.lanes["control"]) is None  # closed: none


async def test_a_busy_lane_has_no_nursery_of_its_own(autojump_clock: trio.abc.Clock) -> None:
    """A lane's workers are tasks of the system's nursery: busy, a lane costs its workers."""
    lane = lanes.LaneConfig("query", 2, max_concurrency=2)
    async with lanes.open_lane_system([lane]) as system:
        first = await system.submit("query", trio.sleep, 1)
        second = await system.submit("query", trio.sleep, 1)
        await trio.testing.wait_all_tasks_blocked()
        nursery = system._lane_nursery
        assert nursery is not None
        workers = [task for task in nursery.child_tasks if task.name == "lane:query"]
        assert len(workers) == 2
        assert all(task.child_nurseries == [] for task in workers)
        await first.result()
        await second.result()


async def test_a_finished_command_lets_go_of_its_arguments(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The handle of a finished command does not keep what it was called with alive (a
    session's websocket, a prompt): only its outcome."""
    import gc
    import weakref

    class Payload:
        pass

    async def body(payload: Payload) -> int:
        await trio.sleep(1)
        return 7

    async with lanes.open_lane_system() as system:
        payload = Payload()
        alive = weakref.ref(payload)
        handle = await system.submit("query", body, payload)
        del payload
        assert alive() is not None  # pending: it is needed
        assert await handle.result() == 7
        gc.collect()
        assert alive() is None  # finished: let go, though the handle is held
        assert handle.status is lanes.CommandStatus.DONE
