"""``python -m bench [--quick] [--only NAME] [--repeat N] [--json PATH] [--plots DIR]``.

``python -m bench --replot PATH --plots DIR`` draws the plots of a saved run without running
anything. ``python -m bench --docs [--repeat N]`` measures what the docs pages show: each
group of ``DOCS_RUNS`` into its ``docs/bench/`` JSON file, then ``python -m bench.report``
rewrites the pages' generated regions from them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
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
    "sessions": "sessions",
    "web_console": "web_console",
    "agent_server": "agent_server",
    "shared_limit": "shared_limit",
    "scrape": "scrape",
}


# The JSON files under docs/bench/ that the docs pages' generated regions name, and the
# benchmarks each holds (one run per file: sessions alone takes its own processes).
DOCS_RUNS: dict[str, tuple[str, ...]] = {
    "results.json": ("throughput", "priority_overhead", "control_latency", "durable"),
    "sessions.json": ("sessions",),
    "shared_limit.json": ("shared_limit",),
    "scrape.json": ("scrape",),
    "scaling.json": ("lanes_scaling", "memory"),
    "distributed.json": ("distributed",),
    "agent_server.json": ("agent_server",),
}
DOCS_BENCH = Path(__file__).resolve().parent.parent / "docs" / "bench"


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
    parser.add_argument(
        "--repeat-large",
        type=int,
        metavar="N",
        help="runs per figure for the largest sizes (throughput at 1M commands, about 5 "
        "minutes a round on a busy 2-core machine; default: --repeat)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument(
        "--plots",
        type=Path,
        metavar="DIR",
        help="also draw PNG plots into DIR (needs matplotlib: pip install -e '.[bench]')",
    )
    parser.add_argument(
        "--replot",
        type=Path,
        metavar="PATH",
        help="run nothing: draw the plots of the JSON file PATH (a --json output) into --plots "
        "(with --only: only those benchmarks' plots)",
    )
    parser.add_argument(
        "--docs",
        action="store_true",
        help="measure every benchmark the docs show into docs/bench/*.json, then rewrite the "
        "docs' figures (python -m bench.report); with --repeat, --repeat-large, --quick",
    )
    args = parser.parse_args(argv)
    if args.docs and (args.only or args.json or args.replot or args.plots):
        parser.error("--docs chooses the benchmarks and files: no --only, --json, --plots")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.repeat_large is not None and args.repeat_large < 1:
        parser.error("--repeat-large must be >= 1")
    if args.replot is not None and args.plots is None:
        parser.error("--replot needs --plots DIR (where to draw)")
    return args


def draw(document: dict[str, Any], where: Path) -> None:
    from .plots import plot  # imports matplotlib: only when plots are asked for

    for path in plot(document, where):
        print(f"plot written to {path}")


def docs(args: argparse.Namespace) -> int:
    """Each group of DOCS_RUNS into its docs/bench file, then the docs pages from them."""
    from . import report

    common = ["--repeat", str(args.repeat)] + (["--quick"] if args.quick else [])
    if args.repeat_large is not None:
        common += ["--repeat-large", str(args.repeat_large)]
    DOCS_BENCH.mkdir(exist_ok=True)
    for filename, names in DOCS_RUNS.items():
        only = [arg for name in names for arg in ("--only", name)]
        main([*common, *only, "--json", os.path.relpath(DOCS_BENCH / filename)])
    return report.main([])


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.docs:
        return docs(args)
    if args.replot is not None:
        document = json.loads(args.replot.read_text())
        if args.only:  # redraw only these benchmarks' plots
            for key in ("benchmarks", "load"):
                document[key] = {k: v for k, v in document.get(key, {}).items() if k in args.only}
        draw(document, args.plots)
        return 0
    if args.plots is not None:
        import matplotlib  # noqa: F401  (fail now, not after an hour of measuring)
    options = Options(quick=args.quick, repeat=args.repeat, repeat_large=args.repeat_large)
    info = machine()
    print(
        f"trio-lanes benchmarks ({'quick' if args.quick else 'full'}, repeat={args.repeat}): "
        f"{info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"trio {info['trio']}, git {info['git']}"
    )
    results: dict[str, Result] = {}
    skipped: dict[str, str] = {}
    loads: dict[str, dict[str, list[float]]] = {}
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
        before = list(os.getloadavg())
        results[name] = runner(options)
        loads[name] = {"before": before, "after": list(os.getloadavg())}
        print(
            f"  ({time.perf_counter() - t0:.0f} s; load average {_load(before)} before, "
            f"{_load(loads[name]['after'])} after)",
            flush=True,
        )
    print("\n== targets ==")
    for result in results.values():
        for target in result.targets:
            mark = "holds " if target.holds else "MISSED"
            print(f"  {mark} {result.name}: {target.text}: {target.value:.3g}{target.unit}")
    for name, reason in skipped.items():
        print(f"  skipped {name}: {reason}")
    print(f"(total {time.perf_counter() - started:.0f} s)")
    document = {
        "machine": info,
        "options": {
            "quick": args.quick,
            "repeat": args.repeat,
            "repeat_large": options.large_repeat,
            "argv": sys.argv[1:] if argv is None else argv,
        },
        "load": loads,
        "benchmarks": {name: result.as_json() for name, result in results.items()},
        "skipped": skipped,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(_strict(document), indent=2, allow_nan=False) + "\n")
        print(f"results written to {args.json}")
    if args.plots is not None:
        draw(json.loads(json.dumps(_strict(document))), args.plots)
    return 0


def _load(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


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
