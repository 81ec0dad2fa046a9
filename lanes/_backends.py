"""Where metrics go: the ``MetricsBackend`` protocol, an in-memory backend, a periodic export.

A lane system records latencies on its hot path into cheap histograms (a list append per
sample) and counts events in plain integers; nothing else happens per command. Backends never
see individual commands: they are fed whole :class:`MetricsSnapshot` objects, either when
they are read (a Prometheus scrape asks for a fresh snapshot) or on a schedule
(:func:`export_metrics`). So a backend adds no cost to scheduling, however slow it is.
"""

from __future__ import annotations

import collections
import math
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import trio
from trio_util import periodic

from ._checks import check_int as _check_int
from ._checks import check_positive as _check_positive
from ._metrics import MetricsSnapshot

if TYPE_CHECKING:
    from ._system import LaneSystem

__all__ = ["InMemoryBackend", "MetricsBackend", "export_metrics"]


@runtime_checkable
class MetricsBackend(Protocol):
    """Something that takes in a lane system's metrics, one snapshot at a time."""

    def update(self, snapshot: MetricsSnapshot) -> None:
        """Take in ``snapshot`` (synchronous and quick: it runs in the caller's task)."""


class InMemoryBackend:
    """Keeps the last ``history`` snapshots, for tests, dashboards and rates.

    Args:
        history: how many snapshots to keep (at least 2, so that rates can be computed).

    Raises:
        LaneConfigError: ``history`` is not an integer >= 2.
    """

    def __init__(self, history: int = 2) -> None:
        self._snapshots = collections.deque[MetricsSnapshot](
            maxlen=_check_int("InMemoryBackend", "history", history, 2)
        )

    def update(self, snapshot: MetricsSnapshot) -> None:
        """Keep ``snapshot``; the oldest one kept is dropped past ``history``."""
        self._snapshots.append(snapshot)

    @property
    def snapshots(self) -> tuple[MetricsSnapshot, ...]:
        """The snapshots kept, oldest first."""
        return tuple(self._snapshots)

    @property
    def latest(self) -> MetricsSnapshot | None:
        """The newest snapshot, or None before the first."""
        return self._snapshots[-1] if self._snapshots else None

    def rate(self, counter: str, lane: str) -> float:
        """Per-second increase of ``counter`` in ``lane`` between the last two snapshots.

        A counter that went down (the system restarted) counts from zero, as Prometheus's
        ``rate()`` does. NaN until two snapshots with different timestamps are kept.

        Raises:
            KeyError: no such counter or lane.
        """
        if len(self._snapshots) < 2:
            return math.nan
        before, after = self._snapshots[-2], self._snapshots[-1]
        seconds = after.timestamp - before.timestamp
        new, old = after.counters[counter][lane], before.counters[counter][lane]
        if seconds <= 0:
            return math.nan
        return (new - old if new >= old else new) / seconds


async def export_metrics(
    system: LaneSystem,
    *backends: MetricsBackend,
    interval: float = 1.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Feed a snapshot of ``system`` to every backend now and every ``interval`` seconds.

    Run it in a nursery (``await nursery.start(export_metrics, system, backend)``); it runs
    until cancelled and wakes only once per interval. Cancellation leaves nothing behind:
    each backend has received every snapshot taken so far.

    Raises:
        LaneConfigError: ``interval`` is not a finite number > 0.
    """
    period = _check_positive("export_metrics", "interval", interval)
    started = False
    async for _ in periodic(period):
        snapshot = system.metrics.snapshot()
        for backend in backends:
            backend.update(snapshot)
        if not started:  # the first snapshot is delivered before start() returns
            task_status.started()
            started = True
