"""``submit(..., on_done=callback)``: an async callback run once a command has ended.

The callback runs in a task of its own in the lane system's nursery, once the command is
terminal (completed, failed, cancelled, dead-lettered): its lane slot and its shared-limit
grant are free by then, and its handle's ``result()`` returns at once. It replaces the
task per command that an application would otherwise start only to await a handle
(``nursery.start_soon(report, handle)``): that task exists for the whole life of the
command, the callback's only once it has ended.

Rules, for every submit path (a new command, a deduplicated one, one already finished):

- A callback given to a submit that returns an existing command's handle (``key=``) is
  added to that command's callbacks; each runs once, in a task of its own (they run
  concurrently, in no set order). A command that has already ended gets its callback
  started at once.
- Callbacks run inside one :class:`tricycle.MultiCancelScope` of the system: leaving at
  once (``close_now()``, an error or a cancellation of the body, an outer cancellation)
  and a drain's deadline cancel the running ones, and those started after that start
  cancelled. A normal exit's drain waits for them, as for commands.
- An exception a callback raises is an error of the lane system's nursery, as a child
  task's is in a nursery: it cancels the system and propagates out of its
  ``async with`` block.
- A callback runs in a copy of its submitter's context variables, taken at submit (as
  ``nursery.start_soon`` would have started it), not in the command's.
- Callbacks are process memory: a durable command recovered by a later start has none.
- Only ``submit``, ``submit_nowait`` and ``submit_streaming`` take ``on_done``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio
from tricycle import MultiCancelScope

from ._callables import callable_name, check_arity, is_async
from ._errors import LaneUsageError

if TYPE_CHECKING:
    from ._command import Command, CommandHandle

__all__ = ["Callbacks", "OnDone", "check_on_done"]

OnDone = Callable[["CommandHandle[Any]"], Awaitable[object]]
"""An ``async def callback(handle)``; its return value is ignored."""


def check_on_done(fn: Any, where: str) -> None:
    """Refuse anything but an async callable taking the handle as its one argument.

    Raises:
        LaneUsageError: ``fn`` is not callable, is synchronous, or takes other arguments.
    """
    if not callable(fn):
        msg = f"{where}: on_done must be an async function taking the handle, got {fn!r}"
        raise LaneUsageError(msg)
    if not is_async(fn):
        msg = (
            f"{where}: on_done={callable_name(fn)} is not an async function; pass an `async def "
            "callback(handle)` (functools.partial binds more arguments)"
        )
        raise LaneUsageError(msg)
    try:
        check_arity(fn, (None,), callable_name(fn))
    except LaneUsageError as exc:
        msg = f"{where}: on_done is called with the handle as its one argument: {exc}"
        raise LaneUsageError(msg) from None


class _Owner(Protocol):
    """What the callbacks need of their system's core (lanes/_core.py)."""

    def callbacks_ended(self) -> None: ...


class Callbacks:
    """The ``on_done`` callbacks of one lane system: started, counted and cancelled here.

    Made on the first ``on_done``; ``Core.callbacks`` points to it from then on.
    """

    __slots__ = ("_core", "_nursery", "_scope", "closed", "running")

    def __init__(self, core: _Owner, nursery: trio.Nursery) -> None:
        self._core = core
        self._nursery = nursery
        # Made with the first callback and dropped when none runs (an idle system keeps no
        # scope), unless cancelled by an exit: later callbacks then start cancelled.
        self._scope: MultiCancelScope | None = None
        self.running = 0  # started, not returned yet (drain waits for them)
        self.closed = False  # the nursery is gone: nothing starts any more

    def attach(self, cmd: Command, fn: OnDone) -> None:
        """Run ``fn(handle)`` once ``cmd`` has ended (now, if it has), in a copy of the
        caller's context (as ``nursery.start_soon`` would have started it)."""
        hook = (fn, contextvars.copy_context())
        if cmd.is_done():
            self.start(hook, cmd.handle)
            return
        given = cmd.on_done
        if given is None:
            cmd.on_done = hook
        elif isinstance(given, list):
            given.append(hook)
        else:
            cmd.on_done = [given, hook]

    def fire(self, cmd: Command) -> None:
        """``cmd`` just ended: start its callbacks (``Core._resolve`` calls this)."""
        given, cmd.on_done = cmd.on_done, None
        if self.closed:
            return
        handle = cmd.handle
        if isinstance(given, list):
            for hook in given:
                self.start(hook, handle)
        else:
            self.start(given, handle)

    def start(self, hook: tuple[OnDone, contextvars.Context], handle: CommandHandle[Any]) -> None:
        if self.closed:
            return
        scope = self._scope
        if scope is None:
            scope = self._scope = MultiCancelScope()
        self.running += 1
        fn, context = hook
        # start_soon copies the current context: spawn it in the submitter's copy.
        context.run(self._spawn, fn, handle, scope.open_child())

    def _spawn(self, fn: OnDone, handle: CommandHandle[Any], scope: trio.CancelScope) -> None:
        self._nursery.start_soon(self._run, fn, handle, scope, name=callable_name(fn))

    async def _run(self, fn: OnDone, handle: CommandHandle[Any], scope: trio.CancelScope) -> None:
        try:
            with scope:
                await fn(handle)
        finally:
            self.running -= 1
            if not self.running:
                current = self._scope
                if current is not None and not current.cancel_called:
                    self._scope = None
                self._core.callbacks_ended()

    def cancel(self) -> None:
        """Cancel the running callbacks, and start later ones cancelled until :meth:`reopen`."""
        scope = self._scope
        if scope is None:
            scope = self._scope = MultiCancelScope()
        scope.cancel()

    def reopen(self) -> None:
        """Later callbacks run again (a drain's deadline passed and the system goes on)."""
        scope = self._scope
        if scope is not None and scope.cancel_called:
            self._scope = None
