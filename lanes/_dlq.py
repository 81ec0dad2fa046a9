"""The dead-letter queue: commands that failed for good."""

from __future__ import annotations

import traceback as _traceback
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ._boundary import check_run
from ._errors import LaneError, LaneUsageError, StorageError

__all__ = [
    "MAX_TRACEBACK",
    "DeadLetter",
    "DeadLetterNotFound",
    "DeadLetterQueue",
    "format_traceback",
]

MAX_TRACEBACK = 8000  # characters of a dead letter's traceback kept (its end: the error)


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
        traceback: the last error's formatted traceback, chained causes included, at most
            :data:`MAX_TRACEBACK` characters (its end, with the error, is kept); stored with
            the letter by a durable system. None when it was not recorded.
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
    traceback: str | None = attrs.field(repr=False, eq=False, default=None)


def format_traceback(error: BaseException, limit: int = MAX_TRACEBACK) -> str:
    """``error``'s traceback as Python prints it, cut to its last ``limit`` characters.

    A cut traceback starts with a line saying how many characters were left out. Never
    raises: an error whose formatting fails gives that failure's ``repr`` instead.
    """
    try:
        text = "".join(_traceback.format_exception(error))
    except Exception as failure:  # a broken __str__ or the like: say so, keep the letter
        text = f"(the traceback could not be formatted: {failure!r})\n"
    if len(text) <= limit:
        return text
    kept = text[len(text) - limit :]
    kept = kept[kept.find("\n") + 1 :] or kept  # from a line start
    return f"... ({len(text) - len(kept)} characters left out)\n{kept}"


Resubmit = Callable[[DeadLetter], Awaitable[Any]]
"""Submits a letter's command again. With storage it also removes the stored letter, in the
same transaction as the new command row: after a crash exactly one of the two is stored."""


def _ignore(letter_id: str) -> None:
    return None


async def _checkpoint() -> None:
    await trio.lowlevel.checkpoint()


class DeadLetterQueue:
    """Bounded, oldest first. When full, the oldest letter is evicted and counted.

    ``list()`` and ``len()`` are synchronous snapshots; ``pop``, ``requeue``, ``discard``
    and ``clear`` are async because durable systems also update storage.
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
        self.resubmit = resubmit  # (set again by the system that owns the queue)
        self._removed = removed or _ignore
        self.commit: Callable[[], Awaitable[None]] = commit or _checkpoint
        try:
            self._token: trio.lowlevel.TrioToken | None = trio.lowlevel.current_trio_token()
        except RuntimeError:  # made outside a run: no owner to check
            self._token = None

    def _check_run(self, where: str) -> None:
        if self._token is not None:
            check_run(self._token, f"dead_letters.{where}")

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
        self._check_run("pop")
        if not self._letters:
            await self.commit()
            return None
        letter = self._letters.popitem(last=False)[1]
        self._removed(letter.id)
        await self.commit()
        return letter

    async def requeue(self, command_id: str) -> Any:
        """Remove the letter and submit its command again with a fresh attempt count.

        Returns the new ``CommandHandle``. With storage, the letter's removal and the new
        command are written in one transaction: after a crash at any moment exactly one of
        the two is stored. If the submit fails (the system is shutting down, the storage
        write failed, the key is taken), the letter stays where it was in the queue.
        Cancellation while the write is under way waits for it (the command is then
        requeued).

        Raises:
            DeadLetterNotFound: no letter has that id.
            KeyInUse: another pending or running command holds the letter's idempotency
                key; requeue once it has finished.
        """
        self._check_run("requeue")
        letter = self._letters.get(command_id)
        if letter is None:
            known = ", ".join(list(self._letters)[:5]) or "none"
            msg = f"no dead letter with id {command_id!r} (first ids: {known})"
            raise DeadLetterNotFound(msg)
        place = list(self._letters).index(command_id)
        del self._letters[command_id]  # taken first: a concurrent requeue finds nothing
        try:
            return await self.resubmit(letter)
        except BaseException:
            self._put_back(place, letter)  # not requeued: the letter stays
            raise

    def _put_back(self, place: int, letter: DeadLetter) -> None:
        items = list(self._letters.items())
        items.insert(place, (letter.id, letter))
        self._letters = OrderedDict(items)
        while len(self._letters) > self.limit:  # letters that arrived meanwhile: evict
            evicted, _ = self._letters.popitem(last=False)
            self.evicted += 1
            self._removed(evicted)

    async def discard(self, command_id: str) -> bool:
        """Remove the letter ``command_id`` without running its command again.

        Returns True if it was removed, False if no letter has that id (already requeued,
        discarded, popped or evicted). With storage the removal is written before this
        returns; if that write fails (the storage is closed because the system stopped, or
        the disk is full) the letter is put back where it was, still stored, and the
        error is raised. A cancellation arriving meanwhile does not undo it: the letter is
        removed (and the removal written) and the cancellation is delivered at the
        caller's next checkpoint, or here for a system without storage.

        Raises:
            LaneUsageError: ``command_id`` is not a string, or this is called from another
                ``trio.run`` than the system's.
            StorageError: the removal could not be written (the letter stays).
        """
        self._check_run("discard")
        if not isinstance(command_id, str):
            msg = (
                f"dead_letters.discard: command_id={command_id!r} is a "
                f"{type(command_id).__name__}; expected a command id string (DeadLetter.id)"
            )
            raise LaneUsageError(msg)
        letter = self._letters.get(command_id)
        if letter is None:
            await trio.lowlevel.checkpoint()  # as every change of the queue has, nothing to write
            return False
        place = list(self._letters).index(command_id)
        del self._letters[command_id]
        self._removed(command_id)
        try:
            await self.commit()
        except StorageError:
            self._put_back(place, letter)  # the removal was not written: it stays
            raise
        return True

    async def clear(self) -> int:
        """Remove every letter; return how many were removed."""
        self._check_run("clear")
        count = len(self._letters)
        for letter_id in self._letters:
            self._removed(letter_id)
        self._letters.clear()
        await self.commit()
        return count
