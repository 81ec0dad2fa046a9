"""Profile the lane system under the throughput workload.

``python -m bench.profiling [--n 50000] [--top 25] [--pyinstrument]``

With cProfile (the default) it prints the functions with the most own time, then the same
list restricted to ``lanes/`` and ``actors/``, then the lane code by cumulative time. With
``--pyinstrument`` (``pip install pyinstrument``) it prints pyinstrument's call tree instead.
Profilers slow Python down several times (cProfile more than pyinstrument): read the shares,
not the absolute times.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
from pathlib import Path

import lanes

from ._workloads import lanes_run

ROOT = Path(__file__).resolve().parent.parent
OURS = (str(ROOT / "lanes"), str(ROOT / "actors"))


def _ours(key: tuple[str, int, str]) -> bool:
    return key[0].startswith(OURS)


def _print_rows(stats: pstats.Stats, keys: list[tuple[str, int, str]], total: float) -> None:
    raw = stats.stats  # type: ignore[attr-defined]
    print(f"  {'own %':>6} {'cum %':>6} {'calls':>10}  function")
    for key in keys:
        _cc, calls, own, cum, _callers = raw[key]
        where = Path(key[0])
        short = f"{where.parent.name}/{where.name}" if where.name else key[0]
        print(f"  {own / total:6.1%} {cum / total:6.1%} {calls:>10,}  {short}:{key[1]} {key[2]}")


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


def with_pyinstrument(n: int) -> None:
    from pyinstrument import Profiler  # optional dependency

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    run = lanes_run(lanes.DEFAULT_LANES, n)
    profiler.stop()
    print(f"{n:,} commands in {run.seconds:.2f} s under pyinstrument")
    print(profiler.output_text(unicode=True, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profiling", description=__doc__)
    parser.add_argument("--n", type=int, default=50_000, help="commands (default 50000)")
    parser.add_argument("--top", type=int, default=25, help="rows per list (default 25)")
    parser.add_argument("--pyinstrument", action="store_true", help="use pyinstrument")
    args = parser.parse_args()
    if args.pyinstrument:
        with_pyinstrument(args.n)
    else:
        with_cprofile(args.n, args.top)


if __name__ == "__main__":
    main()
