"""A griffe extension for the API reference: render the reST bits of our docstrings.

The docstrings of ``lanes`` and ``actors`` follow the Google style but use a few Sphinx
constructs that Markdown does not know: roles (``:class:`LaneConfig```) and
``.. code-block:: python`` directives. This extension rewrites them before mkdocstrings
parses the docstrings: a role becomes inline code, a code-block directive a fenced block.
The source files are not touched. Loaded by ``mkdocs.yml`` (``extensions:``).
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

__all__ = ["SphinxToMarkdown", "to_markdown"]

_ROLE = re.compile(r":(?:py:)?[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. code-block::[ \t]*(?P<lang>\w*)[ \t]*$")


def _role(match: re.Match[str]) -> str:
    target = match.group(1).strip()
    if match.group(0).split("`", 1)[1].startswith("~"):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _fence_code_blocks(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        indent = match.group("indent")
        i += 1
        body: list[str] = []
        while i < len(lines) and (not lines[i].strip() or _deeper(lines[i], indent)):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        code = textwrap.dedent("\n".join(line for line in body)).strip("\n")
        out.append(f"{indent}```{match.group('lang') or 'python'}")
        out.extend(f"{indent}{line}" if line else "" for line in code.splitlines())
        out.append(f"{indent}```")
        if i < len(lines):
            out.append("")
    return "\n".join(out)


def _deeper(line: str, indent: str) -> bool:
    stripped = line[len(indent) :]
    return line.startswith(indent) and stripped[:1] in (" ", "\t")


def to_markdown(text: str) -> str:
    """Rewrite Sphinx roles and code-block directives of one docstring as Markdown."""
    if ".. code-block::" in text:
        text = _fence_code_blocks(text)
    return _ROLE.sub(_role, text)


class SphinxToMarkdown(griffe.Extension):
    """Rewrites every docstring as it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
