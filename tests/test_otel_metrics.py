"""``lanes.otel.instrument_metrics``: lane metrics as OpenTelemetry instruments."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import lanes
from lanes import LaneConfig, RetryPolicy
from lanes.otel import instrument_metrics

LANES = [
    LaneConfig("fast", 0, max_concurrency=2),
    LaneConfig("slow", 1, retry=RetryPolicy.fixed(1, 1)),
]


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Metric name -> its data points, from one collection."""
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "lanes"
            for metric in scope.metrics:
                found[metric.name] = list(metric.data.data_points)
    return found


def value(found: dict[str, list[Any]], name: str, **attributes: str) -> Any:
    wanted = {f"lanes.{k}": v for k, v in attributes.items()}
    [point] = [p for p in found[name] if dict(p.attributes) == wanted]
    return point


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> MeterProvider:
    return MeterProvider(metric_readers=[reader])


async def work(seconds: float) -> None:
    await trio.sleep(seconds)


async def test_gauges_counters_and_histograms(
    autojump_clock: trio.abc.Clock, reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    attempts = 0

    async def flaky() -> None:
        nonlocal attempts
        attempts += 1
        await trio.sleep(2)
        raise OSError("down")

    async with lanes.open_lane_system(LANES) as system:
        stop = instrument_metrics(system, meter_provider=provider)
        for _ in range(3):
            await system.submit("fast", work, 1)
        failing = await system.submit("slow", flaky)
        await trio.testing.wait_all_tasks_blocked()
        found = points(reader)
        assert value(found, "lanes.queue.depth", lane="fast").value == 1
        assert value(found, "lanes.active", lane="fast").value == 2
        assert value(found, "lanes.active", lane="slow").value == 1
        assert value(found, "lanes.commands.submitted", lane="fast").value == 3
        with pytest.raises(lanes.CommandFailed):
            await failing.result()  # 2 attempts of 2 s, 1 s apart: t=5
        await system.drain()
        found = points(reader)
        assert value(found, "lanes.commands", lane="fast", outcome="completed").value == 3
        assert value(found, "lanes.commands", lane="slow", outcome="failed").value == 1
        assert value(found, "lanes.retries", lane="slow").value == 1
        assert value(found, "lanes.dead_letters", lane="slow").value == 1
        assert value(found, "lanes.queue.depth", lane="fast").value == 0
        waits = value(found, "lanes.wait.duration", lane="fast")
        assert (waits.count, waits.sum, waits.max) == (3, 1.0, 1.0)  # the third waited 1 s
        runs = value(found, "lanes.command.duration", lane="slow")
        assert (runs.count, runs.sum) == (2, 4.0)  # two failed attempts of 2 s each
        assert value(found, "lanes.command.duration", lane="fast").sum == 3.0
        stop()
        await system.run("fast", work, 1)
        found = points(reader)
        assert value(found, "lanes.command.duration", lane="fast").count == 3  # stopped
    assert attempts == 2


async def test_cancelled_pending_and_running(
    autojump_clock: trio.abc.Clock, reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    async with lanes.open_lane_system(LANES) as system:
        instrument_metrics(system, meter_provider=provider)
        running = await system.submit("slow", work, 10)
        pending = await system.submit("slow", work, 10)
        await trio.sleep(3)
        pending.cancel()
        running.cancel()
        await trio.testing.wait_all_tasks_blocked()
        found = points(reader)
        assert value(found, "lanes.commands", lane="slow", outcome="cancelled").value == 2
        runs = value(found, "lanes.command.duration", lane="slow")
        assert (runs.count, runs.sum) == (1, 3.0)  # only the running one ran


async def test_without_histograms(
    autojump_clock: trio.abc.Clock, reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    async with lanes.open_lane_system(LANES) as system:
        instrument_metrics(system, meter_provider=provider, histograms=False)
        await system.run("fast", work, 1)
        assert not system._core.bus.active  # no listener: events are not even made
        found = points(reader)
        assert "lanes.wait.duration" not in found
        assert value(found, "lanes.commands", lane="fast", outcome="completed").value == 1


async def test_from_another_run_is_refused(
    reader: InMemoryMetricReader, provider: MeterProvider
) -> None:
    async with lanes.open_lane_system(LANES) as system:

        def elsewhere() -> None:
            instrument_metrics(system, meter_provider=provider)

        with pytest.raises(lanes.LaneUsageError, match="instrument_metrics"):
            await trio.to_thread.run_sync(elsewhere)
        data = reader.get_metrics_data()
        assert data is None or not data.resource_metrics  # nothing was registered
