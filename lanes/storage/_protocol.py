"""The storage contract: what a durable lane system writes and reads back."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs

__all__ = ["Recovered", "Storage", "StoredCommand", "StoredLetter", "WriteBatch"]


@attrs.frozen
class StoredCommand:
    """One accepted, unfinished durable command.

    ``status`` is ``"pending"`` or ``"running"``; ``ready_at`` is a wall-clock time (seconds
    since the epoch, from the storage's clock) before which it must not start, or None.
    """

    id: str
    seq: int
    lane: str
    type: str
    payload: str
    key: str | None
    status: str
    attempts: int
    ready_at: float | None
    timeout: float | None
    submitted_at: float


@attrs.frozen
class StoredLetter:
    """A dead letter; ``payload`` rebuilds the command for ``requeue``."""

    id: str
    seq: int
    lane: str
    type: str
    payload: str
    key: str | None
    error: str
    attempts: int
    failed_at: float
    timeout: float | None


@attrs.frozen
class WriteBatch:
    """Changes written in one transaction: rows to save (insert or replace) and ids to delete."""

    save: tuple[StoredCommand, ...] = ()
    delete: tuple[str, ...] = ()
    save_letters: tuple[StoredLetter, ...] = ()
    delete_letters: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.save or self.delete or self.save_letters or self.delete_letters)


@attrs.frozen
class Recovered:
    """What a storage held at start: unfinished commands and dead letters, oldest first."""

    commands: tuple[StoredCommand, ...]
    letters: tuple[StoredLetter, ...]


@runtime_checkable
class Storage(Protocol):
    """Where a durable lane system keeps its commands. All methods raise ``StorageError``.

    ``open`` validates and prepares the store (before the system starts any task);
    ``recover`` reads what is there; ``write`` applies a batch atomically and durably before
    it returns; ``close`` releases it. ``clock`` gives wall-clock seconds for delays that
    must survive restarts.
    """

    def clock(self) -> float: ...

    async def open(self) -> None: ...

    async def recover(self) -> Recovered: ...

    async def write(self, batch: WriteBatch) -> None: ...

    async def close(self) -> None: ...
