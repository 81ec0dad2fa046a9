"""What a durable lane system writes for each command, and its recovery at start."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import trio

from ._codec import CommandRegistry
from ._command import Command, Reason
from ._dlq import DeadLetter, DeadLetterQueue, format_traceback
from ._errors import StorageError
from ._journal import Journal
from .storage import (
    Storage,
    StoredCommand,
    StoredFinished,
    StoredKey,
    StoredLetter,
    StoredSchedule,
)

__all__ = ["Durability", "Rebuilt"]

Rebuilt = tuple[StoredCommand, Any]
"""A stored command that can run again: its row and the ``@lanes.command`` object."""


class Durability:
    """The storage side of a durable system: the journal, the registry and the row format."""

    def __init__(self, storage: Storage, registry: CommandRegistry) -> None:
        self.storage = storage
        self.registry = registry
        self.journal = Journal(storage)
        self.schedules: tuple[StoredSchedule, ...] = ()
        """The schedules the storage held at start (read by :meth:`recover`)."""
        self.keys: tuple[StoredKey, ...] = ()
        """The idempotency keys kept with a time to live (``lanes._dedup``), read likewise."""
        self.retained: tuple[StoredFinished, ...] = ()
        """The finished commands kept for listings (``lanes._retention``), read likewise."""

    def _wall(self, trio_time: float | None) -> float | None:
        if trio_time is None:
            return None
        return self.storage.clock() + (trio_time - trio.current_time())

    def row(self, cmd: Command, status: str, ready_at: float | None = None) -> StoredCommand:
        assert cmd.payload is not None
        return StoredCommand(
            cmd.id,
            cmd.stored_seq,
            cmd.lane,
            cmd.type_name,
            cmd.payload,
            cmd.key,
            status,
            cmd.attempts,
            self._wall(ready_at),
            cmd.timeout,
            cmd.submitted_wall,
            cmd.priority,
        )

    # -- life-cycle hooks (synchronous; written by the journal's next batch) ---------------

    # A started or requeued row differs from its submitted one only in numbers: the text
    # was checked when the command was submitted (or recovered).

    def started(self, cmd: Command) -> None:
        self.journal.save(self.row(cmd, "running"), checked=True)

    def requeued(self, cmd: Command, ready_at: float | None = None) -> None:
        self.journal.save(self.row(cmd, "pending", ready_at), checked=True)

    def finished(self, cmd: Command) -> None:
        self.journal.delete(cmd.id)

    def cancelled(self, cmd: Command, reason: Reason | None) -> None:
        if reason is not Reason.SHUTDOWN:  # shut down: kept for the next start
            self.journal.delete(cmd.id)

    def dead_lettered(self, cmd: Command, letter: DeadLetter) -> None:
        assert cmd.payload is not None
        self.journal.delete(cmd.id)
        trace = letter.traceback
        if trace is None and cmd.error is not None:  # the core set the error it failed with
            trace = format_traceback(cmd.error)
        self.journal.save_letter(
            StoredLetter(
                letter.id,
                cmd.stored_seq,
                letter.lane,
                letter.command_type,
                cmd.payload,
                cmd.key,
                letter.error,
                letter.attempts,
                letter.failed_at,
                cmd.timeout,
                trace,
            )
        )

    def letter_removed(self, letter_id: str) -> None:
        self.journal.delete_letter(letter_id)

    # -- recovery ---------------------------------------------------------------------------

    async def recover(self, lanes: Collection[str], dlq: DeadLetterQueue) -> list[Rebuilt]:
        """Read what the storage holds; return the commands to requeue, in order.

        The stored dead letters go to ``dlq``. Pending commands keep their order; those
        that were running at a crash run again (at-least-once) with the interrupted
        attempt counted (the submission pipeline accepts them: ``_submission.recover``).
        A stored command that cannot be rebuilt (its type is unknown, or its lane is not
        one of ``lanes``) is moved to the dead-letter queue, never dropped; that move is
        committed before this returns.
        """
        recovered = await self.storage.recover()
        self.schedules = recovered.schedules
        self.keys = recovered.keys
        self.retained = recovered.finished
        seqs = [row.seq for row in recovered.commands] + [row.seq for row in recovered.letters]
        seqs += [row.seq for row in recovered.finished]
        self.journal.next_seq = max(seqs, default=0) + 1
        for stored in sorted(recovered.letters, key=_failure_order):  # as they failed
            dlq.add(self._letter(stored), notify=False)
        commands: list[Rebuilt] = []
        for row in recovered.commands:
            obj = self._rebuild(lanes, dlq, row)
            if obj is not None:
                commands.append((row, obj))
        await self.journal.commit()
        return commands

    def _letter(self, stored: StoredLetter) -> DeadLetter:
        return DeadLetter(
            stored.id,
            stored.lane,
            stored.type,
            stored.error,
            stored.attempts,
            stored.failed_at,  # wall time, as DeadLetter.failed_at
            None,
            (),
            stored.timeout,
            stored.key,
            stored.payload,
            stored.traceback,
        )

    def _rebuild(self, lanes: Collection[str], dlq: DeadLetterQueue, row: StoredCommand) -> Any:
        """The command object of ``row``, or None: then it is dead-lettered."""
        try:
            if row.lane not in lanes:
                known = ", ".join(lanes)
                msg = f"stored command's lane {row.lane!r} no longer exists (lanes: {known})"
                raise StorageError(msg)
            obj = self.registry.decode(row.type, row.payload)
        except StorageError as exc:
            trace = format_traceback(exc)
            letter = DeadLetter(
                row.id,
                row.lane,
                row.type,
                repr(exc),
                row.attempts,
                self.storage.clock(),
                None,
                (),
                row.timeout,
                row.key,
                row.payload,
                trace,
            )
            self.journal.delete(row.id)
            self.journal.save_letter(
                StoredLetter(
                    row.id,
                    row.seq,
                    row.lane,
                    row.type,
                    row.payload,
                    row.key,
                    letter.error,
                    row.attempts,
                    self.storage.clock(),
                    row.timeout,
                    trace,
                )
            )
            dlq.add(letter, notify=False)
            return None
        return obj


def _failure_order(letter: StoredLetter) -> tuple[float, int]:
    """Dead letters in the order they failed (the queue's order), ties by submission."""
    return (letter.failed_at, letter.seq)
