"""Embedded SQLite storage: WAL mode, fsync on commit, driven from a worker thread."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

from .._errors import StorageError
from ._protocol import (
    Recovered,
    StoredCommand,
    StoredFinished,
    StoredKey,
    StoredLetter,
    StoredSchedule,
    WriteBatch,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SqliteStorage"]

T = TypeVar("T")
APPLICATION_ID = 0x4C414E45  # "LANE": marks a database as ours
SCHEMA_VERSION = 6
_HEADER = b"SQLite format 3\x00"
RECLAIM_PAGES = 256
"""Free pages (of 4 KiB by default) past which a write gives the space back to the disk."""
_WAL_LIMIT = 4 * 1024 * 1024  # bytes the WAL file is cut back to after a checkpoint

_COMMAND_COLUMNS = (
    "id, seq, lane, type, payload, key, status, attempts, ready_at, timeout, submitted_at"
)
_COMMAND_FIELDS = _COMMAND_COLUMNS + ", priority"  # since schema version 3
_LETTER_COLUMNS = "id, seq, lane, type, payload, key, error, attempts, failed_at, timeout"
_LETTER_FIELDS = _LETTER_COLUMNS + ", traceback"  # since schema version 6
_SCHEDULE_COLUMNS_V2 = (
    "key, lane, type, payload, every, cron, tz, jitter, misfire, misfire_limit, overlap, anchor, "
    "paused, last_slot, last_command"
)
_SCHEDULE_COLUMNS = f"{_SCHEDULE_COLUMNS_V2}, times, runs, after_completion"
_KEY_COLUMNS = "key, command, lane, type, status, ttl, expires_at"  # since schema version 5
_FINISHED_COLUMNS = (  # since schema version 5
    "id, seq, lane, type, key, status, attempts, priority, accepted_at, ended_at, error, result"
)


def _create_v1(db: sqlite3.Connection) -> None:
    db.execute(f"CREATE TABLE commands ({_COMMAND_COLUMNS})")
    db.execute("CREATE INDEX commands_by_seq ON commands(seq)")
    db.execute(f"CREATE TABLE dead_letters ({_LETTER_COLUMNS})")
    db.execute("CREATE UNIQUE INDEX commands_id ON commands(id)")
    db.execute("CREATE UNIQUE INDEX dead_letters_id ON dead_letters(id)")


def _add_schedules_v2(db: sqlite3.Connection) -> None:
    db.execute(f"CREATE TABLE schedules ({_SCHEDULE_COLUMNS_V2})")
    db.execute("CREATE UNIQUE INDEX schedules_key ON schedules(key)")


def _add_priority_v3(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE commands ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")


def _add_schedule_limits_v4(db: sqlite3.Connection) -> None:
    """The repeat limit, the count of firings and after-completion intervals."""
    db.execute("ALTER TABLE schedules ADD COLUMN times")
    db.execute("ALTER TABLE schedules ADD COLUMN runs NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE schedules ADD COLUMN after_completion NOT NULL DEFAULT 0")


def _add_keys_v5(db: sqlite3.Connection) -> None:
    """Idempotency keys kept with a time to live (``lanes.Dedup``), and finished commands
    kept for listings (``lanes.Retention``)."""
    db.execute(f"CREATE TABLE dedup_keys ({_KEY_COLUMNS})")
    db.execute("CREATE UNIQUE INDEX dedup_keys_key ON dedup_keys(key)")
    db.execute(f"CREATE TABLE finished ({_FINISHED_COLUMNS})")
    db.execute("CREATE UNIQUE INDEX finished_id ON finished(id)")


def _incremental_vacuum(db: sqlite3.Connection) -> None:
    """Let the file shrink after big commands (``auto_vacuum=INCREMENTAL``).

    A new database gets it before its first table. An older one is converted once, at
    open: SQLite needs a VACUUM (outside any transaction) to change the mode. Not a
    schema change: older releases open the file as before.
    """
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:  # 2: INCREMENTAL
        return
    # SQLite cannot change the mode of a database in WAL mode: leave it for the VACUUM.
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("PRAGMA auto_vacuum=INCREMENTAL")
    db.execute("VACUUM")


def _add_letter_tracebacks_v6(db: sqlite3.Connection) -> None:
    """The dead letters' tracebacks (NULL for the letters stored before)."""
    db.execute("ALTER TABLE dead_letters ADD COLUMN traceback")


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _create_v1,
    1: _add_schedules_v2,
    2: _add_priority_v3,
    3: _add_schedule_limits_v4,
    4: _add_keys_v5,
    5: _add_letter_tracebacks_v6,
}
"""``MIGRATIONS[v]`` upgrades a database from schema version ``v`` to ``v + 1``."""
_FULL, _READONLY, _IOERR = sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR


class SqliteStorage:
    """Durable storage in one SQLite file (the embedded default).

    Every write is one transaction committed with ``synchronous=FULL`` in WAL mode, so a
    batch is on disk when :meth:`write` returns. All SQLite calls run in a worker thread
    (one at a time), never on the Trio thread. The file is created with mode 0600.

    While open, it holds an exclusive OS lock (``flock``) on ``PATH.lock``, which names the
    holder: a second open of the same database, from this process or another, raises
    ``StorageError`` instead of running every command twice. The OS releases the lock when
    the process ends, even by ``kill -9``. Space freed by finished commands is given back
    to the disk (incremental vacuum) once more than :data:`RECLAIM_PAGES` pages are free.

    Args:
        path: the database file. Its directory must exist; an existing file must be a
            trio-lanes database.
        clock: wall clock for delays across restarts (default ``time.time``).
        max_pages: optional SQLite ``max_page_count`` (a size cap; tests use it to
            simulate a full disk; see :meth:`set_max_pages`).
        lock: take the lock (default). Only a reader that never writes may pass False.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        max_pages: int | None = None,
        lock: bool = True,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._max_pages = max_pages
        self._use_lock = lock
        self._lock_fd: int | None = None
        self._db: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._db_lock = threading.Lock()  # one thread at a time on the connection

    def __repr__(self) -> str:
        return f"SqliteStorage({str(self.path)!r})"

    def clock(self) -> float:
        return self._clock()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(self._locked, fn, *args, limiter=self._limiter)

    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        with self._db_lock:
            return fn(*args)

    async def open(self) -> None:
        """Validate the path, take the lock, create or upgrade the schema.

        Raises:
            StorageError: missing directory, a file that is not ours, a newer schema, a
                read-only file or folder, or a database another lane system holds.
        """
        await self._call(self._open)

    def _open(self) -> None:
        if self._db is not None:
            raise StorageError(f"{self!r} is already open")
        path = self.path
        if not path.parent.is_dir():
            msg = f"{self!r}: directory {str(path.parent)!r} does not exist; create it first"
            raise StorageError(msg)
        if path.exists():
            self._check_ours(path)
        self._check_writable(path)
        if self._use_lock:
            self._take_lock()
        try:
            self._connect(path)
        except BaseException:
            self._release_lock()
            raise

    def _check_writable(self, path: Path) -> None:
        """Refuse a read-only file or folder now, not at the first submit.

        ``os.access`` follows the caller's rights (root may write anything chmod forbids;
        a read-only mount stops root too). SQLite also needs the folder for its ``-wal``
        and ``-shm`` files.
        """
        if path.exists() and not os.access(path, os.W_OK):
            msg = (
                f"{self!r}: the database file is read-only; a lane system writes every "
                "command (make it writable: chmod u+w, or choose another path)"
            )
            raise StorageError(msg)
        if not os.access(path.parent, os.W_OK | os.X_OK):
            msg = (
                f"{self!r}: the folder {str(path.parent)!r} is read-only; SQLite writes its "
                "-wal and -shm files next to the database (make it writable, or choose "
                "another folder)"
            )
            raise StorageError(msg)

    def _take_lock(self) -> None:
        lock_path = f"{self.path}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            msg = f"{self!r}: cannot create the lock file {lock_path!r}: {exc.strerror or exc}"
            raise StorageError(msg) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            msg = (
                f"{self!r}: the database is in use by another lane system ({holder}; lock "
                f"file {lock_path!r}); two systems on one database would run every command "
                "twice: stop the other one, or give this one another path"
            )
            raise StorageError(msg) from exc
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()} since {stamp}".encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the flock

    def _connect(self, path: Path) -> None:
        if not path.exists():
            try:
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise StorageError(f"{self!r}: cannot create the database: {exc}") from exc
        try:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"{self!r}: cannot open the database: {exc}") from exc
        try:
            self._check_application(db)
            self._check_version(db)
            _incremental_vacuum(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
            self._migrate(db)
            if self._max_pages is not None:  # after the schema: a cap on the data
                db.execute(f"PRAGMA max_page_count={int(self._max_pages)}")
        except BaseException as exc:
            db.close()
            if isinstance(exc, sqlite3.Error):
                raise self._error("cannot open the database", exc) from exc
            raise
        self._db = db

    async def set_max_pages(self, pages: int) -> int:
        """Change SQLite's ``max_page_count`` of the open database; return the value now in
        force (SQLite never sets it below the pages in use). Tests use it to fill the
        storage and to give the space back."""
        return await self._call(self._set_max_pages, pages)

    def _set_max_pages(self, pages: int) -> int:
        db = self._connection()
        self._max_pages = int(pages)
        return int(db.execute(f"PRAGMA max_page_count={int(pages)}").fetchone()[0])

    def _check_ours(self, path: Path) -> None:
        """Refuse a path that is not a file, or a file that is not (yet) a SQLite database.

        An empty file is accepted: it is initialised as a new database (as from ``touch``
        or ``mkstemp``). Anything else that lacks SQLite's header is left untouched.
        """
        if path.is_dir():
            msg = (
                f"{self!r}: {str(path)!r} is a directory; pass the path of a database file, "
                f"e.g. {str(path / 'lanes.db')!r}"
            )
            raise StorageError(msg)
        try:
            with path.open("rb") as file:
                header = file.read(len(_HEADER))
        except OSError as exc:
            msg = f"{self!r}: cannot read {str(path)!r}: {exc.strerror or exc}; check the path"
            raise StorageError(msg) from exc
        if header and header != _HEADER:
            msg = (
                f"{self!r}: the file is not a SQLite database; refusing to touch it "
                "(choose another path)"
            )
            raise StorageError(msg)

    def _check_application(self, db: sqlite3.Connection) -> None:
        """Ours, or an empty database; read through SQLite (the header may be in the WAL)."""
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        if app_id == APPLICATION_ID:
            return
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id == 0 and tables == 0:
            return  # an empty database: ours to initialise
        msg = (
            f"{self!r}: the file is a SQLite database of another application "
            f"(application_id {app_id:#x}, {tables} tables); refusing to touch it "
            "(choose another path)"
        )
        raise StorageError(msg)

    def _check_version(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            msg = (
                f"{self!r}: database schema version {version} is newer than this trio-lanes "
                f"supports ({SCHEMA_VERSION}); upgrade trio-lanes"
            )
            raise StorageError(msg)

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        while version < SCHEMA_VERSION:
            db.execute("BEGIN IMMEDIATE")
            MIGRATIONS[version](db)
            version += 1
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={version}")
            db.execute("COMMIT")

    async def recover(self) -> Recovered:
        """Unfinished commands and dead letters, oldest first."""
        return await self._call(self._recover)

    def _recover(self) -> Recovered:
        db = self._connection()
        try:
            rows = db.execute(f"SELECT {_COMMAND_FIELDS} FROM commands ORDER BY seq").fetchall()
            letters = db.execute(
                f"SELECT {_LETTER_FIELDS} FROM dead_letters ORDER BY seq"
            ).fetchall()
            schedules = db.execute(
                f"SELECT {_SCHEDULE_COLUMNS} FROM schedules ORDER BY key"
            ).fetchall()
            keys = db.execute(f"SELECT {_KEY_COLUMNS} FROM dedup_keys ORDER BY key").fetchall()
            finished = db.execute(
                f"SELECT {_FINISHED_COLUMNS} FROM finished ORDER BY ended_at, seq"
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._error("cannot read the database", exc) from exc
        return Recovered(
            tuple(StoredCommand(*row) for row in rows),
            tuple(StoredLetter(*row) for row in letters),
            tuple(_schedule_of(row) for row in schedules),
            tuple(StoredKey(*row) for row in keys),
            tuple(StoredFinished(*row) for row in finished),
        )

    async def write(self, batch: WriteBatch) -> None:
        """Apply ``batch`` in one transaction, on disk when this returns.

        Cancellation waits for the transaction to finish (it is never half applied).
        """
        await trio.to_thread.run_sync(self.write_blocking, batch, limiter=self._limiter)

    def write_blocking(self, batch: WriteBatch) -> None:
        """:meth:`write` in the calling thread: blocks until committed (or rolled back).

        Raises:
            StorageError: the transaction failed and was rolled back.
        """
        self._locked(self._write, batch)

    def _write(self, batch: WriteBatch) -> None:
        # Few statements, each with many rows: the sqlite3 module releases and retakes the
        # GIL around every step, and each retake may wait for the busy Trio thread.
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                _insert(db, "commands", _COMMAND_FIELDS, [_command_row(r) for r in batch.save])
                _delete(db, "commands", batch.delete)
                _insert(
                    db,
                    "dead_letters",
                    _LETTER_FIELDS,
                    [_letter_row(r) for r in batch.save_letters],
                )
                _delete(db, "dead_letters", batch.delete_letters)
                _insert(
                    db,
                    "schedules",
                    _SCHEDULE_COLUMNS,
                    [attrs.astuple(r) for r in batch.save_schedules],
                )
                _delete(db, "schedules", batch.delete_schedules, column="key")
                _insert(db, "dedup_keys", _KEY_COLUMNS, [attrs.astuple(k) for k in batch.save_keys])
                _delete(db, "dedup_keys", batch.delete_keys, column="key")
                _insert(
                    db,
                    "finished",
                    _FINISHED_COLUMNS,
                    [attrs.astuple(f) for f in batch.save_finished],
                )
                _delete(db, "finished", batch.delete_finished)
                db.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk): rolling
                # back again would raise "no transaction is active" and hide the cause.
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            # ValueError: text that is not valid Unicode (a lone surrogate); OverflowError:
            # an integer wider than 64 bits. The transaction was rolled back either way.
            raise self._error("write failed", exc) from exc
        if batch.delete or batch.delete_letters or batch.delete_finished:
            self._reclaim(db)

    def _reclaim(self, db: sqlite3.Connection) -> None:
        """Give free pages back to the disk once there are many (big commands finished).

        Best effort: the space is only reused later if this fails (e.g. a reader holds
        the WAL), never lost.
        """
        try:
            if db.execute("PRAGMA freelist_count").fetchone()[0] < RECLAIM_PAGES:
                return
            # executescript steps the pragma to its end (execute frees one page per step)
            db.executescript("PRAGMA incremental_vacuum")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            return

    def _error(self, what: str, exc: BaseException) -> StorageError:
        """A StorageError that says what happened in words a user acts on."""
        code = getattr(exc, "sqlite_errorcode", None)
        primary = None if code is None else code & 0xFF
        if primary == _FULL:
            detail = (
                "the storage is full (database or disk full); nothing of this write was "
                "stored and everything accepted before is kept: free disk space (or raise "
                "max_pages), then submit again"
            )
        elif primary == _READONLY:
            detail = f"the database is read-only ({exc}); make the file and its folder writable"
        elif primary == _IOERR:
            detail = (
                f"disk I/O error ({exc}); nothing of this write was stored: check the disk, "
                "then submit again"
            )
        else:
            detail = str(exc)
        return StorageError(f"{self!r}: {what}: {detail}")

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError(f"{self!r} is not open")
        return self._db

    async def close(self) -> None:
        """Close the database (a no-op if it is not open)."""
        await self._call(self._close)

    def _close(self) -> None:
        try:
            if self._db is not None:
                self._db.close()
                self._db = None
        finally:
            self._release_lock()


_CHUNK_VARIABLES = 30_000  # below SQLite's limit of bound variables per statement


def _insert(db: sqlite3.Connection, table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    width = len(rows[0])
    step = max(1, _CHUNK_VARIABLES // width)
    one = "(" + ",".join("?" * width) + ")"
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        values = [value for row in chunk for value in row]
        db.execute(
            f"INSERT OR REPLACE INTO {table} ({columns}) VALUES " + ",".join([one] * len(chunk)),
            values,
        )


def _delete(db: sqlite3.Connection, table: str, ids: tuple[str, ...], column: str = "id") -> None:
    step = _CHUNK_VARIABLES
    for start in range(0, len(ids), step):
        chunk = ids[start : start + step]
        db.execute(f"DELETE FROM {table} WHERE {column} IN ({','.join('?' * len(chunk))})", chunk)


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return f"held by {text}" if text else "held by another process"


def _schedule_of(row: tuple[Any, ...]) -> StoredSchedule:
    values = list(row)
    values[12] = bool(values[12])  # paused: SQLite keeps 0 / 1
    values[17] = bool(values[17])  # after_completion
    return StoredSchedule(*values)


def _command_row(row: StoredCommand) -> tuple[Any, ...]:
    return (
        row.id,
        row.seq,
        row.lane,
        row.type,
        row.payload,
        row.key,
        row.status,
        row.attempts,
        row.ready_at,
        row.timeout,
        row.submitted_at,
        row.priority,
    )


def _letter_row(row: StoredLetter) -> tuple[Any, ...]:
    return (
        row.id,
        row.seq,
        row.lane,
        row.type,
        row.payload,
        row.key,
        row.error,
        row.attempts,
        row.failed_at,
        row.timeout,
        row.traceback,
    )
