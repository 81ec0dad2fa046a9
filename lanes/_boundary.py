"""Checks at the API boundary: the owning run and idempotency keys.

A lane system's tasks, events and cancel scopes belong to the ``trio.run`` that opened it.
Touching them from another run (a thread with its own ``trio.run``, or a later run) or from
a plain thread corrupts Trio's state (``TrioInternalError`` in the owner), so every public
entry point first checks the run (one ``current_trio_token()`` call, about 0.2 us) and
refuses a foreign call with :class:`LaneUsageError`; the owner goes on untouched.
"""

from __future__ import annotations

import trio

from ._errors import LaneConfigError, LaneUsageError

__all__ = ["check_key", "check_run", "foreign_run"]

_current_token = trio.lowlevel.current_trio_token


# -- the owning run ----------------------------------------------------------------------------


def check_run(token: trio.lowlevel.TrioToken, where: str) -> None:
    """Raise :class:`LaneUsageError` unless called in the run whose token is ``token``."""
    try:
        current = _current_token()
    except RuntimeError:  # no run in this thread
        raise foreign_run(where) from None
    if current is not token:
        raise foreign_run(where)


def foreign_run(where: str) -> LaneUsageError:
    """The error for a call to ``where`` that is not made in the owning run."""
    try:
        _current_token()
    except RuntimeError:
        msg = (
            f"{where}: called outside any Trio run (from a plain thread?); this lane system "
            "belongs to the trio.run that opened it: call it there, e.g. with "
            "trio.from_thread.run(...) from a thread that run started"
        )
    else:
        msg = (
            f"{where}: this lane system belongs to another trio.run (the one that opened "
            "it); open a lane system in this run, or call the owner's from a thread it "
            "started, with trio.from_thread.run(...)"
        )
    return LaneUsageError(msg)


# -- idempotency keys ----------------------------------------------------------------------------


def check_key(key: object, where: str) -> str:
    """Return ``key`` if it is a usable idempotency key (or schedule key).

    One rule for ``submit``, ``submit_nowait``, ``run``, ``schedule`` and ``handle_for``: a
    string that is not blank and can be stored (encodable as UTF-8: no lone surrogates).

    Raises:
        LaneConfigError: anything else; the message names the value.
    """
    if not isinstance(key, str):
        msg = f"{where}: key={key!r} is invalid; expected a non-blank string (or None)"
        raise LaneConfigError(msg)
    if not key or key.isspace():
        msg = f"{where}: key={key!r} is invalid; expected a non-blank string (or None)"
        raise LaneConfigError(msg)
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        msg = (
            f"{where}: key={key!r} is invalid: it cannot be stored ({exc.reason} at "
            f"index {exc.start}); expected a non-blank string of valid text (or None)"
        )
        raise LaneConfigError(msg) from None
    return key
