"""distributed: throughput of lanes on Redis with 1, 2 and 4 worker processes.

Workload: ``n`` trivial ``@lanes.command`` objects submitted by 100 concurrent clients across
the six default lanes, each awaiting its result. Systems, measured in the same run, on one
private redis-server (no persistence):

- the in-process lane system (for scale);
- the raw redis-py loop (the baseline of the targets): an asyncio process where 100 clients
  each ``XADD`` their share of ``n`` entries (awaiting each) while one consumer loops on
  ``XREADGROUP COUNT 100`` and ``XACK``s each batch; no replies, no scripts: what Redis and
  a fast client do at the least;
- ``open_lane_system(backend=RedisBackend(url))`` with 1, 2 and 4 ``lanes worker``
  processes (starting them is not timed);
- arq (asyncio, Redis lists and polling) on the same Redis, when it is installed: one
  worker in the clients' process (``max_jobs=10``, 10 ms polls), each client awaiting its
  job's result.

Urgent-start latency: the time from submitting a trivial command to an urgent lane to its
result, while batch work of a ``preemptible`` lane holds slots: with two workers (one slot
each, in the benchmark's process) where one is idle, where both are full (one preempts),
and, as the baseline, an in-process system with ``max_concurrency=1`` that preempts.

Targets: 4 workers reach >= 0.5x the raw loop, and 2 and 4 workers are not slower than 1.
The raw loop and arq need the ``bench`` extra (``redis``, ``arq``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import attrs
import trio

import lanes
from lanes import distributed
from lanes.distributed._resp import open_connection

from ._harness import Options, Result, interleaved, median, paired_ratio, print_table
from ._workloads import CLIENTS, Run, shares

NAME = "distributed"
COMMANDS = 3_000
QUICK_COMMANDS = 300
WORKER_COUNTS = (1, 2, 4)
RAW = "raw redis-py loop (asyncio, XADD/XREADGROUP/XACK)"
ROOT = Path(__file__).resolve().parent.parent


@lanes.command(name="bench-distributed-trivial")
@attrs.define
class Trivial:
    x: int

    async def execute(self) -> int:
        return self.x


HELD: dict[str, trio.Event] = {}  # batch commands running now (set by Hold, in this process)
PRIORITY_LANES = (
    lanes.LaneConfig("urgent", 0, max_concurrency=1),
    lanes.LaneConfig("batch", 1, max_concurrency=2, preemptible=True),
)
PRIORITY_ROUNDS, QUICK_PRIORITY_ROUNDS = 30, 10
PREEMPT_ROW = "2 workers, both full of batch: one preempts"
IDLE_ROW = "2 workers, one full of batch, one idle"
LOCAL_ROW = "in-process system, cap 1, full of batch: preempts"


@lanes.command(name="bench-distributed-hold")
@attrs.define
class Hold:
    tag: str
    seconds: float = 30.0

    async def execute(self) -> None:
        HELD.setdefault(self.tag, trio.Event()).set()
        await trio.sleep(self.seconds)


async def _urgent_once(system: object, batch: int) -> float:
    """Fill ``batch`` slots with batch commands, then time one urgent command; cancel the
    batch commands after (a preempted one waits at the front of its lane)."""
    submit = system.submit  # type: ignore[attr-defined]
    tags = [uuid.uuid4().hex for _ in range(batch)]
    for tag in tags:
        HELD[tag] = trio.Event()
    held = [await submit("batch", Hold(tag)) for tag in tags]
    for tag in tags:
        await HELD[tag].wait()
        del HELD[tag]
    began = time.perf_counter()
    await (await submit("urgent", Trivial(1))).result()
    took = time.perf_counter() - began
    for handle in held:
        handle.cancel()
        with contextlib.suppress(lanes.CommandCancelled):
            await handle.result()
    return took


async def _urgent_latency(url: str, rounds: int) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {PREEMPT_ROW: [], IDLE_ROW: [], LOCAL_ROW: []}
    backend = distributed.RedisBackend(url, prefix=f"bench-priority-{uuid.uuid4().hex[:8]}")
    one_slot = {"commands": [Hold, Trivial], "max_concurrency": 1, "drain_timeout": 0}
    async with (
        lanes.open_lane_system(PRIORITY_LANES, backend=backend, commands=[Hold, Trivial]) as remote,
        distributed.open_lane_worker(PRIORITY_LANES, backend=backend, **one_slot),  # type: ignore[arg-type]
        distributed.open_lane_worker(PRIORITY_LANES, backend=backend, **one_slot),  # type: ignore[arg-type]
        lanes.open_lane_system(PRIORITY_LANES, max_concurrency=1) as local,
    ):
        for _ in range(rounds):
            found[IDLE_ROW].append(await _urgent_once(remote, 1))
            found[PREEMPT_ROW].append(await _urgent_once(remote, 2))
            found[LOCAL_ROW].append(await _urgent_once(local, 1))
    return found


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


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


@dataclass(frozen=True)
class RedisRun(Run):
    """A run on Redis, with the CPU time each side spent on it (seconds)."""

    submitter_cpu: float = 0.0
    workers_cpu: float = 0.0  # all worker processes together
    redis_cpu: float = 0.0


async def _redis_cpu(url: str) -> float:
    connection = await open_connection(url)
    try:
        [info] = await connection.execute([["INFO", "cpu"]])
    finally:
        await connection.aclose()
    fields = dict(line.split(":", 1) for line in str(info).split() if ":" in line)
    return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])


def _processes_cpu(pids: list[int]) -> float:
    """CPU seconds the processes used so far (Linux ``/proc``; 0 elsewhere)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def on_redis(url: str, workers: int, n: int) -> Run:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    processes = [_spawn(url, prefix) for _ in range(workers)]
    pids = [p.pid for p in processes]
    try:
        for process in processes:  # each prints one line once it serves
            assert process.stdout is not None
            process.stdout.readline()

        async def main() -> tuple[float, float, float, float]:
            backend = distributed.RedisBackend(url, prefix=prefix)
            async with lanes.open_lane_system(backend=backend, commands=[Trivial]) as system:
                redis, own, others = (
                    await _redis_cpu(url),
                    time.process_time(),
                    _processes_cpu(pids),
                )
                seconds = await _clients(system, n)
                own = time.process_time() - own
                others = _processes_cpu(pids) - others
                return seconds, own, others, await _redis_cpu(url) - redis

        seconds, submitter_cpu, workers_cpu, redis_cpu = trio.run(main)
    finally:
        for process in processes:
            os.kill(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)
    return RedisRun(
        seconds, submitter_cpu=submitter_cpu, workers_cpu=workers_cpu, redis_cpu=redis_cpu
    )


def _child(kind: str, url: str, n: int) -> Run:
    """Run an asyncio baseline in its own process (``python -m bench.distributed KIND``)."""
    command = [sys.executable, "-m", "bench.distributed", kind, url, str(n)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} baseline failed: {done.stderr.strip()[-500:]}")
    return Run(float(done.stdout.split()[-1]))


async def _raw_loop(url: str, n: int) -> float:  # pragma: no cover - run in a child process
    import asyncio

    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    stream = f"raw{uuid.uuid4().hex[:8]}"
    await client.xgroup_create(stream, "g", "0", mkstream=True)

    async def produce(count: int) -> None:
        for k in range(count):
            await client.xadd(stream, {"c": json.dumps({"x": k})})

    async def consume() -> None:
        seen = 0
        while seen < n:
            answer = await client.xreadgroup("g", "c", {stream: ">"}, count=100, block=1000)
            for _, entries in answer or ():
                ids = [entry_id for entry_id, _ in entries]
                for _, fields in entries:
                    json.loads(fields[b"c"])
                await client.xack(stream, "g", *ids)
                seen += len(ids)

    start = time.perf_counter()
    await asyncio.gather(consume(), *(produce(c) for c in shares(n, CLIENTS)))
    seconds = time.perf_counter() - start
    await client.delete(stream)
    await client.aclose()
    return seconds


async def _arq_trivial(ctx: dict[str, object], x: int) -> int:  # pragma: no cover
    return x


async def _arq(url: str, n: int) -> float:  # pragma: no cover - run in a child process
    import asyncio

    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker

    settings = RedisSettings.from_dsn(url)
    queue = f"arq{uuid.uuid4().hex[:8]}"
    pool = await create_pool(settings, default_queue_name=queue)
    worker = Worker(
        functions=[_arq_trivial],
        redis_settings=settings,
        queue_name=queue,
        max_jobs=10,
        poll_delay=0.01,
        handle_signals=False,
    )
    serving = asyncio.ensure_future(worker.async_run())

    async def client(count: int) -> None:
        for k in range(count):
            job = await pool.enqueue_job("_arq_trivial", k)
            assert job is not None
            if await job.result(poll_delay=0.01) != k:
                raise AssertionError("wrong result")

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in shares(n, CLIENTS)))
    seconds = time.perf_counter() - start
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):  # arq's close may re-raise it
        await worker.close()
    await pool.aclose()
    return seconds


_SCRIPT = "return ARGV[1]"
_BATCHES = (1, 10, 100)


async def _client_costs(url: str, calls: int = 3_000) -> dict[str, list[float]]:
    """CPU µs per ``EVALSHA`` (4 keys, 8 arguments) by calls per round trip: coredis
    pipelines against the RESP client of the hot path, same Redis, same run."""
    import coredis
    from coredis.retry import NoRetryPolicy

    from lanes.distributed._redis import Lua

    keys, args = ["k1", "k2", "k3", "k4"], ["a" * 8] * 8
    costs: dict[str, list[float]] = {"coredis 6.9": [], "RESP client": []}
    client = coredis.Redis.from_url(url, decode_responses=True, retry_policy=NoRetryPolicy())
    async with client:
        script = client.register_script(_SCRIPT)
        await script(keys, args)
        for batch in _BATCHES:
            start = time.process_time()
            for _ in range(calls // batch):
                async with client.pipeline(transaction=False) as pipe:
                    requests = [script(keys, args, client=pipe) for _ in range(batch)]
                for request in requests:
                    await request
            costs["coredis 6.9"].append((time.process_time() - start) / calls * 1e6)
    connection = await open_connection(url)
    command = ["EVALSHA", Lua(_SCRIPT).sha, len(keys), *keys, *args]
    for batch in _BATCHES:
        start = time.process_time()
        for _ in range(calls // batch):
            await connection.execute([command] * batch)
        costs["RESP client"].append((time.process_time() - start) / calls * 1e6)
    await connection.aclose()
    return costs


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


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
        if _installed("redis"):
            runners[RAW] = functools.partial(_child, "raw", server.url, n)
        else:
            result.note("raw redis-py loop skipped: pip install 'trio-lanes[bench]' (redis)")
        for count in WORKER_COUNTS:
            runners[_lanes_row(count)] = functools.partial(on_redis, server.url, count, n)
        if _installed("arq"):
            runners["arq 0.28 (asyncio), 1 worker"] = functools.partial(
                _child, "arq", server.url, n
            )
        else:
            result.note("arq skipped: pip install arq")
        samples = interleaved(runners, options.repeat, warmup=False)
        costs = trio.run(_client_costs, server.url)
        rounds = QUICK_PRIORITY_ROUNDS if options.quick else PRIORITY_ROUNDS
        latency = trio.run(_urgent_latency, server.url, rounds)
    finally:
        server_cm.__exit__(None, None, None)
    times = {name: [r.seconds for r in runs] for name, runs in samples.items()}
    seconds = {name: median(values) for name, values in times.items()}
    base = seconds.get(RAW)
    rows = []
    for name, secs in seconds.items():
        rates = [n / t for t in times[name]]
        # each round ran every system back to back: the ratio of a round is the paired one
        ratios = [r / t for r, t in zip(times[RAW], times[name], strict=True)] if base else []
        ratio = paired_ratio(times[RAW], times[name]) if base else float("nan")
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else ""
        rows.append([name, n / secs, f"{min(rates):,.0f}-{max(rates):,.0f}", ratio, spread])
        result.rows.append(
            {
                "table": "throughput",
                "system": name,
                "n": n,
                "seconds": times[name],
                "cmd_per_s": n / secs,
                "ratio_to_raw": ratio,
                "ratio_to_raw_range": spread,
            }
        )
    print_table(
        f"distributed throughput (medians of {options.repeat} interleaved rounds)",
        ["system", "cmd/s", "cmd/s min-max", "x raw loop", "x raw min-max"],
        rows,
    )
    cpu_rows = []
    for count in WORKER_COUNTS:
        runs = [r for r in samples[_lanes_row(count)] if isinstance(r, RedisRun)]
        per = [
            median([getattr(r, side) for r in runs]) / n * 1e6
            for side in ("submitter_cpu", "workers_cpu", "redis_cpu")
        ]
        cpu_rows.append([_lanes_row(count), *per])
        result.rows.append(
            {
                "table": "cpu",
                "system": _lanes_row(count),
                "submitter_cpu_us": per[0],
                "workers_cpu_us": per[1],
                "redis_cpu_us": per[2],
            }
        )
    print_table(
        "CPU per command while the clients ran (µs, medians)",
        ["system", "submitter", "workers (sum)", "redis-server"],
        cpu_rows,
    )
    print_table(
        "client CPU per EVALSHA (µs) by calls per round trip",
        ["client", *(str(b) for b in _BATCHES)],
        [[name, *values] for name, values in costs.items()],
    )
    for name, values in costs.items():
        per_call = dict(zip(map(str, _BATCHES), values, strict=True))
        result.rows.append({"table": "client", "client": name, **per_call})
    latency_rows = []
    for name, values in latency.items():
        p50, p99 = median(values) * 1e3, _percentile(values, 0.99) * 1e3
        latency_rows.append([name, p50, p99])
        result.rows.append(
            {"table": "urgent", "system": name, "runs": len(values), "p50_ms": p50, "p99_ms": p99}
        )
    print_table(
        f"urgent command submitted to result while batch holds slots ({rounds} rounds, ms)",
        ["system", "p50", "p99"],
        latency_rows,
    )
    if base:
        result.target(
            "4 workers / raw redis-py loop",
            paired_ratio(times[RAW], times[_lanes_row(4)]),
            0.5,
            at_most=False,
        )
    one = times[_lanes_row(1)]
    for count in WORKER_COUNTS[1:]:
        per_round = [a / b for a, b in zip(one, times[_lanes_row(count)], strict=True)]
        result.note(
            f"{count} workers / 1 worker per round: " + ", ".join(f"{r:.2f}" for r in per_round)
        )
        result.target(
            f"{count} workers / 1 worker",
            paired_ratio(one, times[_lanes_row(count)]),
            0.95,
            at_most=False,
        )
    return result


def _lanes_row(count: int) -> str:
    return f"trio-lanes, {count} worker process(es)"


if __name__ == "__main__":  # pragma: no cover - the asyncio baselines' child processes
    import asyncio

    _kind, _url, _n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(asyncio.run((_raw_loop if _kind == "raw" else _arq)(_url, _n)))
