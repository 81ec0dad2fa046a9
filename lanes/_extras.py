"""What to install for an optional feature: one hint, right for a checkout or an install.

trio-lanes' optional features (Prometheus, OpenTelemetry, ``lanes top``, Redis, process
lanes, the testing strategies) live in pip extras. From an installed wheel the extra is
``pip install 'trio-lanes[redis]'``; from a git checkout (installed with ``pip install -e .``
or put on ``PYTHONPATH``) that index entry may not exist, and the right command is
``pip install -e '.[redis]'`` in the checkout. :func:`install_hint` tells them apart.
"""

from __future__ import annotations

import functools
import pathlib
import sys
from typing import NoReturn

__all__ = ["checkout_root", "exit_missing_extra", "install_hint", "missing_extra"]

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


@functools.cache
def checkout_root() -> pathlib.Path | None:
    """The source checkout ``lanes`` is imported from, or None for an installed package.

    A checkout is a directory holding both this package and the project's
    ``pyproject.toml`` (an installed wheel has no ``pyproject.toml`` next to it).
    """
    root = _PACKAGE_DIR.parent
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if 'name = "trio-lanes"' in text else None


def install_hint(extra: str) -> str:
    """The pip command that installs the extra ``extra`` (e.g. ``"redis"``) here.

    From a checkout: ``pip install -e '.[redis]'`` run in the checkout's directory;
    otherwise ``pip install 'trio-lanes[redis]'``.
    """
    root = checkout_root()
    if root is None:
        return f"pip install 'trio-lanes[{extra}]'"
    return f"pip install -e '.[{extra}]' (in the trio-lanes checkout {str(root)!r})"


def missing_extra(feature: str, needs: str, extra: str) -> str:
    """One line: ``feature`` needs ``needs``, and the command that installs it."""
    return f"{feature} needs {needs}: {install_hint(extra)}"


def exit_missing_extra(error: ImportError, feature: str, extra: str) -> NoReturn:
    """Print one line naming what to install (to stderr) and exit with status 1.

    For scripts (the examples, the ``lanes`` command) whose optional import failed.
    """
    needs = error.name or "an optional dependency"
    print(missing_extra(feature, needs, extra), file=sys.stderr)
    raise SystemExit(1)
