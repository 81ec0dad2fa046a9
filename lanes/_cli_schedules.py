"""``lanes schedules``: list a database's schedules; pause, resume or cancel one by key.

Meant for a database whose lane system is stopped (like ``lanes dead-letters``): a running
system keeps its own copy and writes it back at its next firing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import attrs
import trio

from ._errors import LaneConfigError, StorageError
from ._inspect import read_schedules
from ._inspect import table as _table
from ._schedule import Timing, decide, make_timing
from .storage import SqliteStorage, StoredSchedule, WriteBatch

__all__ = ["schedules_command"]


def _timing(row: StoredSchedule) -> Timing | None:
    try:
        return make_timing(row.every, row.cron, row.tz, row.anchor)
    except LaneConfigError:
        return None  # e.g. a time zone this machine does not know


def _when(row: StoredSchedule, timing: Timing | None, now: float) -> str:
    if timing is None:
        return "? (cannot evaluate here)"
    slot = timing.next_after(row.anchor if row.last_slot is None else row.last_slot)
    if slot is None:
        return "never"
    text = datetime.fromtimestamp(slot, timing.zone).strftime("%Y-%m-%d %H:%M:%S %Z")
    if row.paused:
        return f"paused (was {text})"
    if slot <= now:
        return f"{text}, missed: misfire={row.misfire} at the next start"
    return text


def _describe(row: StoredSchedule) -> str:
    if row.every is not None:
        return f"every {row.every:g} s"
    return f"cron {row.cron!r} {row.tz or 'UTC'}"


def _listing(path: str, rows: list[StoredSchedule], now: float) -> str:
    if not rows:
        return f"{path}: no schedules"
    table = []
    for row in rows:
        table.append(
            [
                row.key,
                row.lane,
                row.type,
                _describe(row),
                f"{row.misfire}/{row.overlap}",
                _when(row, _timing(row), now),
            ]
        )
    lines = [f"{path}: {len(rows)} schedule(s)", ""]
    return "\n".join(
        lines + _table(["key", "lane", "type", "when", "misfire/overlap", "next run"], table)
    )


def _paused(row: StoredSchedule, now: float) -> StoredSchedule:
    return attrs.evolve(row, paused=True)


def _resumed(row: StoredSchedule, now: float) -> StoredSchedule:
    """Resumed from now on: the slots that passed while paused are skipped, as in a system."""
    timing = _timing(row)
    last = row.last_slot
    if timing is not None:
        start = row.anchor if last is None else last
        handled = decide(timing, start, now, "skip", 1, lateness=-1.0).handled
        last = last if handled is None else handled
    return attrs.evolve(row, paused=False, last_slot=last)


async def _change(path: str, action: str, key: str | None, now: float) -> str:
    storage = SqliteStorage(path)
    await storage.open()
    try:
        rows = list((await storage.recover()).schedules)
        by_key = {row.key: row for row in rows}
        row = by_key.get(key or "")
        if row is None:
            known = ", ".join(list(by_key)[:10]) or "none"
            raise StorageError(f"no schedule with key {key!r} (keys: {known})")
        if action == "cancel":
            await storage.write(WriteBatch(delete_schedules=(row.key,)))
            return f"cancelled {row.key}: deleted from the database"
        change: Callable[[StoredSchedule, float], StoredSchedule] = (
            _paused if action == "pause" else _resumed
        )
        await storage.write(WriteBatch(save_schedules=(change(row, now),)))
        return f"{action}d {row.key}"
    finally:
        await storage.close()


def schedules_command(
    path: str, action: str | None = None, key: str | None = None, now: float | None = None
) -> str:
    """The text ``lanes schedules PATH [--pause KEY | --resume KEY | --cancel KEY]`` prints.

    Raises:
        StorageError: a missing or foreign file, or an unknown key.
    """
    now = time.time() if now is None else now
    rows = read_schedules(path)  # read-only: also checks the file before anything writes
    if action is None:
        return _listing(path, list(rows), now)
    return trio.run(_change, path, action, key, now)
