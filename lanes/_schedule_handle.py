"""The handle of one recurring schedule, and what defines a schedule (``ScheduleSpec``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

import attrs
import trio

from ._command import CommandHandle
from ._errors import LaneConfigError, LaneUsageError
from ._schedule import OVERLAP, Misfire, Overlap, Timing, decide

__all__ = [
    "ScheduleHandle",
    "ScheduleOwner",
    "ScheduleSpec",
    "check_choice",
    "check_count",
    "check_overlap",
    "check_seconds",
    "check_times",
]


@attrs.frozen
class ScheduleSpec:
    """What a schedule fires and when; two equal specs are the same schedule."""

    lane: str
    target: Any  # the async callable, or the command's JSON when stored
    type: str
    timing: Timing
    jitter: float
    misfire: Misfire
    misfire_limit: int
    overlap: Overlap
    stored: bool  # written to storage (a durable system, unless durable=False)
    times: int | None = None  # the schedule ends after this many firings (None: never)

    def same_as(self, other: ScheduleSpec) -> bool:
        mine = attrs.evolve(self, timing=attrs.evolve(self.timing, anchor=0.0))
        return mine == attrs.evolve(other, timing=attrs.evolve(other.timing, anchor=0.0))


class ScheduleOwner(Protocol):
    """What a schedule's handle needs from the schedules of its system (``_recurring``)."""

    def wall(self) -> float:
        """The wall clock the schedules follow (seconds since the epoch)."""

    def changed(self, handle: ScheduleHandle, *, record: bool) -> None:
        """Wake the schedule's task to look again; write its new state if ``record``."""

    def forget(self, handle: ScheduleHandle) -> None:
        """Drop the schedule (and delete it from storage)."""

    async def trigger(self, handle: ScheduleHandle) -> CommandHandle[Any]:
        """Submit one firing of the schedule now, outside its slots."""


class ScheduleHandle:
    """A recurring schedule. Made by ``LaneSystem.schedule()``; it has no public constructor.

    ``pause()``, ``resume()`` and ``cancel()`` are synchronous; with storage they are written
    in the background by the next batch.
    """

    def __init__(self, scheduler: ScheduleOwner, key: str, spec: ScheduleSpec) -> None:
        self._scheduler = scheduler
        self._key = key
        self._spec = spec
        self._horizon = spec.timing.anchor  # every slot up to here is dealt with
        self._recorded: float | None = None  # the last slot written to storage
        self._paused = False
        self._cancelled = False
        self._problem: str | None = None
        self._running = False
        self._last: CommandHandle[Any] | None = None
        self._last_id: str | None = None
        self._changed = trio.Event()
        self._scope = trio.CancelScope()
        self._target: float | None = None
        self._offset = 0.0
        self._runs = 0  # firings of this schedule ever (kept across restarts with storage)
        self._ended = trio.Event()
        self.fired = 0
        """Firings submitted by this process."""
        self.skipped = 0
        """Slots that did not fire (misfire policy, overlap ``"skip"``, paused, failed write)."""

    def __repr__(self) -> str:
        return f"<ScheduleHandle {self._key!r} lane={self.lane!r} next_run={self.next_run}>"

    @property
    def key(self) -> str:
        """The schedule's key (given, or made up for a memory-only schedule)."""
        return self._key

    @property
    def lane(self) -> str:
        """The lane its firings are submitted to."""
        return self._spec.lane

    @property
    def paused(self) -> bool:
        """Whether the schedule is paused (it fires nothing until resumed)."""
        return self._paused

    @property
    def cancelled(self) -> bool:
        """Whether the schedule was cancelled (for good: it is no longer stored)."""
        return self._cancelled

    @property
    def times(self) -> int | None:
        """The repeat limit (``times=``): the schedule ends after this many firings; None
        when it repeats for ever."""
        return self._spec.times

    @property
    def runs(self) -> int:
        """Firings of this schedule so far, across restarts when it is stored (``fired``
        counts those of this process only)."""
        return self._runs

    @property
    def remaining(self) -> int | None:
        """Firings left before the repeat limit ends the schedule; None without a limit."""
        times = self._spec.times
        return None if times is None else max(0, times - self._runs)

    @property
    def finished(self) -> bool:
        """Whether the schedule has fired ``times`` times and ended (it fires nothing more;
        with storage it stays stored, so declaring it again at the next start does not
        fire it again)."""
        return self._spec.times is not None and self._runs >= self._spec.times

    async def wait_finished(self) -> None:
        """Wait until the repeat limit ends the schedule (its last firing is submitted;
        ``last.result()`` waits for that command) or it is cancelled (see :attr:`finished`
        to tell which). Returns at once if either happened already; waits for ever for a
        schedule without ``times`` that nobody cancels. Cancelling this wait leaves the
        schedule as it is.
        """
        if self.finished or self._cancelled:
            await trio.lowlevel.checkpoint()
            return
        await self._ended.wait()

    @property
    def problem(self) -> str | None:
        """Why a stored schedule cannot run in this process (unknown lane or type), or None."""
        return self._problem

    @property
    def last(self) -> CommandHandle[Any] | None:
        """The handle of the latest firing submitted by this process, or None."""
        return self._last

    @property
    def next_run(self) -> datetime | None:
        """When the next slot is due (an aware datetime in the schedule's time zone; UTC for
        intervals), without its jitter; None when paused, cancelled, finished, without
        further slots, or (``after_completion``) while the previous firing has not ended.
        """
        if self._paused or self._cancelled or self._problem is not None or self.finished:
            return None
        slot = self._spec.timing.next_after(self._horizon)
        return None if slot is None else datetime.fromtimestamp(slot, self._spec.timing.zone)

    def pause(self) -> None:
        """Stop firing; slots that pass while paused are skipped (never fired later)."""
        if self._cancelled or self._paused or self.finished:
            return
        self._paused = True
        self._scheduler.changed(self, record=True)

    def resume(self) -> None:
        """Fire again from the next slot on; the slots passed while paused count as skipped.

        With ``after_completion=True``, the next firing is ``every`` seconds after the resume,
        or after the end of the firing still running then.
        """
        if self._cancelled or not self._paused or self._problem is not None:
            return
        self._skip_passed()
        self._paused = False
        self._scheduler.changed(self, record=True)

    def _skip_passed(self) -> None:
        """Count the slots passed until now as skipped: the schedule goes on from now."""
        now = self._scheduler.wall()
        timing = self._spec.timing
        decision = decide(timing, self._horizon, now, "skip", 1, lateness=-1.0)
        self.skipped += decision.skipped
        if decision.handled is not None:
            self._horizon = decision.handled
        idle = self._last is None or self._last.done()
        if timing.after_completion and idle and timing.next_after(self._horizon) is None:
            self._reanchor(now)

    def _reanchor(self, at: float) -> None:
        """After completion: count the next slot from ``at`` (never before the last slot)."""
        spec = self._spec
        at = max(at, self._horizon)
        self._spec = attrs.evolve(spec, timing=attrs.evolve(spec.timing, anchor=at))

    async def trigger(self) -> CommandHandle[Any]:
        """Fire now, once, outside the schedule's slots: submit what it fires and return
        the new command's handle (``"run now"``, as a console's button does).

        The firing is a command like any other of the schedule's lane (durable when the
        schedule is stored). It becomes :attr:`last` and counts in :attr:`fired`, so the
        overlap policy of the next slot sees it; it takes no slot: the slots, :attr:`runs`
        and the repeat limit (``times=``) are unchanged. Works while the schedule is
        paused. Cancelling the call while it waits for the lane's inbox or for storage
        submits nothing, as with ``submit``.

        Raises:
            LaneUsageError: the schedule was cancelled, or it cannot run in this process
                (:attr:`problem`: an unknown lane or command type).
            ShutdownInProgress, LaneFull, StorageError: what ``LaneSystem.submit`` raises.
        """
        if self._cancelled:
            msg = f"schedule {self._key!r} was cancelled: it fires nothing; declare it again"
            raise LaneUsageError(msg)
        if self._problem is not None:
            msg = f"schedule {self._key!r} cannot fire in this process: {self._problem}"
            raise LaneUsageError(msg)
        handle = await self._scheduler.trigger(self)
        self._last = handle
        self.fired += 1
        return handle

    def cancel(self) -> None:
        """Stop for good and forget the schedule (with storage: delete it).

        A firing already submitted is a command like any other and keeps running.
        """
        if not self._cancelled:
            self._cancelled = True
            self._scheduler.forget(self)
            self._scope.cancel()
            self._ended.set()


# -- checking what defines a schedule ---------------------------------------------------------


def check_times(value: object) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    msg = (
        f"schedule: times={value!r} is invalid; expected an integer >= 1 (the number of "
        "firings after which the schedule ends), or None to repeat for ever"
    )
    raise LaneConfigError(msg)


def check_overlap(value: object, timing: Timing) -> Overlap:
    chosen: Overlap = check_choice("overlap", value, OVERLAP)
    if timing.after_completion and chosen != "skip":
        msg = (
            f"schedule: overlap={value!r} cannot be combined with after_completion=True, "
            "whose firings never overlap (each waits for the previous one to end); drop overlap="
        )
        raise LaneConfigError(msg)
    return chosen


def check_choice(field: str, value: object, allowed: tuple[str, ...]) -> Any:
    if value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        msg = f"schedule: {field}={value!r} is invalid; expected one of {options}"
        raise LaneConfigError(msg)
    return value


def check_count(field: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    msg = f"schedule: {field}={value!r} is invalid; expected an integer >= 1"
    raise LaneConfigError(msg)


def check_seconds(field: str, value: object) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and 0 <= value < float("inf"):  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    msg = f"schedule: {field}={value!r} is invalid; expected a number of seconds >= 0"
    raise LaneConfigError(msg)
