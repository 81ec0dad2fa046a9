"""Metrics of a lane system: counters, gauges and latency histograms per lane."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Protocol, cast

import attrs
import trio

from ._errors import LaneUsageError
from ._histogram import Histogram, HistogramSnapshot
from ._policy import LaneState, Policy
from ._stats import COUNTERS
from ._user_metrics import (
    CounterMetric,
    GaugeMetric,
    HistogramMetric,
    MetricKind,
    UserMetrics,
    UserMetricSnapshot,
    _Metric,
)

__all__ = ["RECENT_STARTS", "Metrics", "MetricsSnapshot", "Observed"]

RECENT_STARTS = 256  # how many of a lane's latest starts its recent wait figures cover


class _NoUserMetrics(UserMetrics):
    """What a system without metrics of your own reads: empty, and shared by every such
    system, so nothing may be registered into it."""

    def register(
        self, kind: MetricKind, name: object, description: object, labels: object
    ) -> _Metric:
        msg = (
            f"metrics.user.register({kind!r}, {name!r}, ...): register a metric of your own "
            f"through system.metrics.{kind}(name, ...); metrics.user is only read"
        )
        raise LaneUsageError(msg)


_NO_USER_METRICS = _NoUserMetrics()  # what a system without metrics of your own reads (empty)


class Observed(Protocol):
    """What metrics read from the system they observe (its core)."""

    @property
    def lanes(self) -> Mapping[str, LaneState]:
        """Each lane's record (counters, histograms, recent waits), by name."""

    @property
    def policy(self) -> Policy:
        """The scheduling state (pending and active commands, priorities)."""


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
        self._user: UserMetrics | None = None  # made when the first one is registered

    @property
    def wait(self) -> dict[str, Histogram]:
        """Each lane's wait histogram, by name (kept on the lane's record); a new dict."""
        return {name: state.wait for name, state in self._core.lanes.items()}

    @property
    def run(self) -> dict[str, Histogram]:
        """Each lane's run histogram, by name; a new dict."""
        return {name: state.run for name, state in self._core.lanes.items()}

    @property
    def user(self) -> UserMetrics:
        """The metrics of your own registered so far (read it; register through
        :meth:`counter`, :meth:`gauge` and :meth:`histogram`)."""
        return _NO_USER_METRICS if self._user is None else self._user

    def _registry(self) -> UserMetrics:
        if self._user is None:
            self._user = UserMetrics()
        return self._user

    def compact(self) -> None:
        """Fold every histogram's pending samples and trim the recent waits (an idle system
        gives their memory back)."""
        for state in self._core.lanes.values():
            state.wait.compact()
            state.run.compact()
            recent = state.recent
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
        return cast(CounterMetric, self._registry().register("counter", name, description, labels))

    def gauge(self, name: str, description: str = "", *, labels: Iterable[str] = ()) -> GaugeMetric:
        """A gauge of your own (``.set(value, **labels)``, ``.inc``, ``.dec``); see
        :meth:`counter`."""
        return cast(GaugeMetric, self._registry().register("gauge", name, description, labels))

    def histogram(
        self, name: str, description: str = "", *, labels: Iterable[str] = ()
    ) -> HistogramMetric:
        """A histogram of your own (``.observe(value, **labels)``, values >= 0), exported as
        a summary with p50/p90/p95/p99; as :meth:`counter`."""
        return cast(
            HistogramMetric, self._registry().register("histogram", name, description, labels)
        )

    def recent_waits(self, lane: str) -> tuple[float | None, float | None]:
        """p50 and p99 (nearest rank) of the waits of ``lane``'s latest starts (None: none)."""
        waits = sorted(self._core.lanes[lane].recent[-RECENT_STARTS:])
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
            name: {lane: getattr(s.counters, name) for lane, s in core.lanes.items()}
            for name in COUNTERS
        }
        gauges: dict[str, dict[str, float]] = {
            "pending": {lane: s.pending for lane, s in policy.lanes.items()},
            "active": {lane: s.active for lane, s in policy.lanes.items()},
            "effective_priority": {
                lane: policy.effective_priority(lane, now) for lane in policy.lanes
            },
        }
        histograms = {
            "wait_seconds": {lane: s.wait.snapshot() for lane, s in core.lanes.items()},
            "run_seconds": {lane: s.run.snapshot() for lane, s in core.lanes.items()},
        }
        return MetricsSnapshot(now, counters, gauges, histograms, self.user.snapshot())
