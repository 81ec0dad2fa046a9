"""cancel_latency: "stop this turn" -> acknowledged, with 10 and 10,000 commands queued.

One session runs a long turn (a command waiting forever) with N more turns queued behind it
in its lane. A stop is ``await system.cancel_lane("prompt", queued=False)``: it returns once
the running turn has exited (acknowledged); the next queued turn then starts, and one more
is queued so N stays constant. The latency of one stop is ``time.perf_counter()`` around
that call (real clock). The same is measured with other idle sessions around it, and for
the whole lane (``cancel_lane("prompt")``: the queue is dropped too, which is O(N) by
nature).

Baseline, in the same run: the plain-Trio equivalent, a worker task that runs the session's
turns from a deque, each in a ``CancelScope`` of its own; a stop cancels the scope and waits
for an event the worker sets once the scope has exited.

Run with ``python -m bench.cancel_latency [--quick]``. It prints figures; it is no test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable

import trio

import lanes

LANES = (lanes.LaneConfig("prompt", 5, inbox_size=100_000),)


def summary(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in microseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1e6, p99 * 1e6


class Turn:
    """A turn that runs until cancelled, and says when it started."""

    def __init__(self) -> None:
        self.started = trio.Event()

    async def __call__(self) -> None:
        self.started.set()
        await trio.sleep_forever()


async def lanes_stops(queued: int, reps: int, sessions: int, whole_lane: bool) -> list[float]:
    samples: list[float] = []
    async with trio.open_nursery() as nursery:
        idle_systems: list[lanes.LaneSystem] = []
        done = trio.Event()

        async def idle_session(task_status: trio.TaskStatus[None]) -> None:
            async with lanes.open_lane_system(LANES) as system:
                await system.submit("prompt", Turn())
                task_status.started()
                idle_systems.append(system)
                await done.wait()
                system.close_now()

        for _ in range(sessions - 1):
            await nursery.start(idle_session)
        async with lanes.open_lane_system(LANES) as system:
            turns = deque(Turn() for _ in range(queued + 1))
            for turn in turns:
                system.submit_nowait("prompt", turn)
            for _ in range(reps):
                running = turns.popleft()
                await running.started.wait()
                start = time.perf_counter()
                await system.cancel_lane("prompt", queued=whole_lane)
                samples.append(time.perf_counter() - start)
                if whole_lane:  # the queue went too: queue it again (not timed)
                    turns = deque(Turn() for _ in range(queued + 1))
                    for turn in turns:
                        system.submit_nowait("prompt", turn)
                else:
                    turn = Turn()
                    turns.append(turn)
                    system.submit_nowait("prompt", turn)
            system.close_now()
        done.set()
    return samples


async def plain_stops(queued: int, reps: int) -> list[float]:
    """The plain-Trio twin: a deque of turns, one CancelScope per running turn."""
    samples: list[float] = []
    pending: deque[Callable[[], Awaitable[None]]] = deque()
    current: list[trio.CancelScope] = []
    acknowledged = trio.Event()
    started = trio.Event()
    more = trio.Event()

    async def worker() -> None:
        nonlocal acknowledged, started, more
        while True:
            while not pending:
                more = trio.Event()
                await more.wait()
            turn = pending.popleft()
            with trio.CancelScope() as scope:
                current[:] = [scope]
                started.set()
                await turn()
            acknowledged.set()

    async def forever() -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        pending.extend(forever for _ in range(queued + 1))
        nursery.start_soon(worker)
        for _ in range(reps):
            await started.wait()
            started = trio.Event()
            acknowledged = trio.Event()
            start = time.perf_counter()
            current[0].cancel()
            await acknowledged.wait()
            samples.append(time.perf_counter() - start)
            pending.append(forever)
            more.set()
        nursery.cancel_scope.cancel()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cancel_latency")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    quick = parser.parse_args().quick
    reps = 100 if quick else 500
    whole_reps = 10 if quick else 30
    print("cancel -> acknowledged (us), p50 / p99; ratio = trio-lanes p99 / plain Trio p99")
    print(f"{'figure':<44} {'trio-lanes':>18} {'plain Trio':>18} {'ratio':>6}")
    for queued in (10, 10_000):
        plain = summary(trio.run(plain_stops, queued, reps))
        rows = [
            (
                f"stop the turn, {queued} queued",
                trio.run(lanes_stops, queued, reps, 1, False),
            ),
            (
                f"stop the turn, {queued} queued, 1000 sessions",
                trio.run(lanes_stops, queued, reps, 1000, False),
            ),
        ]
        for label, samples in rows:
            ours = summary(samples)
            print(
                f"{label:<44} {ours[0]:8.1f} / {ours[1]:7.1f} {plain[0]:8.1f} / {plain[1]:7.1f}"
                f" {ours[1] / plain[1]:6.2f}"
            )
        whole = summary(trio.run(lanes_stops, queued, whole_reps, 1, True))
        print(
            f"{f'cancel the whole lane, {queued} queued':<44} {whole[0]:8.1f} / {whole[1]:7.1f}"
            f" {'(no twin)':>18}"
        )


if __name__ == "__main__":
    main()
