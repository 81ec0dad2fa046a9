"""Exception-group helpers for API boundaries."""

from __future__ import annotations

import trio

__all__ = ["leaves", "single_leaf"]


def single_leaf(error: BaseException) -> BaseException | None:
    """The one error inside ``error`` worth raising as itself, or None.

    That is the only leaf that is not a ``trio.Cancelled``; or, when every leaf is a
    ``trio.Cancelled``, the first of them (so an outer cancel scope sees a plain Cancelled).
    Internal nurseries wrap errors in ``BaseExceptionGroup``; an API boundary re-raises the
    single real error as itself so users can ``except`` it.
    """
    found = leaves(error)
    real = [leaf for leaf in found if not isinstance(leaf, trio.Cancelled)]
    if len(real) == 1:
        return real[0]
    if not real and found:
        return found[0]
    return None


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions inside ``error``, exception groups flattened (``[error]`` if it is
    not a group), in order."""
    found: list[BaseException] = []
    _collect(error, found)
    return found


def _collect(error: BaseException, found: list[BaseException]) -> None:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            _collect(inner, found)
    else:
        found.append(error)
