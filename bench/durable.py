"""durable: submit-to-completion throughput with SqliteStorage (group commit).

Workload: ``n`` trivial durable commands (a ``@lanes.command`` class) submitted by 100
concurrent clients across the six default lanes, each awaiting its result; every submit
returns only once its command is on disk (WAL, ``synchronous=FULL``). Baseline, measured in
the same run: plain sqlite3 in the same mode, one transaction per command (the write a
durable submit needs, without any scheduling). Target (issue 4): at least 3x the baseline.
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
TARGET = 3.0
ISSUE_19_TARGET = 4.0  # issue 19: durable >= 4x one transaction per command


@lanes.command(name="bench-trivial")
@attrs.define
class Trivial:
    x: int

    async def execute(self) -> int:
        return self.x


def lanes_durable(n: int) -> Run:
    with tempfile.TemporaryDirectory() as where:
        return trio.run(_lanes_main, Path(where) / "bench.db", n)


async def _lanes_main(path: Path, n: int) -> Run:
    names = [c.name for c in lanes.DEFAULT_LANES]

    async def client(offset: int, count: int, system: lanes.LaneSystem) -> None:
        for k in range(count):
            handle = await system.submit(names[(offset + k) % len(names)], Trivial(k))
            if await handle.result() != k:
                raise AssertionError("wrong result")

    async with lanes.open_lane_system(storage=path, commands=[Trivial]) as system:
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for c, count in enumerate(shares(n, CLIENTS)):
                nursery.start_soon(client, c, count, system)
        seconds = time.perf_counter() - start
    return Run(seconds)


def sqlite_per_command(n: int) -> Run:
    """One transaction per command, WAL + synchronous=FULL, no scheduling at all."""
    with tempfile.TemporaryDirectory() as where:
        db = sqlite3.connect(Path(where) / "baseline.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE commands (id INTEGER PRIMARY KEY, lane TEXT, payload TEXT)")
        start = time.perf_counter()
        for i in range(n):
            db.execute("BEGIN")
            db.execute("INSERT INTO commands VALUES (?, ?, ?)", (i, "query", f'{{"x": {i}}}'))
            db.execute("COMMIT")
        seconds = time.perf_counter() - start
        db.close()
    return Run(seconds)


def run(options: Options) -> Result:
    result = Result(NAME)
    n = QUICK_COMMANDS if options.quick else COMMANDS
    print(f"{NAME}: {n:,} durable commands, {CLIENTS} clients, SqliteStorage in a temp dir")
    runners = {
        "trio-lanes + SqliteStorage": functools.partial(lanes_durable, n),
        "sqlite3, 1 txn per command": functools.partial(sqlite_per_command, n),
    }
    samples = interleaved(runners, options.repeat, warmup=False)
    seconds = {name: [r.seconds for r in runs] for name, runs in samples.items()}
    base = seconds["sqlite3, 1 txn per command"]
    rows = []
    for name, secs in seconds.items():
        ratio = paired_ratio(base, secs)
        rows.append([name, n / median(secs), median(secs) / n * 1e6, ratio])
        result.rows.append(
            {
                "system": name,
                "n": n,
                "cmd_per_s": n / median(secs),
                "ratio_to_baseline": ratio,
                "seconds": secs,
            }
        )
    print_table("durable throughput (medians)", ["system", "cmd/s", "µs/cmd", "x baseline"], rows)
    ours = paired_ratio(base, seconds["trio-lanes + SqliteStorage"])
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
