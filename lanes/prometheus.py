"""Prometheus export: a ``prometheus_client`` collector and an HTTP ``/metrics`` endpoint.

Needs the ``prometheus`` extra (``pip install 'trio-lanes[prometheus]'``, or
``pip install -e '.[prometheus]'`` in a checkout).

.. code-block:: python

    async with lanes.open_lane_system() as system, trio.open_nursery() as nursery:
        server = await nursery.start(lanes.prometheus.serve_metrics, system, 9464)
        print("scrape", server.url)

Metric names (every one has a ``lane`` label):

=====================================  =========  ==============================================
``lanes_commands_submitted_total``     counter    commands accepted
``lanes_commands_total``               counter    commands finished, by ``outcome``: completed,
                                                  failed (dead-lettered) or cancelled
``lanes_retries_total``                counter    attempts that failed and were retried
``lanes_attempts_timed_out_total``     counter    attempts that hit their timeout
``lanes_preemptions_total``            counter    running commands preempted (requeued)
``lanes_dead_letters_total``           counter    commands recorded as dead letters
``lanes_queue_depth``                  gauge      commands pending
``lanes_active``                       gauge      commands running
``lanes_effective_priority``           gauge      the lane's priority after boosting
``lanes_priority``                     gauge      the configured priority (lower: more urgent)
``lanes_max_concurrency``              gauge      the lane's concurrency limit
``lanes_alert_level``                  gauge      0 ok, 1 warning, 2 critical, by ``metric``
``lanes_wait_duration_seconds``        summary    time pending before each attempt started
``lanes_command_duration_seconds``     summary    run time of each attempt
=====================================  =========  ==============================================

The two latency families are *summaries* (``quantile`` 0.5, 0.9, 0.95, 0.99, plus ``_sum``
and ``_count``), not Prometheus histograms: the lane system's sketch already knows each
quantile to within 1.6%, while any fixed set of ``le`` buckets small enough to scrape would
blur them to a bucket's width. ``_sum`` and ``_count`` still aggregate across lanes and
processes (mean latency); quantiles do not.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

import attrs
import trio

try:
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        Metric,
    )
    from prometheus_client.registry import CollectorRegistry
except ImportError as error:  # pragma: no cover - depends on the environment
    from ._extras import missing_extra

    msg = missing_extra("lanes.prometheus", "prometheus_client", "prometheus")
    raise ModuleNotFoundError(msg, name=error.name) from error

from ._config import LaneConfig
from ._errors import LaneConfigError
from ._histogram import HistogramSnapshot
from ._metrics import MetricsSnapshot

if TYPE_CHECKING:
    from ._alerts import AlertMonitor
    from ._system import LaneSystem

__all__ = ["MetricsServer", "PrometheusBackend", "serve_metrics"]

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
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request head
MAX_HEAD = 16 * 1024


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
        """Nothing: registering must not take a snapshot (names are fixed and prefixed)."""
        return []

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
    system: LaneSystem,
    port: int,
    host: str = "127.0.0.1",
    *,
    alerts: AlertMonitor | None = None,
    registry: CollectorRegistry | None = None,
    task_status: trio.TaskStatus[MetricsServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /metrics`` for ``system`` over HTTP/1.1 until cancelled.

    Run it in a nursery: ``server = await nursery.start(serve_metrics, system, 9464)``
    returns a :class:`MetricsServer` once the socket listens (pass port 0 for a free port and
    read ``server.port``). Each scrape takes a fresh snapshot. Every connection is handled
    in its own task and closed after one response; cancelling ``serve_metrics`` closes the
    listening socket and every open connection, leaving no task behind.

    Args:
        system: the lane system to export.
        port: TCP port, 0 to 65535 (0: any free port).
        host: address to bind; the default keeps the endpoint local to this machine.
        alerts: also export this alert monitor's levels (``lanes_alert_level``).
        registry: a registry to add the lane metrics to (to serve your own metrics next
            to them); by default a new one. The collector is removed again on exit.

    Raises:
        LaneConfigError: ``port`` or ``host`` is invalid.
        OSError: the address cannot be bound (in use, or not local).
    """
    port = _check_port(port)
    if not isinstance(host, str) or not host:
        msg = f"serve_metrics: host={host!r} is invalid; expected an address like '127.0.0.1'"
        raise LaneConfigError(msg)
    registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
    backend = PrometheusBackend.for_system(system, alerts=alerts)
    registry.register(backend)
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        task_status.started(MetricsServer(host, bound))
        await trio.serve_listeners(functools.partial(_handle, registry=registry), listeners)
    finally:
        registry.unregister(backend)


def _check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        msg = (
            f"serve_metrics: port={port!r} is invalid; expected an integer from 0 to 65535 "
            "(0: any free port)"
        )
        raise LaneConfigError(msg)
    return port


async def _handle(stream: trio.SocketStream, *, registry: CollectorRegistry) -> None:
    """Answer one request on ``stream`` (closed by ``serve_tcp`` afterwards)."""
    try:
        head = b""
        with trio.move_on_after(REQUEST_TIMEOUT):
            head = await _read_head(stream)
        if head:
            await stream.send_all(_respond(head, registry))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client went away; nothing to answer


async def _read_head(stream: trio.SocketStream) -> bytes:
    """The request line and headers, or b"" if the client closed first or sent too much."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk or len(data) > MAX_HEAD:
            return b""
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0]


def _respond(head: bytes, registry: CollectorRegistry) -> bytes:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return _response(400, "Bad Request", b"malformed request line\n")
    method, target, _ = parts
    if method not in ("GET", "HEAD"):
        return _response(405, "Method Not Allowed", b"only GET and HEAD\n", allow="GET, HEAD")
    if target.split("?", 1)[0] != "/metrics":
        return _response(404, "Not Found", b"the metrics are at /metrics\n")
    headers = dict(_header(line) for line in lines[1:] if ":" in line)
    encoder, content_type = choose_encoder(headers.get("accept", ""))
    try:
        body = encoder(registry)
    except Exception as error:  # a broken collector: say so, keep serving
        return _response(500, "Internal Server Error", f"{error!r}\n".encode())
    return _response(200, "OK", body, content_type=content_type, head_only=method == "HEAD")


def _header(line: str) -> tuple[str, str]:
    name, value = line.split(":", 1)
    return name.strip().lower(), value.strip()


def _response(
    code: int,
    reason: str,
    body: bytes,
    *,
    content_type: str = "text/plain; charset=utf-8",
    head_only: bool = False,
    allow: str = "",
) -> bytes:
    extra = f"Allow: {allow}\r\n" if allow else ""
    head = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + (b"" if head_only else body)
