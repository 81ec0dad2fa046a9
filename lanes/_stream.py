"""Streaming partial results: a bounded buffer from a running command to its caller.

A command submitted with ``system.submit_streaming(..., buffer=N)`` gets a :class:`Stream`.
Its body calls ``await lanes.send_partial(item)``; the caller reads with
``async for item in handle`` (or ``handle.partials()``), then ``await handle.result()``.
A full buffer makes the sender wait for the reader (a slow reader slows the command, memory
stays bounded). Without a stream, ``send_partial`` only checks for cancellation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from ._errors import LaneConfigError, LaneError

__all__ = ["Partials", "Stream", "StreamRestarted", "check_buffer"]


class StreamRestarted(LaneError):
    """The attempt whose partial results were being read failed and the command runs again.

    Raised by the partials iterator (once) when part of a failed attempt's stream was read:
    the next attempt's partials start from the beginning. Call ``handle.partials()`` again
    to read them.
    """


def check_buffer(buffer: object) -> int:
    """Validate ``submit_streaming``'s ``buffer``."""
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
        msg = (
            f"submit_streaming: buffer={buffer!r} is invalid; expected an integer >= 1 (how "
            "many partial results may wait unread before send_partial waits for the reader)"
        )
        raise LaneConfigError(msg)
    return buffer


class Stream:
    """The partial results of one command: a bounded FIFO, one sender side, one reader."""

    __slots__ = (
        "_readers",
        "_senders",
        "abandoned",
        "buffer",
        "closed",
        "consumed",
        "reading",
        "restarted",
        "sent",
        "size",
    )

    def __init__(self, size: int) -> None:
        self.size = size
        self.buffer: deque[Any] = deque()
        self.closed = False  # the command is terminal: no more partials
        self.abandoned = False  # the caller stopped reading: sends return at once
        self.reading = False  # an iterator is open
        self.restarted = False  # a half-read attempt failed: tell the reader once
        self.consumed = 0  # partials the reader took from the current attempt
        self.sent = 0  # partials accepted from the current attempt
        self._readers = trio.lowlevel.ParkingLot()
        self._senders = trio.lowlevel.ParkingLot()

    async def send(self, item: Any) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        while len(self.buffer) >= self.size and not (self.abandoned or self.closed):
            await self._senders.park()  # a cancellation here leaves the item unsent
        if self.abandoned or self.closed:
            return
        self.buffer.append(item)
        self.sent += 1
        self._readers.unpark_all()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def restart(self) -> None:
        """The attempt ended and the command runs again: its partials start over."""
        self.buffer.clear()
        if self.consumed:
            self.restarted = True
        self.consumed = 0
        self.sent = 0
        self._readers.unpark_all()
        self._senders.unpark_all()

    def close(self) -> None:
        """The command is terminal: the reader gets what is buffered, then the end."""
        self.closed = True
        self._readers.unpark_all()
        self._senders.unpark_all()

    def abandon(self) -> None:
        """Nobody reads any more: drop what is buffered; further sends return at once."""
        self.abandoned = True
        self.buffer.clear()
        self._senders.unpark_all()


class Partials:
    """The async iterator of a command's partial results (``handle.partials()``).

    Ends once the command is terminal and everything it sent was read, whatever the
    outcome: ``await handle.result()`` then gives the value or raises. Closing it early
    (``aclose()``, or dropping it unfinished, e.g. ``break`` out of ``async for``) stops
    the stream: the command's further sends return at once and are dropped. To read in
    several loops, keep one iterator and iterate it again.
    """

    __slots__ = ("_done", "_handle", "_restarted", "_stream")

    def __init__(self, handle: object, stream: Stream, restarted: Callable[[], str]) -> None:
        self._handle = handle  # keeps the handle (and so the stream) alive while reading
        self._restarted = restarted  # the StreamRestarted message
        self._stream = stream
        self._done = False
        stream.reading = True

    def __aiter__(self) -> Partials:
        return self

    async def __anext__(self) -> Any:
        """The next partial result; waits for it. Cancellation loses nothing."""
        stream = self._stream
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._done:
                raise StopAsyncIteration
            if stream.restarted:
                stream.restarted = False
                self._finish()
                raise StreamRestarted(self._restarted())
            if stream.buffer:
                item = stream.buffer.popleft()
                stream.consumed += 1
                stream._senders.unpark_all()
                await trio.lowlevel.cancel_shielded_checkpoint()
                return item
            if stream.closed or stream.abandoned:
                self._finish()
                raise StopAsyncIteration
            await stream._readers.park()

    def _finish(self) -> None:
        self._done = True
        self._stream.reading = False

    async def aclose(self) -> None:
        """Stop reading: the command's further partials are dropped (sends return at once)."""
        self._close()
        await trio.lowlevel.checkpoint()

    def _close(self) -> None:
        if not self._done:
            self._finish()
            self._stream.abandon()

    def __del__(self) -> None:
        self._close()  # dropped unfinished: nobody will read the rest
