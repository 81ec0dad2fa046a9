"""Reading what a deployment holds in Redis, for ``lanes inspect redis://...``."""

from __future__ import annotations

import json
from typing import Any

from cattrs.preconf.json import make_converter

from .._errors import StorageError
from ._redis import GROUP, Client, RedisBackend, connect, redis_call, str_fields, translate
from ._wire import Envelope

__all__ = ["unfinished_commands"]


async def unfinished_commands(url: str, *, prefix: str = "lanes") -> list[dict[str, Any]]:
    """The commands of a deployment that have no outcome yet, read from Redis.

    Each is a dict with the keys ``id``, ``type``, ``key`` (idempotency key or None),
    ``lane``, ``status`` (``"pending"``: queued for its first attempt, or preempted and
    queued at the front of its lane again; ``"delayed"``:
    waiting for its ``delay=``; ``"running"``: fetched by a worker; ``"retrying"``: a
    failed attempt's next one waits for its backoff or a worker), ``attempts`` (attempts
    started so far) and ``next_due`` (wall-clock seconds when a delayed or retrying
    command becomes available, else None). Queued and running commands come stream by
    stream in stream order, then delayed ones by due time. Entries that hold no command
    are left out (a worker dead-letters them when it fetches them).

    It only reads; cancelling it leaves Redis as it was.

    Raises:
        LaneConfigError: ``url`` or ``prefix`` is invalid.
        StorageError: Redis cannot be reached (the message names the URL).
    """
    backend = RedisBackend(url, prefix=prefix)
    async with connect(backend) as client:
        found: list[dict[str, Any]] = []
        for stream in await _streams(backend, client):
            found += await _in_stream(backend, client, stream)
        found += await _delayed(backend, client)
        return found


async def _streams(backend: RedisBackend, client: Client) -> list[str]:
    pattern = backend.key("stream:*")
    try:
        keys = [str(key) async for key in client.scan_iter(match=pattern, type_="stream")]
    except Exception as exc:
        error = translate(backend, exc)
        if error is None:
            raise
        raise error from exc
    return sorted(keys)


async def _in_stream(backend: RedisBackend, client: Client, stream: str) -> list[dict[str, Any]]:
    converter = make_converter()
    try:
        pending: Any = await redis_call(
            backend, client.xpending(stream, GROUP, "-", "+", 1_000_000)
        )
    except StorageError:  # no consumer group yet: no worker ever fetched from it
        pending = ()
    running = {str(info.identifier) for info in pending}
    front = await redis_call(backend, client.lrange(f"{stream}:front", 0, -1))
    preempted = {str(item).split(" ", 1)[0] for item in front}  # pending again, held by none
    found = []
    for entry in await redis_call(backend, client.xrange(stream)):
        try:
            envelope = Envelope.from_fields(converter, str_fields(entry.field_values))
        except StorageError:
            continue
        if str(entry.identifier) in preempted:
            found.append(_row(envelope, "pending", envelope.attempt - 1, None))
        elif str(entry.identifier) in running:
            found.append(_row(envelope, "running", envelope.attempt, None))
        elif envelope.attempt > 1:
            found.append(_row(envelope, "retrying", envelope.attempt - 1, None))
        else:
            found.append(_row(envelope, "pending", 0, None))
    return found


async def _delayed(backend: RedisBackend, client: Client) -> list[dict[str, Any]]:
    converter = make_converter()
    members = await redis_call(
        backend, client.zrange(backend.key("delayed"), 0, -1, withscores=True)
    )
    found = []
    for member in members:
        try:
            _stream, flat, *_key = json.loads(str(member.member))  # (a key's hash, id)
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            envelope = Envelope.from_fields(converter, fields)
        except (ValueError, TypeError, StorageError):
            continue
        due = float(member.score) / 1000
        if envelope.attempt > 1:
            found.append(_row(envelope, "retrying", envelope.attempt - 1, due))
        else:
            found.append(_row(envelope, "delayed", 0, due))
    return found


def _row(envelope: Envelope, status: str, attempts: int, due: float | None) -> dict[str, Any]:
    return {
        "id": envelope.id,
        "type": envelope.type,
        "key": envelope.key,
        "lane": envelope.lane,
        "status": status,
        "attempts": attempts,
        "next_due": due,
    }
