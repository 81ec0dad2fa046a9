"""The Prometheus backend and the /metrics endpoint, scraped over real HTTP on 127.0.0.1.

These tests use the real clock (real sockets) and port 0, so the kernel picks a free port.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import httpx
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

import lanes
from lanes import LaneConfig
from lanes.prometheus import MetricsServer, PrometheusBackend, serve_metrics

from .helpers import boom, noop
from .test_metrics import task_count

CONFIGS = [LaneConfig("query", 2, max_concurrency=4), LaneConfig("prompt", 5)]


async def http(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw ``request`` bytes; return status code, headers and body of the answer.

    Reading until the server closes also checks that it closes after one answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status.split(" ")[1]), headers, body


async def get(port: int, path: str = "/metrics", *extra: str) -> tuple[int, dict[str, str], bytes]:
    """GET with httpx, as a scraper would (``extra``: more ``Name: value`` headers)."""
    headers = dict(line.split(": ", 1) for line in extra)
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{port}{path}", headers=headers)
    return answer.status_code, dict(answer.headers), answer.content


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    parsed = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            parsed[sample.name, frozenset(sample.labels.items())] = sample.value
    return parsed


def value(
    parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return parsed[name, frozenset(labels.items())]


@asynccontextmanager
async def serving(system: lanes.LaneSystem, **options: object) -> AsyncIterator[MetricsServer]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_metrics, system, 0, **options))  # type: ignore[arg-type]
        yield server
        nursery.cancel_scope.cancel()


async def test_scrape_over_http_parses_with_prometheus_client() -> None:
    async with lanes.open_lane_system(CONFIGS) as system, serving(system) as server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        for _ in range(5):
            await system.run("query", noop)
        with pytest.raises(lanes.CommandFailed):
            await system.run("query", boom)
        system.pause("prompt")
        await system.submit("prompt", noop)
        status, headers, body = await get(server.port)
        system.resume("prompt")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert headers["connection"] == "close"  # one answer per connection
    assert int(headers["content-length"]) == len(body)
    text = body.decode()
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types == {
        "lanes_priority": "gauge",
        "lanes_max_concurrency": "gauge",
        "lanes_commands_submitted": "counter",
        "lanes_commands": "counter",
        "lanes_retries": "counter",
        "lanes_attempts_timed_out": "counter",
        "lanes_preemptions": "counter",
        "lanes_dead_letters": "counter",
        "lanes_queue_depth": "gauge",
        "lanes_active": "gauge",
        "lanes_effective_priority": "gauge",
        "lanes_wait_duration_seconds": "summary",
        "lanes_command_duration_seconds": "summary",
        "lanes_systems": "gauge",
    }
    parsed = samples(text)
    assert value(parsed, "lanes_systems") == 1
    assert value(parsed, "lanes_commands_submitted_total", lane="query") == 6
    assert value(parsed, "lanes_commands_total", lane="query", outcome="completed") == 5
    assert value(parsed, "lanes_commands_total", lane="query", outcome="failed") == 1
    assert value(parsed, "lanes_dead_letters_total", lane="query") == 1
    assert value(parsed, "lanes_queue_depth", lane="prompt") == 1
    assert value(parsed, "lanes_priority", lane="prompt") == 5
    assert value(parsed, "lanes_max_concurrency", lane="query") == 4
    assert value(parsed, "lanes_command_duration_seconds_count", lane="query") == 6
    p99 = value(parsed, "lanes_command_duration_seconds", lane="query", quantile="0.99")
    assert 0 <= p99 < 1
    empty = value(parsed, "lanes_command_duration_seconds", lane="prompt", quantile="0.5")
    assert math.isnan(empty)  # no samples: NaN, as Prometheus clients report it


async def test_each_scrape_is_fresh_and_openmetrics_is_negotiated() -> None:
    async with lanes.open_lane_system(CONFIGS) as system, serving(system) as server:
        _, _, before = await get(server.port)
        await system.run("query", noop)
        _, headers, after = await get(
            server.port, "/metrics?x=1", "Accept: application/openmetrics-text; version=1.0.0"
        )
    assert value(samples(before.decode()), "lanes_commands_submitted_total", lane="query") == 0
    assert headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in parse_openmetrics(after.decode())}
    submitted = families["lanes_commands_submitted"].samples
    assert [s.value for s in submitted if s.labels["lane"] == "query"] == [1]


@pytest.mark.parametrize(
    ("method", "path", "status", "text"),
    [
        ("GET", "/", 404, b"the metrics are at /metrics\n"),
        ("GET", "/metrics/x", 404, b"the metrics are at /metrics\n"),
        ("POST", "/metrics", 405, b"only GET and HEAD\n"),
        ("DELETE", "/", 405, b"only GET and HEAD\n"),
    ],
)
async def test_other_requests_get_clear_errors(
    method: str, path: str, status: int, text: bytes
) -> None:
    async with lanes.open_lane_system(CONFIGS) as system, serving(system) as server:
        async with httpx.AsyncClient() as client:
            answer = await client.request(method, f"http://127.0.0.1:{server.port}{path}")
        assert answer.status_code == status
        assert answer.content == text
        assert answer.headers.get("allow") == ("GET, HEAD" if status == 405 else None)
        assert (await get(server.port))[0] == 200  # the server carries on


@pytest.mark.parametrize(
    "request_bytes",
    [b"nonsense\r\n\r\n", b"GET /metrics HTTP/1.1\r\n\r\n", b"GET /metrics HTTP/1.1\r\nX\r\n\r\n"],
)
async def test_a_malformed_request_is_a_bad_request(request_bytes: bytes) -> None:
    """Not HTTP, no Host header (required by HTTP/1.1), a header line without a colon."""
    async with lanes.open_lane_system(CONFIGS) as system, serving(system) as server:
        status, headers, body = await http(server.port, request_bytes)
        assert status == 400
        assert int(headers["content-length"]) == len(body)
        assert (await get(server.port))[0] == 200


async def test_a_request_head_too_large_is_refused() -> None:
    async with lanes.open_lane_system(CONFIGS) as system, serving(system) as server:
        endless = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 40_000
        status, _, _ = await http(server.port, endless)  # more than 16 KiB, no end in sight
        assert status in (400, 431)
        assert (await get(server.port))[0] == 200


async def test_head_has_headers_only() -> None:
    async with lanes.open_lane_system(CONFIGS) as system, serving(system) as server:
        request = b"HEAD /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"
        status, headers, body = await http(server.port, request)
    assert status == 200
    assert int(headers["content-length"]) > 0
    assert body == b""


async def test_a_client_that_closes_early_is_ignored() -> None:
    async with lanes.open_lane_system(CONFIGS) as system, serving(system) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"GET /metr")
        await stream.aclose()
        assert (await get(server.port))[0] == 200


@pytest.mark.parametrize("port", [-1, 65536, "9464", 1.5, True, None])
async def test_invalid_port_is_a_config_error(port: object) -> None:
    async with lanes.open_lane_system(CONFIGS) as system, trio.open_nursery() as nursery:
        with pytest.raises(lanes.LaneConfigError, match=rf"port={port!r} is invalid"):
            await nursery.start(serve_metrics, system, port)


async def test_invalid_host_is_a_config_error() -> None:
    async with lanes.open_lane_system(CONFIGS) as system, trio.open_nursery() as nursery:
        with pytest.raises(lanes.LaneConfigError, match="host=''"):
            await nursery.start(serve_metrics, system, 0, "")


async def test_a_port_in_use_raises_oserror() -> None:
    async with (
        lanes.open_lane_system(CONFIGS) as system,
        serving(system) as server,
        trio.open_nursery() as nursery,
    ):
        with pytest.raises(OSError, match="in use"):
            await nursery.start(serve_metrics, system, server.port)


async def test_cancelling_the_server_leaves_no_task_and_closes_the_port() -> None:
    async with lanes.open_lane_system(CONFIGS) as system:
        before = task_count()
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_metrics, system, 0)
            idle = await trio.open_tcp_stream("127.0.0.1", server.port)  # never sends
            await trio.testing.wait_all_tasks_blocked()
            assert task_count() > before + 1  # the listener and the idle client's handler
            nursery.cancel_scope.cancel()
        assert task_count() == before
        assert await idle.receive_some() == b""  # its connection was closed
        await idle.aclose()
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", server.port)


async def test_own_registry_serves_user_metrics_and_is_cleaned_up() -> None:
    registry = CollectorRegistry()
    Counter("app_requests", "Requests.", registry=registry).inc(3)
    async with lanes.open_lane_system(CONFIGS) as system:
        async with serving(system, registry=registry) as server:
            _, _, body = await get(server.port)
        parsed = samples(body.decode())
        assert value(parsed, "app_requests_total") == 3
        assert value(parsed, "lanes_queue_depth", lane="query") == 0
    assert b"lanes_" not in generate_latest(registry)  # our collector left with the server


async def test_alert_levels_are_exported() -> None:
    rules = [lanes.AlertRule.queue_depth("prompt", warning=1, critical=3)]
    async with lanes.open_lane_system(CONFIGS) as system:
        system.pause("prompt")
        for _ in range(2):
            await system.submit("prompt", noop)
        monitor = lanes.AlertMonitor(system, rules)
        monitor.check()
        async with serving(system, alerts=monitor) as server:
            _, _, body = await get(server.port)
        system.resume("prompt")
    parsed = samples(body.decode())
    assert value(parsed, "lanes_alert_level", lane="prompt", metric="queue_depth") == 1


def test_backend_without_source_serves_its_last_update() -> None:
    registry = CollectorRegistry(auto_describe=False)
    backend = PrometheusBackend()
    registry.register(backend)
    assert generate_latest(registry) == b""
    snapshot = lanes.MetricsSnapshot(
        1.0,
        {name: {"a": 2} for name in ("submitted", "completed", "failed", "cancelled")}
        | {name: {"a": 0} for name in ("retried", "timed_out", "preempted", "dead_lettered")},
        {"pending": {"a": 7}, "active": {"a": 1}, "effective_priority": {"a": 0}},
        {
            "wait_seconds": {"a": lanes.HistogramSnapshot(4, 2.0, 0.1, 1, 0.5, 0.9, 0.95, 1)},
            "run_seconds": {"a": lanes.HistogramSnapshot(0, 0, 0, 0, 0, 0, 0, 0)},
        },
    )
    backend.update(snapshot)
    assert isinstance(backend, lanes.MetricsBackend)
    parsed = samples(generate_latest(registry).decode())
    assert value(parsed, "lanes_queue_depth", lane="a") == 7
    assert value(parsed, "lanes_commands_total", lane="a", outcome="cancelled") == 2
    assert value(parsed, "lanes_wait_duration_seconds", lane="a", quantile="0.9") == 0.9
    assert value(parsed, "lanes_wait_duration_seconds_sum", lane="a") == 2.0
    assert value(parsed, "lanes_command_duration_seconds_count", lane="a") == 0


class Broken:
    def describe(self) -> list[object]:
        return []

    def collect(self) -> list[object]:
        raise RuntimeError("collector <broken>")


async def test_a_broken_collector_is_a_500_and_the_server_carries_on() -> None:
    registry = CollectorRegistry()
    broken = Broken()
    registry.register(broken)  # type: ignore[arg-type]
    async with (
        lanes.open_lane_system(CONFIGS) as system,
        serving(system, registry=registry) as server,
    ):
        status, headers, body = await get(server.port)
        assert status == 500
        assert body == b"RuntimeError('collector <broken>')\n"
        assert headers["content-type"].startswith("text/plain")
        registry.unregister(broken)  # type: ignore[arg-type]
        assert (await get(server.port))[0] == 200


async def test_a_silent_client_is_disconnected_after_the_request_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lanes.prometheus, "REQUEST_TIMEOUT", 0.2)
    async with lanes.open_lane_system(CONFIGS) as system, serving(system) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            with trio.fail_after(5):
                await stream.send_all(b"GET /metr")  # and nothing more
                assert await stream.receive_some() == b""  # closed by the server
        assert (await get(server.port))[0] == 200


async def test_a_websocket_handshake_is_refused() -> None:
    async with lanes.open_lane_system(CONFIGS) as system, serving(system) as server:
        request = (
            b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        status, _, _ = await http(server.port, request)
        assert status == 403
        assert (await get(server.port))[0] == 200


async def test_an_ipv6_loopback_host() -> None:
    async with lanes.open_lane_system(CONFIGS) as system:
        try:
            cm = serving(system, host="::1")
            server = await cm.__aenter__()
        except OSError:
            pytest.skip("no IPv6 loopback here")
        try:
            assert server.url == f"http://[::1]:{server.port}/metrics"
            async with httpx.AsyncClient() as client:
                assert (await client.get(server.url)).status_code == 200
        finally:
            await cm.__aexit__(None, None, None)


def test_without_hypercorn_the_import_names_the_extra() -> None:
    import os
    import pathlib
    import subprocess
    import sys

    from lanes import _extras

    root = pathlib.Path(__file__).resolve().parent.parent
    code = "import sys\nsys.modules['hypercorn'] = None\nimport lanes.prometheus\n"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    hint = "lanes.prometheus needs hypercorn: " + _extras.install_hint("prometheus")
    assert f"ModuleNotFoundError: {hint}" in done.stderr
