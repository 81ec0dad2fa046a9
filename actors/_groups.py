"""Exception-group helpers for API boundaries."""

from __future__ import annotations

import trio

__all__ = ["single_leaf"]


def single_leaf(error: BaseException) -> BaseException | None:
    """The one error inside ``error`` worth raising as itself, or None.

    That is the only leaf that is not a ``trio.Cancelled``; or, when every leaf is a
    ``trio.Cancelled``, the first of them (so an outer cancel scope sees a plain Cancelled).
    Internal nurseries wrap errors in ``BaseExceptionGroup``; an API boundary re-raises the
    single real error as itself so users can ``except`` it.
    """
    leaves: list[BaseException] = []
    _collect(error, leaves)
    real = [leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)]
    if len(real) == 1:
        return real[0]
    if not real and leaves:
        return leaves[0]
    return None


def _collect(error: BaseException, leaves: list[BaseException]) -> None:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            _collect(inner, leaves)
    else:
        leaves.append(error)
