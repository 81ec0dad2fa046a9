"""durable: submit-to-completion throughput with SqliteStorage (group commit).

Workload: ``n`` trivial durable commands (a ``@lanes.command`` class) submitted by 100
concurrent clients across the six default lanes, each awaiting its result; every submit
returns only once the transaction holding its command is fsynced (WAL,
``synchronous=FULL``): no loss window. Baseline, measured in the same run: plain sqlite3 in
the same mode, one transaction per command (the write a durable submit needs, without any
scheduling). Targets: at least 3x the baseline (issue 4), 4x (issue 19).

Printed beside them, in the same interleaved rounds, the limits: plain sqlite3 writing 100
rows per transaction (what the disk allows), the same lane system with ``MemoryStorage``
(the durable code path without a disk) and without storage (no durable path at all). A
lane system cannot beat its own in-memory figure, so when that is below the target the
machine's fsync is too fast (or its CPU too busy) for the target to be reachable.
"""

from __future__ import annotations

import functools
import sqlite3
import tempfile
import time
from pathlib import Path

import attrs
import trio

import lanes

from ._harness import Options, Result, interleaved, median, paired_ratio, print_table
from ._workloads import CLIENTS, Run, shares

NAME = "durable"
COMMANDS = 20_000
QUICK_COMMANDS = 3_000
TARGET = 3.0  # issue 4
ISSUE_19_TARGET = 4.0  # issue 19: durable >= 4x one transaction per command
GROUP = 100  # rows per transaction of the bare group-commit row (one per client)

OURS = "trio-lanes + SqliteStorage"
BASELINE = "sqlite3, 1 txn per command"


@lanes.command(name="bench-trivial")
@attrs.define
class Trivial:
    x: int

    async def execute(self) -> int:
        return self.x


def lanes_durable(n: int, storage: str | None) -> Run:
    """``storage``: "sqlite" (a file in a temporary directory), "memory" or None."""
    with tempfile.TemporaryDirectory() as where:
        return trio.run(_lanes_main, Path(where) / "bench.db", n, storage)


async def _lanes_main(path: Path, n: int, kind: str | None) -> Run:
    names = [c.name for c in lanes.DEFAULT_LANES]
    durable = kind is not None

    async def client(offset: int, count: int, system: lanes.LaneSystem) -> None:
        for k in range(count):
            lane = names[(offset + k) % len(names)]
            handle = await system.submit(lane, Trivial(k), durable=durable)
            if await handle.result() != k:
                raise AssertionError("wrong result")

    storage: lanes.storage.Storage | None = None
    if kind == "sqlite":
        storage = lanes.storage.SqliteStorage(path)
    elif kind == "memory":
        storage = lanes.storage.MemoryStorage()
    commands = [Trivial] if durable else []
    async with lanes.open_lane_system(storage=storage, commands=commands) as system:
        start, cpu = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as nursery:
            for c, count in enumerate(shares(n, CLIENTS)):
                nursery.start_soon(client, c, count, system)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Run(seconds, None, cpu)


def lanes_durable_many(n: int) -> Run:
    """One client, ``GROUP`` commands per ``submit_many`` to one lane, SqliteStorage."""
    with tempfile.TemporaryDirectory() as where:
        return trio.run(_lanes_many_main, Path(where) / "bench.db", n)


async def _lanes_many_main(path: Path, n: int) -> Run:
    storage = lanes.storage.SqliteStorage(path)
    async with lanes.open_lane_system(storage=storage, commands=[Trivial]) as system:
        start, cpu = time.perf_counter(), time.process_time()
        for first in range(0, n, GROUP):
            batch = [Trivial(k) for k in range(first, min(n, first + GROUP))]
            handles = await system.submit_many("query", batch)
            for k, handle in enumerate(handles, first):
                if await handle.result() != k:
                    raise AssertionError("wrong result")
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Run(seconds, None, cpu)


def sqlite_rows(n: int, per_transaction: int) -> Run:
    """``n`` rows, ``per_transaction`` per transaction, WAL + synchronous=FULL, no scheduling."""
    with tempfile.TemporaryDirectory() as where:
        db = sqlite3.connect(Path(where) / "baseline.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE commands (id INTEGER PRIMARY KEY, lane TEXT, payload TEXT)")
        start, cpu = time.perf_counter(), time.process_time()
        for first in range(0, n, per_transaction):
            db.execute("BEGIN")
            for i in range(first, min(n, first + per_transaction)):
                db.execute("INSERT INTO commands VALUES (?, ?, ?)", (i, "query", f'{{"x": {i}}}'))
            db.execute("COMMIT")
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        db.close()
    return Run(seconds, None, cpu)


def run(options: Options) -> Result:
    result = Result(NAME)
    n = QUICK_COMMANDS if options.quick else COMMANDS
    print(f"{NAME}: {n:,} durable commands, {CLIENTS} clients, SqliteStorage in a temp dir")
    runners = {
        OURS: functools.partial(lanes_durable, n, "sqlite"),
        BASELINE: functools.partial(sqlite_rows, n, 1),
        f"sqlite3, {GROUP} rows per txn (the disk's limit)": functools.partial(
            sqlite_rows, n, GROUP
        ),
        f"trio-lanes + SqliteStorage, submit_many of {GROUP}": functools.partial(
            lanes_durable_many, n
        ),
        "trio-lanes + MemoryStorage (no disk)": functools.partial(lanes_durable, n, "memory"),
        "trio-lanes, no storage": functools.partial(lanes_durable, n, None),
    }
    samples = interleaved(runners, options.repeat, warmup=False)
    seconds = {name: [r.seconds for r in runs] for name, runs in samples.items()}
    base = seconds[BASELINE]
    rows = []
    for name, runs in samples.items():
        secs = seconds[name]
        ratios = sorted(b / s for b, s in zip(base, secs, strict=True))
        cpu = median([r.cpu_seconds or 0.0 for r in runs]) / n * 1e6
        spread = f"{ratios[0]:.2f}-{ratios[-1]:.2f}"
        ratio = paired_ratio(base, secs)
        rows.append([name, n / median(secs), median(secs) / n * 1e6, cpu, ratio, spread])
        result.rows.append(
            {
                "system": name,
                "n": n,
                "cmd_per_s": n / median(secs),
                "cpu_us_per_cmd": cpu,
                "ratio_to_baseline": ratio,
                "ratio_min_max": [ratios[0], ratios[-1]],
                "seconds": secs,
            }
        )
    print_table(
        "durable throughput (medians; ratios paired per round)",
        ["system", "cmd/s", "µs/cmd", "CPU µs/cmd", "x baseline", "min-max"],
        rows,
    )
    ours = paired_ratio(base, seconds[OURS])
    result.target(
        "durable throughput vs one txn per command (>= 3x)", ours, TARGET, at_most=False, unit="x"
    )
    result.target(
        f"durable throughput vs one txn per command (>= {ISSUE_19_TARGET:.0f}x, issue 19)",
        ours,
        ISSUE_19_TARGET,
        at_most=False,
        unit="x",
    )
    return result
