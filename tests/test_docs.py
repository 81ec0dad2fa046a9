"""The documentation's code runs, so the docs cannot rot.

Rules for the Markdown pages in ``docs/``:

- On the pages listed in ``RUN_ALL`` (the README among them), every fenced ``python`` block
  is a complete program and runs, unless the line before its fence is
  ``<!-- fragment -->`` (a fragment is only compiled). On other pages, a ``python``
  block runs only when the line before its fence is ``<!-- runnable -->``.
- A fenced ``text`` block whose fence follows a ``<!-- output -->`` line is the exact
  standard output of the program block just before it.

Programs run in a fresh temporary directory (so they may create files), as ``__main__``,
with ``trio.run`` patched to use ``trio.testing.MockClock(autojump_threshold=0)``: sleeps
take no real time and the printed times are exact.
"""

from __future__ import annotations

import functools
import pathlib
import re
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
MKDOCS_YML = DOCS.parent / "mkdocs.yml"
README = DOCS.parent / "README.md"
RUN_ALL = {
    "README.md",
    "index.md",
    "quickstart.md",
    "concepts.md",
    "agent-session.md",
    "reliability.md",
    "scheduling.md",
    "durability.md",
    "actors.md",
    "operations.md",
}
FENCE = re.compile(r"^```(\w*)[^\n]*$")


@attrs.frozen
class Block:
    """One fenced code block of a page."""

    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    marker: str  # the HTML comment on the line before the fence, or ""
    code: str

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


@attrs.frozen
class Program:
    """A block to run, and the output it must print (None: not checked)."""

    block: Block
    output: str | None


def read_blocks(path: pathlib.Path) -> list[Block]:
    """Every fenced block of ``path`` (fences at the start of a line, not nested)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        previous = lines[i - 1].strip() if i else ""
        marker = previous if previous.startswith("<!--") else ""
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        code = "\n".join(lines[i + 1 : end]) + "\n"
        blocks.append(Block(path.name, i + 1, match.group(1), marker, code))
        i = end + 1
    return blocks


def collect() -> tuple[list[Program], list[Block]]:
    """The programs to run and the fragments to compile, over every page."""
    programs: list[Program] = []
    fragments: list[Block] = []
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        blocks = read_blocks(path)
        for index, block in enumerate(blocks):
            if block.lang != "python":
                continue
            if block.marker == "<!-- fragment -->":
                fragments.append(block)
                continue
            if path.name not in RUN_ALL and block.marker != "<!-- runnable -->":
                continue
            following = blocks[index + 1] if index + 1 < len(blocks) else None
            output = None
            if following is not None and following.marker == "<!-- output -->":
                output = following.code
            programs.append(Program(block, output))
    return programs, fragments


PROGRAMS, FRAGMENTS = collect()


def mock_clock_run(real_run: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(real_run)
    def run(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("clock", trio.testing.MockClock(autojump_threshold=0))
        return real_run(*args, **kwargs)

    return run


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.block.name for p in PROGRAMS])
def test_program_runs(
    program: Program,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    block = program.block
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(trio, "run", mock_clock_run(trio.run))
    code = compile(block.code, f"docs/{block.name}", "exec")
    exec(code, {"__name__": "__main__", "__file__": f"docs/{block.page}"})
    out = capsys.readouterr().out
    if program.output is not None:
        assert out == program.output


@pytest.mark.parametrize("block", FRAGMENTS, ids=[b.name for b in FRAGMENTS])
def test_fragment_compiles(block: Block) -> None:
    compile(block.code, f"docs/{block.name}", "exec")


def test_every_output_block_belongs_to_a_program() -> None:
    checked = [p.block for p in PROGRAMS if p.output is not None]
    for path in sorted(DOCS.glob("*.md")):
        blocks = read_blocks(path)
        for before, block in zip([None, *blocks], blocks, strict=False):
            if block.marker == "<!-- output -->":
                assert before in checked, f"{block.name}: no program runs right before it"


def test_every_page_is_in_the_nav() -> None:
    nav = MKDOCS_YML.read_text(encoding="utf-8")
    listed = set(re.findall(r"[\w-]+\.md\b", nav))
    pages = {path.name for path in DOCS.glob("*.md")}
    assert pages <= listed, f"pages missing from the nav of mkdocs.yml: {pages - listed}"


def test_the_pages_that_run_exist() -> None:
    pages = {path.name for path in DOCS.glob("*.md")} | {README.name}
    assert pages >= RUN_ALL


def test_the_readme_runs() -> None:
    assert [p.block.page for p in PROGRAMS].count("README.md") == 2  # the intro and durable


def test_no_references_to_design_notes_outside_the_repository() -> None:
    """The project's design notes are docs/architecture.md; nothing cites another file."""
    root = DOCS.parent
    for folder in ("lanes", "actors", "tests", "docs", "bench", "examples"):
        for path in (root / folder).rglob("*"):
            if path.suffix in (".py", ".md") and path != pathlib.Path(__file__):
                assert "DESIGN.md" not in path.read_text(encoding="utf-8"), path
    assert "DESIGN.md" not in README.read_text(encoding="utf-8")
