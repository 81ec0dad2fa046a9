"""In-memory storage: the durable code path without a disk (tests, simulated restarts)."""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from ._protocol import (
    Recovered,
    StoredCommand,
    StoredFinished,
    StoredKey,
    StoredLetter,
    StoredSchedule,
    WriteBatch,
)

__all__ = ["MemoryStorage"]


class MemoryStorage:
    """Keeps rows in dicts. Reuse one object across systems to simulate a restart.

    Args:
        clock: wall clock for delays (default ``time.time``; tests may pass
            ``trio.current_time``).
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.commands: dict[str, StoredCommand] = {}
        self.letters: dict[str, StoredLetter] = {}
        self.schedules: dict[str, StoredSchedule] = {}
        self.keys: dict[str, StoredKey] = {}
        self.finished: dict[str, StoredFinished] = {}
        self.writes = 0
        self._clock = clock

    def clock(self) -> float:
        return self._clock()

    async def open(self) -> None:
        await trio.lowlevel.checkpoint()

    async def recover(self) -> Recovered:
        await trio.lowlevel.checkpoint()
        commands = sorted(self.commands.values(), key=lambda c: c.seq)
        letters = sorted(self.letters.values(), key=lambda letter: letter.seq)
        return Recovered(
            tuple(commands),
            tuple(letters),
            tuple(self.schedules.values()),
            tuple(self.keys.values()),
            tuple(sorted(self.finished.values(), key=lambda f: (f.ended_at, f.seq))),
        )

    async def write(self, batch: WriteBatch) -> None:
        await trio.lowlevel.checkpoint()
        self.apply(batch)

    def apply(self, batch: WriteBatch) -> None:
        self.writes += 1
        for row in batch.save:
            self.commands[row.id] = row
        for command_id in batch.delete:
            self.commands.pop(command_id, None)
        for letter in batch.save_letters:
            self.letters[letter.id] = letter
        for letter_id in batch.delete_letters:
            self.letters.pop(letter_id, None)
        for schedule in batch.save_schedules:
            self.schedules[schedule.key] = schedule
        for key in batch.delete_schedules:
            self.schedules.pop(key, None)
        for stored in batch.save_keys:
            self.keys[stored.key] = stored
        for key in batch.delete_keys:
            self.keys.pop(key, None)
        for finished in batch.save_finished:
            self.finished[finished.id] = finished
        for command_id in batch.delete_finished:
            self.finished.pop(command_id, None)

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()
