"""The running command, found from inside its body through a context variable.

Every command runs in its own copy of its submitter's context variables (see
``lanes/_lane.py``); that copy holds the command itself, so module-level functions such as
``lanes.send_partial`` and ``lanes.pause_point`` find it from any task the command's body
started, without being passed a handle.
"""

from __future__ import annotations

import contextvars
from typing import Any, Protocol

from ._errors import LaneUsageError
from ._policy import ACTIVE, JobState
from ._stream import Stream

__all__ = ["CURRENT", "Running", "current_command"]


class Running(Protocol):
    """What these functions need of the running command (``lanes._command.Command``)."""

    lane: str
    state: JobState
    stream: Stream | None
    core: Any  # its owner (``lanes._core.Core``)

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> Any: ...


CURRENT: contextvars.ContextVar[Running] = contextvars.ContextVar("lanes_current_command")


def current_command(where: str) -> Running:
    """The command whose body calls ``where``.

    Raises:
        LaneUsageError: not called from inside a running command (or called from a task the
            command started that outlived it).
    """
    cmd = CURRENT.get(None)
    if cmd is None:
        msg = (
            f"lanes.{where}() called outside a command; call it from inside a command's "
            "body (a function or @lanes.command submitted to a lane system), or from a task "
            "that body started"
        )
        raise LaneUsageError(msg)
    if cmd.state is not ACTIVE:
        msg = (
            f"lanes.{where}(): command {cmd.id} in lane {cmd.lane!r} is not running "
            f"(status {cmd.status.value}); a task it started outlived it"
        )
        raise LaneUsageError(msg)
    return cmd
