"""The import graph goes one way: no cycle among the modules of ``lanes``, and ``actors``
never imports ``lanes``.

Imports under ``if TYPE_CHECKING:`` and inside functions count too: grimp reads every
import statement of a module (a cycle through annotations is still a cycle for the reader,
and hiding an import in a function does not remove the dependency). The same rules are
checked by import-linter in the ``lint`` nox session (``[tool.importlinter]`` in
pyproject.toml); this test makes the suite catch a cycle as well.
"""

from __future__ import annotations

import pathlib
import textwrap
from collections.abc import Iterable, Mapping

import grimp
import pytest

# Imports still to be broken up, as (importer, imported). Keep this in step with the
# ignore_imports of the acyclic contract in pyproject.toml.
KNOWN = {("lanes.distributed._redis", "lanes.distributed._submitter")}


def _edges(graph: grimp.ImportGraph, package: str) -> dict[str, set[str]]:
    """Direct imports between the modules of ``package`` (the package itself excluded)."""
    modules = {m for m in graph.modules if m.startswith(package + ".")}
    return {
        m: {
            n
            for n in graph.find_modules_directly_imported_by(m)
            if n in modules and (m, n) not in KNOWN
        }
        for m in modules
    }


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _describe(graph: grimp.ImportGraph, component: list[str]) -> str:
    lines = []
    for importer in component:
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported in component and (importer, imported) not in KNOWN:
                details = graph.get_import_details(importer=importer, imported=imported)
                where = ", ".join(f"line {d['line_number']}" for d in details)
                lines.append(f"  {importer} -> {imported} ({where})")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("lanes", "actors", cache_dir=None)


def test_no_import_cycle_among_lanes_modules(graph: grimp.ImportGraph) -> None:
    found = cycles(_edges(graph, "lanes"))
    report = "\n\n".join(_describe(graph, c) for c in found)
    assert not found, f"import cycles in lanes (break them, e.g. with a Protocol):\n{report}"


def test_actors_never_imports_lanes(graph: grimp.ImportGraph) -> None:
    offenders = sorted(
        (m, n)
        for m in graph.modules
        if m.split(".")[0] == "actors"
        for n in graph.find_modules_directly_imported_by(m)
        if n.split(".")[0] == "lanes"
    )
    assert not offenders


def test_a_cycle_through_type_checking_imports_is_found(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above can fail: a cycle made only of annotations is reported."""
    package = tmp_path / "cyclic_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_a.py").write_text("from ._b import B\n\nclass A:\n    b: B\n")
    (package / "_b.py").write_text(
        textwrap.dedent(
            """
            from typing import TYPE_CHECKING

            if TYPE_CHECKING:
                from ._a import A

            class B:
                a: "A"
            """
        )
    )
    (package / "_c.py").write_text("from ._a import A\n")  # imports into the cycle: not in it
    monkeypatch.syspath_prepend(str(tmp_path))
    found = cycles(_edges(grimp.build_graph("cyclic_pkg", cache_dir=None), "cyclic_pkg"))
    assert found == [["cyclic_pkg._a", "cyclic_pkg._b"]]


def test_cycles_finds_each_component_once() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    assert sorted(cycles(edges)) == [["a", "b", "c"], ["d", "e"]]
