"""``lanes.send_partial()``: a running command's partial results (see ``lanes/_stream.py``)."""

from __future__ import annotations

from typing import Any

import trio

from ._running import current_command

__all__ = ["send_partial"]


async def send_partial(item: Any) -> None:
    """Send a partial result (an LLM token, a progress report) to the command's caller.

    Call it from inside a command's body (or a task the body started). If the command was
    submitted with ``submit_streaming(..., buffer=N)``, ``item`` is queued for the reader;
    while ``N`` items wait unread, this waits for the reader (backpressure). If the caller
    stopped reading (closed its iterator early, dropped its handle, or awaits only
    ``result()``), or the command has no stream (plain ``submit``), ``item`` is dropped and
    this returns at once. Always a cancellation point; when the item is queued, also a
    schedule point (like a memory channel's ``send``).

    Cancellation while waiting for room leaves ``item`` unsent.

    Raises:
        LaneUsageError: called outside a running command.
    """
    stream = current_command("send_partial").stream
    if stream is None:
        await trio.lowlevel.checkpoint_if_cancelled()
        return
    await stream.send(item)
