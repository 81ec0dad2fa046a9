"""A bounded actor inbox over a trio memory channel."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

import trio

__all__ = ["Mailbox"]

M = TypeVar("M")


class Mailbox(Generic[M]):
    """A bounded FIFO of messages for one actor.

    ``send`` waits while the mailbox is full; ``send_nowait`` raises :class:`trio.WouldBlock`
    instead. Messages are received in the order they were sent. Closing the mailbox lets the
    receiver finish the messages already in it, then ends its ``async for`` loop.

    Args:
        size: how many messages may wait in the mailbox (an integer >= 1, or ``math.inf``).
    """

    def __init__(self, size: int | float) -> None:
        valid_int = isinstance(size, int) and not isinstance(size, bool) and size >= 1
        if not (valid_int or size == math.inf):
            msg = f"Mailbox size={size!r} is invalid; expected an integer >= 1 (or math.inf)"
            raise ValueError(msg)
        self._send, self._receive = trio.open_memory_channel[M](size)
        self.size = size

    async def send(self, message: M) -> None:
        """Put a message in the mailbox, waiting while it is full.

        Cancellation leaves the mailbox unchanged: the message was not delivered.

        Raises:
            trio.ClosedResourceError: the mailbox was closed.
        """
        await self._send.send(message)

    def send_nowait(self, message: M) -> None:
        """Put a message in the mailbox without waiting.

        Raises:
            trio.WouldBlock: the mailbox is full.
            trio.ClosedResourceError: the mailbox was closed.
        """
        self._send.send_nowait(message)

    async def receive(self) -> M:
        """Take the next message, waiting for one.

        Raises:
            trio.EndOfChannel: the mailbox was closed and is empty.
        """
        return await self._receive.receive()

    def receive_nowait(self) -> M:
        """Take the next message if there is one, else raise :class:`trio.WouldBlock`."""
        return self._receive.receive_nowait()

    def close(self) -> None:
        """Stop accepting messages; the receiver still gets those already sent."""
        self._send.close()

    def __aiter__(self) -> AsyncIterator[M]:
        return self._receive.__aiter__()

    def __len__(self) -> int:
        return self._send.statistics().current_buffer_used
