"""What every benchmark shares: options, repeated interleaved runs, medians, tables, targets."""

from __future__ import annotations

import gc
import hashlib
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
BENCH_ROOT = Path(__file__).resolve().parent.parent  # the checkout holding this bench/


@dataclass(frozen=True)
class Options:
    """What the command line asked for."""

    quick: bool = False
    repeat: int = 5
    repeat_large: int | None = None  # runs per figure at the largest sizes (None: ``repeat``)

    @property
    def large_repeat(self) -> int:
        """Runs per figure for the slowest sizes (throughput at 1M commands)."""
        return self.repeat if self.repeat_large is None else self.repeat_large


@dataclass(frozen=True)
class Target:
    """A goal of issue 7 and whether this run meets it."""

    text: str
    value: float
    limit: float
    holds: bool
    unit: str = ""


@dataclass
class Result:
    """What one benchmark measured: printed tables plus the same rows for the JSON file."""

    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def target(
        self, text: str, value: float, limit: float, *, at_most: bool = True, unit: str = ""
    ) -> None:
        holds = value <= limit if at_most else value >= limit
        self.targets.append(Target(text, value, limit, holds, unit))
        mark = "holds" if holds else "MISSED"
        print(f"  target: {text}: {value:.3g}{unit} -> {mark}", flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "targets": [asdict(t) for t in self.targets],
            "notes": self.notes,
        }


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def interleaved(
    runners: Mapping[str, Callable[[], T]], repeat: int, *, warmup: bool = True
) -> dict[str, list[T]]:
    """Run each runner ``repeat`` times, rotating their order every round.

    Round ``r`` runs every system once, back to back, so a slow patch of the shared machine
    hits all of them; rotating the order cancels any first/last advantage. An optional
    discarded warm-up round fills caches and the allocator first.
    """
    names = list(runners)
    if warmup:
        for name in names:
            runners[name]()
    samples: dict[str, list[T]] = {name: [] for name in names}
    for round_ in range(repeat):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            samples[name].append(runners[name]())
    return samples


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median of the per-round ratios (each round ran both systems back to back)."""
    return median([a / b for a, b in zip(numerator, denominator, strict=True)])


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print(
        "  "
        + "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    for row in cells:
        print(
            "  "
            + "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    sys.stdout.flush()


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        if value >= 100:
            return f"{value:.1f}"
        return f"{value:.3g}" if value < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def machine() -> dict[str, Any]:
    """The machine and software the figures were measured on."""
    import trio

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "trio": trio.__version__,
        # "." when the lanes measured are this checkout's (no machine-specific path is stored)
        "lanes_path": "." if code_root() == BENCH_ROOT else str(code_root()),
        "git": _git_revision(code_root()),
        "source_sha256": source_digest(),
    }


def code_root() -> Path:
    """The directory holding the ``lanes`` package this process imported."""
    import lanes

    return Path(lanes.__file__).resolve().parent.parent


def source_digest() -> str:
    """A digest of the lanes/ and actors/ sources measured (the tree may be uncommitted)."""
    digest = hashlib.sha256()
    root = code_root()
    for path in sorted([*root.glob("lanes/**/*.py"), *root.glob("actors/**/*.py")]):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _git_revision(where: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
            cwd=where,
        )
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return out.stdout.strip()
