"""Process lanes: CPU-bound work in worker processes while the event loop stays free.

Run it with ``python examples/process_lanes.py [LIMIT]`` (``pip install 'trio-lanes[process]'``).

A lane with ``executor="process"`` runs plain synchronous functions in trio-parallel worker
processes. The workers are spawned: they import this file again (as ``__mp_main__``), so
everything that starts the lane system sits under ``if __name__ == "__main__":`` and the
functions they run are defined at module level.
"""

from __future__ import annotations

import itertools
import math
import sys

import trio

import lanes


def count_primes(low: int, high: int) -> int:
    """How many primes lie in [low, high): pure Python, CPU-bound, holds the GIL."""
    return sum(1 for n in range(max(low, 2), high) if _is_prime(n))


def _is_prime(n: int) -> bool:
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def check_positive(n: int) -> int:
    if n <= 0:
        raise ValueError(f"expected a positive number, got {n}")
    return n


def runaway() -> None:
    """A bug: it never returns. Only killing its worker process stops it."""
    while True:
        pass


async def heartbeat() -> int:
    await trio.sleep(0.01)
    return 1


async def main(limit: int = 200_000) -> None:
    configs = [
        lanes.LaneConfig("io", 0, max_concurrency=10),
        lanes.LaneConfig("cpu", 1, max_concurrency=2, executor="process", timeout=60.0),
    ]
    async with lanes.open_lane_system(configs) as system:
        # Four chunks of a prime count, two at a time, each in a worker process.
        bounds = [limit * i // 4 for i in range(5)]
        handles = [
            await system.submit("cpu", count_primes, low, high)
            for low, high in itertools.pairwise(bounds)
        ]
        # Meanwhile the event loop is free: the io lane keeps answering.
        beats = 0
        while not all(handle.done() for handle in handles):
            beats += await system.run("io", heartbeat)
        total = sum([await handle.result() for handle in handles])
        print(f"primes below {limit}: {total} (the io lane ran {beats} commands meanwhile)")

        # A command that never returns: its timeout kills the worker, the slot comes back.
        try:
            await system.run("cpu", runaway, timeout=0.5)
        except lanes.CommandTimeout as exc:
            print(f"runaway: {exc}")

        # An exception raised in the worker is the command's failure (and its __cause__).
        try:
            await system.run("cpu", check_positive, -1)
        except lanes.CommandFailed as exc:
            print(f"check_positive: {exc.__cause__!r}")

        cpu = system.statistics().lanes["cpu"]
        print(f"cpu lane: completed={cpu.completed} failed={cpu.failed} timed_out={cpu.timed_out}")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
