"""Group commit: the durable system's writes, batched into one transaction per round.

Submits wait for their command to be on disk (:meth:`Journal.commit`); starts, completions
and dead letters are written in the background by the same writer, coalesced per command
(a start and a completion in one batch write only the deletion). A write that fails fails
every ``commit`` waiting on it (their submits are not acknowledged); background changes in
a failed batch are dropped and counted, which at worst makes recovery run a command again
(at-least-once).

Two writers share this buffer. For :class:`~lanes.storage.SqliteStorage` a long-lived
writer thread takes the changes itself the moment it is free, writes them in one
transaction, and reports back to Trio with ``run_sync_soon``: one hand-off per batch, and
no thread start or GIL hand-over on the way in while the Trio thread is busy. Any other
storage gets a Trio task that awaits ``storage.write(batch)`` once per batch.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import trio

from ._errors import StorageError
from .storage import (
    SqliteStorage,
    Storage,
    StoredCommand,
    StoredLetter,
    StoredSchedule,
    WriteBatch,
)

__all__ = ["BACKGROUND_DELAY", "Journal"]

BACKGROUND_DELAY = 0.01
"""Seconds the SQLite writer thread holds changes nobody waits for, hoping for a commit."""


class _Round:
    """The tasks waiting in :meth:`Journal.commit` for one batch, and how its write ended."""

    __slots__ = ("error", "tasks")

    def __init__(self) -> None:
        self.tasks: list[trio.lowlevel.Task] = []
        self.error: StorageError | None = None


def _refuse_abort(_raise_cancel: object) -> trio.lowlevel.Abort:
    # A commit cannot be abandoned: its caller learns whether the batch was written.
    return trio.lowlevel.Abort.FAILED


def _blocking_writer(storage: Storage) -> Callable[[WriteBatch], None] | None:
    """The synchronous write a writer thread may call, or None (then a Trio task writes)."""
    if isinstance(storage, SqliteStorage) and type(storage).write is SqliteStorage.write:
        return storage.write_blocking
    return None  # any other storage, or a subclass with its own ``write``: use ``write``


class Journal:
    """Buffers changes and writes them with one transaction per batch.

    The buffer is guarded by a lock because the SQLite writer thread takes batches from it
    directly; every other method runs on the Trio thread.
    """

    def __init__(self, storage: Storage, next_seq: int = 1) -> None:
        self.storage = storage
        self.next_seq = next_seq
        self.batches = 0
        self.failed_writes = 0
        self._rows: dict[str, StoredCommand | None] = {}
        self._letters: dict[str, StoredLetter | None] = {}
        self._schedules: dict[str, StoredSchedule | None] = {}
        self._round = _Round()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._work = trio.Event()  # the Trio writer's wake-up
        self._threaded = False  # a writer thread takes the batches
        self._thread_idle = False  # it waits on ``_cond`` for any change
        self._thread_lingers = False  # it holds off background-only changes (see below)
        self._stopping = False  # it writes what is left and exits
        self._thread_done: trio.Event | None = None
        self._closed = False
        self._finished = False  # closed: nothing writes any more

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    # -- changes (synchronous, written by the next batch) -----------------------------------

    def save(self, row: StoredCommand) -> None:
        with self._lock:
            self._rows[row.id] = row
            self._changed()

    def delete(self, command_id: str) -> None:
        with self._lock:
            self._rows[command_id] = None
            self._changed()

    def save_replacing_letter(self, row: StoredCommand, letter_id: str) -> None:
        """Save ``row`` and delete dead letter ``letter_id`` in the same batch (a requeue)."""
        with self._lock:
            self._rows[row.id] = row
            self._letters[letter_id] = None
            self._changed()

    def save_letter(self, letter: StoredLetter) -> None:
        with self._lock:
            self._letters[letter.id] = letter
            self._changed()

    def delete_letter(self, letter_id: str) -> None:
        with self._lock:
            self._letters[letter_id] = None
            self._changed()

    def save_schedule(self, schedule: StoredSchedule) -> None:
        """Saved in the same batch as the command rows saved before the next checkpoint."""
        with self._lock:
            self._schedules[schedule.key] = schedule
            self._changed()

    def delete_schedule(self, key: str) -> None:
        with self._lock:
            self._schedules[key] = None
            self._changed()

    def _changed(self, *, awaited: bool = False) -> None:
        """Wake the writer (called with the lock held); ``awaited``: a commit waits."""
        if not self._threaded:
            self._work.set()
        elif self._thread_idle or (awaited and self._thread_lingers):
            self._thread_idle = self._thread_lingers = False
            self._cond.notify()

    async def commit(self) -> None:
        """Wait until every change made so far is on disk.

        Not cancellable: once a change is handed to the writer, the caller learns whether
        it was written (a cancellation arriving meanwhile is delivered at the caller's next
        checkpoint). The task sleeps until the writer reschedules it, which costs neither a
        shielded cancel scope nor an event per call.

        Raises:
            StorageError: the batch holding these changes failed.
        """
        if self._finished:
            raise StorageError(f"{self.storage!r} is closed: the lane system has stopped")
        with self._lock:
            round_ = self._round
            round_.tasks.append(trio.lowlevel.current_task())
            self._changed(awaited=True)
        await trio.lowlevel.wait_task_rescheduled(_refuse_abort)
        if round_.error is not None:
            raise StorageError(str(round_.error)) from round_.error

    # -- the writer --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer: one transaction per batch of changes.

        With SQLite a writer thread does the work and this task only keeps it company;
        cancelling this task stops neither (:meth:`close` does, after writing what is left).
        Otherwise this task writes the batches until cancelled; a batch it took is always
        written in full.
        """
        write = _blocking_writer(self.storage)
        task_status.started()
        if write is not None:
            done = self._start_thread(write)
            await done.wait()
            if self._stopping:
                return
            # The thread died (it reported why); this task writes from now on.
            self._work.set()
        while True:
            await self._work.wait()
            self._work = trio.Event()
            await self._write_batch()

    def _take(self) -> tuple[_Changes, _Round]:
        """Swap out the buffer (called with the lock held: keep it short); building the
        batch is left to the caller, outside the lock."""
        rows, self._rows = self._rows, {}
        letters, self._letters = self._letters, {}
        schedules, self._schedules = self._schedules, {}
        round_, self._round = self._round, _Round()
        return _Changes(rows, letters, schedules), round_

    def _has_work(self) -> bool:
        return bool(self._rows or self._letters or self._schedules or self._round.tasks)

    async def _write_batch(self) -> None:
        with self._lock:
            changes, round_ = self._take()
        try:
            batch = changes.batch()
            if batch:
                try:
                    with trio.CancelScope(shield=True):  # a batch taken is always written
                        await self.storage.write(batch)
                    self.batches += 1
                except StorageError as exc:
                    round_.error = exc
                    self.failed_writes += 1
                except Exception as exc:  # a storage that broke its contract: still an error
                    round_.error = _broken(self.storage, exc)
                    self.failed_writes += 1
        except BaseException as exc:  # e.g. KeyboardInterrupt: the waiters must not hang
            round_.error = StorageError(f"{self.storage!r}: write interrupted: {exc!r}")
            raise
        finally:
            for task in round_.tasks:
                trio.lowlevel.reschedule(task)

    # -- the writer thread (SQLite) --------------------------------------------------------

    def _start_thread(self, write: Callable[[WriteBatch], None]) -> trio.Event:
        token = trio.lowlevel.current_trio_token()
        done = self._thread_done = trio.Event()
        with self._lock:
            self._threaded = True
        thread = threading.Thread(
            target=self._thread_main, args=(write, token, done), name="lanes-journal", daemon=True
        )
        thread.start()
        return done

    def _thread_main(
        self,
        write: Callable[[WriteBatch], None],
        token: trio.lowlevel.TrioToken,
        done: trio.Event,
    ) -> None:
        """Take a batch as soon as there is one, write it, report back; until stopped."""
        try:
            while True:
                with self._cond:
                    if not self._wait_for_batch():
                        return
                    changes, round_ = self._take()
                batch = changes.batch()
                error: StorageError | None = None
                try:
                    if batch:
                        write(batch)  # one transaction, committed when it returns
                except StorageError as exc:
                    error = exc
                except Exception as exc:
                    error = _broken(self.storage, exc)
                except BaseException as exc:  # the waiters must not hang
                    error = StorageError(f"{self.storage!r}: write interrupted: {exc!r}")
                    raise
                finally:
                    _report(token, self._written, round_, bool(batch), error)
        finally:
            with self._lock:
                self._threaded = False  # from now on (close) the Trio side writes
            _report(token, done.set)

    def _wait_for_batch(self) -> bool:
        """Wait (lock held) until a batch is due; False: stopped with nothing left.

        A batch is due at once when a commit waits for it. Changes nobody waits for
        (starts, completions, dead letters) linger up to :data:`BACKGROUND_DELAY` seconds
        for a commit to carry them: writing them alone would cost a whole fsync that the
        submits arriving meanwhile then wait behind.
        """
        deadline: float | None = None
        while not self._round.tasks:
            if self._rows or self._letters or self._schedules:
                if self._stopping:
                    break
                now = time.monotonic()
                if deadline is None:
                    deadline = now + BACKGROUND_DELAY
                elif now >= deadline:
                    break
                self._thread_lingers = True
                self._cond.wait(deadline - now)
                self._thread_lingers = False
            elif self._stopping:
                return False
            else:
                self._thread_idle = True
                self._cond.wait()
                self._thread_idle = False
        return True

    def _written(self, round_: _Round, wrote: bool, error: StorageError | None) -> None:
        """On the Trio thread: a batch written by the writer thread (or failed)."""
        if error is not None:
            round_.error = error
            self.failed_writes += 1
        elif wrote:
            self.batches += 1
        for task in round_.tasks:
            trio.lowlevel.reschedule(task)

    async def close(self) -> None:
        """Write what is left, then close the storage. Shielded: it always finishes."""
        with trio.CancelScope(shield=True):
            if not self._closed:
                self._closed = True
                try:
                    if self._thread_done is not None:
                        with self._cond:
                            self._stopping = True
                            self._thread_idle = self._thread_lingers = False
                            self._cond.notify()
                        await self._thread_done.wait()  # it wrote everything first
                    while self._has_work():
                        await self._write_batch()
                finally:
                    self._finished = True
                    await self.storage.close()


class _Changes:
    """The changes taken for one batch."""

    __slots__ = ("letters", "rows", "schedules")

    def __init__(
        self,
        rows: dict[str, StoredCommand | None],
        letters: dict[str, StoredLetter | None],
        schedules: dict[str, StoredSchedule | None],
    ) -> None:
        self.rows = rows
        self.letters = letters
        self.schedules = schedules

    def batch(self) -> WriteBatch:
        rows, letters, schedules = self.rows, self.letters, self.schedules
        return WriteBatch(
            save=tuple(row for row in rows.values() if row is not None),
            delete=tuple(key for key, row in rows.items() if row is None),
            save_letters=tuple(letter for letter in letters.values() if letter is not None),
            delete_letters=tuple(key for key, letter in letters.items() if letter is None),
            save_schedules=tuple(s for s in schedules.values() if s is not None),
            delete_schedules=tuple(key for key, s in schedules.items() if s is None),
        )


def _report(token: trio.lowlevel.TrioToken, fn: Callable[..., object], *args: object) -> None:
    """Run ``fn(*args)`` on the Trio thread (dropped if that run already ended)."""
    with contextlib.suppress(trio.RunFinishedError):
        token.run_sync_soon(fn, *args)


def _broken(storage: Storage, exc: Exception) -> StorageError:
    error = StorageError(f"{storage!r}: write failed: {exc!r}")
    error.__cause__ = exc
    return error
