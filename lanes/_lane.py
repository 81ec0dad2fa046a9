"""The lane actor: runs the commands the supervisor granted, each under its own cancel scope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from actors import Actor

from ._command import Command
from ._core import Core

__all__ = ["LaneActor"]


class LaneActor(Actor[Command]):
    """One lane: a nursery of its own in which each granted command runs as a task.

    Its mailbox carries grants: the supervisor has already taken the command's slot, so the
    mailbox never holds more than the lane's ``max_concurrency`` messages.
    """

    def __init__(self, core: Core, name: str) -> None:
        self.core = core
        self.name = name
        self._nursery: trio.Nursery | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            yield

    async def handle(self, message: Command) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(run_command, self.core, message)


async def run_command(core: Core, cmd: Command) -> None:
    """Run one attempt of ``cmd`` and report its outcome to ``core``.

    A timeout, a ``handle.cancel()`` or a preemption cancels the attempt through its own cancel
    scope; an outer cancellation (the system closing) resolves the command as cancelled and
    propagates.
    """
    if not core.begin(cmd):
        return
    scope = cmd.scope
    assert scope is not None
    try:
        with scope:
            value = await cmd.fn(*cmd.args)
    except Exception as exc:
        core.attempt_failed(cmd, exc)
        return
    except BaseException:
        core.interrupted(cmd)
        raise
    if scope.cancelled_caught:
        core.scope_cancelled(cmd)
    else:
        core.completed(cmd, value)
