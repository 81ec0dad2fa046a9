"""``python -m bench [--quick] [--only NAME] [--repeat N] [--json PATH]``."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._harness import Options, Result, machine

# Benchmark name -> its module in this package (a module with ``run(Options) -> Result``).
# Modules are imported only when their benchmark runs, so one that needs a newer lanes (or an
# optional dependency) cannot stop the others.
BENCHMARKS: dict[str, str] = {
    "throughput": "throughput",
    "lanes_scaling": "lanes_scaling",
    "priority_overhead": "priority_overhead",
    "control_latency": "control_latency",
    "memory": "memory",
    "metrics_overhead": "metrics_overhead",
    "durable": "durable",
    "distributed": "distributed",
    "multicore": "multicore",
}


def load(name: str) -> Callable[[Options], Result]:
    module = importlib.import_module(f"{__package__}.{BENCHMARKS[name]}")
    runner: Callable[[Options], Result] = module.run
    return runner


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="trio-lanes benchmarks, each next to a baseline measured in the same run.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--only",
        action="append",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs per figure; medians are reported (default 5)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    options = Options(quick=args.quick, repeat=args.repeat)
    info = machine()
    print(
        f"trio-lanes benchmarks ({'quick' if args.quick else 'full'}, repeat={args.repeat}): "
        f"{info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"trio {info['trio']}, git {info['git']}"
    )
    results: dict[str, Result] = {}
    skipped: dict[str, str] = {}
    started = time.perf_counter()
    for name in args.only or list(BENCHMARKS):
        print(f"\n== {name} ==", flush=True)
        try:
            runner = load(name)
        except ImportError as exc:  # e.g. measuring an older lanes that lacks a module
            skipped[name] = f"{type(exc).__name__}: {exc}"
            print(f"  skipped: {skipped[name]}", flush=True)
            continue
        t0 = time.perf_counter()
        results[name] = runner(options)
        print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    print("\n== targets ==")
    for result in results.values():
        for target in result.targets:
            mark = "holds " if target.holds else "MISSED"
            print(f"  {mark} {result.name}: {target.text}: {target.value:.3g}{target.unit}")
    for name, reason in skipped.items():
        print(f"  skipped {name}: {reason}")
    print(f"(total {time.perf_counter() - started:.0f} s)")
    if args.json is not None:
        document = {
            "machine": info,
            "options": {"quick": args.quick, "repeat": args.repeat, "argv": sys.argv[1:]},
            "benchmarks": {name: result.as_json() for name, result in results.items()},
            "skipped": skipped,
        }
        args.json.write_text(json.dumps(_strict(document), indent=2, allow_nan=False) + "\n")
        print(f"results written to {args.json}")
    return 0


def _strict(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (they are not JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(item) for item in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
