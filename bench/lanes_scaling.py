"""lanes_scaling: the same workload spread over 1 to 256 lanes.

Every lane has a distinct priority and ``max_concurrency=10``, and the system has a global cap
of 10, so whatever the lane count, 10 commands run at most (like the plain trio baseline's 10
workers): the only thing that grows is the number of lanes the scheduler looks at per decision.
Reported: us per command, its growth over one lane (median of the per-round time ratios), and
the marginal cost of each extra lane that this growth implies.
"""

from __future__ import annotations

import functools

import lanes

from ._harness import Options, Result, interleaved, median, paired_ratio, print_table
from ._workloads import CLIENTS, WORKERS, Run, lanes_run, trio_run

NAME = "lanes_scaling"
LANE_COUNTS = (1, 2, 4, 8, 16, 64, 256)
QUICK_LANE_COUNTS = (1, 8, 64)
COMMANDS = 20_000
QUICK_COMMANDS = 5_000
CAP = 10


def configs(count: int) -> tuple[lanes.LaneConfig, ...]:
    return tuple(lanes.LaneConfig(f"lane{i:03d}", i, max_concurrency=CAP) for i in range(count))


def label(count: int) -> str:
    return f"{count} lane" if count == 1 else f"{count} lanes"


def run(options: Options) -> Result:
    result = Result(NAME)
    counts = QUICK_LANE_COUNTS if options.quick else LANE_COUNTS
    n = QUICK_COMMANDS if options.quick else COMMANDS
    print(
        f"{NAME}: {n:,} commands, {CLIENTS} clients, global cap {CAP}; "
        f"baseline: plain trio with {WORKERS} workers"
    )
    runners = {
        label(c): functools.partial(lanes_run, configs(c), n, max_concurrency=CAP) for c in counts
    }
    runners["plain trio"] = functools.partial(trio_run, n)
    samples: dict[str, list[Run]] = interleaved(runners, options.repeat)
    seconds = {name: [r.seconds for r in runs] for name, runs in samples.items()}
    one = median(seconds[label(counts[0])]) / n * 1e6
    rows = []
    for name, secs in seconds.items():
        us = median(secs) / n * 1e6
        ratio = paired_ratio(seconds["plain trio"], secs)
        lane_count = int(name.split()[0]) if name[0].isdigit() else None
        row: dict[str, object] = {
            "system": name,
            "lanes": lane_count,
            "n": n,
            "cmd_per_s": n / median(secs),
            "us_per_cmd": us,
            "ratio_to_plain_trio": ratio,
            "seconds": secs,
        }
        growth: object = ""
        marginal: object = ""
        per_round: object = ""
        if lane_count is not None:
            growth = paired_ratio(secs, seconds[label(counts[0])])  # time ratio, per round
            row["growth_over_1_lane"] = growth
            if lane_count > 1:
                marginal = (growth - 1) * one / (lane_count - 1) * 1000
                row["ns_per_extra_lane_per_cmd"] = marginal
            rounds = [r.rounds for r in samples[name] if r.rounds is not None]
            if rounds:
                per_round = median(rounds) / n
                row["rounds_per_command"] = per_round
        result.rows.append(row)
        rows.append((name, n / median(secs), us, ratio, growth, marginal, per_round))
    print_table(
        f"N = {n:,} (median of {options.repeat})",
        ("system", "cmd/s", "us/cmd", "x plain trio", "x 1 lane", "ns/extra lane", "rounds/cmd"),
        rows,
    )
    return result
