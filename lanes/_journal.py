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

One Trio task writes: it takes every change made since its last write and awaits
``storage.write(batch)`` once per batch, while the changes made meanwhile gather for the
next one. (A writer thread of its own was measured against it and gained nothing; see
docs/durability.md.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ._errors import StorageError
from .storage import (
    SqliteStorage,
    Storage,
    StoredCommand,
    StoredFinished,
    StoredKey,
    StoredLetter,
    StoredSchedule,
    WriteBatch,
)
from .storage._values import row_problem, storable

Task = trio.lowlevel.Task
Ref = tuple[
    int, str
]  # (0: command, 1: letter, 2: schedule, 3: dedup key, 4: finished; its id or key)

__all__ = ["BACKGROUND_DELAY", "Journal"]

BACKGROUND_DELAY = 0.01
"""Seconds the writer holds changes nobody waits for (SQLite only), hoping for a commit."""


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


class Journal:
    """Buffers changes and writes them with one transaction per batch (Trio thread only)."""

    def __init__(self, storage: Storage, next_seq: int = 1) -> None:
        self.storage = storage
        self.next_seq = next_seq
        self.batches = 0
        self.failed_writes = 0
        self._rows: dict[str, StoredCommand | None] = {}
        self._letters: dict[str, StoredLetter | None] = {}
        self._schedules: dict[str, StoredSchedule | None] = {}
        self._keys: dict[str, StoredKey | None] = {}  # lanes/_dedup.py's
        self._retained: dict[str, StoredFinished | None] = {}  # lanes/_retention.py's
        self._round = _Round()
        self._taken: _Round | None = None  # being written
        self._rejected: dict[Task, StorageError] = {}  # rows refused at save, by task
        self.rejected_rows = 0
        self._work = trio.Event()  # a change was made
        self._awaited = trio.Event()  # a commit waits
        # Changes nobody waits for linger before a write of their own only where a write
        # costs an fsync that the next submits would wait behind.
        self._lingers = isinstance(storage, SqliteStorage)
        self._writer = False  # :meth:`run` is writing the batches
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
        self._rows[row.id] = row
        self._own((0, row.id))

    def save_all(self, rows: list[StoredCommand]) -> None:
        """Save command rows with the next batch, all of them or none.

        Every row is checked before any is saved: if one cannot be stored, none is, and the
        calling task's next :meth:`commit` raises ``StorageError``. The rows are the calling
        task's changes, so a batch that fails is never split between them.
        """
        for row in rows:
            if self._refused("command", row):
                return
        for row in rows:
            self._rows[row.id] = row
            self._own((0, row.id))

    def delete(self, command_id: str) -> None:
        self._rows[command_id] = None
        self._own((0, command_id))

    def save_replacing_letter(self, row: StoredCommand, letter_id: str) -> None:
        """Save ``row`` and delete dead letter ``letter_id`` in the same batch (a requeue)."""
        self._rows[row.id] = row
        self._letters[letter_id] = None
        self._work.set()

    def save_letter(self, letter: StoredLetter) -> None:
        """Save a dead letter; an error text that is not valid Unicode is escaped."""
        if row_problem("dead letter", [("error", letter.error)]) is not None:
            error = letter.error.encode("utf-8", "backslashreplace").decode("utf-8")
            letter = attrs.evolve(letter, error=error)
        if self._refused("dead letter", letter):
            return
        self._letters[letter.id] = letter
        self._own((1, letter.id))

    def delete_letter(self, letter_id: str) -> None:
        self._letters[letter_id] = None
        self._own((1, letter_id))

    def save_schedule(self, schedule: StoredSchedule) -> None:
        """Saved in the same batch as the command rows saved before the next checkpoint."""
        if self._refused("schedule", schedule):
            return
        self._schedules[schedule.key] = schedule
        self._own((2, schedule.key))

    def delete_schedule(self, key: str) -> None:
        self._schedules[key] = None
        self._own((2, key))

    def save_key(self, key: StoredKey) -> None:
        """Save an idempotency key kept with a time to live (``lanes._dedup``)."""
        if self._refused("dedup key", key):
            return
        self._keys[key.key] = key
        self._own((3, key.key))

    def delete_key(self, key: str) -> None:
        self._keys[key] = None
        self._own((3, key))

    def save_finished(self, finished: StoredFinished) -> None:
        """Save a finished command kept for listings (``lanes._retention``)."""
        if row_problem("finished command", [("error", finished.error)]) is not None:
            error = (finished.error or "").encode("utf-8", "backslashreplace").decode("utf-8")
            finished = attrs.evolve(finished, error=error)
        if self._refused("finished command", finished):
            return
        self._retained[finished.id] = finished
        self._own((4, finished.id))

    def delete_finished(self, command_id: str) -> None:
        self._retained[command_id] = None
        self._own((4, command_id))

    def _refused(
        self,
        kind: str,
        row: StoredCommand | StoredLetter | StoredSchedule | StoredKey | StoredFinished,
    ) -> bool:
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
        """Record that the current task made this change, and wake the writer."""
        owners = self._round.owners
        task = trio.lowlevel.current_task()
        refs = owners.get(task)
        if refs is None:
            owners[task] = [ref]
        else:
            refs.append(ref)
        self._work.set()

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
        round_ = self._round
        taken = self._taken
        if taken is not None and task in taken.owners and task not in round_.owners:
            round_ = taken  # the writer took this task's changes already: wait for them
        elif not self._writer:  # no writer (the system is closing): write them now
            with trio.CancelScope(shield=True):
                await self._write_batch()
            error = round_.error_of(task)
            if error is not None:
                raise StorageError(str(error)) from error
            return
        round_.tasks.append(task)
        self._work.set()
        self._awaited.set()
        await trio.lowlevel.wait_task_rescheduled(_refuse_abort)
        error = round_.error_of(task)
        if error is not None:
            raise StorageError(str(error)) from error

    # -- the writer --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer: one transaction per batch of changes, until cancelled.

        A batch it took is always written in full, and so are the changes of commits
        waiting when it is cancelled (they cannot be abandoned); a commit that comes later
        writes its own batch, and :meth:`close` writes what is left.
        """
        self._writer = True
        task_status.started()
        try:
            while True:
                await self._work.wait()
                if self._lingers and not self._round.tasks:
                    # Only background changes: give a commit the chance to carry them.
                    with trio.move_on_after(BACKGROUND_DELAY):
                        await self._awaited.wait()
                await self._write_batch()
        finally:
            self._writer = False
            with trio.CancelScope(shield=True):
                while self._round.tasks:
                    await self._write_batch()

    def _take(self) -> tuple[_Changes, _Round]:
        """Swap out the buffer: the changes made from now on go to the next batch."""
        changes = _Changes(self._rows, self._letters, self._schedules, self._keys, self._retained)
        self._rows, self._letters, self._schedules = {}, {}, {}
        self._keys, self._retained = {}, {}
        round_, self._round = self._round, _Round()
        self._taken = round_
        self._work = trio.Event()
        self._awaited = trio.Event()
        return changes, round_

    def _has_work(self) -> bool:
        return bool(
            self._rows
            or self._letters
            or self._schedules
            or self._keys
            or self._retained
            or self._round.tasks
        )

    async def _write_batch(self) -> None:
        changes, round_ = self._take()
        try:
            batch = changes.batch()
            if batch:
                with trio.CancelScope(shield=True):  # a batch taken is always written
                    error = await _write(self.storage, batch)
                    if error is not None:
                        error = await self._isolate(changes, round_, error)
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
        if self._closed:
            return
        waiting = set(round_.tasks)
        mine = {ref for task, refs in round_.owners.items() if task in waiting for ref in refs}
        stores = (
            (self._rows, 0),
            (self._letters, 1),
            (self._schedules, 2),
            (self._keys, 3),
            (self._retained, 4),
        )
        for store, kind in stores:
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

    async def _isolate(
        self, changes: _Changes, round_: _Round, error: StorageError
    ) -> StorageError | None:
        """The batch failed: write it again in parts, by task (bisecting); return the error
        of the whole if nothing could be written, else None (``round_.failed`` says who)."""
        units = _units(changes, round_)
        if len(units) < 2:
            return error
        groups = [units]
        wrote = False
        while groups:
            group = groups.pop()
            if group is not units:
                failure = await _write(self.storage, _merge(group))
                if failure is None:
                    wrote = True
                    continue
                if len(group) == 1:
                    for task in group[0][0]:
                        round_.failed[task] = failure
                    continue
            half = len(group) // 2
            groups += [group[:half], group[half:]]
        return None if wrote else error

    async def close(self) -> None:
        """Write what is left, then close the storage. Shielded: it always finishes."""
        with trio.CancelScope(shield=True):
            if not self._closed:
                self._closed = True
                try:
                    while self._has_work():
                        await self._write_batch()
                finally:
                    self._finished = True
                    await self.storage.close()


class _Changes:
    """The changes taken for one batch."""

    __slots__ = ("finished", "keys", "letters", "rows", "schedules")

    def __init__(
        self,
        rows: dict[str, StoredCommand | None],
        letters: dict[str, StoredLetter | None],
        schedules: dict[str, StoredSchedule | None],
        keys: dict[str, StoredKey | None],
        finished: dict[str, StoredFinished | None],
    ) -> None:
        self.rows = rows
        self.letters = letters
        self.schedules = schedules
        self.keys = keys
        self.finished = finished

    def part(self, kind: int) -> dict[str, Any]:
        return (self.rows, self.letters, self.schedules, self.keys, self.finished)[kind]

    def refs(self) -> list[Ref]:
        return (
            [(0, key) for key in self.rows]
            + [(1, key) for key in self.letters]
            + [(2, key) for key in self.schedules]
            + [(3, key) for key in self.keys]
            + [(4, key) for key in self.finished]
        )

    def subset(self, refs: set[Ref]) -> _Changes:
        return _Changes(
            {k: v for k, v in self.rows.items() if (0, k) in refs},
            {k: v for k, v in self.letters.items() if (1, k) in refs},
            {k: v for k, v in self.schedules.items() if (2, k) in refs},
            {k: v for k, v in self.keys.items() if (3, k) in refs},
            {k: v for k, v in self.finished.items() if (4, k) in refs},
        )

    def batch(self) -> WriteBatch:
        rows, letters, schedules, keys = self.rows, self.letters, self.schedules, self.keys
        finished = self.finished
        return WriteBatch(
            save=tuple(row for row in rows.values() if row is not None),
            delete=tuple(key for key, row in rows.items() if row is None),
            save_letters=tuple(letter for letter in letters.values() if letter is not None),
            delete_letters=tuple(key for key, letter in letters.items() if letter is None),
            save_schedules=tuple(s for s in schedules.values() if s is not None),
            delete_schedules=tuple(key for key, s in schedules.items() if s is None),
            save_keys=tuple(k for k in keys.values() if k is not None),
            delete_keys=tuple(key for key, k in keys.items() if k is None),
            save_finished=tuple(f for f in finished.values() if f is not None),
            delete_finished=tuple(key for key, f in finished.items() if f is None),
        )


_FIELD_NAMES = {
    cls: tuple(field.name for field in attrs.fields(cls))
    for cls in (StoredCommand, StoredLetter, StoredSchedule, StoredKey, StoredFinished)
}


def _units(changes: _Changes, round_: _Round) -> list[tuple[list[Task], _Changes]]:
    """Split a batch's changes by the task that made them (tasks sharing a change share a
    part; changes of no known task form one more). Reads only what no one changes once the
    round is taken, so commits may still join the round meanwhile."""
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
    merged = _Changes({}, {}, {}, {}, {})
    for _tasks, part in group:
        merged.rows.update(part.rows)
        merged.letters.update(part.letters)
        merged.schedules.update(part.schedules)
        merged.keys.update(part.keys)
        merged.finished.update(part.finished)
    return merged.batch()


async def _write(storage: Storage, batch: WriteBatch) -> StorageError | None:
    write: Callable[[WriteBatch], Awaitable[None]] = storage.write
    try:
        await write(batch)
    except StorageError as exc:
        return exc
    except Exception as exc:  # a storage that broke its contract: still an error
        return _broken(storage, exc)
    return None


def _broken(storage: Storage, exc: Exception) -> StorageError:
    error = StorageError(f"{storage!r}: write failed: {exc!r}")
    error.__cause__ = exc
    return error
