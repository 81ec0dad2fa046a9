"""Commands: the envelope the system schedules, the handle users hold, ``@lanes.command``."""

from __future__ import annotations

import contextvars
import enum
import inspect
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar, cast, overload

import attrs
import trio

from ._boundary import check_run
from ._checks import check_priority, check_seconds
from ._errors import (
    CommandCancelled,
    CommandFailed,
    CommandTimeout,
    LaneConfigError,
    LaneUsageError,
)
from ._listing import Progress, Reports
from ._owner import CommandOwner
from ._policy import ACTIVE, CANCELLED, DONE, FAILED, Job
from ._running import CURRENT
from ._stream import Partials, Stream

_copy_context = contextvars.copy_context
_current_token = trio.lowlevel.current_trio_token
_SET_CURRENT = CURRENT.set


class _Reporting(Protocol):
    """What a handle asks its command's owner beyond :class:`CommandOwner` (the core)."""

    def report_unobserved(self, cmd: Command, /) -> None: ...
    def position(self, cmd: Command, /) -> int | None: ...
    def reprioritize(self, cmd: Command, priority: int, /) -> bool: ...
    def reschedule(self, cmd: Command, delay: float, /) -> bool: ...


__all__ = ["CommandHandle", "CommandStatus", "command", "command_name", "is_command"]

T = TypeVar("T")
C = TypeVar("C", bound=type)
_NAME_ATTR = "__lanes_command__"


class CommandStatus(enum.StrEnum):
    """Where a command is in its life. Compares equal to its string value."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({CommandStatus.DONE, CommandStatus.FAILED, CommandStatus.CANCELLED})

# A command's public status, from its one state (and, while it waits, its attempts).
_STATUS = {
    ACTIVE: CommandStatus.RUNNING,
    DONE: CommandStatus.DONE,
    FAILED: CommandStatus.FAILED,
    CANCELLED: CommandStatus.CANCELLED,
}


class Reason(enum.Enum):
    """Why the system cancelled a command's scope (None on the command means a timeout)."""

    CANCEL = "cancelled"
    PREEMPT = "preempted"
    SHUTDOWN = "shut down"


class Command(Job):
    """The system's record of one accepted command (a policy ``Job`` with a payload)."""

    __slots__ = (
        "_handle_ref",
        "_id",
        "_n",
        "_waiters",
        "accepted_at",
        "args",
        "attempts",
        "cancel_reason",
        "context",
        "core",
        "deadline",
        "entered",
        "error",
        "fn",
        "holds_room",
        "key",
        "observed",
        "observers",
        "on_done",
        "outcome_kind",
        "payload",
        "reports",
        "scope",
        "started_at",
        "stored_seq",
        "stream",
        "submitted_wall",
        "timeout",
        "type_name",
        "value",
    )

    def __init__(
        self,
        core: CommandOwner[Command, Reason],
        command_id: str | int,
        lane: str,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        type_name: str,
        key: str | None,
        timeout: float | None,
    ) -> None:
        Job.__init__(self, lane)  # the policy's fields
        self.core = core
        # The submitter's context variables (as nursery.start_soon copies them): its
        # attempts run in this context, whichever worker runs them. The copy also holds
        # the command itself (lanes.send_partial and lanes.pause_point find it there).
        # Dropped when the command ends (Core._resolve): the copy refers back to the command,
        # and without that cut only the cycle collector would free a finished command.
        context = _copy_context()
        context.run(_SET_CURRENT, self)
        self.context: contextvars.Context | None = context
        # The id is formatted on first use (most commands of a busy system never need it).
        if isinstance(command_id, int):
            self._id = None
            self._n = command_id
        else:
            self._id = command_id
            self._n = 0
        self._waiters: list[trio.lowlevel.Task] | None = None
        self.fn = fn
        self.args = args
        self.type_name = type_name
        self.key = key
        self.timeout = timeout
        self.attempts = 0
        self.holds_room = False
        self.entered = False  # whether the current attempt's body has started
        self.cancel_reason: Reason | None = None
        self.scope: trio.CancelScope | None = None  # its worker's, while its body runs
        self.deadline = 0.0  # of the current attempt (math.inf: no timeout)
        self.started_at = 0.0
        self.value: Any = None
        self.error: BaseException | None = None
        self.outcome_kind: type[Exception] | None = None
        self.payload: str | None = None  # JSON of a durable command (None: memory only)
        self.stored_seq = 0
        self.submitted_wall = 0.0
        self.stream: Stream | None = None  # partial results (submit_streaming)
        # The handle is held weakly (no Command <-> handle cycle): when the last reference
        # to it goes, a failure nobody retrieved is reported (see lanes/_unobserved.py).
        self._handle_ref: weakref.ref[CommandHandle[Any]] | None = None
        self.observed = False  # its failure was retrieved, is being awaited, or reported
        self.observers = 0  # result() calls waiting for it
        self.accepted_at = 0.0  # Trio time it was accepted (listings show its age)
        self.reports: Reports | None = None  # lanes.report_progress(), on first use
        # submit(on_done=): one callback, a list of them, or None (lanes/_on_done.py).
        self.on_done: Any = None

    @property
    def handle(self) -> CommandHandle[Any]:
        """The command's handle: the same object while anyone holds it."""
        ref = self._handle_ref
        if ref is not None:
            handle = ref()
            if handle is not None:
                return handle
        handle = CommandHandle(self)
        self._handle_ref = weakref.ref(handle)
        return handle

    def handle_alive(self) -> bool:
        """Whether anyone still holds the command's handle."""
        ref = self._handle_ref
        return ref is not None and ref() is not None

    @property
    def id(self) -> str:
        """The command's unique id: ``<system prefix>-<n>``, or the stored id."""
        if self._id is None:
            self._id = f"{self.core.prefix}-{self._n}"
        return self._id

    def is_done(self) -> bool:
        """Whether the command is in a terminal state."""
        return self.state >= DONE

    async def wait_done(self) -> None:
        """Wait until the command is terminal. Cancellation leaves nothing behind."""
        if self.state >= DONE:
            await trio.lowlevel.checkpoint()
            return
        task = trio.lowlevel.current_task()
        waiters = self._waiters
        if waiters is None:
            self._waiters = waiters = []
        waiters.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            waiters.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def wake_waiters(self) -> None:
        """The command became terminal: wake whoever waits for it (like ``Event.set``)."""
        waiters = self._waiters
        if waiters:
            self._waiters = None
            for task in waiters:
                trio.lowlevel.reschedule(task)

    @property
    def status(self) -> CommandStatus:
        """The public status, derived from :attr:`state`."""
        status = _STATUS.get(self.state)
        if status is not None:
            return status
        return CommandStatus.RETRYING if self.attempts else CommandStatus.PENDING


class CommandHandle(Generic[T]):
    """A handle on a submitted command. Returned by ``submit``; no public constructor.

    Dropping the handle does not cancel the command; ``cancel()`` does. A command that
    fails for good while nobody retrieves its result is reported once (logged, or passed to
    ``on_unobserved_failure``): at the failure if no handle is held any more, otherwise when
    the last reference to the handle goes without ``result()`` having been awaited.
    """

    __slots__ = ("__weakref__", "_command")

    def __init__(self, command: Command) -> None:
        self._command = command

    def __del__(self) -> None:
        c = self._command
        if c.state is FAILED and not c.observed:
            c.observed = True
            cast(_Reporting, c.core).report_unobserved(c)
        stream = c.stream
        if stream is not None and not stream.closed:
            stream.abandon()  # nobody can read it any more

    def __repr__(self) -> str:
        c = self._command
        return f"<CommandHandle {c.id} lane={c.lane!r} {c.type_name} {c.status.value}>"

    @property
    def id(self) -> str:
        """The command's unique id."""
        return self._command.id

    @property
    def lane(self) -> str:
        """The name of the command's lane."""
        return self._command.lane

    @property
    def key(self) -> str | None:
        """The command's idempotency key (None if it was submitted without one).

        Recovered handles (``system.recovered``) carry the key they were stored with, so an
        application can map recovered work back to its sessions; see also
        ``LaneSystem.handle_for(key)``.
        """
        return self._command.key

    @property
    def command(self) -> Any:
        """What was submitted: the ``@lanes.command`` object, or the callable.

        For a recovered durable command, the object rebuilt from storage.
        """
        fn = self._command.fn
        owner = getattr(fn, "__self__", None)
        if owner is not None and is_command(owner):
            return owner  # its bound ``execute``: the object is what was submitted
        return fn

    @property
    def status(self) -> CommandStatus:
        """pending, running, retrying, done, failed or cancelled."""
        return self._command.status

    @property
    def attempts(self) -> int:
        """How many attempts have started in this run (a preempted attempt is not counted)."""
        return self._command.attempts

    def done(self) -> bool:
        """Whether the command reached a terminal state (done, failed or cancelled)."""
        return self._command.state >= DONE

    @property
    def position(self) -> int | None:
        """How many commands of its lane start before it; None once it started (or while
        it is delayed, or once it is finished).

        0 means it starts next in its lane. Lanes are FIFO, so this counts the live
        commands queued ahead of it: O(position) (a scan of its lane's queue up to it),
        cheap for the "3 requests ahead of you" a server shows; do not poll it for
        thousands of handles of one long lane.
        """
        c = self._command
        return cast(_Reporting, c.core).position(c)

    def partials(self) -> Partials:
        """An async iterator over the command's partial results, as they are sent.

        Only for commands submitted with ``system.submit_streaming``. It ends once the
        command is terminal and what it sent was read (then ``await result()``). Closing it
        early (or dropping it unfinished, e.g. ``break``) stops the stream: later partials
        are dropped. If a half-read attempt fails and the command runs again, it raises
        :class:`lanes.StreamRestarted` once; call ``partials()`` again for the new attempt.

        Raises:
            LaneUsageError: the command has no stream, another iterator is open, the stream
                was already dropped, or called outside the owning ``trio.run``.
        """
        c = self._command
        check_run(c.core.token, "handle.partials")
        return open_partials(self, c)

    def __aiter__(self) -> Partials:
        """``async for item in handle``: :meth:`partials`."""
        return self.partials()

    async def result(self) -> T:
        """Wait for the command to finish and return its value.

        Cancelling this wait leaves the command running: the handle still owns it.

        For a streaming command (``submit_streaming``): if no :meth:`partials` iterator is
        open when this is called, the unread partials are dropped and later ones are too
        (the command never waits for a reader that will not come). To read both, open the
        iterator first.

        Raises:
            CommandTimeout: its last attempt exceeded the timeout (a ``CommandFailed``).
            CommandFailed: it failed for good; ``__cause__`` is the last error.
            CommandCancelled: it was cancelled.
            LaneUsageError: called outside the ``trio.run`` that owns the lane system.
        """
        c = self._command
        try:  # check_run, inlined
            token = _current_token()
        except RuntimeError:
            token = None
        if token is not c.core.token:
            check_run(c.core.token, "handle.result")  # raises
        stream = c.stream
        if stream is not None and not stream.reading:
            stream.abandon()  # only the result is wanted: the command never waits to stream
        if c.state < DONE:
            # Command.wait_done, inlined (one coroutine frame fewer on the hot path).
            task = trio.lowlevel.current_task()
            waiters = c._waiters
            if waiters is None:
                c._waiters = waiters = []
            waiters.append(task)

            def abort(_: object) -> trio.lowlevel.Abort:
                waiters.remove(task)
                return trio.lowlevel.Abort.SUCCEEDED

            c.observers += 1
            try:
                await trio.lowlevel.wait_task_rescheduled(abort)
            finally:
                c.observers -= 1
        else:
            await trio.lowlevel.checkpoint()
        c.observed = True
        if c.outcome_kind is None:
            return c.value  # type: ignore[no-any-return]
        raise outcome_error(c)

    @property
    def progress(self) -> Progress | None:
        """What the command last reported with ``lanes.report_progress`` (None: nothing)."""
        reports = self._command.reports
        return None if reports is None else reports.progress

    @property
    def priority(self) -> int:
        """Its priority within its lane (``submit(priority=)``; lower starts first)."""
        return self._command.priority

    def reprioritize(self, priority: int) -> bool:
        """Give the command another priority within its lane while it waits.

        A queued command takes its new place at once (FIFO among equals stays by when it
        was queued: it does not go to the back of its new priority); a delayed one takes
        it when it is due. With storage, the new priority is stored with the next write.
        A change is a :class:`lanes.events.Reprioritized` event to subscribers (none when
        the priority stays as it was, or the answer is False).

        Returns:
            True if the command was pending; False once it started or finished (nothing
            changes: a running command keeps its slot, and a retry keeps the priority it
            had).

        Raises:
            LaneConfigError: ``priority`` is not an integer in range.
            LaneUsageError: called outside the ``trio.run`` that owns the lane system.
        """
        core = self._command.core
        check_run(core.token, "handle.reprioritize")
        check_priority(priority, "handle.reprioritize")
        return cast(_Reporting, core).reprioritize(self._command, priority)

    def reschedule(self, delay: float) -> bool:
        """Make a pending command due ``delay`` seconds from now (0: at once).

        Moves a delayed command's due time, earlier or later; a queued command becomes
        delayed (it leaves its place in the queue, and takes a new one, at the back of its
        priority, when it is due). With storage, the due time is stored with the next write.

        Returns:
            True if the command was pending; False once it started or finished.

        Raises:
            LaneConfigError: ``delay`` is negative, NaN or infinite.
            LaneUsageError: called outside the ``trio.run`` that owns the lane system.
        """
        core = self._command.core
        check_run(core.token, "handle.reschedule")
        check_seconds("handle.reschedule", "delay", delay, zero_ok=True)
        return cast(_Reporting, core).reschedule(self._command, delay)

    def cancel(self) -> None:
        """Cancel the command (synchronous, like ``CancelScope.cancel``).

        A pending command is resolved as cancelled at once; a running one is cancelled at its
        next checkpoint and resolves when its attempt exits. No-op once it finished.

        Raises:
            LaneUsageError: called outside the ``trio.run`` that owns the lane system.
        """
        core = self._command.core
        check_run(core.token, "handle.cancel")
        core.cancel(self._command, Reason.CANCEL)


def open_partials(handle: CommandHandle[Any], cmd: Command) -> Partials:
    """``handle.partials()``: the one reader of ``cmd``'s stream."""
    stream = cmd.stream
    if stream is None:
        msg = (
            f"command {cmd.id} in lane {cmd.lane!r} has no partial results to read; "
            "submit it with `await system.submit_streaming(lane, fn, ..., buffer=N)`"
        )
        raise LaneUsageError(msg)
    if stream.reading:
        msg = (
            f"the partial results of command {cmd.id} are already being read; one iterator "
            "reads them (keep it and iterate it again)"
        )
        raise LaneUsageError(msg)
    if stream.abandoned:
        msg = (
            f"the partial results of command {cmd.id} were dropped: a reader stopped early, "
            "or result() was awaited with no iterator open (open the iterator first)"
        )
        raise LaneUsageError(msg)

    def restarted() -> str:
        return (
            f"command {cmd.id} ({cmd.type_name}) in lane {cmd.lane!r}: the attempt whose "
            "partial results were being read ended and the command runs again (attempt "
            f"{cmd.attempts + 1}); its partials start over: call handle.partials() again to "
            "read them from the start"
        )

    return Partials(handle, stream, restarted)


def outcome_error(c: Command) -> Exception:
    kind = c.outcome_kind
    if kind is CommandCancelled:
        reason = c.cancel_reason.value if c.cancel_reason else "cancelled"
        return CommandCancelled(f"command {c.id} ({c.type_name}) in lane {c.lane!r} was {reason}")
    if kind is CommandTimeout:
        error: Exception = CommandTimeout(
            f"command {c.id} ({c.type_name}) in lane {c.lane!r} timed out after {c.timeout} s "
            f"on attempt {c.attempts}"
        )
    else:
        error = CommandFailed(
            f"command {c.id} ({c.type_name}) in lane {c.lane!r} failed after {c.attempts} "
            f"attempt(s): {c.error!r}"
        )
    error.__cause__ = c.error
    return error


@overload
def command(cls: C, /) -> C: ...
@overload
def command(*, name: str | None = None) -> Callable[[C], C]: ...
def command(cls: C | None = None, /, *, name: str | None = None) -> C | Callable[[C], C]:
    """Mark an attrs class with ``async def execute(self)`` as a lane command type.

    Use as ``@lanes.command`` or ``@lanes.command(name="send-email")``; the default name is
    the class's qualified name. Instances are submitted like callables:
    ``await system.submit("query", SendEmail(to=...))``.

    Raises:
        LaneConfigError: the class is not an attrs class, has no ``async def execute``, or
            the name is empty or not valid Unicode.
    """

    def mark(target: C) -> C:
        if not (isinstance(target, type) and attrs.has(target)):
            msg = f"@lanes.command needs an attrs class (@attrs.define), got {target!r}"
            raise LaneConfigError(msg)
        if not inspect.iscoroutinefunction(getattr(target, "execute", None)):
            msg = f"@lanes.command class {target.__qualname__} needs an `async def execute(self)`"
            raise LaneConfigError(msg)
        label = target.__qualname__ if name is None else name
        if not isinstance(label, str) or not label.strip() or not _storable(label):
            msg = (
                f"@lanes.command(name={name!r}) is invalid; expected a non-empty string of "
                "valid Unicode (no lone surrogates): the name is stored with each command"
            )
            raise LaneConfigError(msg)
        setattr(target, _NAME_ATTR, label)
        return cast(C, target)

    return mark if cls is None else mark(cls)


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_command(obj: object) -> bool:
    """Whether ``obj`` is an instance of a ``@lanes.command`` class."""
    return not isinstance(obj, type) and hasattr(type(obj), _NAME_ATTR)


def command_name(obj: object) -> str:
    """The registered name of a ``@lanes.command`` instance."""
    return getattr(type(obj), _NAME_ATTR)  # type: ignore[no-any-return]
