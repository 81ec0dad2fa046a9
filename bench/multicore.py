"""multicore: a CPU-bound command on an ordinary lane vs process lanes with 1 and 2 workers.

The command is a pure-Python loop calibrated to take about 20 ms in this process. It runs
N times on:

- *in-process*: an ordinary lane (``max_concurrency=1``) whose async command calls the loop
  directly, so it holds the event loop: one process, one core;
- *process xK*: a lane with ``executor="process"`` and ``max_concurrency=K``: each command runs
  in one of K trio-parallel worker processes;
- *process x2, own sessions*: the same with 2 workers that each start a session of their own
  (``os.setsid`` as trio-parallel's worker ``init``, in a ``trio_parallel.cache_scope``).
  Linux's autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``) shares the CPU
  fairly between *sessions*, not processes: on a machine busy with other sessions, workers in
  the benchmark's own session share that one session's part of the CPU, however many there
  are. This row shows what the workers do when each gets a share of its own, as processes
  under separate services (or on a machine without other load) do.

All N commands are submitted at once and the clock stops when the last result is in. Workers
are started (and warmed up) before the clock starts; they are reused between rounds. A second
table runs a trivial command (returns its argument) the same way, which shows the fixed cost of
a process round trip (pickling and a pipe each way) that a command must be long enough to hide.
Each CPU-bound command reports the CPU time it got (``time.thread_time()``), so *cores used*
(CPU seconds of all commands over wall seconds) shows how much of the machine the run really
had. It and the load average are printed next to the figures: on a shared 2-core machine the
second worker only helps as much as the second core is free.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

import trio
import trio_parallel

import lanes

from ._harness import Options, Result, interleaved, median, paired_ratio, print_table

NAME = "multicore"
COMMANDS = 100
QUICK_COMMANDS = 20
TARGET_SECONDS = 0.020  # one CPU-bound command, measured in this process
TRIVIAL_COMMANDS = 500
WORKERS = (1, 2)


def burn(iterations: int) -> float:
    """The CPU-bound command: a pure-Python loop (holds the GIL throughout).

    Returns the CPU time it got, so the run can tell how many cores it really used.
    """
    cpu = time.thread_time()
    total = 0
    for i in range(iterations):
        total = (total + i * i) % 1_000_003
    return time.thread_time() - cpu if total >= 0 else 0.0


def echo(x: int) -> float:
    """The trivial command: its cost is the lane's and the process round trip's."""
    return 0.0 * x


async def burn_here(iterations: int) -> float:
    return burn(iterations)


async def echo_here(x: int) -> float:
    return 0.0 * x


def calibrate(seconds: float) -> int:
    """How many loop iterations take about ``seconds`` here (best of a few tries)."""
    probe = 100_000
    best = min(_timed(burn, probe) for _ in range(5))
    return max(1, int(probe * seconds / best))


def _timed(fn: Callable[[int], object], arg: int) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def new_session() -> bool:
    """Worker ``init``: leave the benchmark's session (and so its scheduling autogroup)."""
    os.setsid()
    return True


def measure(
    workers: int, n: int, heavy: bool, arg: int, own_sessions: bool = False
) -> tuple[float, float]:
    """Seconds for ``n`` commands on one lane (``workers=0``: the ordinary lane), and the
    CPU seconds the commands got in total."""
    return trio.run(_measure_in_scope, workers, n, heavy, arg, own_sessions)


async def _measure_in_scope(
    workers: int, n: int, heavy: bool, arg: int, own_sessions: bool
) -> tuple[float, float]:
    if not own_sessions:
        return await _measure(workers, n, heavy, arg)
    async with trio_parallel.cache_scope(init=new_session):
        return await _measure(workers, n, heavy, arg)


async def _measure(workers: int, n: int, heavy: bool, arg: int) -> tuple[float, float]:
    fn: Callable[[int], Any]
    if workers:
        lane = lanes.LaneConfig("cpu", 0, max_concurrency=workers, executor="process")
        fn = burn if heavy else echo
    else:
        lane = lanes.LaneConfig("cpu", 0, max_concurrency=1)
        fn = burn_here if heavy else echo_here
    async with lanes.open_lane_system([lane]) as system:
        # Warm-up: every worker started and used once before the clock starts.
        warm = [await system.submit("cpu", fn, 1) for _ in range(max(workers, 1))]
        for handle in warm:
            await handle.result()
        start = time.perf_counter()
        handles = [await system.submit("cpu", fn, arg) for _ in range(n)]
        cpu = [await handle.result() for handle in handles]
        return time.perf_counter() - start, sum(cpu)


def label(workers: int, own_sessions: bool = False) -> str:
    if not workers:
        return "in-process"
    return f"process x{workers}" + (", own sessions" if own_sessions else "")


def run(options: Options) -> Result:
    result = Result(NAME)
    iterations = calibrate(TARGET_SECONDS)
    n = QUICK_COMMANDS if options.quick else COMMANDS
    trivial_n = TRIVIAL_COMMANDS // 5 if options.quick else TRIVIAL_COMMANDS
    load_before = os.getloadavg()
    print(
        f"{NAME}: {n} CPU-bound commands of ~{TARGET_SECONDS * 1000:.0f} ms "
        f"({iterations:,} loop iterations), all submitted at once; {len(os.sched_getaffinity(0))} "
        f"CPUs, load average {load_before[0]:.2f} at start"
    )
    systems = [(0, False), *((w, False) for w in WORKERS), (max(WORKERS), True)]
    heavy = interleaved(
        {label(*s): functools.partial(measure, s[0], n, True, iterations, s[1]) for s in systems},
        options.repeat,
    )
    light = interleaved(
        {label(*s): functools.partial(measure, s[0], trivial_n, False, 1, s[1]) for s in systems},
        options.repeat,
    )
    load_after = os.getloadavg()
    rows = []
    for w, own in systems:
        name = label(w, own)
        secs = [wall for wall, _ in heavy[name]]
        trivial_secs = [wall for wall, _ in light[name]]
        cores = median([cpu / wall for wall, cpu in heavy[name]])
        speedup = paired_ratio([wall for wall, _ in heavy[label(0)]], secs)
        per_cmd_us = median(trivial_secs) / trivial_n * 1e6
        result.rows.append(
            {
                "system": name,
                "workers": w,
                "own_sessions": own,
                "n": n,
                "cmd_per_s": n / median(secs),
                "ms_per_cmd": median(secs) / n * 1000,
                "speedup_over_in_process": speedup,
                "cores_used": cores,
                "seconds": secs,
                "trivial_n": trivial_n,
                "trivial_us_per_cmd": per_cmd_us,
                "trivial_seconds": trivial_secs,
            }
        )
        rows.append((name, n / median(secs), median(secs) / n * 1000, speedup, cores, per_cmd_us))
    print_table(
        f"N = {n} (median of {options.repeat})",
        ("system", "cmd/s", "ms/cmd", "speedup", "cores used", "trivial us/cmd"),
        rows,
    )
    result.note(
        f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after, on "
        f"{len(os.sched_getaffinity(0))} CPUs; Linux autogroup scheduling: {autogroup()} "
        "(when on, all workers in this session share one session's part of the CPU)"
    )
    return result


def autogroup() -> str:
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as file:
            return "on" if file.read().strip() == "1" else "off"
    except OSError:
        return "unknown"
