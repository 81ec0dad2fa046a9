"""priority_overhead: the throughput workload on one lane versus the six default lanes.

The single lane gets the default lanes' total concurrency (28), so both systems may run as
many commands at once and differ only in how many priority levels the scheduler weighs.
Target (issue 7): six lanes at most 20% slower than one.
"""

from __future__ import annotations

import functools

import lanes

from ._harness import Options, Result, interleaved, median, paired_ratio, print_table
from ._workloads import CLIENTS, lanes_run, trio_run

NAME = "priority_overhead"
COMMANDS = 100_000
QUICK_COMMANDS = 10_000
MAX_SLOWDOWN = 1.20


def one_lane() -> tuple[lanes.LaneConfig, ...]:
    total = sum(c.max_concurrency for c in lanes.DEFAULT_LANES)
    return (lanes.LaneConfig("single", 0, max_concurrency=total),)


def run(options: Options) -> Result:
    result = Result(NAME)
    n = QUICK_COMMANDS if options.quick else COMMANDS
    single = one_lane()
    print(
        f"{NAME}: {n:,} commands, {CLIENTS} clients; one lane (max_concurrency="
        f"{single[0].max_concurrency}) vs the six default lanes; no global cap"
    )
    runners = {
        "1 lane": functools.partial(lanes_run, single, n),
        "6 lanes": functools.partial(lanes_run, lanes.DEFAULT_LANES, n),
        "plain trio": functools.partial(trio_run, n),
    }
    samples = interleaved(runners, options.repeat)
    seconds = {name: [r.seconds for r in runs] for name, runs in samples.items()}
    rows = []
    for name, secs in seconds.items():
        us = median(secs) / n * 1e6
        slowdown = paired_ratio(secs, seconds["1 lane"])  # time ratio: > 1 is slower
        vs_trio = paired_ratio(seconds["plain trio"], secs)  # throughput ratio
        rounds = [r.rounds for r in samples[name] if r.rounds is not None]
        per_round = median(rounds) / n if rounds else None
        result.rows.append(
            {
                "system": name,
                "n": n,
                "cmd_per_s": n / median(secs),
                "us_per_cmd": us,
                "time_ratio_to_1_lane": slowdown,
                "ratio_to_plain_trio": vs_trio,
                "rounds_per_command": per_round,
                "seconds": secs,
            }
        )
        rows.append((name, n / median(secs), us, slowdown, vs_trio, per_round or ""))
    print_table(
        f"N = {n:,} (median of {options.repeat})",
        ("system", "cmd/s", "us/cmd", "time x 1 lane", "x plain trio", "rounds/cmd"),
        rows,
    )
    six = next(r["time_ratio_to_1_lane"] for r in result.rows if r["system"] == "6 lanes")
    result.target("6 lanes time / 1 lane time <= 1.20", six, MAX_SLOWDOWN)
    return result
