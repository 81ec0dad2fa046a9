"""The storage contract: what a durable lane system writes and reads back."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs

__all__ = [
    "Recovered",
    "Storage",
    "StoredCommand",
    "StoredFinished",
    "StoredKey",
    "StoredLetter",
    "StoredSchedule",
    "WriteBatch",
]


@attrs.frozen
class StoredCommand:
    """One accepted, unfinished durable command.

    ``status`` is ``"pending"`` or ``"running"``; ``ready_at`` is a wall-clock time (seconds
    since the epoch, from the storage's clock) before which it must not start, or None;
    ``priority`` is its priority within its lane (``submit(priority=)``, lower first).
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
    priority: int = 0


@attrs.frozen
class StoredLetter:
    """A dead letter; ``payload`` rebuilds the command for ``requeue``; ``traceback`` is
    the last error's formatted traceback (bounded, None when not recorded)."""

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
    traceback: str | None = None


@attrs.frozen
class StoredSchedule:
    """A recurring schedule and the last slot it dealt with.

    Exactly one of ``every`` (seconds) and ``cron`` (an expression evaluated in ``tz``, an
    IANA zone name or None for UTC) is set. ``anchor`` is the wall-clock time interval slots
    count from; ``last_slot`` the latest slot fired or skipped (None: none yet), written in
    the same batch as the command it fired (``last_command``, that command's id).
    ``runs`` counts the firings ever submitted, written in that batch too; the schedule
    ends once it reaches ``times`` (None: no limit). With ``after_completion``, the one
    next slot is ``anchor + every`` and ``anchor`` is when the previous firing ended.
    """

    key: str
    lane: str
    type: str
    payload: str
    every: float | None
    cron: str | None
    tz: str | None
    jitter: float
    misfire: str
    misfire_limit: int
    overlap: str
    anchor: float
    paused: bool
    last_slot: float | None
    last_command: str | None
    times: int | None = None
    runs: int = 0
    after_completion: bool = False


@attrs.frozen
class StoredKey:
    """An idempotency key kept with a time to live (``submit(dedup=lanes.Dedup.hold(ttl=))``).

    ``command`` is the id of the command that holds (or held) it; ``expires_at`` is a
    wall-clock time (the storage's clock) after which the key is free again, or None while
    that command is unfinished (the key then expires ``ttl`` seconds after it finishes).
    """

    key: str
    command: str
    lane: str
    type: str
    status: str
    ttl: float
    expires_at: float | None


@attrs.frozen
class StoredFinished:
    """A finished command kept for listings (``open_lane_system(retention=...)``).

    ``status`` is ``"done"``, ``"failed"`` or ``"cancelled"``; times are wall-clock (the
    storage's clock); ``error`` is ``repr()`` of a failure's last error; ``result`` is the
    JSON of a done command's value, or None when it is not JSON (then not kept).
    """

    id: str
    seq: int
    lane: str
    type: str
    key: str | None
    status: str
    attempts: int
    priority: int
    accepted_at: float
    ended_at: float
    error: str | None
    result: str | None


@attrs.frozen
class WriteBatch:
    """Changes written in one transaction: rows to save (insert or replace) and ids to delete."""

    save: tuple[StoredCommand, ...] = ()
    delete: tuple[str, ...] = ()
    save_letters: tuple[StoredLetter, ...] = ()
    delete_letters: tuple[str, ...] = ()
    save_schedules: tuple[StoredSchedule, ...] = ()
    delete_schedules: tuple[str, ...] = ()
    save_keys: tuple[StoredKey, ...] = ()
    delete_keys: tuple[str, ...] = ()
    save_finished: tuple[StoredFinished, ...] = ()
    delete_finished: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(
            self.save
            or self.delete
            or self.save_letters
            or self.delete_letters
            or self.save_schedules
            or self.delete_schedules
            or self.save_keys
            or self.delete_keys
            or self.save_finished
            or self.delete_finished
        )


@attrs.frozen
class Recovered:
    """What a storage held at start: unfinished commands and dead letters, oldest first,
    the schedules, the idempotency keys kept with a time to live, and the finished
    commands kept for listings (oldest first)."""

    commands: tuple[StoredCommand, ...]
    letters: tuple[StoredLetter, ...]
    schedules: tuple[StoredSchedule, ...] = ()
    keys: tuple[StoredKey, ...] = ()
    finished: tuple[StoredFinished, ...] = ()


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
