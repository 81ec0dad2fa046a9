"""metrics_overhead: the throughput workload with latency histograms recording vs. no-ops.

Both systems are the six default lanes, run in the same process, interleaved round by
round. In "metrics off" ``Histogram.record`` is replaced by a no-op for the run, so the
difference is what recording (a list append per sample, folded into buckets every 4096
samples) costs on the hot path; counters stay on in both (they are the statistics). Target
(issue 6): metrics cost at most 5% of throughput.

The target is judged on CPU time per command (``time.process_time`` around each run), which
a shared machine disturbs far less than wall-clock time; the wall-clock ratio is reported
next to it. A third figure needs no system at all: the measured cost of one ``record``
call times the two samples per command, over the CPU time a command costs.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import lanes
from lanes._histogram import Histogram

from ._harness import Options, Result, interleaved, median, paired_ratio, print_table
from ._workloads import CLIENTS, Run, lanes_run

NAME = "metrics_overhead"
COMMANDS = 100_000
QUICK_COMMANDS = 10_000
MAX_OVERHEAD = 0.05
T = TypeVar("T")


def _no_record(self: Histogram, value: float) -> None:
    return None


@contextlib.contextmanager
def histograms_off() -> Iterator[None]:
    """Make every ``Histogram.record`` a no-op inside the block."""
    original = Histogram.record
    Histogram.record = _no_record  # type: ignore[method-assign]
    try:
        yield
    finally:
        Histogram.record = original  # type: ignore[method-assign]


def without_histograms(fn: Callable[[], T]) -> Callable[[], T]:
    def run() -> T:
        with histograms_off():
            return fn()

    return run


def timed(fn: Callable[[], Run]) -> Callable[[], tuple[float, float]]:
    """(wall seconds of the clients, CPU seconds of the whole run) of one run of ``fn``."""

    def run() -> tuple[float, float]:
        cpu = time.process_time()
        seconds = fn().seconds
        return seconds, time.process_time() - cpu

    return run


def record_cost(samples: int = 1_000_000) -> float:
    """CPU seconds per ``Histogram.record``, folding and the loop included (an upper bound)."""
    rng = random.Random(1)
    values = [rng.expovariate(1000) for _ in range(samples)]
    histogram = Histogram()
    start = time.process_time()
    for value in values:
        histogram.record(value)
    histogram.snapshot()
    return (time.process_time() - start) / samples


def run(options: Options) -> Result:
    result = Result(NAME)
    n = QUICK_COMMANDS if options.quick else COMMANDS
    print(
        f"{NAME}: {n:,} commands, {CLIENTS} clients, the six default lanes; latency "
        "histograms recording vs. Histogram.record replaced by a no-op"
    )
    workload = functools.partial(lanes_run, lanes.DEFAULT_LANES, n)
    runners = {
        "metrics on": timed(workload),
        "metrics off": timed(without_histograms(workload)),
    }
    samples = interleaved(runners, options.repeat)
    wall = {name: [w for w, _ in runs] for name, runs in samples.items()}
    cpu = {name: [c for _, c in runs] for name, runs in samples.items()}
    rows = []
    for name in runners:
        mid, mid_cpu = median(wall[name]), median(cpu[name])
        result.rows.append(
            {
                "system": name,
                "n": n,
                "cmd_per_s": n / mid,
                "us_per_cmd": mid / n * 1e6,
                "cpu_us_per_cmd": mid_cpu / n * 1e6,
                "seconds": wall[name],
                "cpu_seconds": cpu[name],
            }
        )
        rows.append((name, n / mid, mid / n * 1e6, mid_cpu / n * 1e6))
    print_table(
        f"N = {n:,} (median of {options.repeat})",
        ("system", "cmd/s", "us/cmd", "CPU us/cmd"),
        rows,
    )
    wall_overhead = paired_ratio(wall["metrics on"], wall["metrics off"]) - 1
    cpu_overhead = paired_ratio(cpu["metrics on"], cpu["metrics off"]) - 1
    per_record = record_cost()
    per_command = median(cpu["metrics off"]) / n
    estimate = 2 * per_record / per_command  # two samples per command: wait and run
    result.note(f"wall-clock overhead: {wall_overhead:+.1%} (median of per-round ratios)")
    result.note(
        f"Histogram.record: {per_record * 1e9:.0f} ns per sample; 2 per command = "
        f"{estimate:.1%} of the {per_command * 1e6:.1f} us CPU a command costs"
    )
    result.target("metrics CPU time per command: on / off - 1 <= 5%", cpu_overhead, MAX_OVERHEAD)
    return result
