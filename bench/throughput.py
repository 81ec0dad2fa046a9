"""throughput: N trivial commands from 100 closed-loop clients across the six default lanes.

Baselines, same workload, same process: plain trio (10 workers on one memory channel, a
one-shot reply channel per command), the lean priority scheduler (``bench/_lean.py``: a deque
per priority, 10 workers running commands back to back, a ``trio.Event`` per waiter; and its
``trio.lowlevel`` flavour), which is the limit of what Trio allows for this work, and asyncio
(a PriorityQueue, 10 workers, a future per command). Every table prints lanes / plain trio,
lanes / lean and lean / plain trio, all from the same rounds. Targets (issue 19): at least
1.0x plain trio at every N; cost per command, relative to plain trio, flat from the smallest
N to the largest. N = 1M runs in full runs only (``--quick`` stops at 10K).
"""

from __future__ import annotations

import functools
import math

import lanes

from ._harness import Options, Result, interleaved, median, paired_ratio, print_table
from ._workloads import CLIENTS, WORKERS, asyncio_run, lanes_run, lean_run, trio_run

NAME = "throughput"
SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000)
MIN_RATIO = 1.0  # issue 19: lanes at least as fast as plain trio
FLATNESS = 1.25  # "flat": the largest N costs at most 25% more per command than the smallest
LEAN = "lean"
LOWLEVEL = "lean lowlevel"
PLAIN = "plain trio"
LARGE = 1_000_000  # from this N on, --repeat-large runs per figure


def run(options: Options) -> Result:
    result = Result(NAME)
    sizes = QUICK_SIZES if options.quick else SIZES
    print(
        f"{NAME}: {CLIENTS} clients, each awaiting its result; lanes = the six default lanes, "
        f"no global cap; baselines: plain trio / asyncio with {WORKERS} workers"
    )
    per_command: dict[str, dict[int, float]] = {"lanes": {}, LEAN: {}, PLAIN: {}}
    for n in sizes:
        runners = {
            "lanes": functools.partial(lanes_run, lanes.DEFAULT_LANES, n),
            LEAN: functools.partial(lean_run, n),
            LOWLEVEL: functools.partial(lean_run, n, lowlevel=True),
            PLAIN: functools.partial(trio_run, n),
            "asyncio": functools.partial(asyncio_run, n),
        }
        repeat = options.large_repeat if n >= LARGE else options.repeat
        samples = interleaved(runners, repeat, warmup=n <= 10_000)
        seconds = {name: [r.seconds for r in runs] for name, runs in samples.items()}
        cpu = {name: [r.cpu_seconds or math.nan for r in runs] for name, runs in samples.items()}
        rows = []
        for name, secs in seconds.items():
            mid = median(secs)
            ratio = paired_ratio(seconds[PLAIN], secs)  # throughput ratio
            to_lean = paired_ratio(seconds[LEAN], secs)
            cpu_ratio = paired_ratio(cpu[PLAIN], cpu[name])
            share = median([c / w for c, w in zip(cpu[name], secs, strict=True)])
            row: dict[str, object] = {
                "n": n,
                "system": name,
                "cmd_per_s": n / mid,
                "us_per_cmd": mid / n * 1e6,
                "ratio_to_plain_trio": ratio,
                "ratio_to_lean": to_lean,
                "cpu_us_per_cmd": median(cpu[name]) / n * 1e6,
                "cpu_ratio_to_plain_trio": cpu_ratio,
                "cpu_share": share,
                "seconds": secs,
                "cpu_seconds": cpu[name],
                "repeat": repeat,
            }
            rounds = [r.rounds for r in samples[name] if r.rounds is not None]
            per_round: object = ""
            if rounds:
                per_round = row["rounds_per_command"] = median(rounds) / n
            result.rows.append(row)
            rows.append(
                (
                    name,
                    n / mid,
                    mid / n * 1e6,
                    ratio,
                    to_lean,
                    median(cpu[name]) / n * 1e6,
                    cpu_ratio,
                    share,
                    per_round,
                )
            )
            if name in per_command:
                per_command[name][n] = mid / n * 1e6
        print_table(
            f"N = {n:,} (median of {repeat}; CPU = process time, share = CPU / wall)",
            (
                "system",
                "cmd/s",
                "us/cmd",
                "x plain trio",
                "x lean",
                "CPU us/cmd",
                "CPU x trio",
                "CPU share",
                "rounds/cmd",
            ),
            rows,
        )
        here = {r["system"]: r for r in result.rows if r["n"] == n}
        lane_ratio = here["lanes"]["ratio_to_plain_trio"]
        print(
            f"  N={n:,}: lanes/plain {lane_ratio:.2f}x, lanes/lean "
            f"{here['lanes']['ratio_to_lean']:.2f}x, lean/plain "
            f"{here[LEAN]['ratio_to_plain_trio']:.2f}x, lean lowlevel/plain "
            f"{here[LOWLEVEL]['ratio_to_plain_trio']:.2f}x (medians of per-round ratios)",
            flush=True,
        )
        result.target(
            f"N={n:,}: lanes / plain trio throughput >= {MIN_RATIO}",
            lane_ratio,
            MIN_RATIO,
            at_most=False,
            unit="x",
        )
    small, large = min(sizes), max(sizes)
    for name, costs in per_command.items():
        growth = costs[large] / costs[small]
        result.note(f"{name}: absolute us/cmd at N={large:,} / at N={small:,} = {growth:.2f}")
    # Absolute us/cmd drifts with the load of a shared machine (plain trio's own figure moves
    # too), so "flat" is judged on the cost relative to plain trio, measured in the same rounds.
    ratios = {r["n"]: r["ratio_to_plain_trio"] for r in result.rows if r["system"] == "lanes"}
    growth = ratios[small] / ratios[large]
    result.target(
        f"lanes cost per command relative to plain trio flat: N={large:,} over N={small:,} "
        f"<= {FLATNESS}",
        growth,
        FLATNESS,
        unit="x",
    )
    return result
