"""Developer tasks: ``nox -s lint typecheck tests`` is what CI runs."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PY = "3.11"


@nox.session(python=PY)
def tests(session: nox.Session) -> None:
    """The whole test suite (fast Hypothesis profile)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PY)
def mutants(session: nox.Session) -> None:
    """Run every mutant of the policy and the life cycle against the property tests.

    Prints each mutant's verdict, its CPU seconds to the failure and the score; ``nox -s
    mutants -- --quick`` runs the fast subset (each mutant against the test module that kills
    it; the ``tests`` session runs the same in tests/test_mutants.py, so CI does), ``-- --json
    docs/bench/mutants.json`` records the results (then ``python -m bench.report`` rewrites
    the table of docs/testing.md from them).
    """
    session.install("-e", ".[test]")
    session.run("python", "-m", "tools.mutants", *session.posargs)


@nox.session(python=PY)
def thorough(session: nox.Session) -> None:
    """The property tests with the thorough Hypothesis profile."""
    session.install("-e", ".[test]")
    session.run("pytest", "--hypothesis-profile=thorough", "-m", "property", *session.posargs)


@nox.session(python=PY)
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the import contracts of pyproject.toml."""
    session.install("ruff==0.17.6")  # pinned: formatting rules change between releases
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # lint-imports reads the source from the checkout (it needs no install of the project):
    # actors never imports lanes, and no import cycle anywhere in lanes.
    session.install("import-linter==2.17")
    session.run("lint-imports")


@nox.session(python=PY)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on lanes/ and actors/."""
    session.install("-e", ".[test]", "mypy==2.4.1")
    session.run("mypy")


@nox.session(python=PY)
def demo(session: nox.Session) -> None:
    """The agent-session demo on the default lanes."""
    session.install("-e", ".")
    session.run("python", "-m", "lanes", "demo", *session.posargs)


@nox.session(python=PY)
def docs(session: nox.Session) -> None:
    """Build the documentation site into build/site (mkdocs --strict: warnings fail)."""
    # ruff formats the signatures shown in the API reference.
    session.install(
        "-e",
        ".",
        "mkdocs==1.6.1",
        "mkdocs-material==9.8.1",
        "mkdocstrings==1.0.8",
        "mkdocstrings-python==2.0.11",
        "ruff>=0.5",
    )
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        "build/site",
        *session.posargs,
        env={"NO_MKDOCS_2_WARNING": "1"},  # mkdocs' banner about its successor
    )


@nox.session(python=PY)
def bench(session: nox.Session) -> None:
    """Benchmarks: figures next to baselines measured in the same run (not tests).

    ``nox -s bench`` measures everything the docs show (``python -m bench --docs``: each
    group into its docs/bench/*.json, then ``python -m bench.report`` rewrites the docs'
    figures from them; commit both). With arguments it runs ``python -m bench ARGS``:
    ``nox -s bench -- --docs --repeat 3``, ``nox -s bench -- --only throughput --json
    out.json``, ``nox -s bench -- --replot out.json --plots docs/img``.
    """
    session.install("-e", ".[bench]")
    session.run("python", "-m", "bench", *(session.posargs or ["--docs"]))
