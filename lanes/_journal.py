"""Group commit: the durable system's writes, batched into one transaction per round.

Submits wait for their command to be on disk (:meth:`Journal.commit`); starts, completions
and dead letters are written in the background by the same writer, coalesced per command
(a start and a completion in one batch write only the deletion). A write that fails fails
every ``commit`` waiting on it (their submits are not acknowledged). Background changes of
a batch that failed as a whole (a full disk, an I/O error) are put back and ride with the
next batch, so once the fault clears they are written; those of a part that failed alone,
and any left when the journal closes, are dropped and counted, which at worst makes
recovery run a command again (at-least-once).

One bad change never fails the others of its batch. Each row is checked when it is saved
(text must be valid Unicode, integers fit in 64 bits): a row that cannot be stored never
joins a batch, and only the ``commit`` of the task that saved it fails. Should a batch fail
all the same, the writer splits it by the task that saved each change and writes the halves
apart (bisecting down to the failing tasks), so only the commits whose own changes cannot
be written fail.

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
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import attrs
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
from .storage._values import row_problem, storable

Task = trio.lowlevel.Task
Ref = tuple[int, str]  # (0: command, 1: letter, 2: schedule; its id or key)

__all__ = ["BACKGROUND_DELAY", "Journal"]

BACKGROUND_DELAY = 0.01
"""Seconds the SQLite writer thread holds changes nobody waits for, hoping for a commit."""


class _Round:
    """The tasks waiting in :meth:`Journal.commit` for one batch, and how its write ended.

    ``owners``: the changes each task made in this round (to isolate a failing one; not
    changed once the round is taken); ``failed``: the tasks whose own changes could not be
    written (``error``: all failed).
    """

    __slots__ = ("error", "failed", "owners", "tasks")

    def __init__(self) -> None:
        self.tasks: list[Task] = []
        self.owners: dict[Task, list[Ref]] = {}
        self.failed: dict[Task, StorageError] = {}
        self.error: StorageError | None = None

    def error_of(self, task: Task) -> StorageError | None:
        return self.failed.get(task, self.error)


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
        self._taken: _Round | None = None  # being written, not yet reported to Trio
        self._rejected: dict[Task, StorageError] = {}  # rows refused at save, by task
        self.rejected_rows = 0
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

    def save(self, row: StoredCommand, *, checked: bool = False) -> None:
        """Save a command row with the next batch.

        The row is checked first (``checked``: it differs only in numbers from a row that
        was): one that cannot be stored is refused, and the calling task's next
        :meth:`commit` raises ``StorageError`` instead of failing a whole batch.
        """
        if not checked and self._refused("command", row):
            return
        with self._lock:
            self._rows[row.id] = row
            self._own((0, row.id))
            self._changed()

    def delete(self, command_id: str) -> None:
        with self._lock:
            self._rows[command_id] = None
            self._own((0, command_id))
            self._changed()

    def save_replacing_letter(self, row: StoredCommand, letter_id: str) -> None:
        """Save ``row`` and delete dead letter ``letter_id`` in the same batch (a requeue)."""
        with self._lock:
            self._rows[row.id] = row
            self._letters[letter_id] = None
            self._changed()

    def save_letter(self, letter: StoredLetter) -> None:
        """Save a dead letter; an error text that is not valid Unicode is escaped."""
        if row_problem("dead letter", [("error", letter.error)]) is not None:
            error = letter.error.encode("utf-8", "backslashreplace").decode("utf-8")
            letter = attrs.evolve(letter, error=error)
        if self._refused("dead letter", letter):
            return
        with self._lock:
            self._letters[letter.id] = letter
            self._own((1, letter.id))
            self._changed()

    def delete_letter(self, letter_id: str) -> None:
        with self._lock:
            self._letters[letter_id] = None
            self._own((1, letter_id))
            self._changed()

    def save_schedule(self, schedule: StoredSchedule) -> None:
        """Saved in the same batch as the command rows saved before the next checkpoint."""
        if self._refused("schedule", schedule):
            return
        with self._lock:
            self._schedules[schedule.key] = schedule
            self._own((2, schedule.key))
            self._changed()

    def delete_schedule(self, key: str) -> None:
        with self._lock:
            self._schedules[key] = None
            self._own((2, key))
            self._changed()

    def _refused(self, kind: str, row: StoredCommand | StoredLetter | StoredSchedule) -> bool:
        """Check a row before it joins a batch; remember why the caller's commit fails."""
        names = _FIELD_NAMES.get(type(row)) or tuple(f.name for f in attrs.fields(type(row)))
        if storable([getattr(row, name) for name in names]):
            return False
        problem = row_problem(kind, ((name, getattr(row, name)) for name in names))
        if problem is None:
            return False
        self.rejected_rows += 1
        error = StorageError(f"{self.storage!r}: {problem}; nothing of it was stored")
        self._rejected[trio.lowlevel.current_task()] = error
        return True

    def _own(self, ref: Ref) -> None:
        """Record that the current task made this change (lock held)."""
        self._round.owners.setdefault(trio.lowlevel.current_task(), []).append(ref)

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
        task = trio.lowlevel.current_task()
        rejected = self._rejected.pop(task, None)
        if rejected is not None:
            await trio.lowlevel.cancel_shielded_checkpoint()
            raise rejected
        with self._lock:
            round_ = self._round
            taken = self._taken
            if taken is not None and task in taken.owners and task not in round_.owners:
                round_ = taken  # the writer took this task's changes already: wait for them
            round_.tasks.append(task)
            self._changed(awaited=True)
        await trio.lowlevel.wait_task_rescheduled(_refuse_abort)
        error = round_.error_of(task)
        if error is not None:
            raise StorageError(str(error)) from error

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
        self._taken = round_
        return _Changes(rows, letters, schedules), round_

    def _has_work(self) -> bool:
        return bool(self._rows or self._letters or self._schedules or self._round.tasks)

    async def _write_batch(self) -> None:
        with self._lock:
            changes, round_ = self._take()
        try:
            batch = changes.batch()
            if batch:
                with trio.CancelScope(shield=True):  # a batch taken is always written
                    error = await _write_async(self.storage, batch)
                    if error is not None:
                        error = await self._isolate_async(changes, round_, error)
                self._count(round_, error)
        except BaseException as exc:  # e.g. KeyboardInterrupt: the waiters must not hang
            round_.error = StorageError(f"{self.storage!r}: write interrupted: {exc!r}")
            raise
        finally:
            if self._taken is round_:
                self._taken = None
            if round_.error is not None:
                self._put_back(changes, round_)
            for task in round_.tasks:
                trio.lowlevel.reschedule(task)

    def _put_back(self, changes: _Changes, round_: _Round) -> None:
        """A batch failed as a whole: keep its background changes for the next batch.

        The changes of tasks waiting in :meth:`commit` are not kept (those tasks learn
        that their changes were not written), nor those a newer change replaced. Not
        when closing: a storage that keeps failing must not keep the journal open. The
        writer is not woken: the changes wait for the next batch, so a broken storage is
        not retried in a loop.
        """
        if self._closed or self._stopping:
            return
        waiting = set(round_.tasks)
        mine = {ref for task, refs in round_.owners.items() if task in waiting for ref in refs}
        with self._lock:
            for store, kind in ((self._rows, 0), (self._letters, 1), (self._schedules, 2)):
                for key, value in changes.part(kind).items():
                    if (kind, key) not in mine:
                        store.setdefault(key, value)

    def _count(self, round_: _Round, error: StorageError | None) -> None:
        """Record how a batch ended (``error``: all of it failed)."""
        round_.error = error
        if error is not None or round_.failed:
            self.failed_writes += 1
        else:
            self.batches += 1

    # -- isolating a failing change --------------------------------------------------------

    def _isolate(
        self,
        write: Callable[[WriteBatch], None],
        changes: _Changes,
        round_: _Round,
        error: StorageError,
    ) -> StorageError | None:
        """The batch failed: write it again in parts, by task (bisecting); return the error
        of the whole if nothing could be written, else None (``round_.failed`` says who)."""
        units = _units(changes, round_)
        if len(units) < 2:
            return error
        parts = _bisection(units, round_)
        try:
            batch = next(parts)
            while True:
                batch = parts.send(_write_sync(self.storage, write, batch))
        except StopIteration as done:
            return None if done.value else error

    async def _isolate_async(
        self, changes: _Changes, round_: _Round, error: StorageError
    ) -> StorageError | None:
        """:meth:`_isolate` for a storage written from Trio."""
        units = _units(changes, round_)
        if len(units) < 2:
            return error
        parts = _bisection(units, round_)
        try:
            batch = next(parts)
            while True:
                batch = parts.send(await _write_async(self.storage, batch))
        except StopIteration as done:
            return None if done.value else error

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
                        # one transaction, committed when it returns
                        error = _write_sync(self.storage, write, batch)
                        if error is not None:
                            error = self._isolate(write, changes, round_, error)
                except BaseException as exc:  # the waiters must not hang
                    error = StorageError(f"{self.storage!r}: write interrupted: {exc!r}")
                    raise
                finally:
                    _report(token, self._written, round_, bool(batch), error, changes)
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

    def _written(
        self, round_: _Round, wrote: bool, error: StorageError | None, changes: _Changes
    ) -> None:
        """On the Trio thread: a batch written by the writer thread (or failed)."""
        if self._taken is round_:
            self._taken = None
        if wrote or error is not None:
            self._count(round_, error)
        if error is not None:
            self._put_back(changes, round_)
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

    def part(self, kind: int) -> dict[str, Any]:
        return (self.rows, self.letters, self.schedules)[kind]

    def refs(self) -> list[Ref]:
        return (
            [(0, key) for key in self.rows]
            + [(1, key) for key in self.letters]
            + [(2, key) for key in self.schedules]
        )

    def subset(self, refs: set[Ref]) -> _Changes:
        return _Changes(
            {k: v for k, v in self.rows.items() if (0, k) in refs},
            {k: v for k, v in self.letters.items() if (1, k) in refs},
            {k: v for k, v in self.schedules.items() if (2, k) in refs},
        )

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


_FIELD_NAMES = {
    cls: tuple(field.name for field in attrs.fields(cls))
    for cls in (StoredCommand, StoredLetter, StoredSchedule)
}


def _bisection(
    units: list[tuple[list[Task], _Changes]], round_: _Round
) -> Generator[WriteBatch, StorageError | None, bool]:
    """Bisect ``units`` (each a task's changes): yield each part's batch to write, receive
    its failure (None: written); a single unit that fails marks its tasks failed in
    ``round_``. Returns whether anything was written. One loop for both writers."""
    groups = [units]
    wrote = False
    while groups:
        group = groups.pop()
        if group is not units:
            failure = yield _merge(group)
            if failure is None:
                wrote = True
                continue
            if len(group) == 1:
                for task in group[0][0]:
                    round_.failed[task] = failure
                continue
        half = len(group) // 2
        groups += [group[:half], group[half:]]
    return wrote


def _units(changes: _Changes, round_: _Round) -> list[tuple[list[Task], _Changes]]:
    """Split a batch's changes by the task that made them (tasks sharing a change share a
    part; changes of no known task form one more). Reads only what no one changes once the
    round is taken, so the writer thread may call it while commits still join the round."""
    part_of: dict[Ref, int] = {}
    parts: list[tuple[list[Task], set[Ref]]] = [([], set())]  # 0: changes of no task
    for task, refs in round_.owners.items():
        index = next((part_of[r] for r in refs if r in part_of), len(parts))
        if index == len(parts):
            parts.append(([], set()))
        parts[index][0].append(task)
        for ref in refs:
            part_of.setdefault(ref, index)
            parts[index][1].add(ref)
    for ref in changes.refs():
        if ref not in part_of:
            parts[0][1].add(ref)
    return [(tasks, changes.subset(refs)) for tasks, refs in parts if refs]


def _merge(group: list[tuple[list[Task], _Changes]]) -> WriteBatch:
    merged = _Changes({}, {}, {})
    for _tasks, part in group:
        merged.rows.update(part.rows)
        merged.letters.update(part.letters)
        merged.schedules.update(part.schedules)
    return merged.batch()


def _write_sync(
    storage: Storage, write: Callable[[WriteBatch], None], batch: WriteBatch
) -> StorageError | None:
    try:
        write(batch)
    except StorageError as exc:
        return exc
    except Exception as exc:  # a storage that broke its contract: still an error
        return _broken(storage, exc)
    return None


async def _write_async(storage: Storage, batch: WriteBatch) -> StorageError | None:
    write: Callable[[WriteBatch], Awaitable[None]] = storage.write
    try:
        await write(batch)
    except StorageError as exc:
        return exc
    except Exception as exc:  # a storage that broke its contract: still an error
        return _broken(storage, exc)
    return None


def _report(token: trio.lowlevel.TrioToken, fn: Callable[..., object], *args: object) -> None:
    """Run ``fn(*args)`` on the Trio thread (dropped if that run already ended)."""
    with contextlib.suppress(trio.RunFinishedError):
        token.run_sync_soon(fn, *args)


def _broken(storage: Storage, exc: Exception) -> StorageError:
    error = StorageError(f"{storage!r}: write failed: {exc!r}")
    error.__cause__ = exc
    return error
