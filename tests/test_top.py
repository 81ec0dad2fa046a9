"""``lanes top``: parsing an exposition, drawing a frame, and scraping a real endpoint."""

from __future__ import annotations

import importlib.util
import math
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from rich.console import Console

import lanes
from lanes import LaneConfig
from lanes import __main__ as cli
from lanes._top import ScrapeError, check_url, fetch_metrics, parse_frame, render, run_top
from lanes.prometheus import serve_metrics

from .helpers import noop
from .test_metrics import task_count

EXPOSITION = """\
# TYPE lanes_priority gauge
lanes_priority{lane="query"} 2.0
lanes_priority{lane="prompt"} 5.0
# TYPE lanes_effective_priority gauge
lanes_effective_priority{lane="query"} 2.0
lanes_effective_priority{lane="prompt"} 4.0
# TYPE lanes_queue_depth gauge
lanes_queue_depth{lane="query"} 3.0
lanes_queue_depth{lane="prompt"} 1200.0
# TYPE lanes_active gauge
lanes_active{lane="query"} 10.0
lanes_active{lane="prompt"} 2.0
# TYPE lanes_commands_total counter
lanes_commands_total{lane="query",outcome="completed"} %(done)s
lanes_commands_total{lane="query",outcome="failed"} 10.0
lanes_commands_total{lane="prompt",outcome="completed"} 7.0
# TYPE lanes_command_duration_seconds summary
lanes_command_duration_seconds{lane="query",quantile="0.5"} 0.0123
lanes_command_duration_seconds{lane="query",quantile="0.99"} 0.25
lanes_command_duration_seconds{lane="prompt",quantile="0.5"} NaN
lanes_command_duration_seconds{lane="prompt",quantile="0.99"} NaN
# TYPE lanes_wait_duration_seconds summary
lanes_wait_duration_seconds{lane="query",quantile="0.99"} 0.000456
lanes_wait_duration_seconds{lane="prompt",quantile="0.99"} 31.5
# TYPE lanes_alert_level gauge
lanes_alert_level{lane="query",metric="run_p99"} 0.0
lanes_alert_level{lane="prompt",metric="queue_depth"} 2.0
lanes_alert_level{lane="prompt",metric="wait_p99"} 1.0
# TYPE process_cpu_seconds counter
process_cpu_seconds_total 1.5
"""


def draw(*args: object, **kwargs: object) -> str:
    console = Console(record=True, width=120, color_system=None)
    console.print(render(*args, **kwargs))  # type: ignore[arg-type]
    return console.export_text()


def row_of(text: str, lane: str) -> list[str]:
    [line] = [line for line in text.splitlines() if line.startswith(f"│ {lane} ")]
    return [cell.strip() for cell in line.strip()[1:-1].split("│")]


def test_a_frame_from_an_exposition() -> None:
    before = parse_frame(EXPOSITION % {"done": "90.0"}, 10.0)
    after = parse_frame(EXPOSITION % {"done": "290.0"}, 12.0)
    query, prompt = after.lanes["query"], after.lanes["prompt"]
    assert list(after.lanes) == ["query", "prompt"]
    assert (query.priority, query.pending, query.active, query.finished) == (2, 3, 10, 300)
    assert (query.run_p50, query.run_p99, query.wait_p99) == (0.0123, 0.25, 0.000456)
    assert math.isnan(prompt.run_p50)
    assert prompt.alerts == (("queue_depth", "critical"), ("wait_p99", "warning"))
    text = draw(after, before, title="frame")
    assert text.splitlines()[0].strip() == "frame"
    assert row_of(text, "query") == [
        "query", "2", "3", "10", "100.0", "456µs", "12.3ms", "250.0ms", "",
    ]  # fmt: skip
    assert row_of(text, "prompt") == [
        "prompt", "5→4", "1,200", "2", "0.0", "31.50s", "-", "-",
        "queue_depth critical, wait_p99 warning",
    ]  # fmt: skip


def test_the_first_frame_has_no_rates() -> None:
    text = draw(parse_frame(EXPOSITION % {"done": "1"}, 0.0))
    assert row_of(text, "query")[4] == "-"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("this is { not prometheus", "not Prometheus metrics"),
        ("# TYPE up gauge\nup 1\n", "no lanes_"),
    ],
)
def test_bad_expositions_are_scrape_errors(text: str, match: str) -> None:
    with pytest.raises(ScrapeError, match=match):
        parse_frame(text, 0.0)


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1:1/metrics", "http://127.0.0.1/metrics", "metrics", "http://h:x/", 9]
)
def test_bad_urls_are_config_errors(url: object) -> None:
    with pytest.raises(lanes.LaneConfigError, match=rf"url={url!r} is invalid"):
        check_url(url)


def test_url_parts() -> None:
    assert check_url("http://localhost:9464/metrics?a=1") == ("localhost", 9464, "/metrics?a=1")
    assert check_url("http://[::1]:80") == ("::1", 80, "/")


@asynccontextmanager
async def running_system() -> AsyncIterator[tuple[lanes.LaneSystem, str]]:
    configs = [LaneConfig("query", 2, max_concurrency=4), LaneConfig("prompt", 5)]
    async with lanes.open_lane_system(configs) as system, trio.open_nursery() as nursery:
        rules = [lanes.AlertRule.queue_depth("prompt", warning=1)]
        monitor = lanes.AlertMonitor(system, rules)
        server = await nursery.start(partial(serve_metrics, system, 0, alerts=monitor))
        for _ in range(3):
            await system.run("query", noop)
        system.pause("prompt")
        await system.submit("prompt", noop)
        monitor.check()
        yield system, server.url
        system.resume("prompt")
        nursery.cancel_scope.cancel()


async def test_once_scrapes_a_real_endpoint() -> None:
    console = Console(record=True, width=120, color_system=None)
    async with running_system() as (_, url):
        await run_top(url, once=True, interval=0, console=console)
    text = console.export_text()
    assert f"lanes top: {url}" in text
    assert row_of(text, "query")[:5] == ["query", "2", "0", "0", "-"]
    assert row_of(text, "prompt")[-1] == "queue_depth warning"


async def test_once_with_an_interval_shows_rates() -> None:
    console = Console(record=True, width=120, color_system=None)
    async with running_system() as (system, url), trio.open_nursery() as nursery:
        nursery.start_soon(partial(run_top, url, once=True, interval=0.2, console=console))
        await trio.sleep(0.1)  # between the two scrapes: these count in the rate
        for _ in range(10):
            await system.run("query", noop)
    rate = float(row_of(console.export_text(), "query")[4])
    assert 0 < rate <= 10 / 0.2  # 10 commands between two scrapes at least 0.2 s apart


async def test_live_mode_draws_frames_and_survives_a_dead_endpoint() -> None:
    console = Console(record=True, width=120, color_system=None)
    async with running_system() as (_, url):
        await run_top(url, interval=0.01, console=console, frames=2)
    assert row_of(console.export_text(), "query")[4] == "0.0"  # the second frame has a rate
    console = Console(record=True, width=200, color_system=None)
    await run_top("http://127.0.0.1:1/metrics", interval=0.01, console=console, frames=2)
    assert "cannot read http://127.0.0.1:1/metrics" in console.export_text()


async def test_fetch_errors() -> None:
    async with running_system() as (_, url):
        with pytest.raises(ScrapeError, match=r"answered 'HTTP/1\.1 404 Not Found'"):
            await fetch_metrics(url.replace("/metrics", "/other"))
    with pytest.raises(ScrapeError, match="cannot read"):
        await run_top("http://127.0.0.1:1/metrics", once=True, interval=0)
    with pytest.raises(lanes.LaneConfigError, match="interval=-1"):
        await run_top("http://127.0.0.1:1/metrics", interval=-1)


async def test_a_silent_endpoint_times_out_and_cancellation_leaves_nothing() -> None:
    before = task_count()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")  # accepts, never answers
    port = listeners[0].socket.getsockname()[1]
    with pytest.raises(ScrapeError, match=r"cannot read .* no answer within 0\.05 s"):
        await fetch_metrics(f"http://127.0.0.1:{port}/metrics", timeout=0.05)
    with trio.move_on_after(0.05) as scope:
        await run_top(f"http://127.0.0.1:{port}/metrics", console=Console(file=None, quiet=True))
    assert scope.cancelled_caught
    assert task_count() == before
    for listener in listeners:
        await listener.aclose()


def test_cli_reports_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["top", "http://127.0.0.1:1/metrics", "--once", "--interval", "0"]) == 1
    assert "lanes top: cannot read http://127.0.0.1:1/metrics" in capsys.readouterr().err
    assert cli.main(["top", "localhost:9464", "--once"]) == 1
    assert "url='localhost:9464' is invalid" in capsys.readouterr().err


def test_the_observability_example(capsys: pytest.CaptureFixture[str]) -> None:
    """It serves real sockets, so it runs on the real clock (about half a second)."""
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "observability.py"
    spec = importlib.util.spec_from_file_location("example_observability", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trio.run(module.main)
    out = capsys.readouterr().out
    alerts = [line for line in out.splitlines() if line.startswith("alert ")]
    assert alerts == [
        "alert raised: prompt queue_depth warning (threshold 3)",
        "alert raised: prompt queue_depth critical (threshold 6)",
        "alert cleared: prompt queue_depth critical (threshold 4.8)",
        "alert cleared: prompt queue_depth warning (threshold 2.4)",
    ]
    assert row_of(out, "prompt")[:4] == ["prompt", "5", "6", "2"]
    assert "traced 28 commands under 'agent turn'" in out
    assert "completed: prompt=8 query=20" in out


async def test_an_answer_too_large_or_not_utf8_is_a_scrape_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lanes._top

    async with running_system() as (_, url):
        monkeypatch.setattr(lanes._top, "MAX_BODY", 100)
        with pytest.raises(ScrapeError, match="larger than 100 bytes"):
            await fetch_metrics(url)
    monkeypatch.undo()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def answer(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        body = b"\xff\xfe not text"
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        await stream.send_all(head + body)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, answer, listeners)
        with pytest.raises(ScrapeError, match="not UTF-8"):
            await fetch_metrics(f"http://127.0.0.1:{port}/metrics")
        nursery.cancel_scope.cancel()


async def test_a_chunked_answer_is_read() -> None:
    """httpx reads chunked bodies (the former hand-written client refused them)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    text = EXPOSITION % {"done": "1"}

    async def answer(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        data = text.encode()
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(data[i : i + 100]), data[i : i + 100])
            for i in range(0, len(data), 100)
        )
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        await stream.send_all(head + chunks + b"0\r\n\r\n")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, answer, listeners)
        assert await fetch_metrics(f"http://127.0.0.1:{port}/metrics") == text
        nursery.cancel_scope.cancel()


def test_without_httpx_lanes_top_names_the_extra() -> None:
    import os
    import subprocess
    import sys

    from lanes import _extras

    root = pathlib.Path(__file__).resolve().parent.parent
    code = "import sys\nsys.modules['httpx'] = None\nfrom lanes.__main__ import main\n"
    code += "sys.exit(main(['top']))\n"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "lanes top needs httpx: " + _extras.install_hint("top")
