"""The closed-loop workload and the systems it runs on.

Workload: ``n`` trivial async commands submitted by ``clients`` concurrent clients, each
awaiting its command's result before it submits the next one. Each function below runs it in
a fresh event loop and returns the wall-clock seconds the clients took (opening and closing
the system are not timed).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

import lanes

from ._lean import LeanScheduler, LowLevelScheduler

CLIENTS = 100
WORKERS = 10  # the plain trio and asyncio baselines' worker tasks


async def trivial(x: int) -> int:
    """The command every throughput workload runs: no checkpoint, returns its argument."""
    return x


def shares(n: int, clients: int) -> list[int]:
    """How many of ``n`` commands each client submits."""
    return [n // clients + (1 if c < n % clients else 0) for c in range(clients)]


@dataclass(frozen=True)
class Run:
    """One timed run of the workload."""

    seconds: float
    rounds: int | None = None  # dispatcher decision rounds, when the system exposes them
    cpu_seconds: float | None = None  # process CPU time over the same interval

    def cpu_share(self) -> float | None:
        """CPU time over wall time: well below 1 means the machine took the CPU away."""
        return None if self.cpu_seconds is None else self.cpu_seconds / self.seconds


# -- trio-lanes ----------------------------------------------------------------------------------


def lanes_run(
    configs: Sequence[lanes.LaneConfig],
    n: int,
    *,
    clients: int = CLIENTS,
    max_concurrency: int | None = None,
    instruments: Sequence[trio.abc.Instrument] = (),
) -> Run:
    """The workload on a lane system; client ``c`` sends its ``k``-th command to lane c+k."""
    return trio.run(
        _lanes_main, tuple(configs), n, clients, max_concurrency, instruments=instruments
    )


async def _lanes_main(
    configs: tuple[lanes.LaneConfig, ...], n: int, clients: int, cap: int | None
) -> Run:
    names = [c.name for c in configs]
    done = [0]

    async def client(offset: int, count: int, system: lanes.LaneSystem) -> None:
        width = len(names)
        for k in range(count):
            handle = await system.submit(names[(offset + k) % width], trivial, k)
            if await handle.result() != k:
                raise AssertionError("wrong result")
        done[0] += count

    async with lanes.open_lane_system(configs, max_concurrency=cap) as system:
        rounds_before = _rounds(system)
        start, cpu = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as nursery:
            for c, count in enumerate(shares(n, clients)):
                nursery.start_soon(client, c, count, system)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        rounds_after = _rounds(system)
    if done[0] != n:
        raise AssertionError(f"{done[0]} of {n} commands completed")
    rounds = None if rounds_before is None or rounds_after is None else rounds_after - rounds_before
    return Run(seconds, rounds, cpu)


def _rounds(system: lanes.LaneSystem) -> int | None:
    """The dispatcher's decision-round counter (an internal; None if it is gone)."""
    rounds = getattr(getattr(system, "dispatcher", None), "rounds", None)
    return rounds if isinstance(rounds, int) else None


# -- plain trio ----------------------------------------------------------------------------------

Request = tuple[Callable[..., Awaitable[Any]], tuple[Any, ...], trio.MemorySendChannel[Any]]


def trio_run(
    n: int,
    *,
    clients: int = CLIENTS,
    workers: int = WORKERS,
    instruments: Sequence[trio.abc.Instrument] = (),
) -> Run:
    """The workload on plain trio: workers on one memory channel, a one-shot reply channel."""
    return trio.run(_trio_main, n, clients, workers, instruments=instruments)


async def _trio_worker(requests: trio.MemoryReceiveChannel[Request]) -> None:
    async for fn, args, reply in requests:
        reply.send_nowait(await fn(*args))


async def _trio_main(n: int, clients: int, workers: int) -> Run:
    send, receive = trio.open_memory_channel[Request](math.inf)
    done = [0]

    async def client(count: int) -> None:
        for k in range(count):
            reply_send, reply_receive = trio.open_memory_channel[Any](1)
            await send.send((trivial, (k,), reply_send))
            if await reply_receive.receive() != k:
                raise AssertionError("wrong result")
        done[0] += count

    async with trio.open_nursery() as outer:
        for _ in range(workers):
            outer.start_soon(_trio_worker, receive)
        start, cpu = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as nursery:
            for count in shares(n, clients):
                nursery.start_soon(client, count)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        send.close()
    if done[0] != n:
        raise AssertionError(f"{done[0]} of {n} commands completed")
    return Run(seconds, None, cpu)


# -- the lean priority scheduler (bench/_lean.py): the limit ---------------------------------------

PRIORITIES = 6  # as many as the default lanes; client c's k-th command gets priority (c+k) mod 6


def lean_run(
    n: int,
    *,
    clients: int = CLIENTS,
    workers: int = WORKERS,
    lowlevel: bool = False,
    instruments: Sequence[trio.abc.Instrument] = (),
) -> Run:
    """The workload on the lean priority scheduler (``lowlevel``: its trio.lowlevel flavour)."""
    return trio.run(_lean_main, n, clients, workers, lowlevel, instruments=instruments)


async def _lean_main(n: int, clients: int, workers: int, lowlevel: bool) -> Run:
    scheduler: LeanScheduler | LowLevelScheduler = (
        LowLevelScheduler(PRIORITIES) if lowlevel else LeanScheduler(PRIORITIES)
    )
    done = [0]

    async def client(offset: int, count: int) -> None:
        for k in range(count):
            waiter = scheduler.submit((offset + k) % PRIORITIES, trivial, k)
            if await waiter.result() != k:
                raise AssertionError("wrong result")
        done[0] += count

    async with trio.open_nursery() as outer:
        for _ in range(workers):
            outer.start_soon(scheduler.worker)
        start, cpu = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as nursery:
            for c, count in enumerate(shares(n, clients)):
                nursery.start_soon(client, c, count)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        outer.cancel_scope.cancel()
    if done[0] != n:
        raise AssertionError(f"{done[0]} of {n} commands completed")
    return Run(seconds, None, cpu)


# -- asyncio -------------------------------------------------------------------------------------


def asyncio_run(
    n: int, *, clients: int = CLIENTS, workers: int = WORKERS, priorities: int = 6
) -> Run:
    """The workload on asyncio: a PriorityQueue, workers, one future per command."""
    return asyncio.run(_asyncio_main(n, clients, workers, priorities))


async def _asyncio_main(n: int, clients: int, workers: int, priorities: int) -> Run:
    queue: asyncio.PriorityQueue[
        tuple[int, int, Callable[..., Awaitable[Any]], tuple[Any, ...], asyncio.Future[Any]]
    ] = asyncio.PriorityQueue()
    seq = itertools.count()
    loop = asyncio.get_running_loop()
    done = [0]

    async def worker() -> None:
        while True:
            _, _, fn, args, future = await queue.get()
            future.set_result(await fn(*args))

    async def client(offset: int, count: int) -> None:
        for k in range(count):
            future: asyncio.Future[Any] = loop.create_future()
            await queue.put(((offset + k) % priorities, next(seq), trivial, (k,), future))
            if await future != k:
                raise AssertionError("wrong result")
        done[0] += count

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(c, count) for c, count in enumerate(shares(n, clients))))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if done[0] != n:
        raise AssertionError(f"{done[0]} of {n} commands completed")
    return Run(seconds, None, cpu)
