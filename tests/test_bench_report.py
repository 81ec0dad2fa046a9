"""bench.report: docs figures are generated from stored bench output, and checked against it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bench import report


def document(rows: list[dict[str, Any]], name: str = "throughput") -> dict[str, Any]:
    """A minimal ``python -m bench --json`` output."""
    return {
        "machine": {
            "nproc": 2,
            "cpu_model": "test CPU",
            "python": "3.11.7",
            "implementation": "CPython",
            "platform": "Linux",
            "trio": "0.35.0",
            "git": "abc1234",
            "source_sha256": "0123456789abcdef",
        },
        "options": {"argv": ["--only", name]},
        "load": {name: {"before": [0.5, 0.5, 0.5], "after": [1.0, 1.0, 1.0]}},
        "benchmarks": {
            name: {
                "rows": rows,
                "targets": [
                    {
                        "text": "lanes >= 1.0x",
                        "value": 0.64,
                        "limit": 1.0,
                        "holds": False,
                        "unit": "x",
                    }
                ],
                "notes": [],
            }
        },
        "skipped": {},
    }


ROWS = [
    {
        "n": 10_000,
        "system": "lanes",
        "cmd_per_s": 12_000.4,
        "ratio_to_lean": 0.271,
        "seconds": [1.0, 0.5],
    },
    {"n": 10_000, "system": "lean", "cmd_per_s": 44_000.0, "ratio_to_lean": 1.0, "seconds": [0.25]},
    {
        "n": 100_000,
        "system": "lanes",
        "cmd_per_s": 11_500.0,
        "ratio_to_lean": 0.25,
        "seconds": [8.0],
    },
]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(document(ROWS)))
    return path


def page(tmp_path: Path, marker: str, body: str = "old figures\n") -> Path:
    name = marker.split()[0]
    path = tmp_path / "page.md"
    path.write_text(
        f"# Title\n\nProse stays.\n\n<!-- bench:{marker} -->\n{body}"
        f"<!-- /bench:{name} -->\n\nEnd.\n"
    )
    return path


def test_docs_pages_match_the_stored_bench_output() -> None:
    """Every generated region of docs/ is what its stored JSON gives (no benchmark runs)."""
    assert report.main(["--check"]) == 0


def test_a_stale_region_fails_the_check_and_a_rewrite_fixes_only_the_region(
    tmp_path: Path, results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = page(tmp_path, f"throughput json={results} columns=n,system,cmd_per_s group=n")
    assert report.main(["--check", str(path)]) == 1
    assert "bench:throughput" in capsys.readouterr().out
    assert "old figures" in path.read_text()  # --check changes nothing

    assert report.main([str(path)]) == 0
    text = path.read_text()
    assert text.startswith("# Title\n\nProse stays.\n\n<!-- bench:throughput ")
    assert text.endswith("<!-- /bench:throughput -->\n\nEnd.\n")
    assert "old figures" not in text
    assert "| N | system | cmd/s |" in text
    assert "| 10,000 | lanes | 12,000 |" in text
    assert "|  | lean | 44,000 |" in text  # group=n blanks the repeated N
    assert "| 100,000 | lanes | 11,500 |" in text
    assert "measured at git `abc1234`" in text
    assert report.main(["--check", str(path)]) == 0


def test_new_measurements_make_the_page_stale(tmp_path: Path, results: Path) -> None:
    path = page(tmp_path, f"throughput json={results} columns=system,cmd_per_s")
    assert report.main([str(path)]) == 0
    results.write_text(json.dumps(document([{**ROWS[0], "cmd_per_s": 13_000.0}])))
    assert report.main(["--check", str(path)]) == 1


def test_where_labels_derived_columns_and_targets(tmp_path: Path, results: Path) -> None:
    path = page(
        tmp_path,
        f"throughput json={results} where=system:lanes "
        'columns="n,cmd_per_s_range,ratio_to_lean:vs lean"',
    )
    assert report.main([str(path)]) == 0
    text = path.read_text()
    assert "| N | cmd/s, slowest-fastest run | vs lean |" in text
    assert "| 10,000 | 10,000-20,000 | 0.27 |" in text
    assert "lean |" not in text.replace("vs lean |", "")  # the lean row is filtered out

    targets = page(tmp_path, f"throughput.targets json={results}")
    assert report.main([str(targets)]) == 0
    assert "| lanes >= 1.0x | 0.64x | **missed** |" in targets.read_text()


def test_machine_region(tmp_path: Path, results: Path) -> None:
    path = page(tmp_path, f"machine json={results}")
    assert report.main([str(path)]) == 0
    text = path.read_text()
    assert "| CPUs | 2 (test CPU) |" in text
    assert "source digest `0123456789abcdef`" in text
    assert "`python -m bench --only throughput`" in text


def test_mutants_region_from_the_mutation_tool_output(
    tmp_path: Path, results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tools import mutants

    found = [
        mutants.Result("cap-plus-one", True, 5.1, "tests/test_policy_preemption.py"),
        mutants.Result("lane-lifo", False, 120.5, "", "tests/test_properties_e2e.py timed out"),
    ]
    output = tmp_path / "mutants.json"
    mutants.write_json(output, found, seed=3, timeout=120.0, git="abc1234")
    path = page(tmp_path, f"mutants json={output}")
    assert report.main([str(path)]) == 0
    text = path.read_text()
    assert (
        "| `cap-plus-one` | the global cap lets one command too many start | killed | 5.10 | "
        "`tests/test_policy_preemption.py` |"
    ) in text
    assert "| **survived** | 120.5 | tests/test_properties_e2e.py timed out |" in text
    assert "Score: 1/2 mutants killed (Hypothesis seed 3, at most 120 CPU s" in text
    assert "measured at git `abc1234`" in text
    assert report.main(["--check", str(path)]) == 0
    # A file of another kind is named, with how to write the right one.
    other = page(tmp_path, f"mutants json={results}")
    assert report.main([str(other)]) == 2
    assert (
        "holds no mutants; write it with python -m tools.mutants --json" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("nosuch json={json}", "has no benchmark 'nosuch' (it has: throughput)"),
        ("throughput json={json} columns=n,nosuch", "no row has a field 'nosuch'"),
        ("throughput json={json} where=system:none", "no row matches"),
        ("throughput json={json} where=system", "expected where=FIELD:VALUE"),
        ("throughput json={json} colums=n", "bad marker attribute 'colums=n'"),
        ("throughput json={missing}", "cannot read bench output"),
    ],
)
def test_bad_markers_are_named(
    tmp_path: Path, results: Path, capsys: pytest.CaptureFixture[str], marker: str, message: str
) -> None:
    path = page(tmp_path, marker.format(json=results, missing=tmp_path / "missing.json"))
    before = path.read_text()
    assert report.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "page.md:5" in err
    assert path.read_text() == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- bench:throughput -->\nx\n", "bench:throughput is never closed"),
        ("x\n<!-- /bench:throughput -->\n", "/bench:throughput closes no open"),
        ("<!-- bench:a -->\n<!-- bench:b -->\n<!-- /bench:b -->\n", "bench:b opens inside bench:a"),
    ],
)
def test_unpaired_markers_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "page.md"
    path.write_text(text)
    assert report.main(["--check", str(path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--only", "throughput"], ["--json", "x.json"]])
def test_bench_docs_chooses_its_own_benchmarks_and_files(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.__main__ import DOCS_RUNS, parse

    with pytest.raises(SystemExit):
        parse(["--docs", *extra])
    assert "--docs chooses the benchmarks and files" in capsys.readouterr().err
    stored = {f"docs/bench/{name}" for name in DOCS_RUNS}
    named = set(re.findall(r"json=(\S+)", "".join(p.read_text() for p in report.pages([]))))
    assert stored <= named  # every file --docs measures is shown by some page


def test_markers_inside_code_blocks_are_examples(tmp_path: Path, results: Path) -> None:
    example = (
        f"```text\n<!-- bench:throughput json={results} -->\nkept\n"
        "<!-- /bench:throughput -->\n```\n"
    )
    path = tmp_path / "page.md"
    path.write_text(f"# Title\n\n{example}\n<!-- bench:nosuch -->\n")  # unclosed, outside: an error
    assert report.main(["--check", str(path)]) == 2
    path.write_text(f"# Title\n\n{example}")
    assert report.main([str(path)]) == 0
    assert path.read_text() == f"# Title\n\n{example}"


def test_targets_of_a_benchmark_without_targets_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = document(ROWS)
    bare["benchmarks"]["throughput"]["targets"] = []
    results = tmp_path / "results.json"
    results.write_text(json.dumps(bare))
    path = page(tmp_path, f"throughput.targets json={results}")
    assert report.main([str(path)]) == 2
    assert "benchmark 'throughput' has no targets" in capsys.readouterr().err
