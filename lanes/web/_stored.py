"""What a database holds, as the console shows it (``lanes web --storage PATH``).

A SQLite file is read read-only at each request (the same reader as ``lanes inspect``, in a
worker thread); a ``redis://`` URL is read through the distributed mode's inspection
(the queued, delayed and running commands of every stream) plus one ``XRANGE`` of the
dead-letter stream, read-only too. The database is shown as one system, ``db``: its lanes
are those its unfinished commands and dead letters name. The only actions are on dead
letters of a SQLite file (requeue: it runs at the next start of the lane system; delete),
written as ``lanes dead-letters`` writes them; those on Redis are changed by a running
system (``system.dead_letters``).
"""

from __future__ import annotations

import time
from datetime import datetime

import attrs
import trio

from .._cli_storage import requeue_batch, stored_letter
from .._dlq import MAX_TRACEBACK
from .._errors import LaneConfigError, StorageError
from .._inspect import (
    Inspection,
    StoredLetterRow,
    is_redis_url,
    read_redis,
    read_schedules,
    read_sqlite,
)
from .._schedule import make_timing
from ..storage import SqliteStorage, StoredSchedule, WriteBatch
from ._live import ERROR_CHARS
from ._source import MAX_PAGE, ActionRefused, NotFound, Sort, View

__all__ = ["StoredSource"]

SYSTEM_ID = "db"


def _next_fire(row: StoredSchedule) -> str | None:
    if row.paused:
        return None
    try:
        timing = make_timing(row.every, row.cron, row.tz, row.anchor)
    except LaneConfigError:
        return None  # e.g. a time zone this machine does not know
    slot = timing.next_after(row.anchor if row.last_slot is None else row.last_slot)
    return None if slot is None else datetime.fromtimestamp(slot, timing.zone).isoformat()


class StoredSource:
    """A SQLite database file or a Redis URL, read at each request.

    Args:
        target: the database path, or a ``redis://`` URL (distributed mode).
        prefix: the Redis key prefix (distributed mode).
    """

    kind = "storage"

    def __init__(self, target: str, prefix: str = "lanes") -> None:
        self.target = target
        self.prefix = prefix
        self.redis = is_redis_url(target)

    async def check(self) -> None:
        """Raise StorageError unless the target can be read (before serving it)."""
        await self._read()

    async def _read(self) -> tuple[Inspection, tuple[StoredSchedule, ...]]:
        if self.redis:
            found = await read_redis(self.target, self.prefix)
            letters = await redis_letters(self.target, self.prefix)
            return attrs.evolve(found, letters=letters), ()
        found = await trio.to_thread.run_sync(read_sqlite, self.target)
        schedules = await trio.to_thread.run_sync(read_schedules, self.target)
        return found, schedules

    async def overview(self) -> View:
        found, _ = await self._read()
        letters = found.letters or ()
        return {
            "kind": self.kind,
            "source": found.source,
            "systems": 1,
            "pending": sum(c.status != "running" for c in found.commands),
            "active": sum(c.status == "running" for c in found.commands),
            "completed": None,
            "failed": None,
            "cancelled": None,
            "dead_letters": len(letters),
            "run_seconds": None,
            "run_attempts": None,
            "shared_limits": [],
        }

    def _row(self, found: Inspection) -> View:
        pending = sum(c.status != "running" for c in found.commands)
        lanes = {c.lane for c in found.commands} | {lt.lane for lt in found.letters or ()}
        return {
            "id": SYSTEM_ID,
            "label": found.source,
            "lanes": len(lanes),
            "pending": pending,
            "active": len(found.commands) - pending,
            "paused": 0,
            "wait": 0.0,
            "completed": None,
            "failed": None,
            "dead_letters": len(found.letters or ()),
            "accepting": None,
        }

    async def systems(self, query: str, sort: Sort, offset: int, limit: int) -> View:
        found, _ = await self._read()
        rows = [self._row(found)]
        if query and query.casefold() not in found.source.casefold() and query != SYSTEM_ID:
            rows = []
        return {
            "total": len(rows),
            "offset": offset,
            "limit": limit,
            "sort": sort,
            "query": query,
            "systems": rows[offset : offset + limit],
        }

    def _check_id(self, system_id: str) -> None:
        if system_id != SYSTEM_ID:
            raise NotFound(f"no system {system_id!r}: a storage is shown as system {SYSTEM_ID!r}")

    async def system(self, system_id: str) -> View:
        self._check_id(system_id)
        found, schedules = await self._read()
        now = time.time()
        lanes: dict[str, View] = {}
        running = []
        for command in found.commands:
            row = lanes.setdefault(command.lane, _lane_row(command.lane))
            if command.status == "running":
                row["active"] += 1
                running.append(
                    {
                        "id": command.id,
                        "lane": command.lane,
                        "type": command.type,
                        "key": command.key,
                        "attempts": command.attempts,
                        "elapsed": None,
                        "progress": None,
                    }
                )
            else:
                row["pending"] += 1
                if command.next_due is not None and command.next_due > now:
                    row["delayed"] += 1
        letters = found.letters or ()
        for letter in letters:
            lanes.setdefault(letter.lane, _lane_row(letter.lane))
        return {
            **self._row(found),
            "lane_rows": [lanes[name] for name in sorted(lanes)],
            "running": running[:MAX_PAGE],
            "running_total": len(running),
            "letters": [
                {
                    "id": letter.id,
                    "lane": letter.lane,
                    "type": letter.type,
                    "error": letter.error[:ERROR_CHARS],
                    "traceback": _bounded(letter.traceback),
                    "attempts": letter.attempts,
                    "failed_at": letter.failed_at,
                }
                for letter in letters[-MAX_PAGE:]
            ],
            "letters_total": len(letters),
            "schedules": [
                {
                    "key": row.key,
                    "lane": row.lane,
                    "paused": row.paused,
                    "next_run": _next_fire(row),
                    "fired": None,
                    "skipped": None,
                    "problem": None,
                }
                for row in schedules[:MAX_PAGE]
            ],
            "max_concurrency": None,
        }

    async def queue(self, system_id: str, lane: str, offset: int, limit: int) -> View:
        self._check_id(system_id)
        found, _ = await self._read()
        now = time.time()
        pending = [c for c in found.commands if c.lane == lane and c.status != "running"]
        rows = [
            {
                "position": position,
                "id": command.id,
                "type": command.type,
                "key": command.key,
                "attempts": command.attempts,
                "age": None,
                "due_in": None if command.next_due is None else max(0.0, command.next_due - now),
            }
            for position, command in enumerate(pending)
        ]
        delayed = sum(1 for c in pending if c.next_due is not None and c.next_due > now)
        return {
            "system": system_id,
            "lane": lane,
            "pending": len(pending),
            "queued": len(pending) - delayed,
            "delayed": delayed,
            "offset": offset,
            "limit": limit,
            "commands": rows[offset : offset + limit],
        }

    async def act(self, action: str, system_id: str, target: str) -> View:
        self._check_id(system_id)
        if action not in ("requeue", "delete"):
            msg = (
                f"{action!r} needs the running lane system: a storage console can only "
                "requeue or delete dead letters (mount lanes.web.console() in the app instead)"
            )
            raise ActionRefused(msg)
        if self.redis:
            raise ActionRefused("dead letters on Redis are not changed from the console")
        return {"ok": True, "message": await _change_letter(self.target, action, target)}


async def redis_letters(url: str, prefix: str) -> tuple[StoredLetterRow, ...]:
    """The dead letters of a deployment on Redis, oldest first, read with one ``XRANGE``
    of its dead-letter stream (a removed letter is deleted from it, so what the stream
    holds is the queue). Entries that do not read as letters are left out. Redis keeps no
    traceback of a letter. It only reads; cancelling it leaves Redis as it was.

    Raises:
        StorageError: Redis cannot be reached (the message names the URL).
    """
    from ..distributed import RedisBackend, RemoteDeadLetter  # coredis: imported on use
    from ..distributed._redis import connect, redis_call, str_fields

    backend = RedisBackend(url, prefix=prefix)
    async with connect(backend) as client:
        entries = await redis_call(backend, client.xrange(backend.key("dead")))
    letters = []
    for entry in entries:
        try:
            letter = RemoteDeadLetter.from_entry(
                str(entry.identifier), str_fields(entry.field_values)
            )
        except StorageError:
            continue
        letters.append(
            StoredLetterRow(
                letter.id,
                letter.lane,
                letter.command_type,
                None,
                letter.attempts,
                letter.failed_at,
                letter.error,
            )
        )
    return tuple(letters)


def _lane_row(name: str) -> View:
    return {
        "name": name,
        "priority": None,
        "effective_priority": None,
        "pending": 0,
        "delayed": 0,
        "active": 0,
        "max_concurrency": None,
        "paused": False,
        "rate_limited": False,
        "shared_limit": None,
        "wait": None,
        "wait_p50": None,
        "wait_p99": None,
        "run_p50": None,
        "run_p99": None,
        "completed": None,
        "failed": None,
        "cancelled": None,
    }


async def _change_letter(path: str, action: str, letter_id: str) -> str:
    storage = SqliteStorage(path)
    await storage.open()
    try:
        recovered = await storage.recover()
        letter = stored_letter(recovered, letter_id)
        if action == "delete":
            await storage.write(WriteBatch(delete_letters=(letter.id,)))
            return f"dead letter {letter_id!r} deleted"
        await storage.write(requeue_batch(recovered, letter))
        return f"dead letter {letter_id!r} requeued: it runs at the next start of the lane system"
    finally:
        await storage.close()


def _bounded(text: str | None) -> str | None:
    """A stored traceback, cut as the lane system cuts one (a file may hold anything)."""
    if text is None or len(text) <= MAX_TRACEBACK:
        return text
    return f"... ({len(text) - MAX_TRACEBACK} characters left out)\n{text[-MAX_TRACEBACK:]}"
