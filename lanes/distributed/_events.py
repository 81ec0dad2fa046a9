"""Events across processes: workers and scripts write compact events to one stream; each
subscription reads it.

Nothing is written while nobody subscribes: a subscription keeps ``<prefix>:events:on``
alive (a key with a TTL it renews) and announces itself on the control stream, which every
worker reads; the scripts that settle commands check the key before writing. Events go to
``<prefix>:events`` (capped at about 10,000 entries), one JSON field each.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import trio
from cattrs.preconf.json import make_converter

from .. import events as ev
from .._errors import LaneConfigError, StorageError
from ._redis import _LINK_FAILURES, xread
from ._resp import Connection, open_connection

if TYPE_CHECKING:
    from ._protocol import Submitting

__all__ = ["EVENTS_TTL", "decode", "encode", "subscription"]

EVENTS_TTL = 10.0  # seconds the events stay on after a subscription's last renewal
_BY_KEY: dict[str, type[ev.Event]] = {
    cls.key: cls
    for cls in (
        ev.Submitted,
        ev.Started,
        ev.Completed,
        ev.Retrying,
        ev.TimedOut,
        ev.Failed,
        ev.DeadLettered,
        ev.Cancelled,
        ev.Preempted,
    )
}
_converter = make_converter()


def encode(event: ev.Event) -> str:
    """One event as the JSON of an events-stream entry."""
    return json.dumps({"key": event.key, **attrs.asdict(event)}, separators=(",", ":"))


def encode_all(events: Iterable[ev.Event]) -> str:
    """Events for a script argument: one JSON text per line ('' for none)."""
    return "\n".join(encode(event) for event in events)


def decode(text: str) -> ev.Event | None:
    """An event read back (None: not an event this version knows, or malformed)."""
    try:
        data = json.loads(text)
        cls = _BY_KEY[data.pop("key")]
        return _converter.structure(data, cls)
    except Exception:
        return None


def _check(types: tuple[type[ev.Event], ...], buffer: object) -> None:
    for event_type in types:
        if not (isinstance(event_type, type) and issubclass(event_type, ev.Event)):
            msg = (
                f"subscribe(): {event_type!r} is not an event type; pass classes from "
                "lanes.events, such as lanes.events.Completed"
            )
            raise LaneConfigError(msg)
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
        msg = f"subscribe(): buffer={buffer!r} is invalid; expected an integer >= 1"
        raise LaneConfigError(msg)


@asynccontextmanager
async def subscription(
    system: Submitting, types: tuple[type[ev.Event], ...], buffer: int
) -> AsyncIterator[trio.MemoryReceiveChannel[ev.Event]]:
    """Turn the deployment's events on, then deliver those of ``types`` until the block ends.

    Raises:
        LaneConfigError: a type that is not an event class, or a bad buffer.
        StorageError: Redis cannot be reached (nothing was turned on).
        ShutdownInProgress: the system is closed.
    """
    _check(types, buffer)
    nursery = system._open_nursery("subscribe")
    stream = system.backend.key("events")
    await _announce(system)
    newest = await system._batcher.command("XREVRANGE", stream, "+", "-", "COUNT", 1)
    start = str(newest[0][0]) if newest else "0-0"
    send, receive = trio.open_memory_channel[ev.Event](buffer)
    scope = trio.CancelScope()

    async def follow() -> None:
        try:
            with scope:
                async with trio.open_nursery() as inner:
                    inner.start_soon(_renew, system)
                    await _read(system, stream, start, types, send)
        finally:
            send.close()  # the system closed (or the block ended): the stream ends

    nursery.start_soon(follow)
    try:
        async with receive:
            yield receive
    finally:
        scope.cancel()
        send.close()


async def _announce(system: Submitting) -> None:
    ttl = int(EVENTS_TTL * 1000)
    backend = system.backend
    await system._batcher.command("SET", backend.key("events:on"), "1", "PX", ttl)
    await system._batcher.command(
        "XADD", backend.key("control"), "MAXLEN", "~", 10000, "*", "events", ttl
    )


async def _renew(system: Submitting) -> None:
    while True:
        await trio.sleep(EVENTS_TTL / 3)
        try:
            await _announce(system)
        except StorageError:
            continue


async def _read(
    system: Submitting,
    stream: str,
    last: str,
    types: tuple[type[ev.Event], ...],
    send: trio.MemorySendChannel[ev.Event],
) -> None:
    connection: Connection | None = None
    pause = 0.05
    try:
        while True:
            try:
                if connection is None or connection.broken:
                    if connection is not None:
                        await connection.aclose()
                    connection = None
                    connection = await open_connection(system.backend.url)
                answer = await xread(connection, {stream: last}, 500, 1000)
            except (StorageError, *_LINK_FAILURES):
                await trio.sleep(pause)
                pause = min(pause * 2, 2.0)
                continue
            pause = 0.05
            for entry_id, fields in answer.get(stream, ()):
                last = entry_id
                _deliver(system, decode(fields.get("e", "")), types, send)
    finally:
        if connection is not None:
            await connection.aclose()


def _deliver(
    system: Submitting,
    event: ev.Event | None,
    types: tuple[type[ev.Event], ...],
    send: trio.MemorySendChannel[ev.Event],
) -> None:
    if event is None or (types and not isinstance(event, types)):
        return
    try:
        send.send_nowait(event)
    except trio.WouldBlock:
        system._events_dropped += 1
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
