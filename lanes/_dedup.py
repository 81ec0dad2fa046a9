"""Deduplication modes of idempotency keys: ``submit(key=..., dedup=lanes.Dedup...)``.

Without ``dedup=``, a key is held while its command is pending or running: a second submit
with it returns the holder's handle. :class:`Dedup` adds three things:

- a time to live (``ttl=``, every mode): once the holder finished (done, failed or
  cancelled), the key keeps deduplicating for ``ttl`` seconds, returning the finished
  handle; ``system.extend_key(key, ttl)`` moves that moment, ``system.release_key(key)``
  frees the key at once;
- ``Dedup.replace()``: a submit with a key whose holder is still waiting (queued or
  delayed) cancels that holder (its ``result()`` raises ``CommandCancelled`` saying it was
  replaced, and by which command) and takes its place; a running holder is not replaced:
  its handle is returned, as without ``dedup=``;
- ``Dedup.keep_last()``: as ``replace`` for a waiting holder; while the holder runs, the
  new command waits behind it (listed as delayed) and starts when the holder finishes,
  and a later submit replaces that waiting one. So at most one command per key runs and
  at most one waits: the last submitted.

How it hooks in: :class:`KeyTable` is the core's dict of live keys (``core.keys``). The
core deletes a key when its holder resolves, which calls :meth:`KeyTable.__delitem__`:
that is where a key starts its time to live, and where a command waiting behind the
holder (``keep_last``) is released. :meth:`KeyTable.get` also finds a finished holder
whose key is kept, so the pipeline's key checks (``_submission.prepare`` and ``accept``,
``handle_for``) see kept keys without a change. A submit without a key never touches the
table (not one lookup, not one clock read).

With storage, a key with a time to live is stored (table ``dedup_keys``, schema 5) in the
same transaction as its command, and again, with its expiry, in the batch that deletes the
finished command; so it survives a restart. After a restart a kept key returns a handle
that knows the command's id, lane, type and final status, not its value (results are not
stored): ``result()`` returns None for a command that was done.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from typing import Any, Literal, cast, overload

import attrs
import trio

from . import _submission as submission
from ._boundary import check_key
from ._checks import check_seconds
from ._command import Command, CommandHandle, Reason
from ._core import Core
from ._errors import CommandCancelled, CommandFailed, LaneConfigError
from ._journal import Journal
from ._policy import JobState
from .storage import StoredCommand, StoredKey

__all__ = ["Dedup", "KeyTable", "extend_key", "recovered", "release_key", "submit", "table"]

Mode = Literal["hold", "replace", "keep_last"]
MODES: tuple[Mode, ...] = ("hold", "replace", "keep_last")

_WAITING = (JobState.NEW, JobState.QUEUED, JobState.DELAYED)


def _check_ttl(owner: str, ttl: object) -> float | None:
    if ttl is None:
        return None
    return check_seconds(owner, "ttl", ttl, zero_ok=False)


@attrs.frozen
class Dedup:
    """How a submit's idempotency key deduplicates (``submit(key=..., dedup=...)``).

    Made with :meth:`hold`, :meth:`replace` or :meth:`keep_last`; every mode holds the key
    while its command is pending or running, and, with ``ttl``, for ``ttl`` seconds after
    it finished (``math.inf``: until ``system.release_key(key)``).

    Raises:
        LaneConfigError: an unknown mode, or a ttl that is not a number of seconds > 0.
    """

    mode: Mode = "hold"
    ttl: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.mode not in MODES:
            msg = (
                f"Dedup: mode={self.mode!r} is invalid; expected one of "
                f"{', '.join(map(repr, MODES))} (lanes.Dedup.hold(), .replace(), .keep_last())"
            )
            raise LaneConfigError(msg)
        object.__setattr__(self, "ttl", _check_ttl(f"Dedup.{self.mode}", self.ttl))

    @classmethod
    def hold(cls, *, ttl: float | None = None) -> Dedup:
        """The key returns its holder's handle while the holder is pending or running, and
        for ``ttl`` seconds after it finished (None: not after)."""
        return cls("hold", ttl)

    @classmethod
    def replace(cls, *, ttl: float | None = None) -> Dedup:
        """A new submit replaces a holder that is still waiting (queued or delayed): the
        holder is cancelled, the new command takes its place; a running holder is kept and
        its handle returned. ``ttl``: as for :meth:`hold`."""
        return cls("replace", ttl)

    @classmethod
    def keep_last(cls, *, ttl: float | None = None) -> Dedup:
        """As :meth:`replace` for a waiting holder; behind a running holder the new command
        waits, starts once the holder finished, and is itself replaced by a later submit:
        one command per key runs at a time, and the last one submitted runs next. ``ttl``:
        as for :meth:`hold`."""
        return cls("keep_last", ttl)


class _Replaced:
    """Why a replaced command was cancelled. The core reads a cancel reason by identity
    (``Reason.PREEMPT``, ``Reason.SHUTDOWN``) and a handle's error by its ``value``; this is
    neither of those two, so it is an ordinary cancellation whose message names the
    replacement. (A ``Reason.REPLACED`` member would do the same, without the cast.)"""

    __slots__ = ("value",)

    def __init__(self, by: Command, key: str) -> None:
        self.value = f"replaced by command {by.id} (a newer submit with key {key!r})"


def _replaced(by: Command, key: str) -> Reason:
    return cast(Reason, _Replaced(by, key))


async def _never() -> None:  # pragma: no cover - a kept key's command never runs again
    return None


class KeyTable(dict[str, Command]):
    """The core's live idempotency keys, and what :class:`Dedup` keeps around them.

    A plain dict for the core (its ``keys``); only keyed commands touch it.
    """

    def __init__(self, core: Core, live: Iterable[tuple[str, Command]] = ()) -> None:
        super().__init__(live)
        self.core = core
        self.ttls: dict[str, tuple[Command, float]] = {}  # live holders' ttl after they end
        self.kept: dict[str, tuple[Command, float]] = {}  # finished: (holder, expires at)
        self.expiry: list[tuple[float, str]] = []  # heap of (expires at, key); stale ok
        self.parked: dict[str, tuple[Command, float | None, float | None]] = {}
        """keep_last: the command waiting behind a running holder (its due time, its ttl)."""

    # -- the core's side ---------------------------------------------------------------------

    @overload  # type: ignore[override]
    def get(self, key: str, /) -> Command | None: ...
    @overload
    def get(self, key: str, default: Command, /) -> Command: ...
    def get(self, key: str, default: Command | None = None, /) -> Command | None:
        """The live holder of ``key``, else a finished one whose key is kept."""
        cmd = dict.get(self, key)
        if cmd is None and self.kept:
            cmd = self.kept_holder(key)
        return default if cmd is None else cmd

    def __delitem__(self, key: str) -> None:
        """The core frees ``key``: its holder resolved (or was never accepted)."""
        cmd = dict.__getitem__(self, key)
        dict.__delitem__(self, key)
        if cmd.state >= JobState.DONE:
            self._ended(key, cmd)

    def _ended(self, key: str, cmd: Command) -> None:
        ttl = self.ttls.get(key)
        if ttl is not None and ttl[0] is cmd:
            del self.ttls[key]
        follower = self.parked.pop(key, None)
        if follower is not None and cmd.cancel_reason is Reason.SHUTDOWN:
            # The system is stopping: the follower stops too, and (stored) waits behind its
            # holder again at the next start.
            self.parked[key] = follower
        elif follower is not None and follower[0].state < JobState.DONE:
            self._release(key, *follower)
        elif ttl is not None and ttl[0] is cmd:
            self._keep(key, cmd, self.core.now() + ttl[1], ttl[1])

    def _release(self, key: str, cmd: Command, due: float | None, ttl: float | None) -> None:
        """A command waiting behind the holder (keep_last) takes the key and becomes due."""
        dict.__setitem__(self, key, cmd)
        if ttl is not None:
            self.hold(key, cmd, ttl)
        now = self.core.now()
        self.core.reschedule(cmd, 0.0 if due is None else max(0.0, due - now))

    # -- keeping keys --------------------------------------------------------------------------

    def hold(self, key: str, cmd: Command, ttl: float) -> None:
        """``cmd`` holds ``key`` now; once it ends, the key is kept ``ttl`` seconds."""
        self.ttls[key] = (cmd, ttl)

    def _keep(self, key: str, cmd: Command, expires: float, ttl: float) -> None:
        self.kept[key] = (cmd, expires)
        heapq.heappush(self.expiry, (expires, key))
        self._store(key, cmd, ttl, expires)
        self.purge()

    def kept_holder(self, key: str) -> Command | None:
        """The finished holder of ``key`` if its key is still kept."""
        self.purge()
        entry = self.kept.get(key)
        return None if entry is None else entry[0]

    def purge(self) -> None:
        """Forget the kept keys whose time is up (O(log n) each, amortised)."""
        expiry = self.expiry
        if not expiry:
            return
        now = self.core.now()
        while expiry and expiry[0][0] <= now:
            expires, key = heapq.heappop(expiry)
            entry = self.kept.get(key)
            if entry is not None and entry[1] == expires:  # not extended since
                del self.kept[key]
                self._unstore(entry[0], key)

    def release(self, key: str) -> bool:
        """Forget ``key`` (``system.release_key``); whether anything held it."""
        held = False
        entry = self.kept.pop(key, None)
        if entry is not None:
            held = True
            self._unstore(entry[0], key)
        cmd = dict.get(self, key)
        if cmd is not None:
            held = True
            dict.__delitem__(self, key)
            if self.ttls.pop(key, None) is not None:
                self._unstore(cmd, key)
        follower = self.parked.pop(key, None)
        if follower is not None and follower[0].state < JobState.DONE:
            held = True
            due = follower[1]
            now = self.core.now()
            self.core.reschedule(follower[0], 0.0 if due is None else max(0.0, due - now))
        return held

    def extend(self, key: str, ttl: float) -> bool:
        """``system.extend_key``: whether ``key`` is held (live or kept)."""
        cmd = dict.get(self, key)
        if cmd is not None:
            self.hold(key, cmd, ttl)
            self._store(key, cmd, ttl, None)
            return True
        self.purge()
        entry = self.kept.get(key)
        if entry is None:
            return False
        self._keep(key, entry[0], self.core.now() + ttl, ttl)
        return True

    # -- storage -------------------------------------------------------------------------------

    def _store(self, key: str, cmd: Command, ttl: float, expires: float | None) -> None:
        durable = self.core.durable
        if durable is not None and cmd.payload is not None:
            durable.journal.save_key(self.row(key, cmd, ttl, expires))

    def _unstore(self, cmd: Command, key: str) -> None:
        durable = self.core.durable
        if durable is not None and cmd.payload is not None:
            durable.journal.delete_key(key)

    def row(self, key: str, cmd: Command, ttl: float, expires: float | None) -> StoredKey:
        """The stored form of a key (``expires``: Trio time, or None while it is live)."""
        durable = self.core.durable
        assert durable is not None
        wall = None
        if expires is not None:
            wall = durable.storage.clock() + (expires - self.core.now())
        status = cmd.status.value if cmd.state >= JobState.DONE else "pending"
        return StoredKey(key, cmd.id, cmd.lane, cmd.type_name, status, ttl, wall)

    def writer(self, key: str, ttl: float | None) -> submission.Write:
        """Writes a new durable holder of ``key``: its row (with its key), and the key."""

        def write(journal: Journal, row: StoredCommand) -> None:
            if row.key != key:
                row = attrs.evolve(row, key=key)
            journal.save(row)
            if ttl is not None:  # in the command's transaction: the key survives with it
                journal.save_key(StoredKey(key, row.id, row.lane, row.type, "pending", ttl, None))

        return write


def table(core: Core) -> KeyTable:
    """The core's :class:`KeyTable` (installed at the first need, keeping the live keys)."""
    keys = core.keys
    if type(keys) is not KeyTable:
        keys = core.keys = KeyTable(core, keys.items())
    return keys


# -- submitting ------------------------------------------------------------------------------------


def check_dedup(dedup: object, key: object, where: str) -> tuple[Dedup, str]:
    """The submit's ``dedup`` and ``key``, checked.

    Raises:
        LaneConfigError: ``dedup`` is not a :class:`Dedup`, or no valid key was given.
    """
    if not isinstance(dedup, Dedup):
        msg = (
            f"{where}: dedup={dedup!r} is invalid; expected lanes.Dedup.hold(ttl=...), "
            "lanes.Dedup.replace() or lanes.Dedup.keep_last() (or None)"
        )
        raise LaneConfigError(msg)
    if key is None:
        msg = (
            f"{where}: dedup={dedup!r} needs key=: deduplication is by idempotency key "
            '(submit(..., key="order-42", dedup=...))'
        )
        raise LaneConfigError(msg)
    return dedup, check_key(key, where)


def _running(cmd: Command) -> bool:
    return cmd.state not in _WAITING


class _Plan:
    """What a ``replace`` / ``keep_last`` submit does once its command is accepted."""

    __slots__ = ("dedup", "delay", "key", "park")

    def __init__(self, dedup: Dedup, key: str, delay: float | None, park: bool) -> None:
        self.dedup = dedup
        self.key = key
        self.delay = delay
        self.park = park


def _prepare(
    core: Core,
    lane: str,
    fn: Any,
    args: tuple[Any, ...],
    key: object,
    dedup: object,
    delay: float | None,
    timeout: float | None,
    durable: bool | None,
    priority: int,
    where: str,
) -> CommandHandle[Any] | tuple[Command, _Plan]:
    """The handle to return at once, or the command to accept and what to do then."""
    mode, checked = check_dedup(dedup, key, where)
    keys = table(core)
    if mode.mode == "hold":
        found = submission.prepare(
            core, lane, fn, args, checked, delay, timeout, durable, where, priority=priority
        )
        if isinstance(found, CommandHandle):
            return found
        return found, _Plan(mode, checked, delay, park=False)
    holder = dict.get(keys, checked)
    if holder is None:
        finished = keys.kept_holder(checked)
        if finished is not None:
            submission.validate(core, lane, fn, args, checked, delay, timeout, where)
            return finished.handle
    elif _running(holder) and mode.mode == "replace":
        submission.validate(core, lane, fn, args, checked, delay, timeout, where)
        return holder.handle
    park = holder is not None and _running(holder)  # keep_last, behind a running holder
    # Prepared without its key: it merges into no other command (it replaces one).
    cmd = submission.prepare(
        core, lane, fn, args, None, delay, timeout, durable, where, priority=priority
    )
    assert isinstance(cmd, Command)
    return cmd, _Plan(mode, checked, delay, park)


def _settle(core: Core, cmd: Command, plan: _Plan) -> None:
    """After acceptance (synchronously): ``cmd`` takes its key, waits behind the holder, or
    replaces it."""
    keys = table(core)
    key, dedup = plan.key, plan.dedup
    if dedup.mode == "hold":
        if dedup.ttl is not None and dict.get(keys, key) is cmd:
            keys.hold(key, cmd, dedup.ttl)
        return
    cmd.key = key
    _restore_key(core, cmd)
    holder = dict.get(keys, key)
    due = None if not plan.delay else cmd.accepted_at + plan.delay
    if holder is not None and _running(holder):
        if dedup.mode == "keep_last" and cmd.state in _WAITING:
            if not plan.park:  # the holder started while this one waited for room
                core.reschedule(cmd, math.inf)
            previous = keys.parked.get(key)
            keys.parked[key] = (cmd, due, dedup.ttl)
            if previous is not None:
                core.cancel(previous[0], _replaced(cmd, key))
            return
        # replace: the holder started while this one waited; the newest takes the key
        keys.ttls.pop(key, None)
    elif holder is not None:  # waiting: replaced
        if keys.ttls.pop(key, None) is not None and dedup.ttl is None:
            keys._unstore(holder, key)
        core.cancel(holder, _replaced(cmd, key))
    dict.__setitem__(keys, key, cmd)
    if plan.park:  # accepted to wait behind a holder that is gone now
        core.reschedule(cmd, 0.0 if due is None else max(0.0, due - core.now()))
    if dedup.ttl is not None:
        keys.hold(key, cmd, dedup.ttl)


def _restore_key(core: Core, cmd: Command) -> None:
    """Store ``cmd`` with its key again: it was accepted without it (so that it merged
    into no other command), and its start may have been saved since."""
    durable = core.durable
    if cmd.payload is None or durable is None:
        return
    if cmd.state is JobState.ACTIVE:
        durable.started(cmd)
    else:
        durable.requeued(cmd, cmd.ready_at if cmd.state is JobState.DELAYED else None)


async def submit(
    core: Core,
    lane: str,
    fn: Any,
    args: tuple[Any, ...],
    key: object,
    dedup: object,
    delay: float | None,
    timeout: float | None,
    durable: bool | None,
    priority: int,
) -> CommandHandle[Any]:
    """``system.submit(..., dedup=...)``.

    Cancellation while waiting for room leaves nothing behind: no command is accepted and
    the holder is not replaced (once the write started, it waits for it, as ``submit``).
    """
    prepared = _prepare(
        core, lane, fn, args, key, dedup, delay, timeout, durable, priority, "submit"
    )
    if isinstance(prepared, CommandHandle):
        await trio.lowlevel.checkpoint()
        return prepared
    cmd, plan = prepared
    write = None
    if cmd.payload is not None:
        write = table(core).writer(plan.key, plan.dedup.ttl)
    handle = await submission.accept(core, cmd, math.inf if plan.park else delay, write=write)
    if handle is cmd.handle:
        _settle(core, cmd, plan)
    return handle


def submit_nowait(
    core: Core,
    lane: str,
    fn: Any,
    args: tuple[Any, ...],
    key: object,
    dedup: object,
    delay: float | None,
    timeout: float | None,
    durable: bool | None,
    priority: int,
) -> CommandHandle[Any]:
    """``system.submit_nowait(..., dedup=...)``."""
    prepared = _prepare(
        core, lane, fn, args, key, dedup, delay, timeout, durable, priority, "submit_nowait"
    )
    if isinstance(prepared, CommandHandle):
        return prepared
    cmd, plan = prepared
    handle = submission.accept_nowait(core, cmd, math.inf if plan.park else delay)
    _settle(core, cmd, plan)
    return handle


# -- by hand -------------------------------------------------------------------------------------


def release_key(core: Core, key: object) -> bool:
    """``system.release_key``."""
    return table(core).release(check_key(key, "release_key"))


def check_extend(key: object, ttl: object) -> tuple[str, float]:
    """``extend_key``'s key and ttl, checked (also by the Redis backend's).

    Raises:
        LaneConfigError: a bad key, or a ttl that is not a number of seconds > 0.
    """
    checked = check_key(key, "extend_key")
    seconds = check_seconds("extend_key", "ttl", ttl, zero_ok=False)
    if seconds is None:
        msg = f"extend_key: ttl={ttl!r} is invalid; expected a number of seconds > 0"
        raise LaneConfigError(msg)
    return checked, seconds


def extend_key(core: Core, key: object, ttl: object) -> bool:
    """``system.extend_key``."""
    return table(core).extend(*check_extend(key, ttl))


# -- recovery ----------------------------------------------------------------------------------


def recovered(core: Core, commands: list[Command], stored: tuple[StoredKey, ...]) -> None:
    """After a durable start: re-link what storage held.

    A recovered command parked behind its key's holder (keep_last: stored with an infinite
    ready time) waits behind that holder again, or becomes due if the holder is gone; a
    stored key is held again by its live command, or kept until its expiry (a key whose
    command finished without its expiry being stored is kept ``ttl`` from now).
    """
    if not stored and not any(_parked(cmd) for cmd in commands):
        return
    keys = table(core)
    durable = core.durable
    assert durable is not None
    ttls = {row.key: row.ttl for row in stored}
    first: dict[str, Command] = {}
    for cmd in commands:
        if cmd.key is None:
            continue
        if not _parked(cmd):
            first.setdefault(cmd.key, cmd)
            continue
        holder = first.get(cmd.key)
        if holder is not None and holder.state < JobState.DONE:
            dict.__setitem__(keys, cmd.key, holder)
            keys.parked[cmd.key] = (cmd, None, ttls.get(cmd.key))
        else:
            core.reschedule(cmd, 0.0)
    by_id = {cmd.id: cmd for cmd in commands}
    now, wall = core.now(), durable.storage.clock()
    for row in stored:
        live = by_id.get(row.command)
        if live is not None and live.state < JobState.DONE:
            keys.hold(row.key, live, row.ttl)
            continue
        expires = now + row.ttl if row.expires_at is None else now + row.expires_at - wall
        if expires <= now:
            durable.journal.delete_key(row.key)
            continue
        keys._keep(row.key, _finished(core, row), expires, row.ttl)


def _parked(cmd: Command) -> bool:
    return cmd.state is JobState.DELAYED and cmd.ready_at == math.inf


def _finished(core: Core, row: StoredKey) -> Command:
    """A stand-in for the finished command a stored key names (its value is not stored)."""
    cmd = Command(core, row.command, row.lane, _never, (), row.type, row.key, None)
    cmd.payload = ""  # stored: its key is deleted from storage when it expires
    cmd.observed = True
    states: dict[str, tuple[JobState, type[Exception] | None]] = {
        "done": (JobState.DONE, None),
        "failed": (JobState.FAILED, CommandFailed),
        "cancelled": (JobState.CANCELLED, CommandCancelled),
    }
    cmd.state, cmd.outcome_kind = states.get(row.status, states["done"])
    if cmd.outcome_kind is CommandFailed:
        cmd.error = RuntimeError("its error was not kept across the restart (see dead letters)")
    return cmd
