"""Event fan-out to subscribers; a slow subscriber never blocks scheduling."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from ._errors import LaneConfigError
from .events import Event

__all__ = ["EventBus"]


class _Subscriber:
    __slots__ = ("dropped", "send", "types")

    def __init__(self, types: tuple[type[Event], ...], send: trio.MemorySendChannel[Event]):
        self.types = types
        self.send = send
        self.dropped = 0


class EventBus:
    """Delivers each event to the subscribers that asked for its type.

    Each subscriber has a bounded buffer; past it, new events are dropped for that subscriber
    and counted (``dropped``), so emitting never waits.
    """

    def __init__(self) -> None:
        self._subscribers: list[_Subscriber] = []
        self._listeners: list[Callable[[Event], None]] = []
        self.entering: list[Callable[[str], None]] = []
        self._closing: list[Callable[[], None]] = []
        self.dropped = 0
        self.active = False  # whether anybody listens: callers skip building events if not

    def _update(self) -> None:
        self.active = bool(self._subscribers or self._listeners)

    def listen(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` synchronously for every event; return an unlisten function.

        The callback runs in the task that caused the event (the submitter for ``Submitted``,
        the lane's worker for ``Started`` and the outcomes), before the command's handle
        resolves. It must be quick and must not raise: an exception propagates into the lane
        system's bookkeeping.
        """
        self._listeners.append(callback)
        self._update()

        def unlisten() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)
                self._update()

        return unlisten

    def listen_entering(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(command_id)`` in the lane's worker task as an attempt's body starts.

        ``Started`` is emitted when the policy grants the slot (in policy order, from the task
        whose action led to the decision); this hook runs later, in the task that runs the
        body and later emits its outcome event. Tracing uses it to make a span current there.
        """
        self.entering.append(callback)

        def unlisten() -> None:
            if callback in self.entering:
                self.entering.remove(callback)

        return unlisten

    def on_close(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` once, from :meth:`close` (the system has closed); return an
        unregister function. A process-wide metrics collector uses it to fold a closed
        system's final counts into its totals and let the system go.
        """
        self._closing.append(callback)

        def unregister() -> None:
            if callback in self._closing:
                self._closing.remove(callback)

        return unregister

    def emit(self, event: Event) -> None:
        for listener in self._listeners:
            listener(event)
        for subscriber in self._subscribers:
            if subscriber.types and not isinstance(event, subscriber.types):
                continue
            try:
                subscriber.send.send_nowait(event)
            except trio.WouldBlock:
                subscriber.dropped += 1
                self.dropped += 1
            except trio.BrokenResourceError:
                pass  # the subscriber closed its receive side; it leaves on exit

    @asynccontextmanager
    async def subscribe(
        self, types: tuple[type[Event], ...], buffer: int
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Event]]:
        for event_type in types:
            if not (isinstance(event_type, type) and issubclass(event_type, Event)):
                msg = (
                    f"subscribe(): {event_type!r} is not an event type; pass classes from "
                    "lanes.events, such as lanes.events.Completed"
                )
                raise LaneConfigError(msg)
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            msg = f"subscribe(): buffer={buffer!r} is invalid; expected an integer >= 1"
            raise LaneConfigError(msg)
        send, receive = trio.open_memory_channel[Event](buffer)
        subscriber = _Subscriber(types, send)
        self._subscribers.append(subscriber)
        self._update()
        try:
            async with receive:
                yield receive
        finally:
            self._subscribers.remove(subscriber)
            self._update()
            send.close()

    def close(self) -> None:
        """End every subscription's stream (``async for`` loops finish)."""
        for subscriber in self._subscribers:
            subscriber.send.close()
        closing, self._closing = self._closing, []
        for callback in closing:
            callback()
