"""Flows: a parent's child commands, possibly in other lanes, scoped like a nursery.

``async with lanes.open_flow(system) as flow:`` submits children with ``flow.submit``;
leaving the block waits for every child, and a child's failure follows the flow's policy.
Used inside a command's body, the command is the flow's parent: its result waits for its
children, and cancelling it (``handle.cancel()``, a timeout, a shutdown) cancels them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, Literal

import trio

from ._command import CommandHandle
from ._errors import LaneConfigError, LaneError, LaneUsageError
from ._running import CURRENT

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ._system import LaneSystem

__all__ = ["Flow", "OnFailure", "open_flow"]

OnFailure = Literal["fail", "ignore", "collect"]
_POLICIES = ("fail", "ignore", "collect")


class Flow:
    """The children of one flow (made by :func:`open_flow`)."""

    def __init__(self, system: LaneSystem, on_failure: OnFailure, prefix: str | None) -> None:
        self._system = system
        self.on_failure: OnFailure = on_failure
        self.children: list[CommandHandle[Any]] = []
        """The children's handles, in the order they were submitted."""
        self.errors: list[tuple[CommandHandle[Any], BaseException]] = []
        """With ``on_failure="collect"``: each failed child and its error, as they failed."""
        self._prefix = prefix  # the durable parent's id: children get keys derived from it
        self._open = True

    async def submit(
        self,
        lane: str,
        fn: Callable[..., Any] | Any,
        *args: Any,
        key: str | None = None,
        **options: Any,
    ) -> CommandHandle[Any]:
        """Submit a child: ``system.submit(lane, fn, *args, ...)`` that the flow owns.

        Inside a durable command, each child gets the key ``flow:<parent id>:<n>`` unless
        one is given: after a crash, the parent runs again and its ``flow.submit`` calls
        return the recovered children instead of submitting them twice.

        Raises:
            LaneUsageError: the flow's block has ended.
            LaneError: any error ``LaneSystem.submit`` raises for the same arguments.
        """
        if not self._open:
            msg = "flow.submit: the flow's `async with` block has ended; open a new flow"
            raise LaneUsageError(msg)
        if key is None and self._prefix is not None:
            key = f"flow:{self._prefix}:{len(self.children)}"
        handle: CommandHandle[Any] = await self._system.submit(lane, fn, *args, key=key, **options)
        self.children.append(handle)
        return handle

    def cancel(self) -> None:
        """Cancel every child that has not finished (synchronous).

        A child already being cancelled keeps its reason: one that a shutdown cancels
        stays stored for the next start, as its parent does.
        """
        for handle in self.children:
            if handle._command.cancel_reason is None:
                handle.cancel()

    async def _wait(self) -> BaseException | None:
        """Wait for every child; apply the policy; return the error that fails the flow."""
        first: list[BaseException] = []

        async def watch(handle: CommandHandle[Any]) -> None:
            try:
                await handle.result()
            except LaneError as exc:  # failed, timed out or cancelled
                if self.on_failure == "collect":
                    self.errors.append((handle, exc))
                elif self.on_failure == "fail" and not first:
                    first.append(exc)
                    self.cancel()  # the others are cancelled; their errors are not news

        async with trio.open_nursery() as nursery:
            for handle in self.children:
                if not handle.done():
                    nursery.start_soon(watch, handle)
                else:
                    await watch(handle)  # resolved already: no task needed
        # Cancelled meanwhile (the children may have resolved first): that, not a child's
        # cancellation, is what ends the block.
        await trio.lowlevel.checkpoint_if_cancelled()
        return first[0] if first else None

    async def _abandon(self) -> None:
        """The block raised or was cancelled: cancel the children and wait until they are
        gone (shielded: nothing the flow owned outlives it)."""
        self.cancel()
        with trio.CancelScope(shield=True):
            for handle in self.children:
                with suppress(Exception):  # its outcome stays on its handle
                    await handle.result()


@asynccontextmanager
async def open_flow(system: LaneSystem, *, on_failure: OnFailure = "fail") -> AsyncIterator[Flow]:
    """Open a flow: child commands that the block owns, in any lanes of ``system``.

    Leaving the block normally waits until every child has finished. A child that fails
    (or times out, or is cancelled by someone else) then does what ``on_failure`` says:

    - ``"fail"`` (the default): the other children are cancelled, and the block raises
      that child's error (``CommandFailed``, ``CommandTimeout`` or ``CommandCancelled``).
    - ``"ignore"``: nothing; each child's handle still holds its outcome.
    - ``"collect"``: the failures are listed in ``flow.errors`` (handle, error); the block
      raises nothing.

    If the block raises or is cancelled, the children are cancelled and the flow waits,
    shielded, until each has resolved (a running child stops at its next checkpoint), then
    the block's exception propagates: nothing the flow started outlives it. Inside a
    command's body this makes the command the children's parent: its result waits for them,
    and cancelling it cancels them.

    Raises:
        LaneConfigError: an unknown ``on_failure``.
        LaneUsageError: ``system`` is not a lane system.
    """
    if on_failure not in _POLICIES:
        msg = (
            f"open_flow: on_failure={on_failure!r} is invalid; expected one of "
            f"{', '.join(repr(p) for p in _POLICIES)}"
        )
        raise LaneConfigError(msg)
    from ._system import LaneSystem  # a runtime check only; _system does not import this

    if not isinstance(system, LaneSystem):
        msg = f"open_flow: {system!r} is not a lane system; pass the one open_lane_system() gave"
        raise LaneUsageError(msg)
    parent = CURRENT.get(None)
    prefix = parent.id if parent is not None and getattr(parent, "payload", None) else None
    flow = Flow(system, on_failure, prefix)
    try:
        yield flow
    except BaseException:
        flow._open = False
        await flow._abandon()
        raise
    flow._open = False
    try:
        error = await flow._wait()
    except BaseException:  # cancelled while waiting for the children
        await flow._abandon()
        raise
    if error is not None:
        raise error
