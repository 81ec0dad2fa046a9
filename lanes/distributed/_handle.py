"""The handle of a command submitted to Redis (``RemoteHandle``) and its error type."""

from __future__ import annotations

import json
from typing import Any, Generic, Protocol, TypeVar

import trio

from .._command import CommandStatus
from .._errors import CommandCancelled, CommandFailed, CommandTimeout, LaneError, ShutdownInProgress
from ._wire import Reply

__all__ = ["Canceller", "RemoteCommandError", "RemoteHandle"]

T = TypeVar("T")


class Canceller(Protocol):
    """What a handle needs from its system: to send a cancel request."""

    def _request_cancel(self, handle: RemoteHandle[Any]) -> None: ...


class RemoteCommandError(LaneError):
    """The last error of a command that failed on a worker (``"Type: message"``).

    It is the ``__cause__`` of the :class:`CommandFailed` a remote handle raises; the
    original exception stayed on the worker (errors are never pickled).
    """


class RemoteHandle(Generic[T]):
    """A handle on a command submitted to Redis. Returned by ``submit``.

    Its result is the command's return value as JSON data (cattrs-unstructured on the worker,
    ``json.loads`` here): a dict for an attrs object, a list for a tuple, and so on.
    """

    __slots__ = (
        "_cancelling",
        "_done",
        "_entry",
        "_id",
        "_key",
        "_lane",
        "_reply",
        "_stream",
        "_system",
        "_type",
    )

    def __init__(self, system: Canceller, command_id: str, lane: str, type_name: str):
        self._system = system
        self._id = command_id
        self._lane = lane
        self._type = type_name
        self._done = trio.Event()
        self._reply: Reply | ShutdownInProgress | None = None
        self._stream = ""  # the lane stream and entry id while queued ("": unknown)
        self._entry = ""
        self._key: str | None = None
        self._cancelling = False

    def __repr__(self) -> str:
        return f"<RemoteHandle {self._id} lane={self._lane!r} {self._type} {self.status.value}>"

    @property
    def id(self) -> str:
        """The command's unique id (shared by every submit with the same key)."""
        return self._id

    @property
    def lane(self) -> str:
        """The command's lane."""
        return self._lane

    @property
    def status(self) -> CommandStatus:
        """pending (queued or running somewhere), done, failed or cancelled."""
        reply = self._reply
        if reply is None:
            return CommandStatus.PENDING
        if isinstance(reply, Reply) and reply.outcome == "done":
            return CommandStatus.DONE
        if isinstance(reply, Reply) and reply.outcome == "cancelled":
            return CommandStatus.CANCELLED
        return CommandStatus.FAILED

    def cancel(self) -> None:
        """Cancel the command (synchronous, like ``CommandHandle.cancel``).

        The request reaches Redis in the background, in one round trip: a command still
        queued in its lane stream is deleted there and never starts; a running one is
        cancelled by its worker at once (a control stream every worker reads) and resolves
        when its attempt exits; a delayed one is marked and settled as cancelled when it
        comes due. Either way the handle then raises :class:`CommandCancelled`. No-op once
        the outcome arrived or a cancel was requested. If Redis stays unreachable until the
        system closes, the command is left as it was (the handle raises
        ``ShutdownInProgress``). After the system closed it is a no-op too (its handles
        were resolved then).
        """
        if self._done.is_set() or self._cancelling:
            return
        self._system._request_cancel(self)

    def done(self) -> bool:
        """Whether the outcome arrived."""
        return self._done.is_set()

    async def result(self) -> T:
        """Wait for the outcome and return the command's value (as JSON data).

        Cancelling this wait leaves the command queued or running on a worker.

        Raises:
            CommandTimeout: its last attempt exceeded the timeout.
            CommandFailed: it failed for good; ``__cause__`` is a :class:`RemoteCommandError`.
            CommandCancelled: it was cancelled (``cancel()``, ``cancel_lane``) before it
                finished, or replaced by a newer submit with its key (``Dedup.replace()``,
                ``Dedup.keep_last()``; the message names the replacement).
            ShutdownInProgress: the system closed before the outcome arrived (the command
                stays in Redis and still runs).
        """
        await self._done.wait()
        reply = self._reply
        if isinstance(reply, ShutdownInProgress):
            raise reply
        assert reply is not None
        if reply.outcome == "done":
            return json.loads(reply.value)  # type: ignore[no-any-return]
        what = f"command {self._id} ({self._type}) in lane {self._lane!r}"
        if reply.outcome == "cancelled":
            if reply.error:  # replaced (dedup=): the same message as in process
                raise CommandCancelled(f"{what} was {reply.error}")
            state = "while queued" if reply.attempts == 0 else f"on attempt {reply.attempts}"
            raise CommandCancelled(f"{what} was cancelled {state}")
        cause = RemoteCommandError(reply.error)
        if reply.outcome == "timeout":
            error: LaneError = CommandTimeout(
                f"{what} timed out on attempt {reply.attempts}: {reply.error}"
            )
        else:
            error = CommandFailed(f"{what} failed after {reply.attempts} attempt(s): {reply.error}")
        raise error from cause

    def _resolve(self, reply: Reply | ShutdownInProgress) -> None:
        if self._reply is None:
            self._reply = reply
            self._done.set()
