"""distributed: throughput of lanes on Redis with 1, 2 and 4 worker processes.

Workload: ``n`` trivial ``@lanes.command`` objects submitted by 100 concurrent clients across
the six default lanes, each awaiting its result. Systems, measured in the same run: the
in-process lane system (baseline), and ``open_lane_system(backend=RedisBackend(url))`` with
1, 2 and 4 ``lanes worker`` processes on a private redis-server (no persistence). Starting
the workers is not timed. There is no target: on a 2-core machine the workers, the
submitter and Redis share two cores, so this shows the cost of going through Redis (a few
round trips per command) more than any scaling.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import attrs
import trio

import lanes
from lanes import distributed

from ._harness import Options, Result, interleaved, median, print_table
from ._workloads import CLIENTS, Run, shares

NAME = "distributed"
COMMANDS = 3_000
QUICK_COMMANDS = 300
WORKER_COUNTS = (1, 2, 4)
ROOT = Path(__file__).resolve().parent.parent


@lanes.command(name="bench-distributed-trivial")
@attrs.define
class Trivial:
    x: int

    async def execute(self) -> int:
        return self.x


async def _clients(system: lanes.LaneSystem | distributed.RemoteLaneSystem, n: int) -> float:
    names = [c.name for c in lanes.DEFAULT_LANES]

    async def client(offset: int, count: int) -> None:
        for k in range(count):
            handle = await system.submit(names[(offset + k) % len(names)], Trivial(k))
            if await handle.result() != k:
                raise AssertionError("wrong result")

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for c, count in enumerate(shares(n, CLIENTS)):
            nursery.start_soon(client, c, count)
    return time.perf_counter() - start


def in_process(n: int) -> Run:
    async def main() -> float:
        async with lanes.open_lane_system() as system:
            return await _clients(system, n)

    return Run(trio.run(main))


def _spawn(url: str, prefix: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "lanes", "worker", "--redis", url, "--prefix", prefix]
    command += ["--commands", f"{__name__}:Trivial"]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE)


def on_redis(url: str, workers: int, n: int) -> Run:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    processes = [_spawn(url, prefix) for _ in range(workers)]
    try:
        for process in processes:  # each prints one line once it serves
            assert process.stdout is not None
            process.stdout.readline()

        async def main() -> float:
            backend = distributed.RedisBackend(url, prefix=prefix)
            async with lanes.open_lane_system(backend=backend, commands=[Trivial]) as system:
                return await _clients(system, n)

        return Run(trio.run(main))
    finally:
        for process in processes:
            os.kill(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)


def run(options: Options) -> Result:
    result = Result(NAME)
    n = QUICK_COMMANDS if options.quick else COMMANDS
    try:
        server_cm = distributed.local_redis_server()
        server = server_cm.__enter__()
    except lanes.StorageError as exc:
        result.note(f"skipped: {exc}")
        return result
    try:
        print(f"{NAME}: {n:,} commands, {CLIENTS} clients, redis-server at {server.url}")
        runners = {"in-process lane system": functools.partial(in_process, n)}
        for count in WORKER_COUNTS:
            runners[f"Redis, {count} worker process(es)"] = functools.partial(
                on_redis, server.url, count, n
            )
        samples = interleaved(runners, options.repeat, warmup=False)
    finally:
        server_cm.__exit__(None, None, None)
    seconds = {name: [r.seconds for r in runs] for name, runs in samples.items()}
    base = median(seconds["in-process lane system"])
    rows = []
    for name, secs in seconds.items():
        rate = n / median(secs)
        rows.append([name, rate, median(secs) / n * 1e6, base / median(secs)])
        result.rows.append(
            {"system": name, "n": n, "cmd_per_s": rate, "ratio_to_in_process": base / median(secs)}
        )
    print_table(
        "distributed throughput (medians)", ["system", "cmd/s", "µs/cmd", "x in-process"], rows
    )
    return result
