"""Group commit: the durable system's writes, batched into one transaction per round.

Submits wait for their command to be on disk (:meth:`Journal.commit`); starts, completions
and dead letters are written in the background by the same writer, coalesced per command
(a start and a completion in one batch write only the deletion). A write that fails fails
every ``commit`` waiting on it (their submits are not acknowledged); background changes in
a failed batch are dropped and counted, which at worst makes recovery run a command again
(at-least-once).
"""

from __future__ import annotations

import trio

from ._errors import StorageError
from .storage import Storage, StoredCommand, StoredLetter, StoredSchedule, WriteBatch

__all__ = ["Journal"]


class _Waiter:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: StorageError | None = None


class Journal:
    """Buffers changes and writes them with one transaction per batch."""

    def __init__(self, storage: Storage, next_seq: int = 1) -> None:
        self.storage = storage
        self.next_seq = next_seq
        self.batches = 0
        self.failed_writes = 0
        self._rows: dict[str, StoredCommand | None] = {}
        self._letters: dict[str, StoredLetter | None] = {}
        self._schedules: dict[str, StoredSchedule | None] = {}
        self._waiters: list[_Waiter] = []
        self._work = trio.Event()
        self._closed = False

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    # -- changes (synchronous, written by the next batch) -----------------------------------

    def save(self, row: StoredCommand) -> None:
        self._rows[row.id] = row
        self._work.set()

    def delete(self, command_id: str) -> None:
        self._rows[command_id] = None
        self._work.set()

    def save_letter(self, letter: StoredLetter) -> None:
        self._letters[letter.id] = letter
        self._work.set()

    def delete_letter(self, letter_id: str) -> None:
        self._letters[letter_id] = None
        self._work.set()

    def save_schedule(self, schedule: StoredSchedule) -> None:
        """Saved in the same batch as the command rows saved before the next checkpoint."""
        self._schedules[schedule.key] = schedule
        self._work.set()

    def delete_schedule(self, key: str) -> None:
        self._schedules[key] = None
        self._work.set()

    async def commit(self) -> None:
        """Wait until every change made so far is on disk.

        The wait is shielded from cancellation: once a change is handed to the writer, the
        caller learns whether it was written.

        Raises:
            StorageError: the batch holding these changes failed.
        """
        waiter = _Waiter()
        self._waiters.append(waiter)
        self._work.set()
        with trio.CancelScope(shield=True):
            await waiter.done.wait()
        if waiter.error is not None:
            raise StorageError(str(waiter.error)) from waiter.error

    # -- the writer --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: one transaction per batch of changes, until cancelled."""
        task_status.started()
        while True:
            await self._work.wait()
            self._work = trio.Event()
            await self._write_batch()

    def _take(self) -> tuple[WriteBatch, list[_Waiter]]:
        rows, self._rows = self._rows, {}
        letters, self._letters = self._letters, {}
        schedules, self._schedules = self._schedules, {}
        waiters, self._waiters = self._waiters, []
        batch = WriteBatch(
            save=tuple(row for row in rows.values() if row is not None),
            delete=tuple(key for key, row in rows.items() if row is None),
            save_letters=tuple(letter for letter in letters.values() if letter is not None),
            delete_letters=tuple(key for key, letter in letters.items() if letter is None),
            save_schedules=tuple(s for s in schedules.values() if s is not None),
            delete_schedules=tuple(key for key, s in schedules.items() if s is None),
        )
        return batch, waiters

    async def _write_batch(self) -> None:
        batch, waiters = self._take()
        error: StorageError | None = None
        if batch:
            try:
                with trio.CancelScope(shield=True):  # a batch taken is always written
                    await self.storage.write(batch)
                self.batches += 1
            except StorageError as exc:
                error = exc
                self.failed_writes += 1
        for waiter in waiters:
            waiter.error = error
            waiter.done.set()

    async def close(self) -> None:
        """Write what is left, then close the storage. Shielded: it always finishes."""
        with trio.CancelScope(shield=True):
            if not self._closed:
                self._closed = True
                try:
                    while self._rows or self._letters or self._schedules or self._waiters:
                        await self._write_batch()
                finally:
                    await self.storage.close()
