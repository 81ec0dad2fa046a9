"""The dead-letter queue of a deployment on Redis, shaped like the in-process one.

Each submitting system keeps a mirror of the dead-letter stream: loaded when the system
opens, then followed by the system's reply reader (the same blocking ``XREAD`` as the
replies, so no extra task and no polling). Removals (``pop``, ``requeue``, ``clear`` from
any process, and evictions at a worker's ``dead_letter_limit``) are announced on a second
stream, ``<prefix>:dead:removed``, which the mirror follows too.
"""

from __future__ import annotations

import builtins
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .._dlq import DeadLetterNotFound
from .._errors import LaneConfigError, LaneUsageError, StorageError
from . import _scripts, _scripts_api
from ._redis import Lua, fields_list
from ._wire import Envelope, RemoteDeadLetter

if TYPE_CHECKING:
    from ._handle import RemoteHandle
    from ._protocol import Submitting

__all__ = ["RemoteDeadLetters"]

_GONE_KEPT = 10_000  # ids removed before this mirror saw them (a lagging read)


def _order(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair (``"1700000000000-3"`` -> ``(1700..., 3)``)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class RemoteDeadLetters:
    """The deployment's dead letters: ``system.dead_letters`` of a distributed system.

    As in process, ``list()``, ``len()`` and ``in`` are synchronous snapshots and ``pop``,
    ``requeue``, ``discard`` and ``clear`` are async. The snapshot is this process's copy of the
    dead-letter stream: a letter written on any worker appears in it as soon as this
    system's reply reader reads it, and before the failed command's handle resolves when
    this system submitted it (both arrive in the same read). A letter's ``id`` is its
    stream entry id; ``command_id`` is the failed command's.
    """

    def __init__(self, system: Submitting) -> None:
        self._system = system
        backend = system.backend
        self.stream = backend.key("dead")
        self.removed_stream = backend.key("dead:removed")
        self._letters: OrderedDict[str, RemoteDeadLetter] = OrderedDict()
        self._gone: OrderedDict[str, None] = OrderedDict()
        self.last = "0-0"  # the newest letter read
        self.removed_last = "0-0"  # the newest removal notice read
        self._cleared = (0, 0)  # every letter up to this id was cleared
        self._pop = Lua(_scripts_api.POP_LETTER)
        self._clear = Lua(_scripts_api.CLEAR_LETTERS)
        self._discard = Lua(_scripts_api.DISCARD_LETTER)
        self._snapshot = Lua(_scripts_api.DEAD_SNAPSHOT)
        self._move = Lua(_scripts.MOVE_LETTER)

    # -- the synchronous snapshot --------------------------------------------------------------

    def list(self) -> list[RemoteDeadLetter]:
        """The letters, oldest first (this process's copy)."""
        return list(self._letters.values())

    def __len__(self) -> int:
        return len(self._letters)

    def __contains__(self, letter_id: object) -> bool:
        return letter_id in self._letters

    # -- changing the queue (every process sees it) ----------------------------------------------

    async def pop(self) -> RemoteDeadLetter | None:
        """Remove and return the oldest letter of the deployment (None when there is none).

        Cancelled while Redis runs the script, the letter may be removed and not returned.

        Raises:
            StorageError: Redis cannot be reached; nothing was removed.
            ShutdownInProgress: the system is closed.
        """
        self._system._open_nursery("dead_letters.pop")
        answer = await self._system._batcher.call(self._pop, [self.stream, self.removed_stream], [])
        if not answer:
            return None
        letter = self._parse(str(answer[0]), answer[1])
        self._forget(letter.id)
        return letter

    async def requeue(self, letter_id: str) -> RemoteHandle[Any]:
        """Move a letter back to its lane as a new command (fresh attempt count); return
        its handle. The letter's removal and the new command are one script: exactly one
        of the two is in Redis at any moment. Cancelled while Redis runs the script, the
        command may be requeued without a handle here.

        Raises:
            DeadLetterNotFound: no letter has that id (it was requeued, popped, cleared or
                evicted, possibly by another process).
            StorageError: Redis cannot be reached; the letter stays.
            ShutdownInProgress: the system is closed.
        """
        system = self._system
        system._open_nursery("dead_letters.requeue")
        rows = []
        if isinstance(letter_id, str) and _order_ok(letter_id):
            rows = await system._batcher.command("XRANGE", self.stream, letter_id, letter_id)
        if not rows:
            self._forget(str(letter_id))
            first = ", ".join(list(self._letters)[:5]) or "none"
            msg = f"requeue: no dead letter has id {letter_id!r} (first ids: {first})"
            raise DeadLetterNotFound(msg)
        letter = self._parse(letter_id, rows[0][1])
        envelope = Envelope(
            id=uuid.uuid4().hex,
            lane=letter.lane,
            type=letter.command_type,
            payload=letter.payload,
            reply=system.reply_stream,
            key=None,
            attempt=1,
            timeout=letter.timeout,
            submitted=time.time(),
        )
        handle = system._register(envelope.id, letter.lane, letter.command_type)
        keys = [
            self.stream,
            letter.stream,
            system.backend.key(f"stats:{letter.lane}"),
            self.removed_stream,
            *system._events_keys,
        ]
        fields = fields_list(envelope.fields(system._registry.converter))
        try:
            moved = await system._batcher.call(self._move, keys, [letter_id, *fields])
        except BaseException:
            system._unregister(handle)
            raise
        self._forget(letter_id)
        if not moved:
            system._unregister(handle)
            msg = f"requeue: dead letter {letter_id!r} was requeued or removed meanwhile"
            raise DeadLetterNotFound(msg)
        return handle

    async def discard(self, letter_id: str) -> bool:
        """Remove the letter ``letter_id`` without running its command again.

        Returns True if it was removed, False if no letter has that id (already requeued,
        discarded, popped, cleared or evicted, possibly by another process). The removal
        is one script: cancelled while Redis runs it, the letter may be removed and False
        never returned; every process's copy then drops it when it reads the notice.

        Raises:
            LaneUsageError: ``letter_id`` is not a string (pass ``RemoteDeadLetter.id``).
            StorageError: Redis cannot be reached; the letter stays.
            ShutdownInProgress: the system is closed.
        """
        self._system._open_nursery("dead_letters.discard")
        if not isinstance(letter_id, str):
            msg = (
                f"dead_letters.discard: letter_id={letter_id!r} is a "
                f"{type(letter_id).__name__}; expected a letter id string (RemoteDeadLetter.id)"
            )
            raise LaneUsageError(msg)
        if not _order_ok(letter_id):
            self._letters.pop(letter_id, None)
            return False
        removed = await self._system._batcher.call(
            self._discard, [self.stream, self.removed_stream], [letter_id]
        )
        self._forget(letter_id)
        return bool(removed)

    async def clear(self) -> int:
        """Remove every letter of the deployment; return how many were removed.

        Raises:
            StorageError: Redis cannot be reached; nothing was removed.
            ShutdownInProgress: the system is closed.
        """
        self._system._open_nursery("dead_letters.clear")
        count = await self._system._batcher.call(
            self._clear, [self.stream, self.removed_stream], []
        )
        self._letters.clear()
        return int(count)

    async def __call__(self, count: int = 100) -> builtins.list[RemoteDeadLetter]:
        """Deprecated: ``await system.dead_letters()`` read the oldest ``count`` letters
        from Redis. Use ``system.dead_letters.list()`` (a synchronous snapshot).

        Raises:
            StorageError: Redis cannot be reached.
        """
        warnings.warn(
            "await system.dead_letters() is deprecated; use system.dead_letters.list()",
            DeprecationWarning,
            stacklevel=2,
        )
        count = check_count(count)
        rows = await self._system._batcher.command("XRANGE", self.stream, "-", "+", "COUNT", count)
        return [self._parse(str(row[0]), row[1]) for row in rows]

    # -- following the streams (called by the system's reply reader) ----------------------------

    async def load(self) -> None:
        """Read every letter and note where both streams stand (the system is opening).

        Raises:
            StorageError: Redis cannot be reached.
        """
        answer = await self._system._batcher.call(
            self._snapshot, [self.stream, self.removed_stream], []
        )
        rows, self.removed_last = answer[0], str(answer[1])
        self.added((str(row[0]), _pairs(row[1])) for row in rows)

    def added(self, entries: Iterable[tuple[str, Mapping[str, str]]]) -> None:
        """Take new letters read from the dead-letter stream (unreadable ones are skipped)."""
        for entry_id, fields in entries:
            self.last = entry_id
            if self._gone.pop(entry_id, 0) is None or _order(entry_id) <= self._cleared:
                continue  # removed before we read it
            try:
                self._letters[entry_id] = RemoteDeadLetter.from_entry(entry_id, fields)
            except StorageError:
                continue

    def removed(self, entries: Iterable[tuple[str, Mapping[str, str]]]) -> None:
        """Take removal notices: ``removed``/``evicted`` name a letter, ``cleared`` the
        newest letter of a clear (every letter up to it is gone)."""
        for entry_id, fields in entries:
            self.removed_last = entry_id
            upto = fields.get("cleared")
            if upto is not None:
                bound = self._cleared = max(self._cleared, _order(upto))
                for letter_id in [i for i in self._letters if _order(i) <= bound]:
                    del self._letters[letter_id]
                continue
            named = fields.get("removed") or fields.get("evicted")
            if named is not None:
                self._forget(named)

    def _forget(self, letter_id: str) -> None:
        known = self._letters.pop(letter_id, None) is not None
        if not known and _order_ok(letter_id) and _order(letter_id) > _order(self.last):
            self._gone[letter_id] = None  # not read yet: skip it when it comes
            while len(self._gone) > _GONE_KEPT:
                self._gone.popitem(last=False)

    def _parse(self, letter_id: str, flat: Any) -> RemoteDeadLetter:
        return RemoteDeadLetter.from_entry(letter_id, _pairs(flat))


def _order_ok(entry_id: str) -> bool:
    try:
        _order(entry_id)
    except ValueError:
        return False
    return True


def _pairs(flat: Any) -> dict[str, str]:
    """A stream entry's fields from RESP (a flat list) or coredis (a mapping)."""
    if isinstance(flat, Mapping):
        return {str(k): str(v) for k, v in flat.items()}
    items = [str(x) for x in flat]
    return dict(zip(items[::2], items[1::2], strict=True))


def check_count(count: object) -> int:
    """``count`` of the deprecated ``dead_letters(count)``: an integer >= 1."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        msg = f"dead_letters: count={count!r} is invalid; expected an integer >= 1"
        raise LaneConfigError(msg)
    return count
