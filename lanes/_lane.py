"""A lane's attempts: each command runs in the lane's worker pool, in its worker's cancel scope."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import Any

import trio

from actors import WorkerPool, resume_in_context

from ._command import Command
from ._config import LaneConfig
from ._core import Core
from ._policy import DONE
from ._process import process_caller

__all__ = ["Attempt", "new_lane_pool", "run_attempt"]

_current_task = trio.lowlevel.current_task


class Attempt:
    """How an attempt ended (the value or error is kept on the command)."""

    SKIPPED = 0  # cancelled between grant and start: already dealt with
    RETURNED = 1
    RAISED = 2
    SCOPE_CANCELLED = 3  # timeout, handle.cancel(), cancel_lane or preemption


async def run_attempt(
    core: Core,
    cmd: Command,
    scope: trio.CancelScope,
    call: Callable[[Command], Awaitable[Any]] | None = None,
) -> int:
    """Run one attempt of ``cmd`` in ``scope`` (its worker's); return an :class:`Attempt` code.

    The body is ``await cmd.fn(*cmd.args)``, or ``await call(cmd)`` when the lane gives a
    ``call`` (a process lane runs the function in a worker process), run in the copy of the
    context variables its submitter had at submit (as if it had a task of its own; its
    attempts run in that context one after the other, like one task that tries again).
    The command's deadline goes on the scope, and the scope on the command
    (``Core.cancel`` and ``Core.preempt`` cancel it) until the attempt is settled.

    A cancellation of ``scope`` propagates out of here: the worker pool catches it and
    settles the attempt as ``SCOPE_CANCELLED``. An outer cancellation (the system closing)
    resolves the command as cancelled (the pool's ``interrupted`` hook) and propagates;
    nothing is left pending.
    """
    if cmd.state >= DONE:
        return Attempt.SKIPPED  # cancelled after its grant, before its body started
    if cmd.cancel_reason is not None:
        return Attempt.SCOPE_CANCELLED  # preempted (or shutting down) before it started
    if scope.deadline != cmd.deadline:
        scope.deadline = cmd.deadline
    cmd.scope = scope
    cmd.entered = True
    context = cmd.context  # the submitter's variables (its attempts share them, in turn)
    assert context is not None  # dropped only once the command is terminal
    try:
        if _current_task().context is context:
            # A parked worker handed this command runs in its context already (the pool
            # set it for this step on): the body is awaited as it is, every step of it in
            # the context by the event loop itself, with no trampoline.
            for hook in core.bus.entering:
                hook(cmd.id)
            cmd.value = await (cmd.fn(*cmd.args) if call is None else call(cmd))
        else:
            for hook in core.bus.entering:
                context.run(hook, cmd.id)
            body = cmd.fn(*cmd.args) if call is None else call(cmd)
            steps = body if type(body) is CoroutineType else body.__await__()
            try:  # the first step here: a body that never suspends needs no trampoline
                trap = context.run(steps.send, None)
            except StopIteration as stop:
                cmd.value = stop.value
            else:
                cmd.value = await resume_in_context(context, steps, trap)
    except Exception as exc:
        if scope.cancel_called:  # a timeout, cancel or preemption the body turned into an error
            return Attempt.SCOPE_CANCELLED
        cmd.error = exc
        return Attempt.RAISED
    return Attempt.RETURNED


def new_lane_pool(core: Core, config: LaneConfig) -> WorkerPool[Command, int]:
    """The lane actor: a worker pool (its workers are tasks of the system's nursery once
    attached), settling through ``core``."""
    lane = config.name
    call = process_caller(config) if config.executor == "process" else None

    # A partial, not a wrapper coroutine: one coroutine frame fewer per attempt (and no
    # keyword for the common lane: a partial's keywords are a dict it keeps).
    run: Callable[[Command, trio.CancelScope], Awaitable[int]] = (
        functools.partial(run_attempt, core)
        if call is None
        else functools.partial(run_attempt, core, call=call)
    )
    return WorkerPool(
        run,
        core.settle,
        name=f"lane:{lane}",
        cancelled=Attempt.SCOPE_CANCELLED,
        interrupted=core.interrupted,
        context_of=_context_of,
        adopt_context=_adopt_context,
    )


def _context_of(cmd: Command) -> contextvars.Context | None:
    return cmd.context


def _adopt_context(cmd: Command, context: contextvars.Context) -> None:
    """A new worker started ``cmd`` in ``context``, a copy of the command's own made just
    now: the command's context from now on (its attempts share it, as before)."""
    if cmd.context is not None:
        cmd.context = context
