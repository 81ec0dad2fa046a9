"""``lanes top``: a live terminal view of a running lane system, read from its /metrics.

Needs the ``top`` extra (rich, prometheus_client and httpx). The system exports its
metrics with :func:`lanes.prometheus.serve_metrics`; ``lanes top URL`` scrapes that URL
every ``interval`` seconds and draws one row per lane: priority (configured, and effective
when boosted), pending, active, rate (commands finished per second between two scrapes),
wait p99, run p50/p99 and the alerts raised. ``--once`` prints a single frame and exits.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Iterable

import attrs
import trio

try:
    from prometheus_client.parser import text_string_to_metric_families
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text
except ImportError as error:  # pragma: no cover - depends on the environment
    from ._extras import missing_extra

    msg = missing_extra("lanes top", "rich and prometheus_client", "top")
    raise ModuleNotFoundError(msg, name=error.name) from error
try:
    import httpx
except ImportError as error:  # pragma: no cover - depends on the environment
    from ._extras import missing_extra

    msg = missing_extra("lanes top", "httpx", "top")
    raise ModuleNotFoundError(msg, name=error.name) from error

from ._checks import check_positive as _check_positive
from ._errors import LaneConfigError

__all__ = ["Frame", "LaneRow", "ScrapeError", "fetch_metrics", "parse_frame", "render", "run_top"]

DEFAULT_URL = "http://127.0.0.1:9464/metrics"
MAX_BODY = 16 * 1024 * 1024
LEVEL_NAMES = {1.0: "warning", 2.0: "critical"}
LEVEL_STYLES = {"warning": "yellow", "critical": "bold red"}


class ScrapeError(Exception):
    """The metrics endpoint could not be read (unreachable, not HTTP 200, or not metrics)."""


@attrs.frozen
class LaneRow:
    """What ``lanes top`` shows of one lane (NaN where the endpoint did not say)."""

    name: str
    priority: float = math.nan
    effective_priority: float = math.nan
    pending: float = 0.0
    active: float = 0.0
    finished: float = 0.0  # commands finished so far (completed, failed or cancelled)
    wait_p99: float = math.nan
    run_p50: float = math.nan
    run_p99: float = math.nan
    alerts: tuple[tuple[str, str], ...] = ()  # (metric, level) of each alert raised


@attrs.frozen
class Frame:
    """One scrape: when it was taken (Trio clock) and a row per lane, in export order."""

    timestamp: float
    lanes: dict[str, LaneRow]


def check_url(url: object) -> tuple[str, int, str]:
    """(host, port, path) of an ``http://`` URL; LaneConfigError naming it otherwise."""
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    try:
        port = parts.port if parts is not None else None
    except ValueError:
        port = None
    if parts is None or parts.scheme != "http" or not parts.hostname or port is None:
        msg = f"lanes top: url={url!r} is invalid; expected http://HOST:PORT/metrics"
        raise LaneConfigError(msg)
    return parts.hostname, port, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


async def fetch_metrics(url: str, *, timeout: float = 5.0) -> str:
    """GET ``url`` with httpx (HTTP/1.1, no proxy); return the body text.

    Cancellation leaves no connection open.

    Raises:
        LaneConfigError: ``url`` is not an ``http://host:port/...`` URL.
        ScrapeError: no answer within ``timeout``, a connection error, a status not 200, an
            answer larger than 16 MiB or not UTF-8 text.
    """
    check_url(url)
    async with _client() as client:
        return await _fetch(client, url, timeout)


def _client() -> httpx.AsyncClient:
    """A client for plain-HTTP scrapes: no proxy or netrc from the environment, no TLS."""
    return httpx.AsyncClient(trust_env=False, verify=False, headers={"Accept": "text/plain"})


async def _fetch(client: httpx.AsyncClient, url: str, timeout: float) -> str:
    try:
        with trio.fail_after(timeout):
            async with client.stream("GET", url, timeout=timeout) as answer:
                if answer.status_code != 200:
                    phrase = answer.reason_phrase or httpx.codes.get_reason_phrase(
                        answer.status_code
                    )
                    status = f"{answer.http_version} {answer.status_code} {phrase}"
                    raise ScrapeError(f"{url} answered {status!r}, not 200 OK")
                data = await _read_all(answer)
    except (trio.TooSlowError, httpx.TimeoutException) as error:
        raise ScrapeError(f"cannot read {url}: no answer within {timeout} s") from error
    except (OSError, httpx.TransportError) as error:
        raise ScrapeError(f"cannot read {url}: {error or type(error).__name__}") from error
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ScrapeError(f"{url} answered with text that is not UTF-8: {error}") from error


async def _read_all(answer: httpx.Response) -> bytes:
    chunks, size = [], 0
    async for chunk in answer.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            raise ScrapeError(f"the answer is larger than {MAX_BODY} bytes")
    return b"".join(chunks)


def parse_frame(text: str, timestamp: float) -> Frame:
    """The lane rows of a Prometheus text exposition (as served by ``serve_metrics``).

    Raises:
        ScrapeError: the text is not in the Prometheus format, or has no lane metrics.
    """
    fields: dict[str, dict[str, float]] = {}
    alerts: dict[str, list[tuple[str, str]]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                lane = sample.labels.get("lane")
                if lane is None:
                    continue
                row = fields.setdefault(lane, {})
                _take(sample.name, sample.labels, sample.value, row, alerts.setdefault(lane, []))
    except ValueError as error:
        raise ScrapeError(f"not Prometheus metrics: {error}") from error
    if not fields:
        raise ScrapeError("no lanes_* metrics with a lane label in the answer")
    rows = {
        lane: LaneRow(lane, alerts=tuple(sorted(alerts.get(lane, ()))), **values)
        for lane, values in fields.items()
    }
    return Frame(timestamp, rows)


_SIMPLE = {
    "lanes_priority": "priority",
    "lanes_effective_priority": "effective_priority",
    "lanes_queue_depth": "pending",
    "lanes_active": "active",
}
_QUANTILES = {
    ("lanes_wait_duration_seconds", "0.99"): "wait_p99",
    ("lanes_command_duration_seconds", "0.5"): "run_p50",
    ("lanes_command_duration_seconds", "0.99"): "run_p99",
}


def _take(
    name: str,
    labels: dict[str, str],
    value: float,
    row: dict[str, float],
    alerts: list[tuple[str, str]],
) -> None:
    if name in _SIMPLE:
        row[_SIMPLE[name]] = value
    elif name == "lanes_commands_total":
        row["finished"] = row.get("finished", 0.0) + value
    elif (name, labels.get("quantile", "")) in _QUANTILES:
        row[_QUANTILES[name, labels["quantile"]]] = value
    elif name == "lanes_alert_level" and value in LEVEL_NAMES:
        alerts.append((labels.get("metric", "?"), LEVEL_NAMES[value]))


def render(frame: Frame, previous: Frame | None = None, *, title: str = "lanes top") -> Table:
    """The table of one frame; rates need the ``previous`` frame (else they show "-")."""
    table = Table(title=title, title_justify="left")
    for header in ("lane", "prio", "pending", "active", "rate/s", "wait p99", "p50", "p99"):
        table.add_column(header, justify="left" if header == "lane" else "right")
    table.add_column("alerts", overflow="fold")
    for row in frame.lanes.values():
        table.add_row(
            row.name,
            _priority(row),
            _count(row.pending),
            _count(row.active),
            _rate(row, frame, previous),
            _seconds(row.wait_p99),
            _seconds(row.run_p50),
            _seconds(row.run_p99),
            _alerts(row.alerts),
        )
    return table


def _priority(row: LaneRow) -> str:
    if math.isnan(row.priority):
        return _count(row.effective_priority)
    if math.isnan(row.effective_priority) or row.effective_priority == row.priority:
        return _count(row.priority)
    return f"{_count(row.priority)}→{_count(row.effective_priority)}"  # boosted


def _count(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def _rate(row: LaneRow, frame: Frame, previous: Frame | None) -> str:
    before = None if previous is None else previous.lanes.get(row.name)
    seconds = 0.0 if previous is None else frame.timestamp - previous.timestamp
    if before is None or seconds <= 0:
        return "-"
    delta = row.finished - before.finished
    return f"{(delta if delta >= 0 else row.finished) / seconds:,.1f}"


def _seconds(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.0f}µs"
    if value < 1:
        return f"{value * 1e3:.1f}ms"
    return f"{value:.2f}s"


def _alerts(alerts: Iterable[tuple[str, str]]) -> Text:
    text = Text()
    for metric, level in alerts:
        if text:
            text.append(", ")
        text.append(f"{metric} {level}", style=LEVEL_STYLES[level])
    return text


async def _scrape(client: httpx.AsyncClient, url: str) -> Frame:
    text = await _fetch(client, url, 5.0)
    return parse_frame(text, trio.current_time())


async def run_top(
    url: str = DEFAULT_URL,
    *,
    once: bool = False,
    interval: float = 1.0,
    console: Console | None = None,
    frames: int | None = None,
) -> None:
    """Draw the lanes of the system serving ``url`` until cancelled.

    Args:
        url: the ``/metrics`` URL of a running system.
        once: print one frame and return. With ``interval`` > 0 it scrapes twice,
            ``interval`` seconds apart, so the frame has rates.
        interval: seconds between scrapes (> 0, or 0 with ``once``).
        console: where to draw (default: the terminal).
        frames: stop after this many frames (live mode; None: until cancelled).

    While live, a failed scrape is shown in the title and retried at the next interval.
    Cancellation leaves no connection open.

    Raises:
        LaneConfigError: invalid ``url`` or ``interval``.
        ScrapeError: ``once`` and the endpoint could not be read.
    """
    check_url(url)
    if not (once and interval == 0):
        interval = _check_positive("lanes top", "interval", interval)
    console = console or Console()
    async with _client() as client:  # one client for every scrape
        if once:
            previous = None
            if interval:
                previous = await _scrape(client, url)
                await trio.sleep(interval)
            frame = await _scrape(client, url)
            console.print(render(frame, previous, title=f"lanes top: {url}"))
            return
        await _live(client, url, interval, console, frames)


async def _live(
    client: httpx.AsyncClient, url: str, interval: float, console: Console, frames: int | None
) -> None:
    previous: Frame | None = None
    shown: Table | Text = Text()
    with Live(console=console, auto_refresh=False) as live:
        count = 0
        while frames is None or count < frames:
            try:
                frame = await _scrape(client, url)
            except ScrapeError as error:
                status = f"lanes top: {error} (retrying every {interval} s)"
                if isinstance(shown, Table):
                    shown.title = status  # keep showing the last frame under the error
                else:
                    shown = Text(status)
            else:
                shown = render(frame, previous, title=f"lanes top: {url}")
                previous = frame
            live.update(shown, refresh=True)
            count += 1
            if frames is None or count < frames:
                await trio.sleep(interval)
