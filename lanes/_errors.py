"""The ``LaneError`` exception family.

Every error trio-lanes raises on purpose derives from :class:`LaneError`; errors that refine a
builtin meaning also derive from that builtin (``UnknownLaneError`` is a ``KeyError``,
``LaneConfigError`` a ``ValueError``), so existing ``except`` clauses keep working.
"""

from __future__ import annotations

import trio

__all__ = [
    "CommandCancelled",
    "CommandFailed",
    "CommandTimeout",
    "DrainTimeout",
    "KeyInUse",
    "LaneConfigError",
    "LaneError",
    "LaneFull",
    "LaneUsageError",
    "NotDurableError",
    "PayloadError",
    "Permanent",
    "ShutdownInProgress",
    "StorageError",
    "UnknownLaneError",
]


class LaneError(Exception):
    """Base class of every error raised by trio-lanes."""


class LaneConfigError(LaneError, ValueError):
    """A configuration value is invalid; the message names the field, the value and a fix."""


class UnknownLaneError(LaneError, KeyError):
    """A lane name that the system does not have; the message lists the known lanes."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message; show it as written.
        return str(self.args[0]) if self.args else ""


class LaneUsageError(LaneError, TypeError):
    """The API was used the wrong way (for example ``with`` instead of ``async with``)."""


class KeyInUse(LaneError):
    """The idempotency key is held by another command that is pending or running.

    Raised by ``dead_letters.requeue(id)`` when the letter's key is taken: the letter is
    kept; requeue it once the holder (``system.handle_for(key)``) has finished.
    """


class LaneFull(LaneError, trio.WouldBlock):
    """``submit_nowait`` found the lane's inbox full; use ``await submit(...)`` to wait.

    A :class:`trio.WouldBlock` too, as the errors of Trio's own ``*_nowait`` methods are,
    so ``except trio.WouldBlock`` around ``submit_nowait`` works like around
    ``send_nowait``.
    """


class ShutdownInProgress(LaneError):
    """The lane system stopped accepting commands (``shutdown()`` was called or it closed)."""


class DrainTimeout(LaneError):
    """``drain()`` reached its timeout; the commands left were cancelled."""


class NotDurableError(LaneError):
    """A command that cannot be stored durably was submitted to a durable system."""


class PayloadError(NotDurableError, LaneUsageError):
    """A command's fields cannot be stored and rebuilt (too deep, too big, a type or value
    JSON cannot carry back). Nothing was stored; the storage is fine: fix the value.

    A :class:`~lanes.LaneUsageError` (the caller's value is wrong, retrying cannot help)
    and a :class:`~lanes.NotDurableError` (the command cannot be stored).
    """


class StorageError(LaneError):
    """The storage backend failed or holds data that this version cannot use."""


class CommandFailed(LaneError):
    """The command failed for good; ``__cause__`` is the last attempt's exception.

    A command whose last attempt timed out failed too: it raises :class:`CommandTimeout`, a
    subclass, so ``except CommandFailed`` catches every command that is counted as failed
    and dead-lettered.
    """


class CommandTimeout(CommandFailed):
    """The command's last attempt exceeded its timeout (the attempt was cancelled).

    A :class:`CommandFailed`: a timeout on the last attempt is a failure (counted in
    ``failed`` and dead-lettered). Catch ``CommandTimeout`` before ``CommandFailed`` to
    tell the two apart.
    """


class CommandCancelled(LaneError):
    """The command was cancelled before it finished (by its handle, its lane or shutdown)."""


class Permanent(Exception):
    """Raise ``Permanent(exc)`` from a command to fail at once, skipping any retries.

    Args:
        error: the underlying error (an exception, or a message).
    """

    def __init__(self, error: BaseException | str) -> None:
        super().__init__(error)
        self.error = error
