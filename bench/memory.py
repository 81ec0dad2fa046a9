"""memory: resident memory per pending command, 1M commands queued in a paused lane.

Each measurement runs in a fresh interpreter (``python -m bench.memory --child KIND N``) so
memory freed by an earlier measurement cannot hide anything. The child reads ``VmRSS`` and
``VmHWM`` from ``/proc/self/status`` just before and just after queueing, and keeps every
handle (the lane system) or reply channel (the baseline) alive, as a client would.

Baseline: the same number of ``(fn, args, reply_send)`` tuples in a plain trio memory
channel, each with its one-shot reply channel. Floor: bare ``(fn, args)`` tuples in a list.
Target (issue 7): at most 1 KiB per pending command.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import trio

import lanes

from ._harness import Options, Result, code_root, median, print_table
from ._workloads import trivial

NAME = "memory"
COMMANDS = 1_000_000
QUICK_COMMANDS = 100_000
LIMIT = 1024
KINDS = ("lanes", "plain trio channel", "bare tuples")
LANE = "prompt"


def status_kib() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of this process, in KiB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def _report(n: int, before: dict[str, int], after: dict[str, int]) -> None:
    rss = (after["VmRSS"] - before["VmRSS"]) * 1024
    peak = (after["VmHWM"] - before["VmRSS"]) * 1024
    data = {"n": n, "rss_bytes": rss, "peak_bytes": peak, "lanes": lanes.__file__}
    print(json.dumps(data), flush=True)


async def _lanes_child(n: int) -> None:
    configs = tuple(attrs.evolve(c, inbox_size=max(c.inbox_size, n)) for c in lanes.DEFAULT_LANES)
    async with lanes.open_lane_system(configs) as system:
        system.pause(LANE)
        handles = []
        gc.collect()
        before = status_kib()
        for i in range(n):
            handles.append(system.submit_nowait(LANE, trivial, i))
        after = status_kib()
        if system.statistics().lanes[LANE].pending != n:
            raise AssertionError("not every command is pending")
        _report(n, before, after)
        # Resolving a million handles on the way out measures nothing: leave now.
        os._exit(0)


async def _channel_child(n: int) -> None:
    send, _receive = trio.open_memory_channel[Any](math.inf)
    replies = []
    gc.collect()
    before = status_kib()
    for i in range(n):
        reply_send, reply_receive = trio.open_memory_channel[Any](1)
        send.send_nowait((trivial, (i,), reply_send))
        replies.append(reply_receive)
    after = status_kib()
    _report(n, before, after)


def _tuples_child(n: int) -> None:
    gc.collect()
    before = status_kib()
    queue = [(trivial, (i,)) for i in range(n)]
    after = status_kib()
    assert len(queue) == n
    _report(n, before, after)


def child(kind: str, n: int) -> None:
    if kind == "lanes":
        trio.run(_lanes_child, n)
    elif kind == "plain trio channel":
        trio.run(_channel_child, n)
    else:
        _tuples_child(n)


def measure(kind: str, n: int) -> dict[str, float]:
    """One measurement in a fresh interpreter that imports the same lanes package as we do.

    ``python -m`` puts its working directory first on ``sys.path``: the child runs in the
    directory of our ``lanes`` package, and finds ``bench`` through ``PYTHONPATH``.
    """
    bench_root = str(Path(__file__).resolve().parent.parent)
    paths = [bench_root, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--child", kind, str(n)],
        capture_output=True,
        text=True,
        check=True,
        cwd=code_root(),
        env=env,
    )
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if data.pop("lanes") != lanes.__file__:
        raise AssertionError("the child imported another lanes package")
    return data


def run(options: Options) -> Result:
    result = Result(NAME)
    n = QUICK_COMMANDS if options.quick else COMMANDS
    print(
        f"{NAME}: {n:,} pending commands in a paused lane (submit_nowait, inbox_size raised); "
        "RSS delta in a fresh process per measurement"
    )
    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    for round_ in range(options.repeat):
        shift = round_ % len(KINDS)
        for kind in KINDS[shift:] + KINDS[:shift]:
            samples[kind].append(measure(kind, n))
    base = median([s["rss_bytes"] for s in samples["plain trio channel"]]) / n
    rows = []
    for kind, runs in samples.items():
        per = median([s["rss_bytes"] for s in runs]) / n
        peak = median([s["peak_bytes"] for s in runs]) / n
        result.rows.append(
            {
                "system": kind,
                "n": n,
                "rss_bytes_per_cmd": per,
                "peak_bytes_per_cmd": peak,
                "ratio_to_plain_trio_channel": per / base,
                "runs": runs,
            }
        )
        rows.append((kind, per, peak, per / base))
    print_table(
        f"N = {n:,} (median of {options.repeat})",
        ("system", "RSS B/cmd", "peak B/cmd", "x plain trio"),
        rows,
    )
    per_lanes = result.rows[0]["peak_bytes_per_cmd"]
    result.target("lanes peak RSS per pending command <= 1024 B", per_lanes, LIMIT, unit=" B")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="memory benchmark child process")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "N"), required=True)
    args = parser.parse_args()
    kind, n = args.child
    if kind not in KINDS:
        parser.error(f"unknown kind {kind!r}; expected one of {KINDS}")
    child(kind, int(n))


if __name__ == "__main__":
    main()
