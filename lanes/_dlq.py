"""The dead-letter queue: commands that failed for good."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ._errors import LaneError

__all__ = ["DeadLetter", "DeadLetterNotFound", "DeadLetterQueue"]


class DeadLetterNotFound(LaneError, KeyError):
    """``requeue`` was given an id that is not in the dead-letter queue."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@attrs.frozen
class DeadLetter:
    """A command that failed for good.

    Attributes:
        id: the command's id.
        lane: its lane.
        command_type: the callable's qualified name or the ``@lanes.command`` name.
        error: ``repr()`` of the last error.
        attempts: attempts made in the failed run.
        failed_at: wall-clock time of the failure, in seconds since the epoch (the system's
            ``clock``, default ``time.time``), like the events' ``timestamp``.
    """

    id: str
    lane: str
    command_type: str
    error: str
    attempts: int
    failed_at: float
    fn: Callable[..., Awaitable[Any]] | None = attrs.field(repr=False, eq=False)
    args: tuple[Any, ...] = attrs.field(repr=False, eq=False)
    timeout: float | None = attrs.field(repr=False, eq=False, default=None)
    key: str | None = attrs.field(repr=False, eq=False, default=None)
    payload: str | None = attrs.field(repr=False, eq=False, default=None)


Resubmit = Callable[[DeadLetter], Awaitable[Any]]


def _ignore(letter_id: str) -> None:
    return None


async def _checkpoint() -> None:
    await trio.lowlevel.checkpoint()


class DeadLetterQueue:
    """Bounded, oldest first. When full, the oldest letter is evicted and counted.

    ``list()`` and ``len()`` are synchronous snapshots; ``pop``, ``requeue`` and ``clear``
    are async because durable systems also update storage.
    """

    def __init__(
        self,
        limit: int,
        resubmit: Resubmit,
        removed: Callable[[str], None] | None = None,
        commit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.limit = limit
        self.evicted = 0
        self._letters: OrderedDict[str, DeadLetter] = OrderedDict()
        self._resubmit = resubmit
        self._removed = removed or _ignore
        self.commit: Callable[[], Awaitable[None]] = commit or _checkpoint

    def add(self, letter: DeadLetter, *, notify: bool = True) -> None:
        self._letters[letter.id] = letter
        while len(self._letters) > self.limit:
            evicted, _ = self._letters.popitem(last=False)
            self.evicted += 1
            self._removed(evicted)

    def list(self) -> list[DeadLetter]:
        """The letters, oldest first."""
        return list(self._letters.values())

    def __len__(self) -> int:
        return len(self._letters)

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._letters

    async def pop(self) -> DeadLetter | None:
        """Remove and return the oldest letter (None when the queue is empty)."""
        if not self._letters:
            await self.commit()
            return None
        letter = self._letters.popitem(last=False)[1]
        self._removed(letter.id)
        await self.commit()
        return letter

    async def requeue(self, command_id: str) -> Any:
        """Remove the letter and submit its command again with a fresh attempt count.

        Returns the new ``CommandHandle``. If the submit fails (for example the system is
        shutting down), the letter stays in the queue.

        Raises:
            DeadLetterNotFound: no letter has that id.
        """
        letter = self._letters.get(command_id)
        if letter is None:
            known = ", ".join(list(self._letters)[:5]) or "none"
            msg = f"no dead letter with id {command_id!r} (first ids: {known})"
            raise DeadLetterNotFound(msg)
        del self._letters[command_id]  # taken first: a concurrent requeue finds nothing
        try:
            handle = await self._resubmit(letter)
        except BaseException:
            self._letters[command_id] = letter  # not requeued: the letter stays
            raise
        self._removed(command_id)
        await self.commit()
        return handle

    async def clear(self) -> int:
        """Remove every letter; return how many were removed."""
        count = len(self._letters)
        for letter_id in self._letters:
            self._removed(letter_id)
        self._letters.clear()
        await self.commit()
        return count
