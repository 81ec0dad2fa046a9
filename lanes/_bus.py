"""Event fan-out to subscribers; a slow subscriber never blocks scheduling."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from ._errors import LaneConfigError, UnknownLaneError
from .events import Event

T = TypeVar("T")

__all__ = ["EventBus", "check_user_event"]

_EXAMPLE = (
    "@attrs.frozen class OrderShipped(lanes.events.Event): "
    "key: ClassVar[str] = 'shop.order.shipped'"
)


def check_user_event(event: object, lanes: Mapping[str, object]) -> Event:
    """``event`` if a program may emit it: an instance of its own ``Event`` subclass, with
    a ``key`` of its own (not under ``lane.``, which the system's events use) and a lane
    that is ``""`` or one of ``lanes``.

    Raises:
        LaneConfigError: not an event instance, a built-in event type, or a bad key.
        UnknownLaneError: its lane is neither "" nor a lane of the system.
    """
    if isinstance(event, type):
        msg = f"emit(): {event.__qualname__} is a class; pass an instance of it"
        raise LaneConfigError(msg)
    if not isinstance(event, Event):
        msg = (
            f"emit(): {event!r} is not an event; define a subclass of lanes.events.Event "
            f"({_EXAMPLE})"
        )
        raise LaneConfigError(msg)
    cls = type(event)
    if cls.__module__ == Event.__module__:
        msg = (
            f"emit(): lanes.events.{cls.__qualname__} is emitted by the lane system itself; "
            f"define an event of your own ({_EXAMPLE})"
        )
        raise LaneConfigError(msg)
    key = cls.key
    if not isinstance(key, str) or not key or key == Event.key or key.startswith("lane."):
        msg = (
            f"emit(): {cls.__qualname__}.key={key!r} is invalid; give the class a key of its "
            "own, like 'shop.order.shipped' (keys under 'lane.' are the system's)"
        )
        raise LaneConfigError(msg)
    if event.lane != "" and event.lane not in lanes:
        msg = (
            f"emit(): unknown lane {event.lane!r} in {cls.__qualname__}; use '' for an event "
            f"of no lane, or one of: {', '.join(lanes)}"
        )
        raise UnknownLaneError(msg)
    return event


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
        # Tuples, replaced on every change (subscribing is rare, emitting is not): a system
        # nobody observes holds no list, and a callback that unlistens while an event is
        # being delivered does not disturb that delivery.
        self._subscribers: tuple[_Subscriber, ...] = ()
        self._listeners: tuple[Callable[[Event], None], ...] = ()
        self.entering: tuple[Callable[[str], None], ...] = ()
        self._closing: tuple[Callable[[], None], ...] = ()
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
        self._listeners = (*self._listeners, callback)
        self._update()

        def unlisten() -> None:
            if callback in self._listeners:
                self._listeners = _without(self._listeners, callback)
                self._update()

        return unlisten

    def listen_entering(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(command_id)`` in the lane's worker task as an attempt's body starts.

        ``Started`` is emitted when the policy grants the slot (in policy order, from the task
        whose action led to the decision); this hook runs later, in the task that runs the
        body and later emits its outcome event. Tracing uses it to make a span current there.
        """
        self.entering = (*self.entering, callback)

        def unlisten() -> None:
            if callback in self.entering:
                self.entering = _without(self.entering, callback)

        return unlisten

    def on_close(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` once, from :meth:`close` (the system has closed); return an
        unregister function. A process-wide metrics collector uses it to fold a closed
        system's final counts into its totals and let the system go.
        """
        self._closing = (*self._closing, callback)

        def unregister() -> None:
            if callback in self._closing:
                self._closing = _without(self._closing, callback)

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
        self._subscribers = (*self._subscribers, subscriber)
        self._update()
        try:
            async with receive:
                yield receive
        finally:
            self._subscribers = _without(self._subscribers, subscriber)
            self._update()
            send.close()

    def close(self) -> None:
        """End every subscription's stream (``async for`` loops finish)."""
        for subscriber in self._subscribers:
            subscriber.send.close()
        closing, self._closing = self._closing, ()
        for callback in closing:
            callback()


def _without(items: tuple[T, ...], item: T) -> tuple[T, ...]:
    """``items`` without the first one equal to ``item`` (which it holds)."""
    i = items.index(item)
    return items[:i] + items[i + 1 :]
