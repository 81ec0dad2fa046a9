"""Write the figures of the docs pages from bench output, or check that they match it.

``python -m bench.report [--check] [PAGE ...]`` (default: every ``docs/**/*.md``).

A page marks each generated region with a pair of HTML comments (invisible once rendered)::

    <!-- bench:NAME json=docs/bench/results.json columns=n,system,cmd_per_s:cmd/s -->
    ... generated: never edit by hand ...
    <!-- /bench:NAME -->

``NAME`` is a benchmark of the JSON file (the ``benchmarks`` key of a ``python -m bench
--json PATH`` output: ``throughput``, ``sessions``, ``distributed``, ...), ``NAME.targets``
for that benchmark's targets, ``machine`` for the machine, code and options the file was
measured with, or ``mutants`` for the mutation score a ``python -m tools.mutants --json PATH``
output holds (one row per mutant: what it breaks, killed or not, CPU seconds to the failure,
the test module that failed; then the score). Attributes (shell-quoted:
``columns="cmd_per_s:cmd per s"``):

- ``json=PATH``: the bench output, relative to the repository root (default
  ``docs/bench/results.json``).
- ``columns=FIELD[:LABEL],...``: the row fields shown, in order (default: every field whose
  values are numbers or text). Labels default to ``LABELS`` below, else the field name.
  Derived: ``cmd_per_s_range``, the slowest and fastest run (from ``n`` and ``seconds``);
  ``FIELD_range_us``, the least and greatest ``FIELD`` (seconds) of the rows' ``runs``.
- ``where=FIELD:VALUE|VALUE``: keep only rows whose field has one of these values
  (repeatable, all must hold).
- ``group=FIELD``: blank a value of this field that repeats the row above it.

Rewriting replaces what lies between the markers; ``--check`` rewrites nothing and exits 1
naming every region that differs from what its JSON gives (the test suite runs it against
the stored JSON, so a docs figure cannot drift from the measurement it cites).
"""

# ruff: noqa: RUF001  (the tables use the same signs as the docs pages)
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = "docs/bench/results.json"
OPEN = re.compile(r"^<!-- bench:(?P<name>[\w.-]+)(?P<attrs>[^>]*?)\s*-->\s*$")
CLOSE = re.compile(r"^<!-- /bench:(?P<name>[\w.-]+)\s*-->\s*$")

LABELS: dict[str, str] = {
    "n": "N",
    "system": "system",
    "cmd_per_s": "cmd/s",
    "cmd_per_s_range": "cmd/s, slowest-fastest run",
    "us_per_cmd": "µs/cmd",
    "ratio_to_plain_trio": "× plain trio",
    "ratio_to_lean": "× lean",
    "cpu_us_per_cmd": "CPU µs/cmd",
    "cpu_ratio_to_plain_trio": "× plain trio (CPU)",
    "cpu_share": "CPU share",
    "rounds_per_command": "rounds/cmd",
    "time_ratio_to_1_lane": "time × 1 lane",
    "ratio_to_baseline": "× baseline",
    "p50_us": "p50 µs",
    "p99_us": "p99 µs",
    "max_us": "max µs",
    "p99_undisturbed_us": "p99 of undisturbed samples µs",
    "p99_ratio_to_plain_trio": "p99 × plain trio",
    "p99_ratio_to_bare": "p99 × bare",
    "clean_p99_us": "p99 undisturbed µs",
    "p99_on_saturated_us": "p99 on saturated systems µs",
    "samples": "samples",
    "samples_over_1ms": "> 1 ms",
    "samples_with_gc": "with a GC",
    "samples_preempted_by_os": "preempted by the OS",
    "rss_kib_per_system": "KiB per idle system",
    "rss_kib_per_system_ratio_to_bare": "KiB × bare",
    "open_us": "open µs / system",
    "open_us_ratio_to_bare": "open × bare",
    "close_us": "close µs / system",
    "close_us_ratio_to_bare": "close × bare",
    "threads_added": "OS threads added",
    "tasks_per_system": "trio tasks / system",
    "idle_cpu_share": "CPU while idle",
    "repeat": "runs",
    "growth_over_1_lane": "time × 1 lane",
    "ns_per_extra_lane_per_cmd": "ns per extra lane",
    "rss_bytes_per_cmd": "RSS B per pending command",
    "peak_bytes_per_cmd": "peak RSS B per pending command",
    "ratio_to_plain_trio_channel": "× plain trio channel",
    "p99_range_us": "p99 µs, lowest-highest run",
}


class ReportError(Exception):
    """A marker, page or JSON file the generator cannot use (the message says which)."""


@dataclass
class Region:
    """One generated region of a page: its marker line, its attributes and its old body."""

    name: str
    attrs: dict[str, list[str]]
    start: int  # index of the opening marker line
    end: int  # index of the closing marker line
    where: str = ""  # "page:line", for messages
    body: list[str] = field(default_factory=list)


def parse_attrs(text: str, where: str) -> dict[str, list[str]]:
    """``key=value`` pairs of a marker (a key may repeat); raises ReportError on others."""
    attrs: dict[str, list[str]] = {}
    for token in shlex.split(text):
        key, sep, value = token.partition("=")
        if not sep or key not in ("json", "columns", "where", "group"):
            msg = (
                f"{where}: bad marker attribute {token!r}; expected json=, columns=, where=, group="
            )
            raise ReportError(msg)
        attrs.setdefault(key, []).append(value)
    return attrs


def regions(lines: Sequence[str], page: str) -> list[Region]:
    """The marked regions of a page, in order (none inside fenced code blocks).

    Raises ReportError on unpaired markers.
    """
    found: list[Region] = []
    current: Region | None = None
    fence = ""  # the fence of the code block we are in ("" outside): examples are not regions
    for i, line in enumerate(lines):
        where = f"{page}:{i + 1}"
        stripped = line.lstrip()
        if fence and stripped.startswith(fence):
            fence = ""
        elif not fence and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        elif fence:
            continue
        elif opened := OPEN.match(line):
            if current is not None:
                msg = f"{where}: bench:{opened['name']} opens inside bench:{current.name}"
                raise ReportError(msg)
            attrs = parse_attrs(opened["attrs"], where)
            current = Region(opened["name"], attrs, i, -1, where)
        elif closed := CLOSE.match(line):
            if current is None or closed["name"] != current.name:
                msg = f"{where}: /bench:{closed['name']} closes no open bench:{closed['name']}"
                raise ReportError(msg)
            current.end = i
            current.body = list(lines[current.start + 1 : i])
            found.append(current)
            current = None
    if current is not None:
        name = current.name
        msg = f"{current.where}: bench:{name} is never closed (add <!-- /bench:{name} -->)"
        raise ReportError(msg)
    return found


def load(path: str, cache: dict[str, dict[str, Any]], where: str) -> dict[str, Any]:
    if path not in cache:
        try:
            cache[path] = json.loads((ROOT / path).read_text())
        except (OSError, ValueError) as exc:
            msg = (
                f"{where}: cannot read bench output {path!r} ({exc}); "
                f"write it with python -m bench --json {path}"
            )
            raise ReportError(msg) from exc
    return cache[path]


# -- rendering ---------------------------------------------------------------------------------


def fmt(key: str, value: Any) -> str:
    """One table cell: the number format follows the field's name."""
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if key.endswith("cpu_share") and key != "cpu_share":
            return f"{value:.1%}"
        if "ratio" in key or key.endswith("share"):
            return f"{value:.2f}"
        if key.startswith("cmd_per_s") or value >= 1000:
            return f"{value:,.0f}"
        return f"{value:.1f}" if value >= 10 else f"{value:.2f}"
    return str(value).replace("|", "\\|")


def derived(row: Mapping[str, Any], key: str) -> Any:
    if key == "cmd_per_s_range" and "n" in row and row.get("seconds"):
        fastest, slowest = min(row["seconds"]), max(row["seconds"])
        return f"{row['n'] / slowest:,.0f}-{row['n'] / fastest:,.0f}"
    if key.endswith("_range_us") and row.get("runs"):  # e.g. p99_range_us from runs' p99 (s)
        values = [run[key.removesuffix("_range_us")] * 1e6 for run in row["runs"]]
        return f"{min(values):,.0f}-{max(values):,.0f}"
    return row.get(key)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], keys: Sequence[str]) -> list[str]:
    """A Markdown table; numeric columns are right-aligned."""
    numeric = [
        all(isinstance(r[i], int | float) or r[i] in (None, "") for r in rows)
        for i in range(len(keys))
    ]
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---:" if num else "---" for num in numeric) + "|")
    for row in rows:
        lines.append("| " + " | ".join(fmt(k, v) for k, v in zip(keys, row, strict=True)) + " |")
    return lines


def columns(
    spec: list[str], rows: Sequence[Mapping[str, Any]], where: str
) -> list[tuple[str, str]]:
    if not spec:
        keys = [k for k in rows[0] if all(isinstance(r.get(k), int | float | str) for r in rows)]
        return [(k, LABELS.get(k, k)) for k in keys]
    chosen = []
    for item in ",".join(spec).split(","):
        key, _, label = item.partition(":")
        if not any(derived(r, key) is not None for r in rows):
            known = sorted({k for r in rows for k in r})
            msg = f"{where}: no row has a field {key!r}; fields: {', '.join(known)}"
            raise ReportError(msg)
        chosen.append((key, label or LABELS.get(key, key)))
    return chosen


def select(rows: list[dict[str, Any]], conditions: list[str], where: str) -> list[dict[str, Any]]:
    for condition in conditions:
        key, sep, values = condition.partition(":")
        if not sep:
            msg = f"{where}: bad where={condition!r}; expected where=FIELD:VALUE|VALUE"
            raise ReportError(msg)
        wanted = values.split("|")
        rows = [r for r in rows if str(r.get(key)) in wanted]
    if not rows:
        msg = f"{where}: no row matches where={conditions}"
        raise ReportError(msg)
    return rows


def render_rows(document: dict[str, Any], region: Region) -> list[str]:
    benchmarks = document.get("benchmarks", {})
    if region.name not in benchmarks:
        msg = (
            f"{region.where}: the bench output has no benchmark {region.name!r} "
            f"(it has: {', '.join(benchmarks) or 'none'})"
        )
        raise ReportError(msg)
    rows = select(benchmarks[region.name]["rows"], region.attrs.get("where", []), region.where)
    chosen = columns(region.attrs.get("columns", []), rows, region.where)
    keys = [k for k, _ in chosen]
    cells = [[derived(r, k) for k in keys] for r in rows]
    for group in region.attrs.get("group", []):
        if group in keys:
            i = keys.index(group)
            values = [row[i] for row in cells]
            for j in range(1, len(cells)):
                if values[j] == values[j - 1]:
                    cells[j][i] = ""
    return table([label for _, label in chosen], cells, keys)


def render_targets(document: dict[str, Any], region: Region) -> list[str]:
    name = region.name.removesuffix(".targets")
    result = document.get("benchmarks", {}).get(name)
    if result is None:
        msg = f"{region.where}: the bench output has no benchmark {name!r}"
        raise ReportError(msg)
    if not result["targets"]:
        msg = f"{region.where}: benchmark {name!r} has no targets in this bench output"
        raise ReportError(msg)
    rows = [
        [t["text"], f"{fmt('x', t['value'])}{t['unit']}", "holds" if t["holds"] else "**missed**"]
        for t in result["targets"]
    ]
    return table(["target", "measured", "verdict"], rows, ["text", "text", "text"])


def render_machine(document: dict[str, Any], region: Region) -> list[str]:
    info, options = document["machine"], document.get("options", {})
    loads = document.get("load", {})
    load = ", ".join(
        f"{name} {v['before'][0]:.1f} → {v['after'][0]:.1f}" for name, v in loads.items()
    )
    rows = [
        ["CPUs", f"{info['nproc']} ({info['cpu_model']})"],
        ["Python", f"{info['implementation']} {info['python']}, trio {info['trio']}"],
        ["Platform", info["platform"]],
        ["Code", f"git `{info['git']}`, lanes/ + actors/ source digest `{info['source_sha256']}`"],
        ["Command", "`python -m bench " + " ".join(options.get("argv", [])) + "`"],
        ["Load average (1 min) before → after", load or "–"],
    ]
    return table(["", ""], rows, ["text", "text"])


def render_mutants(document: dict[str, Any], region: Region) -> list[str]:
    """The mutation score of a ``python -m tools.mutants --json`` output."""
    if "mutants" not in document:
        msg = (
            f"{region.where}: {region.attrs.get('json', [DEFAULT_JSON])[-1]} holds no mutants; "
            "write it with python -m tools.mutants --json PATH"
        )
        raise ReportError(msg)
    rows = [
        [
            f"`{m['mutant']}`",
            m.get("description", ""),
            "killed" if m["killed"] else "**survived**",
            m["seconds"],
            f"`{m['by']}`" if m["by"] else m.get("detail", "") or "–",
        ]
        for m in document["mutants"]
    ]
    keys = ["text", "text", "text", "seconds", "text"]
    headers = ["mutant", "the bug", "verdict", "CPU s to failure", "killed by"]
    info = document["machine"]
    score = (
        f"Score: {document['killed']}/{document['total']} mutants killed (Hypothesis seed "
        f"{document['seed']}, at most {document['timeout']:g} CPU s per test module; Python "
        f"{info['python']} on {info['cpus']} CPUs)."
    )
    return [*table(headers, rows, keys), "", score]


RENDERERS: dict[str, Callable[[dict[str, Any], Region], list[str]]] = {
    "machine": render_machine,
    "mutants": render_mutants,
}


def render(region: Region, cache: dict[str, dict[str, Any]]) -> list[str]:
    path = region.attrs.get("json", [DEFAULT_JSON])[-1]
    document = load(path, cache, region.where)
    if region.name in RENDERERS:
        lines = RENDERERS[region.name](document, region)
    elif region.name.endswith(".targets"):
        lines = render_targets(document, region)
    else:
        lines = render_rows(document, region)
    git = document["machine"]["git"]
    note = (
        f"<small>Generated by `python -m bench.report` from `{path}` (measured at git "
        f"`{git}`): do not edit by hand.</small>"
    )
    return ["", *lines, "", note, ""]


def rewrite(text: str, page: str, cache: dict[str, dict[str, Any]]) -> tuple[str, list[str]]:
    """The page with every region regenerated, and the regions that changed."""
    lines = text.split("\n")
    changed = []
    for region in reversed(regions(lines, page)):
        body = render(region, cache)
        if body != region.body:
            changed.append(f"{region.where}: bench:{region.name}")
        lines[region.start + 1 : region.end] = body
    return "\n".join(lines), sorted(changed)


def pages(given: Sequence[Path]) -> list[Path]:
    return list(given) if given else sorted((ROOT / "docs").rglob("*.md"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "pages", nargs="*", type=Path, help="Markdown pages (default: docs/**/*.md)"
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a region is stale"
    )
    args = parser.parse_args(argv)
    cache: dict[str, dict[str, Any]] = {}
    stale: list[str] = []
    try:
        for page in pages(args.pages):
            name = str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)
            text = page.read_text()
            new, changed = rewrite(text, name, cache)
            stale += changed
            if changed and not args.check:
                page.write_text(new)
                print(f"{name}: regenerated {len(changed)} region(s)")
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check and stale:
        print("stale generated regions (run python -m bench.report):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
