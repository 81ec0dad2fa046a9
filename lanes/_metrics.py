"""Metrics of a lane system: counters, gauges and latency histograms per lane."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Protocol

import attrs
import trio

from ._histogram import Histogram, HistogramSnapshot
from ._policy import Policy
from ._stats import COUNTERS, LaneCounters

__all__ = ["RECENT_STARTS", "Metrics", "MetricsSnapshot", "Observed"]

RECENT_STARTS = 256  # how many of a lane's latest starts its recent wait figures cover


class Observed(Protocol):
    """What metrics read from the system they observe (its core)."""

    @property
    def configs(self) -> Mapping[str, object]:
        """The lanes, by name."""

    @property
    def policy(self) -> Policy:
        """The scheduling state (pending and active commands, priorities)."""

    @property
    def counters(self) -> Mapping[str, LaneCounters]:
        """Each lane's event counters."""


GAUGES = ("pending", "active", "effective_priority")
HISTOGRAMS = ("wait_seconds", "run_seconds")


@attrs.frozen
class MetricsSnapshot:
    """Metrics at one moment; every mapping is keyed by metric name, then lane name.

    Attributes:
        timestamp: Trio clock time of the snapshot.
        counters: ``submitted``, ``completed``, ``failed``, ``timed_out``, ``retried``,
            ``dead_lettered``, ``cancelled``, ``preempted``.
        gauges: ``pending``, ``active``, ``effective_priority``.
        histograms: ``wait_seconds`` (pending until an attempt starts) and ``run_seconds``
            (how long attempts ran), each with count, sum, min, max, p50/p90/p95/p99.
    """

    timestamp: float
    counters: Mapping[str, Mapping[str, int]]
    gauges: Mapping[str, Mapping[str, float]]
    histograms: Mapping[str, Mapping[str, HistogramSnapshot]]


class Metrics:
    """Records latencies on the hot path (cheaply) and builds snapshots on demand."""

    def __init__(self, core: Observed) -> None:
        self._core = core
        self.wait = {lane: Histogram() for lane in core.configs}
        self.run = {lane: Histogram() for lane in core.configs}
        # The waits of each lane's latest starts (a ring: one append per start).
        self.recent: dict[str, deque[float]] = {
            lane: deque(maxlen=RECENT_STARTS) for lane in core.configs
        }

    def recent_waits(self, lane: str) -> tuple[float | None, float | None]:
        """p50 and p99 (nearest rank) of the waits of ``lane``'s latest starts (None: none)."""
        waits = sorted(self.recent[lane])
        if not waits:
            return None, None
        n = len(waits)
        return waits[(n - 1) // 2], waits[max(0, math.ceil(n * 0.99) - 1)]

    def snapshot(self) -> MetricsSnapshot:
        """Counters, gauges and histograms of every lane, as of now."""
        core = self._core
        policy = core.policy
        now = trio.current_time()
        counters = {
            name: {lane: getattr(c, name) for lane, c in core.counters.items()} for name in COUNTERS
        }
        gauges: dict[str, dict[str, float]] = {
            "pending": {lane: s.pending for lane, s in policy.lanes.items()},
            "active": {lane: s.active for lane, s in policy.lanes.items()},
            "effective_priority": {
                lane: policy.effective_priority(lane, now) for lane in policy.lanes
            },
        }
        histograms = {
            "wait_seconds": {lane: h.snapshot() for lane, h in self.wait.items()},
            "run_seconds": {lane: h.snapshot() for lane, h in self.run.items()},
        }
        return MetricsSnapshot(now, counters, gauges, histograms)
