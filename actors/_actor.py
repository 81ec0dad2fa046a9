"""Actors: a task that owns some state and handles one message at a time.

An :class:`Actor` subclass implements :meth:`Actor.handle`. :func:`spawn` starts it in a
nursery with ``nursery.start`` (so it is ready when ``spawn`` returns) and gives back an
:class:`ActorRef` to talk to it: ``tell`` sends and forgets, ``ask`` waits for the handler's
return value (and re-raises the handler's exception in the asker).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import outcome
import trio

from ._mailbox import Mailbox

__all__ = ["Actor", "ActorRef", "run_actor", "spawn"]

M = TypeVar("M")


class Actor(Generic[M]):
    """Base class of actors. Override :meth:`handle`; optionally :meth:`running`.

    An actor handles messages one at a time, in the order they arrive; while ``handle`` awaits,
    later messages wait in the mailbox.
    """

    async def handle(self, message: M) -> Any:
        """Handle one message; the return value answers an ``ask``."""
        raise NotImplementedError

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Resources the actor holds while it runs (for example a nursery of its own).

        Entered before the actor reports ready and exited after its last message.
        """
        yield


class _Ask(Generic[M]):
    __slots__ = ("done", "message", "result")

    def __init__(self, message: M) -> None:
        self.message = message
        self.done = trio.Event()
        self.result: outcome.Outcome[Any] | None = None


class ActorRef(Generic[M]):
    """A handle to send messages to a running actor. It has no public constructor."""

    __slots__ = ("_mailbox", "name")

    def __init__(self, mailbox: Mailbox[M | _Ask[M]], name: str) -> None:
        self._mailbox = mailbox
        self.name = name

    def __repr__(self) -> str:
        return f"<ActorRef {self.name!r}>"

    async def tell(self, message: M) -> None:
        """Send ``message``, waiting while the actor's mailbox is full.

        Cancellation leaves nothing behind: the message was not delivered.

        Raises:
            trio.ClosedResourceError: the actor has stopped.
        """
        await self._mailbox.send(message)

    def tell_nowait(self, message: M) -> None:
        """Send ``message`` without waiting.

        Raises:
            trio.WouldBlock: the actor's mailbox is full.
            trio.ClosedResourceError: the actor has stopped.
        """
        self._mailbox.send_nowait(message)

    async def ask(self, message: M) -> Any:
        """Send ``message`` and wait for the handler's result.

        The handler's exception is raised here. If the asker is cancelled after the message
        was delivered, the actor still handles it; the reply is dropped.

        Raises:
            trio.ClosedResourceError: the actor has stopped.
            trio.BrokenResourceError: the actor stopped before it answered.
        """
        request = _Ask(message)
        await self._mailbox.send(request)
        await request.done.wait()
        assert request.result is not None
        return request.result.unwrap()

    def close(self) -> None:
        """Ask the actor to stop once it has handled the messages already sent."""
        self._mailbox.close()


async def run_actor(
    actor: Actor[M],
    mailbox: Mailbox[Any],
    *,
    name: str = "",
    fail_pending: bool = True,
    task_status: trio.TaskStatus[ActorRef[M]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``actor`` on ``mailbox`` until the mailbox is closed (or the task is cancelled).

    An exception from ``handle`` for a ``tell`` ends the actor (supervisors restart it); for an
    ``ask`` it goes to the asker and the actor carries on. With ``fail_pending`` (the default),
    the mailbox is closed when the actor stops (later sends raise
    :class:`trio.ClosedResourceError`), asks still in it are answered with
    :class:`trio.BrokenResourceError` and other messages are dropped; a supervisor that will
    restart the actor on the same mailbox passes False to keep it open and keep them.
    """
    ref: ActorRef[M] = ActorRef(mailbox, name or type(actor).__name__)
    try:
        async with actor.running():
            task_status.started(ref)
            async for message in mailbox:
                if type(message) is _Ask:
                    await _answer(actor, message)
                else:
                    await actor.handle(message)
    finally:
        if fail_pending:
            mailbox.close()
            fail_pending_asks(mailbox)


async def _answer(actor: Actor[Any], request: _Ask[Any]) -> None:
    result = await outcome.acapture(actor.handle, request.message)
    if isinstance(result, outcome.Error) and not isinstance(result.error, Exception):
        # Cancelled, KeyboardInterrupt...: the actor itself is stopping.
        request.result = outcome.Error(trio.BrokenResourceError("the actor stopped"))
        request.done.set()
        result.unwrap()
    request.result = result
    request.done.set()


def fail_pending_asks(mailbox: Mailbox[Any]) -> None:
    """Empty ``mailbox``, answering its asks with :class:`trio.BrokenResourceError`.

    Close the mailbox first, or an ask sent afterwards waits forever.
    """
    while True:
        try:
            message = mailbox.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return
        if type(message) is _Ask and not message.done.is_set():
            message.result = outcome.Error(trio.BrokenResourceError("the actor stopped"))
            message.done.set()


async def spawn(
    nursery: trio.Nursery, actor: Actor[M], *, inbox_size: int | float = math.inf, name: str = ""
) -> ActorRef[M]:
    """Start ``actor`` in ``nursery`` and return its ref once it is ready.

    Args:
        nursery: the nursery that owns the actor's task.
        actor: the actor to run.
        inbox_size: its mailbox size (``tell`` waits and ``tell_nowait`` raises when full).
        name: a name for reprs and task names (default: the class name).
    """
    mailbox: Mailbox[Any] = Mailbox(inbox_size)
    ref: ActorRef[M] = await nursery.start(
        _run_named, actor, mailbox, name, name=f"actor:{name or type(actor).__name__}"
    )
    return ref


async def _run_named(
    actor: Actor[M],
    mailbox: Mailbox[Any],
    name: str,
    task_status: trio.TaskStatus[ActorRef[M]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await run_actor(actor, mailbox, name=name, task_status=task_status)
