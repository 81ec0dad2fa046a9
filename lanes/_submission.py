"""The submission pipeline: how every command enters a lane system, in three steps.

1. :func:`validate` checks what the caller gave (the owning run, an open system, a known
   lane, a callable whose arguments fit, delay, timeout and key) and raises before anything
   changes: a refused command leaves nothing behind.
2. :func:`prepare` turns it into a :class:`Command` with its payload (the JSON to store, or
   None), or returns the handle of the live command that already holds its key.
3. :func:`accept` (or :func:`accept_nowait`) takes a place in the lane's inbox, writes a
   durable command (one transaction, with whatever else the caller writes with it), and
   makes the command pending: from then on it is the core's.

``LaneSystem.submit`` / ``submit_nowait`` / ``run``, recurring schedules
(:mod:`lanes._recurring`), dead-letter requeue (:func:`requeue_letter`) and durable recovery
(:func:`recover`) all go through these steps. Data flows one way: from the caller, through
these functions, into the core (``Core.accept``); nothing here is called back from below.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from types import FunctionType
from typing import Any

import trio

from ._boundary import check_key, foreign_run
from ._callables import check_arity, submittable
from ._checks import check_priority, check_seconds
from ._codec import DEFERRED
from ._command import Command, CommandHandle, is_command
from ._core import Core
from ._dlq import DeadLetter
from ._errors import (
    KeyInUse,
    LaneConfigError,
    LaneError,
    LaneFull,
    LaneUsageError,
    NotDurableError,
    ShutdownInProgress,
    StorageError,
    UnknownLaneError,
)
from ._journal import Journal
from ._process import process_callable
from .storage import StoredCommand

__all__ = [
    "Write",
    "accept",
    "accept_many",
    "accept_nowait",
    "check_lane",
    "existing",
    "payload",
    "prepare",
    "prepare_many",
    "recover",
    "requeue_letter",
    "retired_error",
    "shutdown_error",
    "validate",
]

Write = Callable[[Journal, StoredCommand], None]
"""Puts a durable command's row into the journal's next batch, with anything that must be
written in the same transaction (a schedule's slot, the dead letter it replaces)."""

_CO_COROUTINE = inspect.CO_COROUTINE
_current_token = trio.lowlevel.current_trio_token


# -- 1. validate ---------------------------------------------------------------------------------


def validate(
    core: Core,
    lane: str,
    fn: Any,
    args: tuple[Any, ...],
    key: str | None,
    delay: float | None,
    timeout: float | None,
    where: str = "submit",
) -> tuple[Callable[..., Any], str, tuple[Any, ...]]:
    """Check a submission; return what to call, its type name and its arguments.

    A ``@lanes.command`` object is called as its bound ``execute``, without arguments.

    Raises:
        LaneUsageError: called outside the owning run; a callable the lane cannot run, or
            arguments that do not fit its signature.
        ShutdownInProgress: the system no longer accepts commands.
        UnknownLaneError, LaneConfigError: an unknown lane, a bad delay, timeout or key.
    """
    try:
        token = _current_token()
    except RuntimeError:  # a plain thread
        token = None
    if token is not core.token:
        raise foreign_run(where)
    if not core.accepting:
        raise shutdown_error()
    config = core.configs.get(lane) if isinstance(lane, str) else None
    if config is None:
        raise unknown_lane(core.configs, lane, where)
    call: Callable[..., Any]
    if config.executor == "process":
        call, type_name = process_callable(lane, fn)
    elif type(fn) is FunctionType and (code := fn.__code__).co_flags & _CO_COROUTINE:
        # An `async def` function, the common case: what submittable would find, faster.
        if len(args) != code.co_argcount or code.co_kwonlyargcount:
            check_arity(fn, args)  # defaults, *args, keyword-only: read the signature
        call, type_name = fn, fn.__qualname__ or type(fn).__qualname__
    else:
        call, type_name = submittable(fn, args)
        if is_command(fn):
            args = ()  # the command object carries its arguments
    if delay is not None:
        check_seconds(where, "delay", delay, zero_ok=True)
    if timeout is not None:
        check_seconds(where, "timeout", timeout, zero_ok=False)
    if key is not None:
        check_key(key, where)
    return call, type_name, args


def check_lane(configs: Mapping[str, object], lane: object, where: str) -> None:
    """Raise :class:`UnknownLaneError` (listing the known lanes) unless ``lane`` is one."""
    if not isinstance(lane, str) or lane not in configs:
        raise unknown_lane(configs, lane, where)


def unknown_lane(configs: Mapping[str, object], lane: object, where: str) -> UnknownLaneError:
    """The error for a submission to ``lane``, which is not one of ``configs`` (listed)."""
    known = ", ".join(configs)
    return UnknownLaneError(f"{where}: unknown lane {lane!r}; known lanes: {known}")


def payload(
    core: Core, fn: Any, durable: bool | None, *, defer: bool = False, where: str = "submit"
) -> str | None:
    """The JSON to store for ``fn``, or None when it is not stored.

    ``defer``: a big command's JSON may be ``DEFERRED``, for :func:`accept` to encode it
    off the event loop.

    Raises:
        LaneConfigError: a bad ``durable``, or ``durable=True`` without storage.
        NotDurableError: a plain callable (or an unlisted command class) for storage.
        PayloadError: the command's fields cannot be stored and rebuilt.
    """
    if durable is not None and not isinstance(durable, bool):
        msg = f"{where}: durable={durable!r} is invalid; expected True, False or None"
        raise LaneConfigError(msg)
    store = core.durable
    if store is None:
        if durable:
            msg = f"{where}: durable=True needs a storage: open_lane_system(storage=...)"
            raise LaneConfigError(msg)
        return None
    if durable is False:
        return None
    if not is_command(fn):
        msg = (
            f"{where}: {getattr(fn, '__qualname__', fn)!r} is a plain callable and "
            "cannot be stored; submit a @lanes.command object, or pass durable=False"
        )
        raise NotDurableError(msg)
    if defer:
        return store.registry.submit_payload(fn)
    return store.registry.encode(fn)[1]


def shutdown_error() -> ShutdownInProgress:
    """The error for a submission to a system that no longer accepts commands."""
    return ShutdownInProgress(
        "the lane system is shutting down (or closed) and accepts no new commands"
    )


def retired_error(lane: str, *, stored: bool = True) -> ShutdownInProgress:
    """The error for a command whose lane was retired while it waited for room or was
    being stored (``stored``)."""
    if not stored:
        return ShutdownInProgress(
            f"lane {lane!r} is being retired (retire_lane) and accepts no new commands; "
            "submit to another lane"
        )
    return ShutdownInProgress(
        f"lane {lane!r} was retired (retire_lane) while the command was being stored; it "
        "was not accepted and its stored row is deleted"
    )


def closed_error(core: Core, lane: str) -> ShutdownInProgress:
    """The error for a submit that found its lane's inbox closed (system or lane)."""
    if core.accepting and lane not in core.configs:
        return retired_error(lane, stored=False)
    return shutdown_error()


# -- 2. prepare ----------------------------------------------------------------------------------


def prepare(
    core: Core,
    lane: str,
    fn: Any,
    args: tuple[Any, ...],
    key: str | None,
    delay: float | None,
    timeout: float | None,
    durable: bool | None = None,
    where: str = "submit",
    *,
    priority: int = 0,
) -> Command | CommandHandle[Any]:
    """A new command for a valid submission, or the handle of the live one holding ``key``.

    Synchronous: the command is not accepted yet (nothing holds it but the caller).

    Raises:
        as :func:`validate` and :func:`payload`.
    """
    call, type_name, args = validate(core, lane, fn, args, key, delay, timeout, where)
    if type(priority) is not int or priority:
        check_priority(priority, where)
    if key is not None and (holder := core.keys.get(key)) is not None:
        return holder.handle
    stored = None
    if core.durable is not None or durable is not None:
        stored = payload(core, fn, durable, defer=True, where=where)
    cmd = core.new_command(lane, call, args, type_name, key, timeout)
    cmd.priority = priority
    if stored is not None:
        assert core.durable is not None
        cmd.payload = stored
        cmd.stored_seq = core.durable.journal.take_seq()
        cmd.submitted_wall = core.durable.storage.clock()
    return cmd


def existing(core: Core, key: str | None) -> CommandHandle[Any] | None:
    """The handle of the pending or running command holding ``key``, or None."""
    if key is None:
        return None
    cmd = core.keys.get(key)
    return None if cmd is None else cmd.handle


# -- 3. accept -----------------------------------------------------------------------------------


async def accept(
    core: Core,
    cmd: Command,
    delay: float | None,
    *,
    write: Write | None = None,
    twin: Callable[[CommandHandle[Any]], Exception] | None = None,
) -> CommandHandle[Any]:
    """Wait for room in the command's lane, store it if durable, and make it pending.

    Returns the command's handle, or, when a command with the same key was accepted while
    this one waited for room, that command's handle (``twin`` turns that case into an
    error instead: the requeue of a dead letter never merges into a live command).

    Args:
        core: the system's core.
        cmd: a command from :func:`prepare`.
        delay: seconds before it becomes pending.
        write: for a durable command, puts its row into the journal (default: the row
            alone); called synchronously just before the commit.
        twin: the error for a key taken meanwhile (None: return the holder's handle).

    Cancellation while waiting for room leaves nothing behind (the command was not
    accepted); once the write started, it waits for the write (the command then runs).

    Raises:
        ShutdownInProgress: the system stopped accepting meanwhile (a durable command
            stored by then stays stored and runs at the next start).
        StorageError, PayloadError: the write failed; the command was not accepted.
    """
    room = core.lanes[cmd.lane].room
    await trio.lowlevel.checkpoint_if_cancelled()
    if room.take_nowait():  # Room.take's fast path, inlined (one frame fewer)
        await trio.lowlevel.cancel_shielded_checkpoint()
    else:
        await room.wait_for_place()
    if room.closed or not core.accepting:
        raise closed_error(core, cmd.lane)
    key = cmd.key
    if key is not None and (holder := core.keys.get(key)) is not None:
        room.give()
        if twin is not None:
            raise twin(holder.handle)
        return holder.handle
    if cmd.payload is not None:
        await _store(core, cmd, delay, write)
    core.accept(cmd, delay)
    return cmd.handle


def accept_nowait(core: Core, cmd: Command, delay: float | None) -> CommandHandle[Any]:
    """Make a memory-only command pending at once, if its lane has room.

    Raises:
        LaneUsageError: a durable command (it cannot wait for storage).
        LaneFull: the lane's inbox is full.
    """
    lane = cmd.lane
    if cmd.payload is not None:
        msg = (
            "submit_nowait cannot wait for storage; use `await submit()` for durable "
            "commands, or pass durable=False"
        )
        raise LaneUsageError(msg)
    if not core.lanes[lane].room.take_nowait():
        size = core.configs[lane].inbox_size
        msg = (
            f"lane {lane!r} is full: {size} commands pending (its inbox_size); "
            "use `await submit()` to wait for room, or raise inbox_size"
        )
        raise LaneFull(msg)
    core.accept(cmd, delay)
    return cmd.handle


async def _store(core: Core, cmd: Command, delay: float | None, write: Write | None) -> None:
    """Write a durable command (holding an inbox place) before it is accepted.

    Its key is taken meanwhile, so a concurrent submit with that key gets this handle.
    """
    durable = core.durable
    assert durable is not None
    room = core.lanes[cmd.lane].room
    ready_at = trio.current_time() + delay if delay else None
    if cmd.key is not None:
        core.keys[cmd.key] = cmd
    try:
        if cmd.payload == DEFERRED:  # big: encoded off the event loop
            # the bound `execute` of the @lanes.command object (see _callables.submittable)
            obj = getattr(cmd.fn, "__self__", None)
            cmd.payload = await durable.registry.encode_off_loop(obj)
            if not core.accepting:  # closing meanwhile: its writer may be gone, write nothing
                raise shutdown_error()
        row = durable.row(cmd, "pending", ready_at)
        if write is None:
            durable.journal.save(row)
        else:
            write(durable.journal, row)
        await durable.journal.commit()
    except LaneError as exc:  # StorageError, PayloadError, ShutdownInProgress
        room.give()
        core.abort(cmd, exc)
        raise
    if cmd.lane not in core.configs:  # its lane was retired while we wrote (retire_lane)
        room.give()
        durable.journal.delete(cmd.id)  # gone with the next write: it never runs
        error = retired_error(cmd.lane)
        core.abort(cmd, error)
        raise error
    if not core.accepting:  # the system began closing while we wrote
        room.give()
        error = ShutdownInProgress(
            "the lane system shut down while the command was being stored; it stays "
            "stored and runs at the next start"
        )
        core.abort(cmd, error)
        raise error


# -- many at once (submit_many) --------------------------------------------------------------------


def prepare_many(
    core: Core,
    lane: str,
    calls: Iterable[Any],
    delay: float | None,
    timeout: float | None,
    durable: bool | None,
    priority: int = 0,
) -> list[Command]:
    """Validate and prepare every command of a ``submit_many``; nothing is accepted yet.

    Raises:
        LaneUsageError: ``calls`` is not an iterable of commands (a string, a single
            callable), or holds more commands than the lane's ``inbox_size`` can ever hold.
        as :func:`prepare`, for the first bad item (its index named in the message).
    """
    if isinstance(calls, str | bytes) or callable(calls) or is_command(calls):
        msg = (
            f"submit_many: calls={calls!r} is not a collection of commands; pass a list of "
            "zero-argument async callables or @lanes.command objects (bind arguments "
            "with functools.partial)"
        )
        raise LaneUsageError(msg)
    try:
        items = list(calls)
    except TypeError:
        msg = (
            f"submit_many: calls={calls!r} is not iterable; pass a list of zero-argument "
            "async callables or @lanes.command objects"
        )
        raise LaneUsageError(msg) from None
    try:
        token = _current_token()
    except RuntimeError:  # a plain thread
        token = None
    if token is not core.token:
        raise foreign_run("submit_many")
    if not core.accepting:
        raise shutdown_error()
    check_lane(core.configs, lane, "submit_many")
    size = core.configs[lane].inbox_size
    if len(items) > size:
        msg = (
            f"submit_many: {len(items):,} commands can never be pending at once in lane "
            f"{lane!r} (its inbox_size is {size:,}); submit them in batches of at most "
            f"{size:,}, or raise inbox_size"
        )
        raise LaneUsageError(msg)
    commands = []
    for index, fn in enumerate(items):
        try:
            cmd = prepare(
                core, lane, fn, (), None, delay, timeout, durable, "submit_many", priority=priority
            )
        except LaneError as exc:  # the same error, naming the item
            text = str(exc).removeprefix("submit_many: ").removeprefix("submit: ")
            raise type(exc)(f"submit_many (item {index}): {text}") from None
        assert isinstance(cmd, Command)  # no key: always a new command
        commands.append(cmd)
    return commands


async def accept_many(
    core: Core, commands: list[Command], delay: float | None
) -> list[CommandHandle[Any]]:
    """Accept ``commands`` (of one lane) together: all of them, or none.

    Waits until the lane's inbox has a place for every one (taking places in line with
    other submits); the durable ones are written in one transaction; then all become
    pending in one synchronous step.

    Cancellation while waiting for room leaves nothing behind (the places taken so far are
    given back); once the write started, it waits for the write (then every command runs).

    Raises:
        ShutdownInProgress: the system stopped accepting meanwhile.
        StorageError, PayloadError: the write failed; no command was accepted.
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    if not commands:
        await trio.lowlevel.cancel_shielded_checkpoint()
        return []
    room = core.lanes[commands[0].lane].room
    taken = 0
    waited = False
    try:
        while taken < len(commands):
            if not room.take_nowait():
                waited = True
                await room.wait_for_place()
                if room.closed:
                    break  # no place was handed over
            taken += 1
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        if room.closed or not core.accepting:
            raise closed_error(core, commands[0].lane)
        stored = [cmd for cmd in commands if cmd.payload is not None]
        if stored:
            await _store_many(core, stored, delay)
    except BaseException:
        for _ in range(taken):
            room.give()
        raise
    for cmd in commands:
        core.accept(cmd, delay)
    return [cmd.handle for cmd in commands]


async def _store_many(core: Core, commands: list[Command], delay: float | None) -> None:
    """Write durable commands in one transaction (their places are held by the caller).

    On failure every command is aborted (its handle fails with the error) and the error
    propagates; the caller gives the places back.
    """
    durable = core.durable
    assert durable is not None
    try:
        for cmd in commands:
            if cmd.payload == DEFERRED:  # big: encoded off the event loop
                obj = getattr(cmd.fn, "__self__", None)
                cmd.payload = await durable.registry.encode_off_loop(obj)
        if not core.accepting:  # closing meanwhile: its writer may be gone, write nothing
            raise shutdown_error()
        ready_at = trio.current_time() + delay if delay else None
        durable.journal.save_all([durable.row(cmd, "pending", ready_at) for cmd in commands])
        await durable.journal.commit()  # one batch: the rows are written together or not
        if commands[0].lane not in core.configs:  # retired while we wrote (retire_lane)
            for cmd in commands:
                durable.journal.delete(cmd.id)  # gone with the next write: none runs
            raise retired_error(commands[0].lane)
        if not core.accepting:
            raise ShutdownInProgress(
                "the lane system shut down while the commands were being stored; they stay "
                "stored and run at the next start"
            )
    except LaneError as exc:
        for cmd in commands:
            core.abort(cmd, exc)
        raise


# -- the other ways in -----------------------------------------------------------------------------


async def requeue_letter(core: Core, letter: DeadLetter) -> CommandHandle[Any]:
    """Submit a dead letter's command again (``dead_letters.requeue``).

    With storage, the new command row and the letter's removal go into one transaction.
    A live command holding the letter's key makes it a :class:`KeyInUse` (checked again
    after waiting for room), never a merge into that command.

    Raises:
        StorageError: a memory-only letter whose command is gone, or a failed write.
        KeyInUse: the letter's key is held by a live command.
        as :func:`validate` and :func:`accept`.
    """
    fn: Any = letter.fn
    durable = core.durable
    stored = letter.payload is not None and durable is not None
    if stored:
        assert durable is not None and letter.payload is not None
        fn = durable.registry.decode(letter.command_type, letter.payload)
    elif fn is None:
        msg = f"dead letter {letter.id} cannot be requeued: its command was not stored"
        raise StorageError(msg)
    holder = existing(core, letter.key)
    if holder is not None:
        raise _key_in_use(letter, holder)
    args = () if stored else letter.args
    durable_flag = None if stored else False  # a memory-only letter stays memory-only
    cmd = prepare(core, letter.lane, fn, args, letter.key, None, letter.timeout, durable_flag)
    assert isinstance(cmd, Command)  # the key is free: a new command

    def write(journal: Journal, row: StoredCommand) -> None:
        # If the system closes during this write, the command stays stored (it runs at
        # the next start) and the letter is gone from storage, though listed until exit.
        journal.save_replacing_letter(row, letter.id)

    return await accept(core, cmd, None, write=write, twin=lambda h: _key_in_use(letter, h))


def _key_in_use(letter: DeadLetter, holder: CommandHandle[Any]) -> KeyInUse:
    msg = (
        f"dead letter {letter.id} cannot be requeued now: its idempotency key "
        f"{letter.key!r} is held by command {holder.id} ({holder.status.value}) in "
        f"lane {holder.lane!r}; the letter is kept: requeue it once that command "
        "has finished (system.handle_for(key) finds it)"
    )
    return KeyInUse(msg)


async def recover(core: Core) -> list[Command]:
    """Requeue the commands a durable system's storage holds; return them in order.

    The storage side (:meth:`Durability.recover`) validates each stored command (its lane
    exists, its JSON rebuilds) and dead-letters what cannot run; each rebuilt one is
    prepared with its stored id, key, attempts and payload and accepted without taking an
    inbox place (recovered commands are never refused for room).
    """
    durable = core.durable
    assert durable is not None
    commands = []
    for row, obj in await durable.recover(core.configs, core.dlq):
        cmd = core.new_command(
            row.lane, obj.execute, (), row.type, row.key, row.timeout, command_id=row.id
        )
        cmd.payload = row.payload
        cmd.stored_seq = row.seq
        cmd.submitted_wall = row.submitted_at
        cmd.attempts = row.attempts
        cmd.priority = row.priority
        delay = None
        if row.ready_at is not None:
            delay = max(0.0, row.ready_at - durable.storage.clock())
        core.accept(cmd, delay, holds_room=False)
        commands.append(cmd)
    return commands
