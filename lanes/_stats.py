"""Statistics: cheap mutable counters inside, frozen snapshots outside."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

__all__ = ["COUNTERS", "LaneCounters", "LaneStatistics", "SystemStatistics"]

COUNTERS = (
    "submitted",
    "completed",
    "failed",
    "timed_out",
    "retried",
    "dead_lettered",
    "cancelled",
    "preempted",
)


class LaneCounters:
    """Event counts of one lane (each outcome adds 1 to its counter)."""

    __slots__ = COUNTERS

    def __init__(self) -> None:
        self.submitted = 0
        self.completed = 0
        self.failed = 0
        self.timed_out = 0
        self.retried = 0
        self.dead_lettered = 0
        self.cancelled = 0
        self.preempted = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}


@attrs.frozen
class LaneStatistics:
    """A snapshot of one lane.

    Counters count events: a command retried twice then dead-lettered adds 2 to ``retried``,
    1 to ``failed`` and 1 to ``dead_lettered``. ``failed`` counts final failures (a timeout
    on the last attempt included); ``timed_out`` counts every attempt that timed out.

    ``recent_wait_p50`` and ``recent_wait_p99`` are the median and 99th percentile of how
    long the lane's latest 256 started attempts waited (pending until started), in seconds;
    None before any start. With ``CommandHandle.position`` a server can tell its user
    "3 requests ahead of you, usually about 2 s".
    """

    name: str
    priority: int
    effective_priority: int
    paused: bool
    pending: int
    active: int
    max_concurrency: int
    submitted: int
    completed: int
    failed: int
    timed_out: int
    retried: int
    dead_lettered: int
    cancelled: int
    preempted: int
    recent_wait_p50: float | None = None
    recent_wait_p99: float | None = None


@attrs.frozen
class SystemStatistics:
    """A snapshot of the whole system; ``lanes[name]`` is that lane's statistics."""

    lanes: Mapping[str, LaneStatistics]
    pending: int
    active: int
    max_concurrency: int | None
    accepting: bool
    dead_letters: int
    dead_letters_evicted: int
    events_dropped: int
