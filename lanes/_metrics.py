"""Metrics of a lane system: counters, gauges and latency histograms per lane."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping
from typing import Protocol, cast

import attrs
import trio

from ._histogram import Histogram, HistogramSnapshot
from ._policy import Policy
from ._stats import COUNTERS, LaneCounters
from ._user_metrics import (
    CounterMetric,
    GaugeMetric,
    HistogramMetric,
    UserMetrics,
    UserMetricSnapshot,
)

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
        user: the metrics of your own (``Metrics.counter`` and so on), by name.
    """

    timestamp: float
    counters: Mapping[str, Mapping[str, int]]
    gauges: Mapping[str, Mapping[str, float]]
    histograms: Mapping[str, Mapping[str, HistogramSnapshot]]
    user: Mapping[str, UserMetricSnapshot] = attrs.field(factory=dict)


class Metrics:
    """Records latencies on the hot path (cheaply) and builds snapshots on demand."""

    def __init__(self, core: Observed) -> None:
        self._core = core
        self.wait = {lane: Histogram() for lane in core.configs}
        self.run = {lane: Histogram() for lane in core.configs}
        # The waits of each lane's latest starts: one append per start (Core.begin), the
        # oldest half cut when it holds 2 * RECENT_STARTS (amortized O(1)). An array of
        # doubles holds 8 bytes a wait where a list holds a 32-byte float object, for each
        # lane of thousands of idle sessions; compact() trims it to RECENT_STARTS.
        self.recent: dict[str, array[float]] = {lane: array("d") for lane in core.configs}
        self.user = UserMetrics()

    def compact(self) -> None:
        """Fold every histogram's pending samples and trim the recent waits (an idle system
        gives their memory back)."""
        for histogram in self.wait.values():
            histogram.fold()
        for histogram in self.run.values():
            histogram.fold()
        for recent in self.recent.values():
            if len(recent) > RECENT_STARTS:
                del recent[:-RECENT_STARTS]

    def counter(
        self, name: str, description: str = "", *, labels: Iterable[str] = ()
    ) -> CounterMetric:
        """A counter of your own (``.inc(amount, **labels)``), in snapshots and Prometheus.

        Registering a name again with the same labels returns the same counter.

        Raises:
            LaneConfigError: a bad name (a Prometheus metric name, not starting with
                ``lanes_``) or label names, or a name already used by another kind or
                other labels.
        """
        return cast(CounterMetric, self.user.register("counter", name, description, labels))

    def gauge(self, name: str, description: str = "", *, labels: Iterable[str] = ()) -> GaugeMetric:
        """A gauge of your own (``.set(value, **labels)``, ``.inc``, ``.dec``); see
        :meth:`counter`."""
        return cast(GaugeMetric, self.user.register("gauge", name, description, labels))

    def histogram(
        self, name: str, description: str = "", *, labels: Iterable[str] = ()
    ) -> HistogramMetric:
        """A histogram of your own (``.observe(value, **labels)``, values >= 0), exported as
        a summary with p50/p90/p95/p99; as :meth:`counter`."""
        return cast(HistogramMetric, self.user.register("histogram", name, description, labels))

    def recent_waits(self, lane: str) -> tuple[float | None, float | None]:
        """p50 and p99 (nearest rank) of the waits of ``lane``'s latest starts (None: none)."""
        waits = sorted(self.recent[lane][-RECENT_STARTS:])
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
        return MetricsSnapshot(now, counters, gauges, histograms, self.user.snapshot())
