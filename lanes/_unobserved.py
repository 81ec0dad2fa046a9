"""Failures nobody retrieved: logged (logger ``"lanes"``) or passed to a callback, once.

Like asyncio's "exception was never retrieved": a command that fails for good is reported
when no one can retrieve its error any more. That is at the failure itself if no handle is
held, otherwise when the last reference to the handle goes without ``result()`` having
delivered the error (CPython frees a handle as soon as its last reference goes: the report
is deterministic). Nothing is reported for a failure a ``result()`` caller waits for or
retrieves later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from ._errors import LaneConfigError

if TYPE_CHECKING:
    from ._command import Command

__all__ = ["UnobservedCallback", "UnobservedFailure", "report"]

logger = logging.getLogger("lanes")


@attrs.frozen
class UnobservedFailure:
    """A command that failed for good while nobody retrieved its result.

    Attributes:
        command_id: the command's id.
        lane: its lane.
        command_type: its type name (the function's or ``@lanes.command`` class's).
        attempts: attempts it made.
        error: what ``result()`` would have raised (a ``CommandFailed`` or
            ``CommandTimeout``; ``__cause__`` is the command's last error, with its
            traceback).
    """

    command_id: str
    lane: str
    command_type: str
    attempts: int
    error: Exception


UnobservedCallback = Callable[[UnobservedFailure], None]


def check_callback(callback: object) -> UnobservedCallback | None:
    """Validate ``open_lane_system``'s ``on_unobserved_failure``."""
    if callback is not None and not callable(callback):
        msg = (
            f"open_lane_system: on_unobserved_failure={callback!r} is invalid; expected a "
            "function taking a lanes.UnobservedFailure, or None (log at ERROR)"
        )
        raise LaneConfigError(msg)
    return callback


def report(cmd: Command, callback: UnobservedCallback | None) -> None:
    """Report ``cmd``'s failure: to ``callback``, or logged at ERROR with its traceback."""
    from ._command import outcome_error

    error = outcome_error(cmd)
    if callback is None:
        logger.error(
            "command %s (%s) in lane %r failed and nobody retrieved its result "
            "(await handle.result(), or pass on_unobserved_failure= to open_lane_system)",
            cmd.id,
            cmd.type_name,
            cmd.lane,
            exc_info=error,
        )
        return
    failure = UnobservedFailure(cmd.id, cmd.lane, cmd.type_name, cmd.attempts, error)
    try:
        callback(failure)
    except Exception:  # a callback must not break the system: say so instead
        logger.exception("on_unobserved_failure callback %r raised", callback)
