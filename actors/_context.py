"""Run an awaitable in a given ``contextvars.Context``, inside the current task."""

from __future__ import annotations

import contextvars
import types
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["resume_in_context", "run_in_context"]

T = TypeVar("T")


async def run_in_context(context: contextvars.Context, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` with every step of it run in ``context``.

    Trio gives each task the context it was spawned with; a worker task that runs many
    jobs back to back would run them all in its own. This runs one job's steps in the job's
    context instead (as if it had its own task): context variables it reads are those of
    ``context``, and those it sets stay there. Trio's traps pass through unchanged, so
    cancellation, timeouts and checkpoints behave as if the awaitable were awaited
    directly. ``context`` must not be entered elsewhere at the same time (use a fresh
    ``copy()`` per job).

    If the awaiting task is cancelled, the cancellation is delivered to the awaitable
    inside ``context``; if this coroutine is closed early, the awaitable is closed there
    too.
    """
    steps = awaitable.__await__()
    try:
        trap = context.run(steps.send, None)
    except StopIteration as stop:  # finished without suspending: no trampoline needed
        return stop.value  # type: ignore[no-any-return]
    return await resume_in_context(context, steps, trap)


@types.coroutine
def resume_in_context(
    context: contextvars.Context,
    steps: Generator[Any, Any, T] | Coroutine[Any, Any, T],
    trap: Any,
) -> Generator[Any, Any, T]:
    """Go on with ``steps`` (a coroutine or an ``__await__()`` iterator) in ``context``,
    after a first step (run by the caller, in ``context``) that yielded ``trap`` to the
    event loop.

    For callers that run the first step themselves, so that a job that never suspends
    costs one ``context.run`` and no generator; see :func:`run_in_context`.
    """
    run = context.run
    send, throw = steps.send, steps.throw
    try:
        while True:
            try:
                value = yield trap
            except GeneratorExit:
                raise
            except BaseException as exc:  # thrown in by the event loop: Cancelled, ...
                try:
                    trap = run(throw, exc)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                continue
            try:
                trap = run(send, value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
    finally:
        run(steps.close)
