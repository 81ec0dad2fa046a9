"""``lanes inspect``: the unfinished commands and dead letters of a database, read-only.

A SQLite file is opened read-only (a ``file:PATH?mode=ro`` URI) and read with plain
``SELECT`` statements, so inspecting never changes it: a missing file is not created, an
empty file is not turned into a database, and a database of a newer or older schema is read
as far as its columns allow (missing optional columns read as None). Redis (a ``redis://``
URL) is read through :func:`lanes.distributed.unfinished_commands` when this version has it.

All times shown are wall-clock times (seconds since the epoch), as stored.
"""

from __future__ import annotations

import collections
import importlib
import json
import pathlib
import sqlite3
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from ._errors import StorageError
from .storage import StoredSchedule

__all__ = [
    "Inspection",
    "StoredLetterRow",
    "UnfinishedCommand",
    "check_database",
    "inspect_target",
    "read_schedules",
    "read_sqlite",
    "render_json",
    "render_text",
]

_HEADER = b"SQLite format 3\x00"
_APPLICATION_ID = 0x4C414E45  # "LANE", as lanes.storage marks its databases


@attrs.frozen
class UnfinishedCommand:
    """A command that was accepted and has not finished.

    ``status``: ``pending``, ``retrying`` (pending again after a failed attempt) or
    ``running`` (running when the system stopped: it runs again at the next start).
    ``next_due``: wall-clock time before which it does not start (None: as soon as it can).
    """

    id: str
    type: str
    key: str | None
    lane: str
    status: str
    attempts: int
    next_due: float | None


@attrs.frozen
class StoredLetterRow:
    """A dead letter as stored (``failed_at``: wall-clock time of the failure; ``traceback``:
    the last error's, None when the letter was stored without one)."""

    id: str
    lane: str
    type: str
    key: str | None
    attempts: int
    failed_at: float | None
    error: str
    traceback: str | None = None


@attrs.frozen
class Inspection:
    """What ``lanes inspect`` found; ``letters`` is None where the backend does not say."""

    source: str
    commands: tuple[UnfinishedCommand, ...]
    letters: tuple[StoredLetterRow, ...] | None


# -- SQLite ------------------------------------------------------------------------------------


def _check_file(path: pathlib.Path) -> None:
    if not path.exists():
        raise StorageError(f"{str(path)!r} does not exist (or is not a file); nothing to inspect")
    if not path.is_file():
        raise StorageError(f"{str(path)!r} is not a file; pass a lane system's database file")
    try:
        with path.open("rb") as file:
            header = file.read(len(_HEADER))
    except OSError as exc:
        raise StorageError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    if not header:
        msg = (
            f"{str(path)!r} is empty: not a trio-lanes database yet (a lane system with "
            "storage= this path initialises it at its first start); left untouched"
        )
        raise StorageError(msg)
    if header != _HEADER:
        raise StorageError(f"{str(path)!r} is not a SQLite database; left untouched")


def _connect(path: pathlib.Path) -> sqlite3.Connection:
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    try:
        return sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {str(path)!r} read-only: {exc}") from exc


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})").fetchall()]


def _select(db: sqlite3.Connection, table: str, wanted: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of ``table`` (oldest first) with the ``wanted`` columns (None where missing)."""
    present = _columns(db, table)
    if not present:
        return []
    names = [name for name in wanted if name in present]
    order = " ORDER BY seq" if "seq" in present else ""
    rows = db.execute(f"SELECT {', '.join(names)} FROM {table}{order}").fetchall()
    found = [dict(zip(names, row, strict=True)) for row in rows]
    return [{name: values.get(name) for name in wanted} for values in found]


def _command(row: dict[str, Any]) -> UnfinishedCommand:
    attempts = int(row["attempts"] or 0)
    status = str(row["status"] or "pending")
    if status == "pending" and attempts > 0:
        status = "retrying"
    ready_at = row["ready_at"]
    return UnfinishedCommand(
        str(row["id"]),
        str(row["type"] or ""),
        row["key"],
        str(row["lane"] or ""),
        status,
        attempts,
        None if ready_at is None else float(ready_at),
    )


def _letter(row: dict[str, Any]) -> StoredLetterRow:
    failed_at = row["failed_at"]
    return StoredLetterRow(
        str(row["id"]),
        str(row["lane"] or ""),
        str(row["type"] or ""),
        row["key"],
        int(row["attempts"] or 0),
        None if failed_at is None else float(failed_at),
        str(row["error"] or ""),
        None if row["traceback"] is None else str(row["traceback"]),
    )


def _open_ours(path: pathlib.Path) -> sqlite3.Connection:
    """A read-only connection to a trio-lanes database (checked before SQLite opens it)."""
    _check_file(path)
    db = _connect(path)
    try:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
    except sqlite3.Error as exc:
        db.close()
        raise StorageError(f"cannot read {str(path)!r}: {exc}") from exc
    if app_id != _APPLICATION_ID:
        db.close()
        msg = (
            f"{str(path)!r} is a SQLite database of another application "
            f"(application_id {app_id:#x}), not a trio-lanes database"
        )
        raise StorageError(msg)
    return db


def check_database(path: str | pathlib.Path) -> None:
    """Raise :class:`StorageError` unless ``path`` is a trio-lanes database (read-only)."""
    _open_ours(pathlib.Path(path)).close()


def read_schedules(path: str | pathlib.Path) -> tuple[StoredSchedule, ...]:
    """The schedules of a database, by key, read without writing to it.

    Raises:
        StorageError: a missing, empty or foreign file, or one SQLite cannot read.
    """
    names = [field.name for field in attrs.fields(StoredSchedule)]
    db = _open_ours(pathlib.Path(path))
    try:
        rows = _select(db, "schedules", names)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read {str(path)!r}: {exc}") from exc
    finally:
        db.close()
    rows.sort(key=lambda row: str(row["key"]))
    return tuple(StoredSchedule(**_schedule_fields(row)) for row in rows)


def _schedule_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A schedule row's fields; columns an older database lacks get their defaults."""
    runs = row["runs"]
    return {
        **row,
        "paused": bool(row["paused"]),
        "runs": 0 if runs is None else int(runs),
        "after_completion": bool(row["after_completion"]),
    }


_COMMAND_FIELDS = ("id", "seq", "lane", "type", "key", "status", "attempts", "ready_at")
_LETTER_FIELDS = ("id", "seq", "lane", "type", "key", "error", "attempts", "failed_at", "traceback")


def read_sqlite(path: str | pathlib.Path) -> Inspection:
    """Read a lane system's SQLite database without writing to it.

    Dead letters come in the order the dead-letter queue lists them (the order they failed).

    Raises:
        StorageError: a missing, empty or foreign file, or one SQLite cannot read.
    """
    path = pathlib.Path(path)
    db = _open_ours(path)
    try:
        commands = [_command(row) for row in _select(db, "commands", _COMMAND_FIELDS)]
        letter_rows = _select(db, "dead_letters", _LETTER_FIELDS)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read {str(path)!r}: {exc}") from exc
    finally:
        db.close()
    letter_rows.sort(key=lambda row: (row["failed_at"] or 0.0, row["seq"] or 0))
    return Inspection(str(path), tuple(commands), tuple(_letter(row) for row in letter_rows))


# -- Redis -------------------------------------------------------------------------------------


async def read_redis(url: str, prefix: str) -> Inspection:
    """The unfinished commands of lanes on Redis at ``url`` (key prefix ``prefix``).

    Raises:
        StorageError: this version cannot inspect Redis, or Redis cannot be read.
    """
    try:
        distributed = importlib.import_module("lanes.distributed")
    except ImportError as exc:  # coredis is missing: its message says what to install
        raise StorageError(f"cannot inspect Redis: {exc}") from exc
    unfinished = getattr(distributed, "unfinished_commands", None)
    if unfinished is None:
        msg = (
            "this version of trio-lanes cannot inspect Redis (it lacks "
            "lanes.distributed.unfinished_commands); inspect a SQLite file instead"
        )
        raise StorageError(msg)
    rows = await unfinished(url, prefix=prefix)
    commands = tuple(_command_of_dict(row) for row in rows)
    return Inspection(_safe_url(url), commands, None)


def _command_of_dict(row: dict[str, Any]) -> UnfinishedCommand:
    due = row.get("next_due")
    return UnfinishedCommand(
        str(row["id"]),
        str(row.get("type") or ""),
        row.get("key"),
        str(row.get("lane") or ""),
        str(row.get("status") or "pending"),
        int(row.get("attempts") or 0),
        None if due is None else float(due),
    )


def _safe_url(url: str) -> str:
    """The URL without its password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def is_redis_url(target: str) -> bool:
    """Whether ``lanes inspect TARGET`` names Redis rather than a file."""
    return target.startswith(("redis://", "rediss://", "unix://"))


def inspect_target(target: str, prefix: str = "lanes") -> Inspection:
    """Read ``target``: a SQLite file, or a ``redis://`` URL with key prefix ``prefix``."""
    if is_redis_url(target):
        return trio.run(read_redis, target, prefix)
    return read_sqlite(target)


# -- Output ------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned columns under a header line and a rule."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    out = [line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return out


def local_time(wall: float | None) -> str:
    """A wall-clock time as local ``YYYY-MM-DD HH:MM:SS`` ("-" for None)."""
    if wall is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall))
    except (OverflowError, OSError, ValueError):  # out of the platform's range: the number
        return f"{wall!r} (not a representable time)"


def letter_table(letters: Sequence[StoredLetterRow]) -> list[str]:
    """The dead letters as a table, in the order given."""
    rows = [
        [lt.id, lt.lane, lt.type, str(lt.attempts), local_time(lt.failed_at), lt.error[:60]]
        for lt in letters
    ]
    return table(["id", "lane", "type", "attempts", "failed at", "error"], rows)


def _due(command: UnfinishedCommand, now: float) -> str:
    if command.next_due is None or command.next_due <= now:
        return "now"
    return local_time(command.next_due)


def render_text(found: Inspection, now: float | None = None) -> str:
    """What ``lanes inspect`` prints: a summary per lane, the commands, the dead letters."""
    now = time.time() if now is None else now
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for command in found.commands:
        counts[command.lane][command.status] += 1
    letters = "" if found.letters is None else f", {len(found.letters)} dead letter(s)"
    lines = [f"{found.source}: {len(found.commands)} unfinished command(s){letters}", ""]
    summary = [
        [lane, str(c["pending"] + c["retrying"]), str(c["running"])]
        for lane, c in sorted(counts.items())
    ]
    if found.commands:
        lines += table(["lane", "pending", "running (at last stop)"], summary)
        rows = [
            [c.id, c.type, c.key or "-", c.lane, c.status, str(c.attempts), _due(c, now)]
            for c in found.commands
        ]
        headers = ["id", "type", "key", "lane", "status", "attempts", "next due"]
        lines += ["", "unfinished commands (oldest first):", *table(headers, rows)]
    if found.letters:
        lines += ["", "dead letters (oldest failure first):", *letter_table(found.letters)]
    return "\n".join(lines)


def render_json(found: Inspection) -> str:
    """What ``lanes inspect --json`` prints (times: wall-clock seconds since the epoch)."""
    data: dict[str, Any] = {
        "source": found.source,
        "commands": [attrs.asdict(command) for command in found.commands],
    }
    if found.letters is not None:
        data["dead_letters"] = [attrs.asdict(letter) for letter in found.letters]
    return json.dumps(data, indent=2)
