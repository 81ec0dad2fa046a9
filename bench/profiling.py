"""Profile the lane system under the throughput workload.

``python -m bench.profiling [--n 50000] [--top 25] [--pyinstrument [--tree]]``

With cProfile (the default) it prints the functions with the most own time, then the same
list restricted to ``lanes/`` and ``actors/``, then the lane code by cumulative time, then
counts per command: clock reads (by lanes/ and actors/, and by Trio's run loop), and a few
allocations that show on the hot path. A second, unprofiled run with a Trio instrument counts
task steps (scheduler switches into a task) and task spawns per command, and the
dispatcher's decision rounds per command. With ``--pyinstrument`` (``pip install
pyinstrument``) it prints the functions with the most own time by pyinstrument's sampling
(which distorts less than cProfile's per-call hooks), and with ``--tree`` its call tree too.
Profilers slow Python down several times (cProfile more than pyinstrument): read the shares,
not the absolute times.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import pstats
from collections import Counter
from pathlib import Path
from typing import Any

import trio

import lanes

from ._workloads import lanes_run, lean_run, trio_run

ROOT = Path(__file__).resolve().parent.parent
OURS = (str(ROOT / "lanes"), str(ROOT / "actors"))
Key = tuple[str, int, str]

PERF_COUNTER = ("~", 0, "<built-in method time.perf_counter>")
# The function behind trio.current_time() (generated), and SystemClock.current_time.
TRIO_CURRENT_TIME = ("trio/_core/_generated_run.py", "current_time")
SYSTEM_CLOCK = ("trio/_core/_run.py", "current_time")


def _ours(key: Key) -> bool:
    return key[0].startswith(OURS)


def _short(key: Key) -> str:
    where = Path(key[0])
    return f"{where.parent.name}/{where.name}:{key[1]} {key[2]}" if where.name else key[2]


def _print_rows(stats: pstats.Stats, keys: list[Key], total: float) -> None:
    raw = stats.stats  # type: ignore[attr-defined]
    print(f"  {'own %':>6} {'cum %':>6} {'calls':>10}  function")
    for key in keys:
        _cc, calls, own, cum, _callers = raw[key]
        print(f"  {own / total:6.1%} {cum / total:6.1%} {calls:>10,}  {_short(key)}")


def _callers(raw: dict[Key, Any], suffix: str, name: str) -> Counter[str]:
    """Calls of the functions named ``name`` in files ending in ``suffix``, by caller."""
    by: Counter[str] = Counter()
    for key, value in raw.items():
        if key[2] == name and key[0].endswith(suffix):
            for caller, (_cc, calls, *_rest) in value[4].items():
                by[_short(caller)] += calls
    return by


def _per_command(raw: dict[Key, Any], n: int) -> None:
    """Clock reads and a few hot-path allocations per command, by caller."""
    reads = raw[PERF_COUNTER][1] if PERF_COUNTER in raw else 0
    print(f"\nClock reads (time.perf_counter calls) per command: {reads / n:.2f}, by caller:")
    direct = Counter({k: v for k, v in _callers(raw, "~", PERF_COUNTER[2]).items()})
    trio_clock = direct.pop(_short((f"x/{SYSTEM_CLOCK[0]}", 204, SYSTEM_CLOCK[1])), 0)
    for where, calls in direct.most_common():
        print(f"  {calls / n:6.2f}  {where} (directly)")
    for where, calls in _callers(raw, *TRIO_CURRENT_TIME).most_common():
        print(f"  {calls / n:6.2f}  {where} (via trio.current_time())")
    print(f"  (all reads through Trio's clock: {trio_clock / n:.2f} per command)")
    print("\nHot-path objects per command, by caller:")
    for label, suffix, name in (
        ("trio.Event()", "trio._sync.Event>", "__init__"),
        ("nursery.start_soon()", "trio/_core/_run.py", "start_soon"),
    ):
        for where, calls in _callers(raw, suffix, name).most_common(3):
            print(f"  {calls / n:6.2f}  {label} from {where}")


class Counts(trio.abc.Instrument):
    """Task steps and spawns of one run."""

    def __init__(self) -> None:
        self.steps = 0
        self.spawned = 0
        self.by_task: Counter[str] = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        self.by_task[task.name.rsplit(".", 1)[-1]] += 1

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.spawned += 1


def counts(n: int) -> None:
    """Task steps, spawns and decision rounds per command, in a run without a profiler."""
    instrument = Counts()
    run = lanes_run(lanes.DEFAULT_LANES, n, instruments=[instrument])
    print(
        f"\nCounted in an unprofiled run of {n:,} commands ({n / run.seconds:,.0f} cmd/s, "
        "with a Trio instrument attached):"
    )
    print(f"  task steps (switches into a task)  {instrument.steps / n:6.2f} per command")
    print(f"  tasks spawned                       {instrument.spawned / n:6.2f} per command")
    if run.rounds is not None:
        print(f"  dispatcher decision rounds          {run.rounds / n:6.2f} per command")
    print("  task steps per command by task function:")
    for name, steps in instrument.by_task.most_common(4):
        print(f"    {steps / n:6.2f}  {name}")
    for label, runner in (
        ("plain trio", trio_run),
        ("lean", lean_run),
        ("lean lowlevel", functools.partial(lean_run, lowlevel=True)),
    ):
        other = Counts()
        runner(n, instruments=[other])
        print(
            f"  {label}: {other.steps / n:.2f} task steps and {other.spawned / n:.2f} spawns "
            "per command"
        )


def with_cprofile(n: int, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run = lanes_run(lanes.DEFAULT_LANES, n)
    profiler.disable()
    print(f"{n:,} commands in {run.seconds:.2f} s under cProfile ({n / run.seconds:,.0f} cmd/s)")
    stats = pstats.Stats(profiler)
    raw = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    by_own = sorted(raw, key=lambda k: raw[k][2], reverse=True)
    print(f"\nTop {top} by own time (all code):")
    _print_rows(stats, by_own[:top], total)
    print(f"\nTop {top} by own time in lanes/ and actors/:")
    _print_rows(stats, [k for k in by_own if _ours(k)][:top], total)
    by_cum = sorted((k for k in raw if _ours(k)), key=lambda k: raw[k][3], reverse=True)
    print(f"\nTop {top} by cumulative time in lanes/ and actors/:")
    _print_rows(stats, by_cum[:top], total)
    _per_command(raw, n)
    counts(n)


def with_pyinstrument(n: int, top: int, tree: bool) -> None:
    from pyinstrument import Profiler  # optional dependency

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    run = lanes_run(lanes.DEFAULT_LANES, n)
    profiler.stop()
    print(f"{n:,} commands in {run.seconds:.2f} s under pyinstrument")
    root = profiler.last_session.root_frame() if profiler.last_session else None
    if root is not None:
        own: dict[str, float] = {}
        stack = [root]
        while stack:
            frame = stack.pop()
            children = frame.children
            stack.extend(c for c in children if not c.is_synthetic)
            if not frame.is_synthetic:
                mine = frame.time - sum(c.time for c in children if not c.is_synthetic)
                where = f"{frame.file_path_short}:{frame.line_no} {frame.function}"
                own[where] = own.get(where, 0.0) + mine
        print(f"\nTop {top} by own time (pyinstrument samples):")
        for where, seconds in sorted(own.items(), key=lambda item: -item[1])[:top]:
            print(f"  {seconds / root.time:6.1%}  {where}")
    if tree:  # slow: minutes and about 1 GB for 100,000 commands
        print(profiler.output_text(unicode=True, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profiling", description=__doc__)
    parser.add_argument("--n", type=int, default=50_000, help="commands (default 50000)")
    parser.add_argument("--top", type=int, default=25, help="rows per list (default 25)")
    parser.add_argument("--pyinstrument", action="store_true", help="use pyinstrument")
    parser.add_argument(
        "--tree", action="store_true", help="with --pyinstrument: also print its call tree (slow)"
    )
    args = parser.parse_args()
    if args.pyinstrument:
        with_pyinstrument(args.n, args.top, args.tree)
    else:
        with_cprofile(args.n, args.top)


if __name__ == "__main__":
    main()
