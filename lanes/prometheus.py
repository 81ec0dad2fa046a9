"""Prometheus export: one exposition for every lane system of a process, and its HTTP endpoint.

Needs the ``prometheus`` extra (prometheus_client and hypercorn:
``pip install 'trio-lanes[prometheus]'``, or
``pip install -e '.[prometheus]'`` in a checkout).

.. code-block:: python

    collector = lanes.prometheus.LaneCollector()  # once per process
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lanes.prometheus.serve_metrics, collector, 9464)
        ...
        async with lanes.open_lane_system() as system:  # one per session, thousands
            collector.add(system)  # it leaves the exposition when it closes

``serve_metrics(system, port)`` with a single system still works (a collector of one).

Metric names (every lane series has a ``lane`` label; with ``max_system_labels`` also a
``system`` label, see :class:`LaneCollector`):

- ``lanes_commands_submitted_total`` (counter): commands accepted.
- ``lanes_commands_total`` (counter): commands finished, by ``outcome``: completed, failed
  (dead-lettered) or cancelled.
- ``lanes_retries_total``, ``lanes_attempts_timed_out_total``, ``lanes_preemptions_total``,
  ``lanes_dead_letters_total`` (counters): attempts retried, attempts that hit their timeout,
  running commands preempted (requeued), commands recorded as dead letters.
- ``lanes_queue_depth``, ``lanes_active`` (gauges): commands pending, commands running.
- ``lanes_effective_priority`` (gauge): the priority after boosting (the most urgent over
  systems); ``lanes_priority``: the configured one (lower: more urgent);
  ``lanes_max_concurrency``: the lane's limit, summed over open systems.
- ``lanes_alert_level`` (gauge, by ``metric``): 0 ok, 1 warning, 2 critical.
- ``lanes_wait_duration_seconds``, ``lanes_command_duration_seconds`` (summaries): time
  pending before each attempt started, run time of each attempt.
- ``lanes_systems`` (gauge): open lane systems in the exposition;
  ``lanes_systems_over_label_limit`` (gauge, only with system labels): open systems given a
  label that were exported as ``other`` because the cap was reached.
- ``lanes_shared_limit_max_concurrency``, ``lanes_shared_limit_in_use``,
  ``lanes_shared_limit_waiting``, ``lanes_shared_limit_members`` (gauges, by ``limit``): a
  :class:`~lanes.SharedLimit`'s slots, slots held (running plus granted), member lanes
  waiting, member lanes of open systems; ``lanes_shared_limit_grants_total`` (counter):
  slots granted to waiting members.
- Per holder (``limit`` and ``lane``): ``lanes_shared_limit_held`` (gauge, slots held),
  ``lanes_shared_limit_holders_waiting`` (gauge, members waiting) and
  ``lanes_shared_limit_wait_duration_seconds`` (summary, how long the holder's commands
  were pending before each attempt started).

The latency families are *summaries* (``quantile`` 0.5, 0.9, 0.95, 0.99, plus ``_sum`` and
``_count``), not Prometheus histograms: the lane system's sketch already knows each quantile
to within 1.6% (merged over systems, exactly as if one sketch had seen every sample), while
any fixed set of ``le`` buckets small enough to scrape would blur them to a bucket's width.
``_sum`` and ``_count`` still aggregate across processes (mean latency); quantiles do not.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio

try:
    from prometheus_client.exposition import choose_encoder, generate_latest
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector, CollectorRegistry
    from prometheus_client.utils import floatToGoString
except ImportError as error:  # pragma: no cover - depends on the environment
    from ._extras import missing_extra

    msg = missing_extra("lanes.prometheus", "prometheus_client", "prometheus")
    raise ModuleNotFoundError(msg, name=error.name) from error
try:
    from hypercorn.config import Config
    from hypercorn.trio import serve
except ImportError as error:  # pragma: no cover - depends on the environment
    from ._extras import missing_extra

    msg = missing_extra("lanes.prometheus", "hypercorn", "prometheus")
    raise ModuleNotFoundError(msg, name=error.name) from error

from ._aggregate import Aggregator, LaneTotals, Totals
from ._config import LaneConfig
from ._errors import LaneConfigError
from ._histogram import Histogram, HistogramSnapshot
from ._metrics import MetricsSnapshot
from ._stats import COUNTERS
from ._user_metrics import UserMetricSnapshot, UserTotals

if TYPE_CHECKING:
    from ._alerts import AlertMonitor
    from ._system import LaneSystem

__all__ = ["LaneCollector", "MetricsServer", "PrometheusBackend", "serve_metrics"]

QUANTILES = (("0.5", "p50"), ("0.9", "p90"), ("0.95", "p95"), ("0.99", "p99"))
# MetricsSnapshot counter -> (family, help, extra labels)
_COUNTERS = {
    "submitted": ("lanes_commands_submitted", "Commands accepted.", {}),
    "completed": ("lanes_commands", "Commands finished, by outcome.", {"outcome": "completed"}),
    "failed": ("lanes_commands", "Commands finished, by outcome.", {"outcome": "failed"}),
    "cancelled": ("lanes_commands", "Commands finished, by outcome.", {"outcome": "cancelled"}),
    "retried": ("lanes_retries", "Attempts that failed and were retried.", {}),
    "timed_out": ("lanes_attempts_timed_out", "Attempts that hit their timeout.", {}),
    "preempted": ("lanes_preemptions", "Running commands preempted and requeued.", {}),
    "dead_lettered": ("lanes_dead_letters", "Commands recorded as dead letters.", {}),
}
_GAUGES = {
    "pending": ("lanes_queue_depth", "Commands pending."),
    "active": ("lanes_active", "Commands running."),
    "effective_priority": ("lanes_effective_priority", "Priority after boosting."),
}
_SUMMARIES = {
    "wait_seconds": ("lanes_wait_duration_seconds", "Time pending before each attempt."),
    "run_seconds": ("lanes_command_duration_seconds", "Run time of each attempt."),
}
ALERT_LEVELS = {"ok": 0, "warning": 1, "critical": 2}
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request head (or stay idle)
MAX_HEAD = 16 * 1024  # bytes of request line and headers


class PrometheusBackend:
    """A ``prometheus_client`` collector of one lane system's metrics; a ``MetricsBackend``.

    Register it in a ``CollectorRegistry``; each scrape calls ``source()`` for a fresh
    snapshot (or, without a source, serves the last snapshot given to :meth:`update`).
    A snapshot reads the Trio clock, so scrape with a source from the system's Trio
    thread (as :func:`serve_metrics` does); to serve from another thread, leave out the
    source and feed the backend with ``lanes.export_metrics``.

    Args:
        source: returns a snapshot, usually ``system.metrics.snapshot``.
        lanes: lane configurations, exported as ``lanes_priority`` and
            ``lanes_max_concurrency``.
        alerts: an alert monitor whose levels are exported as ``lanes_alert_level``.
    """

    def __init__(
        self,
        source: Callable[[], MetricsSnapshot] | None = None,
        *,
        lanes: Iterable[LaneConfig] = (),
        alerts: AlertMonitor | None = None,
    ) -> None:
        self._source = source
        self._configs = tuple(lanes)
        self._alerts = alerts
        self._latest: MetricsSnapshot | None = None

    @classmethod
    def for_system(
        cls, system: LaneSystem, *, alerts: AlertMonitor | None = None
    ) -> PrometheusBackend:
        """A backend that snapshots ``system`` at every scrape."""
        return cls(system.metrics.snapshot, lanes=system.lanes, alerts=alerts)

    def update(self, snapshot: MetricsSnapshot) -> None:
        """Serve ``snapshot`` until the next one (used when there is no ``source``)."""
        self._latest = snapshot

    def describe(self) -> list[Metric]:
        """The family names, without taking a snapshot: a registry refuses a second lanes
        collector (its series would be duplicates)."""
        return _describe(labelled=False)

    def collect(self) -> Iterator[Metric]:
        """The metric families of a fresh snapshot (called by the registry at each scrape)."""
        if self._source is not None:
            self.update(self._source())
        yield from self._config_families()
        if self._alerts is not None:
            yield _alert_family(self._alerts)
        if self._latest is not None:
            yield from _snapshot_families(self._latest)

    def _config_families(self) -> Iterator[Metric]:
        if not self._configs:
            return
        priority = GaugeMetricFamily("lanes_priority", "Configured priority.", labels=["lane"])
        limit = GaugeMetricFamily("lanes_max_concurrency", "Concurrency limit.", labels=["lane"])
        for config in self._configs:
            priority.add_metric([config.name], config.priority)
            limit.add_metric([config.name], config.max_concurrency)
        yield priority
        yield limit


def _snapshot_families(snapshot: MetricsSnapshot) -> Iterator[Metric]:
    counters: dict[str, CounterMetricFamily] = {}
    for name, (family, text, extra) in _COUNTERS.items():
        metric = counters.get(family)
        if metric is None:
            labels = ["lane", *extra]
            metric = counters[family] = CounterMetricFamily(family, text, labels=labels)
        for lane, value in snapshot.counters[name].items():
            metric.add_metric([lane, *extra.values()], value)
    yield from counters.values()
    for name, (family, text) in _GAUGES.items():
        gauge = GaugeMetricFamily(family, text, labels=["lane"])
        for lane, number in snapshot.gauges[name].items():
            gauge.add_metric([lane], number)
        yield gauge
    for name, (family, text) in _SUMMARIES.items():
        yield _summary(family, text, snapshot.histograms[name])
    yield from _user_families(snapshot.user.values())


def _user_families(metrics: Iterable[UserMetricSnapshot]) -> Iterator[Metric]:
    """One system's metrics of its own: counters, gauges, and histograms as summaries."""
    for metric in metrics:
        labels = list(metric.labels)
        if metric.kind == "histogram":
            rows = [(list(s.labels), s.histogram) for s in metric.series if s.histogram is not None]
            yield _snapshot_summary(metric.name, metric.description, labels, rows)
            continue
        family = _user_family(metric.kind, metric.name, metric.description, labels)
        for series in metric.series:
            family.add_metric(list(series.labels), series.value)
        yield family


def _user_family(
    kind: str, name: str, text: str, labels: list[str]
) -> CounterMetricFamily | GaugeMetricFamily:
    if kind == "counter":
        return CounterMetricFamily(name, text, labels=labels)
    return GaugeMetricFamily(name, text, labels=labels)


def _snapshot_summary(
    family: str, text: str, names: list[str], rows: list[tuple[list[str], HistogramSnapshot]]
) -> Metric:
    metric = Metric(family, text, "summary")
    for values, h in rows:
        labels = dict(zip(names, values, strict=True))
        for quantile, field in QUANTILES:
            value = getattr(h, field) if h.count else math.nan
            metric.add_sample(family, {**labels, "quantile": quantile}, value)
        metric.add_sample(f"{family}_sum", labels, h.sum)
        metric.add_sample(f"{family}_count", labels, h.count)
    return metric


def _user_total_families(user: Mapping[str, UserTotals], extra: list[str]) -> Iterator[Metric]:
    """Every system's metrics of their own, summed (system label last, if on)."""
    for name, totals in sorted(user.items()):
        if set(extra) & set(totals.labels):
            continue  # a label named like the system label: it cannot be told apart
        names = [*totals.labels, *extra]
        if totals.kind == "histogram":
            rows = [(_label_values(k, extra), h) for k, h in sorted(totals.sketches.items())]
            yield _merged_summary(name, totals.description, rows, names)
            continue
        family = _user_family(totals.kind, name, totals.description, names)
        for key, number in sorted(totals.values.items()):
            family.add_metric(_label_values(key, extra), number)
        yield family


def _summary(family: str, text: str, histograms: Mapping[str, HistogramSnapshot]) -> Metric:
    """A summary family; quantiles of a lane with no samples are NaN (as Prometheus does)."""
    metric = Metric(family, text, "summary")
    for lane, h in histograms.items():
        for quantile, field in QUANTILES:
            value = getattr(h, field) if h.count else math.nan
            metric.add_sample(family, {"lane": lane, "quantile": quantile}, value)
        metric.add_sample(f"{family}_sum", {"lane": lane}, h.sum)
        metric.add_sample(f"{family}_count", {"lane": lane}, h.count)
    return metric


def _alert_family(monitor: AlertMonitor) -> Metric:
    gauge = GaugeMetricFamily(
        "lanes_alert_level", "Alert level: 0 ok, 1 warning, 2 critical.", labels=["lane", "metric"]
    )
    for (lane, metric), level in monitor.levels.items():
        gauge.add_metric([lane, metric], ALERT_LEVELS[level])
    return gauge


# -- many systems: one exposition --------------------------------------------------------------


class LaneCollector:
    """One ``prometheus_client`` collector for every lane system of a process.

    Make one per process, serve it (``nursery.start(serve_metrics, collector, port)`` or
    register it in your own registry), and :meth:`add` each lane system as it opens. Every
    scrape sums the systems' series per lane name: counters and gauges are added up,
    latency sketches merged, ``lanes_effective_priority`` and ``lanes_priority`` are the
    most urgent. Nothing is done per command and nothing runs between scrapes; a scrape
    reads each open system once, in the Trio thread (tens of microseconds per system).

    A system leaves the exposition when it closes (its ``async with`` block ends, however
    it ends); its final counts and latencies stay in the totals of the series it was part
    of, so those counters never go down.

    System labels are off by default. With ``max_system_labels=N``, every lane series gets
    a ``label_name`` label: the first ``N`` open systems added with ``label=`` get their
    own value, every other system (added without a label, or once ``N`` labelled systems
    are open) is exported under ``other``, and a warning is logged (logger ``"lanes"``) the
    first time the cap turns a label away (``lanes_systems_over_label_limit`` counts those
    systems). So the cardinality is at most ``N + 1`` values per lane series, whatever the
    number of sessions. When a labelled system closes its series leave with it (use
    ``sum(rate(...))`` for totals over labels); a label freed that way goes to the next
    system added. The counts of closed systems of ``other`` stay in ``other``.

    The collector belongs to the ``trio.run`` of its systems: scrape from that thread
    (:func:`serve_metrics` does); a scrape from another thread raises
    :class:`~lanes.LaneUsageError`.

    Args:
        max_system_labels: how many open systems may carry a label of their own (0: none,
            every series summed over all systems).
        label_name: the label's name (default ``"system"``).

    Raises:
        LaneConfigError: ``max_system_labels`` is not an integer >= 0, or ``label_name``
            is not a Prometheus label name (or is one the lane series use already).
    """

    def __init__(self, *, max_system_labels: int = 0, label_name: str = "system") -> None:
        self._systems = Aggregator(max_system_labels, label_name)

    def add(self, system: LaneSystem, *, label: str | None = None) -> None:
        """Export ``system`` until it closes (or until :meth:`remove`).

        Args:
            system: an open local lane system.
            label: its value of the system label (only with ``max_system_labels``); None
                exports it under ``other`` (with labels) or in the sums (without).

        Raises:
            LaneConfigError: ``label`` is given without ``max_system_labels``, is not a
                non-empty string, is ``"other"``, or is held by another open system; or the
                system uses a ``SharedLimit`` named like a different one already exported.
            LaneUsageError: ``system`` is not a local lane system, is closed, was already
                added, or runs in another ``trio.run`` than the systems added before.
        """
        self._systems.add(system, label)

    def remove(self, system: LaneSystem) -> None:
        """Stop exporting ``system`` now, as if it had closed (a no-op if not added)."""
        self._systems.remove(system)

    def __len__(self) -> int:
        """How many systems are exported (open and added)."""
        return len(self._systems)

    def describe(self) -> list[Metric]:
        """The family names, without reading any system (for duplicate checks)."""
        return _describe(labelled=self._systems.labelled)

    def collect(self) -> Iterator[Metric]:
        """The families of every added system, summed (called by the registry per scrape).

        Raises:
            LaneUsageError: called outside the ``trio.run`` of the systems.
        """
        systems = self._systems
        totals = systems.totals()
        extra = [systems.label_name] if systems.labelled else []
        yield from _total_families(totals, extra)
        yield from _user_total_families(totals.user, extra)
        yield _gauge("lanes_systems", "Open lane systems in the exposition.", totals.systems)
        if systems.labelled:
            text = "Open systems given a label that are exported as 'other' (the cap is full)."
            yield _gauge("lanes_systems_over_label_limit", text, totals.over_limit)


def _gauge(name: str, text: str, number: float) -> Metric:
    gauge = GaugeMetricFamily(name, text, labels=[])
    gauge.add_metric([], number)
    return gauge


def _describe(*, labelled: bool) -> list[Metric]:
    names = [(family, "counter") for family, _, _ in {v[0]: v for v in _COUNTERS.values()}.values()]
    names += [(family, "gauge") for family, _ in _GAUGES.values()]
    names += [("lanes_priority", "gauge"), ("lanes_max_concurrency", "gauge")]
    names += [(family, "summary") for family, _ in _SUMMARIES.values()]
    names += [("lanes_systems", "gauge")] + [("lanes_systems_over_label_limit", "gauge")] * labelled
    return [Metric(name, "", kind) for name, kind in names]


def _label_values(key: tuple[str, ...], extra: list[str]) -> list[str]:
    """Label values of a (label value, lane...) key: the label value goes last, if on."""
    value, *rest = key
    return [*rest, value] if extra else list(rest)


def _total_families(totals: Totals, extra: list[str]) -> Iterator[Metric]:
    lanes = sorted(totals.lanes.items(), key=lambda item: (item[0][1], item[0][0]))
    counters: dict[str, CounterMetricFamily] = {}
    for index, name in enumerate(COUNTERS):
        family, text, outcome = _COUNTERS[name]
        metric = counters.get(family)
        if metric is None:
            labels = ["lane", *outcome, *extra]
            metric = counters[family] = CounterMetricFamily(family, text, labels=labels)
        for (value, lane), lane_totals in lanes:
            labels = [lane, *outcome.values(), *([value] if extra else [])]
            metric.add_metric(labels, lane_totals.counters[index])
    yield from counters.values()
    yield from _lane_gauges(lanes, extra)
    for attribute, (family, text) in zip(("wait", "run"), _SUMMARIES.values(), strict=True):
        yield _merged_summary(
            family,
            text,
            ((_label_values(k, extra), getattr(t, attribute)) for k, t in lanes),
            ["lane", *extra],
        )
    yield from _shared_families(totals, extra)


def _lane_gauges(
    lanes: list[tuple[tuple[str, str], LaneTotals]], extra: list[str]
) -> Iterator[Metric]:
    fields: list[tuple[str, str, Callable[[LaneTotals], float]]] = [
        ("lanes_queue_depth", "Commands pending.", lambda t: t.pending),
        ("lanes_active", "Commands running.", lambda t: t.active),
        (
            "lanes_effective_priority",
            "Priority after boosting (the most urgent over systems).",
            lambda t: _first(t.effective_priority, t.priority),
        ),
        ("lanes_priority", "Configured priority.", lambda t: _first(t.priority)),
        (
            "lanes_max_concurrency",
            "Concurrency limit (summed over systems).",
            lambda t: t.max_concurrency,
        ),
    ]
    for family, text, read in fields:
        gauge = GaugeMetricFamily(family, text, labels=["lane", *extra])
        for key, lane_totals in lanes:
            gauge.add_metric(_label_values(key, extra), read(lane_totals))
        yield gauge


def _first(*numbers: int | None) -> float:
    return next((n for n in numbers if n is not None), math.nan)


def _merged_summary(
    family: str,
    text: str,
    rows: Iterable[tuple[list[str], Histogram]],
    names: list[str],
) -> Metric:
    metric = Metric(family, text, "summary")
    for values, histogram in rows:
        labels = dict(zip(names, values, strict=True))
        count = histogram.count
        quantiles = histogram.percentiles() if count else [math.nan] * len(QUANTILES)
        for (quantile, _), number in zip(QUANTILES, quantiles, strict=True):
            metric.add_sample(family, {**labels, "quantile": quantile}, number)
        metric.add_sample(f"{family}_sum", labels, histogram.sum)
        metric.add_sample(f"{family}_count", labels, count)
    return metric


def _shared_families(totals: Totals, extra: list[str]) -> Iterator[Metric]:
    if not totals.limits and not totals.holders:
        return
    by_limit = ["limit"]
    slots = GaugeMetricFamily(
        "lanes_shared_limit_max_concurrency", "Slots of a shared limit.", labels=by_limit
    )
    in_use = GaugeMetricFamily(
        "lanes_shared_limit_in_use", "Slots held: running plus granted.", labels=by_limit
    )
    waiting = GaugeMetricFamily(
        "lanes_shared_limit_waiting", "Member lanes waiting for a slot.", labels=by_limit
    )
    members = GaugeMetricFamily(
        "lanes_shared_limit_members", "Member lanes of open systems.", labels=by_limit
    )
    grants = CounterMetricFamily(
        "lanes_shared_limit_grants", "Slots granted to waiting members.", labels=by_limit
    )
    for stats in sorted(totals.limits, key=lambda s: s.name):
        if stats.max_concurrency is not None:
            slots.add_metric([stats.name], stats.max_concurrency)
        in_use.add_metric([stats.name], stats.in_use)
        waiting.add_metric([stats.name], stats.waiting)
        members.add_metric([stats.name], stats.members)
        grants.add_metric([stats.name], stats.granted)
    yield from (slots, in_use, waiting, members, grants)
    names = ["limit", "lane", *extra]
    holders = sorted(totals.holders.items(), key=lambda item: (item[0][0], item[0][2], item[0][1]))
    held = GaugeMetricFamily("lanes_shared_limit_held", "Slots held by a holder.", labels=names)
    queued = GaugeMetricFamily(
        "lanes_shared_limit_holders_waiting", "A holder's members waiting.", labels=names
    )
    rows: list[tuple[list[str], Histogram]] = []
    for (limit, value, lane), holder in holders:
        values = [limit, *_label_values((value, lane), extra)]
        held.add_metric(values, holder.held)
        queued.add_metric(values, holder.waiting)
        rows.append((values, holder.wait))
    yield from (held, queued)
    text = "Time a holder's commands were pending before each attempt started."
    yield _merged_summary("lanes_shared_limit_wait_duration_seconds", text, rows, names)


class _AlertCollector:
    """An alert monitor's levels, as ``lanes_alert_level``."""

    def __init__(self, monitor: AlertMonitor) -> None:
        self._monitor = monitor

    def describe(self) -> list[Metric]:
        return [Metric("lanes_alert_level", "", "gauge")]

    def collect(self) -> Iterator[Metric]:
        yield _alert_family(self._monitor)


# -- the HTTP endpoint -----------------------------------------------------------------------


@attrs.frozen
class MetricsServer:
    """Where a running :func:`serve_metrics` listens (``port`` is the bound port)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """The scrape URL, like ``http://127.0.0.1:9464/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"


async def serve_metrics(
    system: LaneSystem | LaneCollector,
    port: int,
    host: str = "127.0.0.1",
    *,
    alerts: AlertMonitor | None = None,
    registry: CollectorRegistry | None = None,
    task_status: trio.TaskStatus[MetricsServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /metrics`` for a lane system, or a :class:`LaneCollector` of many, over
    HTTP/1.1 (hypercorn's Trio worker) until cancelled.

    Run it in a nursery: ``server = await nursery.start(serve_metrics, collector, 9464)``
    returns a :class:`MetricsServer` once the socket listens (pass port 0 for a free port and
    read ``server.port``). Each scrape reads the systems afresh, in this Trio thread. Every
    connection is closed after one response, or after 10 seconds without a request; a
    request that is not HTTP/1.1 gets 400. Cancelling ``serve_metrics`` closes the listening
    socket and every open connection, leaving no task behind.

    Args:
        system: a :class:`LaneCollector` (one exposition for every system added to it), or
            one lane system (served as a collector of that system alone).
        port: TCP port, 0 to 65535 (0: any free port).
        host: address to bind; the default keeps the endpoint local to this machine.
        alerts: also export this alert monitor's levels (``lanes_alert_level``).
        registry: a registry to add the lane metrics to (to serve your own metrics next
            to them); by default a new one. The collector is removed again on exit.

    Raises:
        LaneConfigError: ``port`` or ``host`` is invalid.
        LaneUsageError: ``system`` is neither a local lane system nor a collector.
        ValueError: ``registry`` already holds a lanes collector (the series would be
            duplicates): serve that registry, or one collector of every system.
        OSError: the address cannot be bound (in use, or not local).
    """
    port = _check_port(port)
    if not isinstance(host, str) or not host:
        msg = f"serve_metrics: host={host!r} is invalid; expected an address like '127.0.0.1'"
        raise LaneConfigError(msg)
    own = registry is None  # only lanes collectors in it: the fast text encoder may serve it
    registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
    if isinstance(system, LaneCollector):
        collector = system
    else:
        collector = LaneCollector()
        collector.add(system)
    registry.register(collector)
    alert_collector = None if alerts is None else _AlertCollector(alerts)
    if alert_collector is not None:
        registry.register(alert_collector)
    try:
        await _serve(_MetricsApp(registry, fast=own), _server_config(host, port), task_status)
    finally:
        registry.unregister(collector)
        if alert_collector is not None:
            registry.unregister(alert_collector)


def _server_config(host: str, port: int) -> Config:
    """Hypercorn's settings: one answer per connection, a client has 10 s to ask."""
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("lanes.prometheus")
    config.keep_alive_timeout = REQUEST_TIMEOUT  # also the time to send the request head
    config.h11_max_incomplete_size = MAX_HEAD
    config.include_server_header = False
    config.graceful_timeout = 0.0  # cancelled: every connection is closed at once
    return config


async def _serve(
    app: _MetricsApp, config: Config, task_status: trio.TaskStatus[MetricsServer]
) -> None:
    """Run hypercorn's Trio worker; an address that cannot be bound raises its ``OSError``."""
    host = config.bind[0].rsplit(":", 1)[0].strip("[]")
    try:
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(serve, cast("Any", app), config)
            task_status.started(MetricsServer(host, int(binds[0].rsplit(":", 1)[1])))
    except BaseExceptionGroup as group:  # the bind fails inside hypercorn's nurseries
        error = _only_oserror(group)
        if error is None:
            raise
        raise error from None


def _only_oserror(group: BaseExceptionGroup[BaseException]) -> OSError | None:
    errors = group.exceptions
    while len(errors) == 1 and isinstance(errors[0], BaseExceptionGroup):
        errors = errors[0].exceptions
    return errors[0] if len(errors) == 1 and isinstance(errors[0], OSError) else None


def _check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        msg = (
            f"serve_metrics: port={port!r} is invalid; expected an integer from 0 to 65535 "
            "(0: any free port)"
        )
        raise LaneConfigError(msg)
    return port


class _MetricsApp:
    """The ASGI application behind :func:`serve_metrics`: ``GET`` and ``HEAD`` of ``/metrics``.

    Other paths get 404, other methods 405 (with ``Allow``), a collector that raises 500
    (with the error), and every answer says ``Connection: close``. A scrape encodes the
    registry in the Trio thread of the lane systems, as the collectors require.
    """

    def __init__(self, registry: CollectorRegistry, *, fast: bool) -> None:
        self._registry = registry
        self._fast = fast  # only lanes collectors in the registry: the fast text encoder

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            status, headers, body = self._answer(scope)
            headers = [*headers, (b"content-length", b"%d" % len(body)), (b"connection", b"close")]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            head_only = scope["method"] == "HEAD"
            await send({"type": "http.response.body", "body": b"" if head_only else body})
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # refuse the handshake

    def _answer(self, scope: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            return 405, [_TEXT, (b"allow", b"GET, HEAD")], b"only GET and HEAD\n"
        if scope["path"] != "/metrics":
            return 404, [_TEXT], b"the metrics are at /metrics\n"
        accept = b",".join(v for k, v in scope["headers"] if k == b"accept").decode("latin-1")
        encoder, content_type = choose_encoder(accept)
        if self._fast and encoder is generate_latest:
            encoder = _encode_text
        try:
            body = encoder(self._registry)
        except Exception as error:  # a broken collector: say so, keep serving
            return 500, [_TEXT], f"{error!r}\n".encode()
        return 200, [(b"content-type", content_type.encode("latin-1"))], body


_TEXT = (b"content-type", b"text/plain; charset=utf-8")


async def _lifespan(
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """Nothing to start or stop: acknowledge hypercorn's lifespan messages."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _encode_text(registry: Collector) -> bytes:
    """The Prometheus text format (0.0.4) of ``registry``, as ``generate_latest`` writes it.

    For registries holding only the lanes collectors, whose families have valid names, no
    timestamps and no OpenMetrics-only samples: it skips ``generate_latest``'s per-sample
    name validation and escaping, which costs most of a large scrape (several times the
    time of this loop). The output is byte for byte the same (tested).
    """
    out: list[str] = []
    add = out.append
    for metric in registry.collect():
        name = f"{metric.name}_total" if metric.type == "counter" else metric.name
        text = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        add(f"# HELP {name} {text}\n# TYPE {name} {metric.type}\n")
        for sample in metric.samples:
            labels = sample.labels
            if labels:
                pairs = ",".join(f'{k}="{_escape_value(v)}"' for k, v in sorted(labels.items()))
                add(f"{sample.name}{{{pairs}}} {_go_float(sample.value)}\n")
            else:
                add(f"{sample.name} {_go_float(sample.value)}\n")
    return "".join(out).encode()


_go_float = cast("Callable[[float], str]", floatToGoString)  # Go's float format, as the library


def _escape_value(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value
