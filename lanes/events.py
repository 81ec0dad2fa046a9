"""Typed events of a lane system, delivered by ``LaneSystem.subscribe``.

Every event is a frozen attrs class with ``key`` (like ``"lane.command.completed"``), the
``lane``, the ``command_id`` and a ``timestamp``: the wall-clock time of the event, in
seconds since the epoch (``time.time()`` style), from the system's wall clock
(``open_lane_system(clock=...)``, or the storage's ``clock``; default ``time.time``). It is
the Trio clock plus an offset read once when the system opens, so it follows Trio's clock
(virtual under a mock clock) from that wall-clock origin. Durations (``waited``,
``duration``, ``delay``) are Trio-clock seconds.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

__all__ = [
    "AlertCleared",
    "AlertRaised",
    "Cancelled",
    "Completed",
    "DeadLettered",
    "Event",
    "Failed",
    "Preempted",
    "Reprioritized",
    "Retrying",
    "Started",
    "Submitted",
    "TimedOut",
]


@attrs.frozen
class Event:
    """Base class of all lane events.

    Attributes:
        lane: the command's lane.
        command_id: the command's id ("" for alerts).
        timestamp: wall-clock seconds since the epoch (see the module's docstring).
    """

    key: ClassVar[str] = "lane.event"
    lane: str
    command_id: str
    timestamp: float


@attrs.frozen
class Submitted(Event):
    """A command was accepted (and is pending from now on).

    ``priority`` is its priority within its lane (``submit(priority=)``; lower starts first;
    0 by default). None: the command has no priority of its own, as in the distributed mode,
    whose workers take a lane's commands in the order they came.
    """

    key: ClassVar[str] = "lane.command.submitted"
    command_type: str = ""
    priority: int | None = None


@attrs.frozen
class Reprioritized(Event):
    """``handle.reprioritize`` gave a waiting command another priority within its lane.

    ``previous`` is the priority it had. Emitted only when the priority changed: a call
    refused (it answered False) or one that asks for the priority it already has emits
    nothing. A delayed command (or one waiting to be retried) takes its new priority from
    now on, and its place among its new equals when it is due.
    """

    key: ClassVar[str] = "lane.command.reprioritized"
    priority: int = 0
    previous: int = 0


@attrs.frozen
class Started(Event):
    """An attempt started; ``attempt`` counts from 1; ``waited`` is seconds spent pending."""

    key: ClassVar[str] = "lane.command.started"
    attempt: int = 1
    waited: float = 0.0


@attrs.frozen
class Completed(Event):
    """The command returned; ``duration`` is the last attempt's run time in seconds."""

    key: ClassVar[str] = "lane.command.completed"
    attempt: int = 1
    duration: float = 0.0


@attrs.frozen
class Retrying(Event):
    """An attempt failed and another follows after ``delay`` seconds."""

    key: ClassVar[str] = "lane.command.retrying"
    attempt: int = 1
    delay: float = 0.0
    error: str = ""


@attrs.frozen
class TimedOut(Event):
    """An attempt exceeded its ``timeout`` and was cancelled (it may be retried)."""

    key: ClassVar[str] = "lane.command.timed_out"
    attempt: int = 1
    timeout: float = 0.0


@attrs.frozen
class Failed(Event):
    """The command failed for good (retries exhausted, ``Permanent``, or a last timeout)."""

    key: ClassVar[str] = "lane.command.failed"
    attempts: int = 1
    error: str = ""


@attrs.frozen
class DeadLettered(Event):
    """A failed command was recorded in the dead-letter queue."""

    key: ClassVar[str] = "lane.command.dead_lettered"
    attempts: int = 1
    error: str = ""


@attrs.frozen
class Preempted(Event):
    """A running command gave its slot to a more urgent one; it is pending again."""

    key: ClassVar[str] = "lane.command.preempted"
    attempt: int = 1


@attrs.frozen
class Cancelled(Event):
    """The command was cancelled (by its handle, ``cancel_lane``, drain or shutdown)."""

    key: ClassVar[str] = "lane.command.cancelled"


@attrs.frozen
class AlertRaised(Event):
    """A lane's ``metric`` reached ``threshold`` at ``level`` ("warning" or "critical").

    Raised by an alert monitor (``lanes.open_alert_monitor``) once per crossing; it has no
    command, so ``command_id`` is ``""``.
    """

    key: ClassVar[str] = "lane.alert.raised"
    level: str = "warning"
    metric: str = ""
    value: float = 0.0
    threshold: float = 0.0


@attrs.frozen
class AlertCleared(Event):
    """A raised ``level`` ended: ``value`` fell below ``threshold`` (its clear threshold)."""

    key: ClassVar[str] = "lane.alert.cleared"
    level: str = "warning"
    metric: str = ""
    value: float = 0.0
    threshold: float = 0.0
