"""``lanes.pause_point()``: a running command's cooperative pause."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import trio

from ._policy import ACTIVE
from ._running import CURRENT, current_command

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["pause_point"]

_current = CURRENT.get
_checkpoint = trio.lowlevel.checkpoint


async def pause_point() -> None:
    """Wait while the calling command's lane is paused; return at once otherwise.

    ``system.pause(lane)`` stops new starts in the lane; a command that calls this between
    steps (tokens, tool calls) also stops there until ``system.resume(lane)``. Always a
    checkpoint (a cancellation and schedule point): cancelling the command, a timeout or
    a preemption interrupts the wait, and nothing is left behind. A paused command keeps
    its slot (it still counts as active) and its timeout keeps running.

    Raises:
        LaneUsageError: called outside a running command.
    """
    cmd = _current(None)  # current_command, inlined for the common case (once per token)
    if cmd is None or cmd.state is not ACTIVE:
        cmd = current_command("pause_point")  # raises the error that says why
    core = cast("Core", cmd.core)
    state = core.lanes[cmd.lane]
    if not state.paused:
        await _checkpoint()
        return
    while state.paused:
        event = core.resumed.get(cmd.lane)
        if event is None:
            event = core.resumed[cmd.lane] = trio.Event()
        await event.wait()
