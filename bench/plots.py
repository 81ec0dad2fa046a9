"""PNG plots of a benchmark run, for docs/benchmarks.md.

``python -m bench --json results.json --plots docs/img`` runs the benchmarks and draws the plots;
``python -m bench --replot results.json --plots docs/img`` (or ``python -m bench.plots
results.json docs/img``) draws them again from a saved run. Needs matplotlib (``pip install -e
'.[bench]'``); it draws with the non-interactive Agg backend, so no display is needed.

One PNG per benchmark found in the results (a benchmark that did not run gets none):
throughput.png, lanes_scaling.png, control_latency.png and overhead_memory.png (priority
overhead and memory side by side). Every figure carries the run's machine line (CPUs, Python,
trio, git revision, load average) and the targets of issue 7 as dashed lines.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

Document = dict[str, Any]
Rows = list[dict[str, Any]]

COLORS = {
    "trio-lanes": "#1f77b4",
    "plain trio": "#7f7f7f",
    "asyncio": "#ff7f0e",
    "lean scheduler": "#2ca02c",
    "target": "#d62728",
    "second": "#aec7e8",
}
DPI = 110


def machine_line(document: Document, names: Sequence[str] = ()) -> str:
    """One line: where and on what code the figures of ``names`` (default: all) were measured."""
    info = document.get("machine", {})
    text = (
        f"{info.get('nproc', '?')} CPUs, Python {info.get('python', '?')}, "
        f"trio {info.get('trio', '?')}, git {info.get('git', '?')}"
    )
    loads = [
        value
        for name, pair in document.get("load", {}).items()
        if not names or name in names
        for value in pair.values()
    ]
    if loads:
        low = min(load[0] for load in loads)
        high = max(load[0] for load in loads)
        text += f"; 1-min load average {low:.1f}-{high:.1f} during the run"
    options = document.get("options", {})
    if options:
        text += f"; medians of {options.get('repeat', '?')}"
        large = options.get("repeat_large")
        if large is not None and large != options.get("repeat") and "throughput" in names:
            text += f" ({large} at 1M)"
    return text


def _figure(
    document: Document, title: str, names: Sequence[str], panels: int = 2
) -> tuple[Figure, list[Axes]]:
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2), squeeze=False)
    fig.suptitle(title, fontsize=12, fontweight="bold")
    line = machine_line(document, names)
    fig.text(0.5, 0.01, line, ha="center", va="bottom", fontsize=8, color="#555")
    return fig, list(axes[0])


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _target_line(ax: Axes, value: float, text: str, *, horizontal: bool = True) -> None:
    if horizontal:
        ax.axhline(value, color=COLORS["target"], linestyle="--", linewidth=1.2, label=text)


def _label_bars(ax: Axes, bars: Any, fmt: Callable[[float], str]) -> None:
    for bar in bars:
        height = bar.get_height()
        if not math.isfinite(height):
            continue
        ax.annotate(
            fmt(height),
            (bar.get_x() + bar.get_width() / 2, height),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )


def _count(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1_000}K" if n >= 1_000 else str(n)


def throughput(document: Document, rows: Rows, out: Path) -> Path:
    fig, (left, right) = _figure(
        document, "throughput: 100 closed-loop clients, trivial commands", ["throughput"]
    )
    sizes = sorted({row["n"] for row in rows})
    systems = (
        ("lanes", "trio-lanes"),
        ("lean", "lean scheduler"),
        ("plain trio", "plain trio"),
        ("asyncio", "asyncio"),
    )
    for key, label in systems:
        points = sorted((r["n"], r["cmd_per_s"]) for r in rows if r["system"] == key)
        if points:
            xs, ys = zip(*points, strict=True)
            left.plot(xs, ys, marker="o", label=label, color=COLORS[label])
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xticks(sizes, [_count(n) for n in sizes])
    left.set_xlabel("commands (N)")
    left.set_ylabel("commands per second (log)")
    left.set_title("absolute (the machine's load moves these)", fontsize=10)
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)

    lanes_rows = {r["n"]: r for r in rows if r["system"] == "lanes"}
    positions = range(len(sizes))
    width = 0.38
    wall = [lanes_rows[n]["ratio_to_plain_trio"] for n in sizes]
    cpu = [lanes_rows[n].get("cpu_ratio_to_plain_trio") or math.nan for n in sizes]
    bars = right.bar(
        [p - width / 2 for p in positions],
        wall,
        width,
        label="wall clock",
        color=COLORS["trio-lanes"],
    )
    cpu_bars = right.bar(
        [p + width / 2 for p in positions], cpu, width, label="CPU time", color=COLORS["second"]
    )
    _label_bars(right, bars, lambda v: f"{v:.2f}")
    _label_bars(right, cpu_bars, lambda v: f"{v:.2f}")
    _target_line(right, 1.0, "target (issue 19): at least 1.0x")
    right.set_xticks(list(positions), [_count(n) for n in sizes])
    right.set_xlabel("commands (N)")
    right.set_ylabel("trio-lanes throughput / plain trio")
    right.set_ylim(0, max(1.0, *(v for v in wall + cpu if math.isfinite(v))) * 1.15)
    right.set_title("ratio to plain trio, same rounds", fontsize=10)
    right.grid(True, axis="y", alpha=0.3)
    right.legend(fontsize=8, loc="upper left")
    return _save(fig, out / "throughput.png")


def lanes_scaling(document: Document, rows: Rows, out: Path) -> Path:
    fig, (left, right) = _figure(
        document, "lanes_scaling: the same workload over 1-256 lanes", ["lanes_scaling"]
    )
    lane_rows = sorted((r for r in rows if r.get("lanes") is not None), key=lambda r: r["lanes"])
    counts = [r["lanes"] for r in lane_rows]
    left.plot(
        counts,
        [r["us_per_cmd"] for r in lane_rows],
        marker="o",
        color=COLORS["trio-lanes"],
        label="trio-lanes",
    )
    trio_row = next((r for r in rows if r["system"] == "plain trio"), None)
    if trio_row is not None:
        left.axhline(
            trio_row["us_per_cmd"], color=COLORS["plain trio"], linestyle=":", label="plain trio"
        )
    left.set_xscale("log", base=2)
    left.set_xticks(counts, [str(c) for c in counts])
    left.set_ylim(bottom=0)
    left.set_xlabel("lanes (global cap 10)")
    left.set_ylabel("µs per command (wall clock)")
    left.set_title("cost per command", fontsize=10)
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)

    growth = [r.get("growth_over_1_lane", math.nan) for r in lane_rows]
    right.plot(counts, growth, marker="o", color=COLORS["trio-lanes"], label="time x 1 lane")
    right.plot(
        counts,
        [float(c) for c in counts],
        linestyle=":",
        color=COLORS["target"],
        label="linear growth (what must not happen)",
    )
    right.set_xscale("log", base=2)
    right.set_yscale("log", base=2)
    right.set_xticks(counts, [str(c) for c in counts])
    right.set_xlabel("lanes (global cap 10)")
    right.set_ylabel("time relative to one lane (log)")
    right.set_title("growth over one lane", fontsize=10)
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=8, loc="upper left")
    for count, value in zip(counts, growth, strict=True):
        if math.isfinite(value):
            right.annotate(
                f"{value:.2f}",
                (count, value),
                xytext=(0, 5),
                textcoords="offset points",
                ha="center",
                fontsize=8,
            )
    return _save(fig, out / "lanes_scaling.png")


def control_latency(document: Document, rows: Rows, out: Path) -> Path:
    fig, (ax,) = _figure(
        document,
        "control_latency: control submit -> start while prompt is busy",
        ["control_latency"],
        panels=1,
    )
    fig.set_size_inches(9.5, 4.6)
    names = [r["system"].replace(", ", "\n") for r in rows]
    series = (
        ("p50", "p50_us", COLORS["second"]),
        ("p99", "p99_us", COLORS["trio-lanes"]),
        (
            "p99 of samples neither preempted by the OS nor hit by a GC",
            "p99_undisturbed_us",
            "#2ca02c",
        ),
    )
    width = 0.26
    for i, (label, key, color) in enumerate(series):
        values = [r.get(key) or math.nan for r in rows]
        bars = ax.bar(
            [p + (i - 1) * width for p in range(len(rows))], values, width, label=label, color=color
        )
        _label_bars(ax, bars, _micros)
    _target_line(ax, 1000.0, "target: p99 < 1 ms")
    ax.set_yscale("log")
    ax.set_xticks(list(range(len(rows))), names, fontsize=9)
    ax.set_ylabel("µs from submit to the command's first line (log)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    top = max((r.get("p99_us") or 0.0) for r in rows)
    ax.set_ylim(10, max(3000.0, top * 4))
    return _save(fig, out / "control_latency.png")


def _micros(value: float) -> str:
    return f"{value / 1000:.1f} ms" if value >= 1000 else f"{value:.0f} µs"


def overhead_memory(
    document: Document, priority: Rows | None, memory: Rows | None, out: Path
) -> Path:
    panels = [rows for rows in (priority, memory) if rows]
    fig, axes = _figure(
        document,
        "priority overhead and memory",
        ["priority_overhead", "memory"],
        panels=len(panels),
    )
    axes_iter = iter(axes)
    if priority:
        ax = next(axes_iter)
        lane_rows = [r for r in priority if r["system"] != "plain trio"]
        values = [r["time_ratio_to_1_lane"] for r in lane_rows]
        bars = ax.bar(
            [r["system"] for r in lane_rows],
            values,
            color=[COLORS["second"], COLORS["trio-lanes"]][: len(lane_rows)],
        )
        _label_bars(ax, bars, lambda v: f"{v:.2f}x")
        _target_line(ax, 1.2, "target: six lanes at most 1.2x")
        n = lane_rows[0]["n"] if lane_rows else 0
        ax.set_title(f"{n:,} commands: time relative to one lane", fontsize=10)
        ax.set_ylabel("time x one lane (lower is better)")
        ax.set_ylim(0, max(1.5, *values) * 1.15)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    if memory:
        ax = next(axes_iter)
        labels = {
            "lanes": "trio-lanes",
            "plain trio channel": "plain trio\nchannel",
            "bare tuples": "bare\ntuples",
        }
        values = [r["peak_bytes_per_cmd"] for r in memory]
        colors = [COLORS["trio-lanes"], COLORS["plain trio"], COLORS["second"]]
        bars = ax.bar(
            [labels.get(r["system"], r["system"]) for r in memory],
            values,
            color=colors[: len(values)],
        )
        _label_bars(ax, bars, lambda v: f"{v:,.0f} B")
        _target_line(ax, 1024.0, "target: at most 1 KiB (trio-lanes)")
        n = memory[0]["n"]
        ax.set_title(f"peak RSS per pending command, {_count(n)} queued", fontsize=10)
        ax.set_ylabel("bytes per pending command")
        ax.set_ylim(0, max(1200.0, *values) * 1.25)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    return _save(fig, out / "overhead_memory.png")


def plot(document: Document, out: Path) -> list[Path]:
    """Draw every plot the results allow into ``out`` (created if missing); return the files."""
    out.mkdir(parents=True, exist_ok=True)
    results = document.get("benchmarks", {})

    def rows(name: str) -> Rows | None:
        found = results.get(name)
        return found["rows"] if found and found.get("rows") else None

    written = []
    if (found := rows("throughput")) is not None:
        written.append(throughput(document, found, out))
    if (found := rows("lanes_scaling")) is not None:
        written.append(lanes_scaling(document, found, out))
    if (found := rows("control_latency")) is not None:
        written.append(control_latency(document, found, out))
    priority, memory = rows("priority_overhead"), rows("memory")
    if priority or memory:
        written.append(overhead_memory(document, priority, memory, out))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plots", description=__doc__)
    parser.add_argument("results", type=Path, help="a JSON file written by python -m bench --json")
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/img"), help="(docs/img)")
    args = parser.parse_args(argv)
    for path in plot(json.loads(args.results.read_text()), args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
