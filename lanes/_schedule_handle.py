"""The handle of one recurring schedule, and what defines a schedule (``ScheduleSpec``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

import attrs
import trio

from ._command import CommandHandle
from ._schedule import Misfire, Overlap, Timing, decide

__all__ = ["ScheduleHandle", "ScheduleOwner", "ScheduleSpec"]


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
        intervals), without its jitter; None when paused, cancelled or without further slots.
        """
        if self._paused or self._cancelled or self._problem is not None:
            return None
        slot = self._spec.timing.next_after(self._horizon)
        return None if slot is None else datetime.fromtimestamp(slot, self._spec.timing.zone)

    def pause(self) -> None:
        """Stop firing; slots that pass while paused are skipped (never fired later)."""
        if self._cancelled or self._paused:
            return
        self._paused = True
        self._scheduler.changed(self, record=True)

    def resume(self) -> None:
        """Fire again from the next slot on; the slots passed while paused count as skipped."""
        if self._cancelled or not self._paused or self._problem is not None:
            return
        now = self._scheduler.wall()
        decision = decide(self._spec.timing, self._horizon, now, "skip", 1, lateness=-1.0)
        self.skipped += decision.skipped
        if decision.handled is not None:
            self._horizon = decision.handled
        self._paused = False
        self._scheduler.changed(self, record=True)

    def cancel(self) -> None:
        """Stop for good and forget the schedule (with storage: delete it).

        A firing already submitted is a command like any other and keeps running.
        """
        if not self._cancelled:
            self._cancelled = True
            self._scheduler.forget(self)
            self._scope.cancel()
