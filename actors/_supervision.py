"""Supervision: restart crashed actors, and give up when they crash too often.

A supervisor owns a set of children (actors made by factories). When a child's ``handle``
raises, the supervisor restarts children according to its strategy:

- ``one_for_one``: only the crashed child.
- ``one_for_all``: every child.
- ``rest_for_one``: the crashed child and the children spawned after it.

A restarted child is a fresh actor from its factory on the same mailbox, so refs stay valid
and messages still waiting are kept (the message that crashed it is lost; an ``ask`` of it
receives the error). More than ``max_restarts`` restarts within ``within`` seconds escalates:
the supervisor raises :class:`RestartIntensityExceeded` (with the last crash as its cause).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import trio

from ._actor import Actor, ActorRef, fail_pending_asks, run_actor
from ._groups import single_leaf
from ._mailbox import Mailbox

__all__ = ["RestartIntensityExceeded", "Strategy", "Supervisor", "open_supervisor"]

M = TypeVar("M")
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
_STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


class RestartIntensityExceeded(Exception):
    """Children crashed more often than the supervisor's restart intensity allows."""


class _Child:
    __slots__ = ("factory", "mailbox", "name", "restart", "scope")

    def __init__(self, factory: Callable[[], Actor[Any]], mailbox: Mailbox[Any], name: str):
        self.factory = factory
        self.mailbox = mailbox
        self.name = name
        self.scope = trio.CancelScope()
        self.restart = False  # set by a sibling's crash (one_for_all / rest_for_one)


class _StartedOnce:
    """Passes the first ``started`` on to ``status``; later ones (restarts) are ignored."""

    __slots__ = ("called", "status")

    def __init__(self, status: trio.TaskStatus[Any]) -> None:
        self.status = status
        self.called = False

    def started(self, value: Any = None) -> None:
        if not self.called:
            self.called = True
            self.status.started(value)


class Supervisor:
    """Restarts crashed children. Made by :func:`open_supervisor`; no public constructor."""

    def __init__(
        self, nursery: trio.Nursery, strategy: Strategy, max_restarts: int, within: float
    ) -> None:
        self._nursery = nursery
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.within = within
        self._children: list[_Child] = []
        self._restarts: deque[float] = deque()
        self.restart_count = 0

    async def spawn(
        self,
        factory: Callable[[], Actor[M]],
        *,
        name: str = "",
        inbox_size: int | float = math.inf,
    ) -> ActorRef[M]:
        """Start a child made by ``factory`` and return its ref once it is ready.

        An error while the first actor starts is raised here (it is not restarted).
        """
        mailbox: Mailbox[Any] = Mailbox(inbox_size)
        child = _Child(factory, mailbox, name or getattr(factory, "__name__", "actor"))
        ref: ActorRef[M] = await self._nursery.start(
            self._supervise, child, name=f"supervised:{child.name}"
        )
        self._children.append(child)
        return ref

    async def _supervise(
        self, child: _Child, task_status: trio.TaskStatus[ActorRef[Any]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await self._run_child(child, task_status)
        finally:
            child.mailbox.close()
            fail_pending_asks(child.mailbox)

    async def _run_child(self, child: _Child, task_status: trio.TaskStatus[Any]) -> None:
        status = _StartedOnce(task_status)
        while True:
            child.scope = trio.CancelScope()
            child.restart = False
            try:
                with child.scope:
                    await run_actor(
                        child.factory(),
                        child.mailbox,
                        name=child.name,
                        fail_pending=False,
                        task_status=status,
                    )
                if not child.restart:
                    return  # the mailbox was closed: a normal stop
            except Exception as exc:
                if not status.called:
                    raise  # the first start failed: the spawner gets the error
                self._crashed(child, exc)

    def _crashed(self, child: _Child, error: Exception) -> None:
        now = trio.current_time()
        self._restarts.append(now)
        while self._restarts and self._restarts[0] <= now - self.within:
            self._restarts.popleft()
        if len(self._restarts) > self.max_restarts:
            msg = (
                f"actor {child.name!r} crashed: more than {self.max_restarts} restarts in "
                f"{self.within} s; giving up"
            )
            raise RestartIntensityExceeded(msg) from error
        self.restart_count += 1
        for sibling in self._siblings_to_restart(child):
            sibling.restart = True
            sibling.scope.cancel()

    def _siblings_to_restart(self, child: _Child) -> list[_Child]:
        if self.strategy == "one_for_one" or child not in self._children:
            return []
        index = self._children.index(child)
        if self.strategy == "one_for_all":
            return [c for c in self._children if c is not child]
        return self._children[index + 1 :]

    def close(self) -> None:
        """Close every child's mailbox: each stops once it handled what it already has."""
        for child in self._children:
            child.mailbox.close()


@asynccontextmanager
async def open_supervisor(
    *, strategy: Strategy = "one_for_one", max_restarts: int = 3, within: float = 5.0
) -> AsyncIterator[Supervisor]:
    """Open a supervisor; children spawned in the block are supervised until it exits.

    Leaving the block closes the children's mailboxes and waits for them to finish what they
    already received. An exception in the block cancels the children at once.

    Args:
        strategy: ``"one_for_one"``, ``"one_for_all"`` or ``"rest_for_one"``.
        max_restarts: restarts allowed within ``within`` seconds before escalating.
        within: the window of the restart intensity, in seconds.

    Raises:
        ValueError: an unknown strategy, ``max_restarts < 0`` or ``within <= 0``.
        RestartIntensityExceeded: children crashed too often.
    """
    if strategy not in _STRATEGIES:
        msg = f"strategy={strategy!r} is invalid; expected one of {', '.join(_STRATEGIES)}"
        raise ValueError(msg)
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        msg = f"max_restarts={max_restarts!r} is invalid; expected an integer >= 0"
        raise ValueError(msg)
    if isinstance(within, bool) or not isinstance(within, int | float) or not within > 0:
        msg = f"within={within!r} is invalid; expected a number of seconds > 0"
        raise ValueError(msg)
    try:
        async with trio.open_nursery() as nursery:
            supervisor = Supervisor(nursery, strategy, max_restarts, within)
            try:
                yield supervisor
            except BaseException:
                nursery.cancel_scope.cancel()
                raise
            supervisor.close()
    except BaseExceptionGroup as group:
        leaf = single_leaf(group)
        if leaf is None:
            raise
        raise leaf from leaf.__cause__
