"""Metrics: histogram percentiles against known distributions, snapshots, backends."""

from __future__ import annotations

import math
import random
from functools import partial

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import lanes
from lanes import LaneConfig, MetricsBackend
from lanes._histogram import Histogram, _bucket_lower, _bucket_upper

from .helpers import boom, sleeper

BUCKET_ERROR = 0.016  # each bucket spans 1/64 of a power of two


def exact(values: list[float], p: float) -> float:
    """The nearest-rank percentile, the definition the histogram approximates."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def task_count() -> int:
    """How many tasks the current run has (to show that nothing is left behind)."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

    return count(trio.lowlevel.current_root_task())


def distribution(name: str, n: int = 20_000) -> list[float]:
    rng = random.Random(name)
    if name == "uniform":
        return [rng.uniform(0.001, 10.0) for _ in range(n)]
    if name == "exponential":
        return [rng.expovariate(1 / 0.05) for _ in range(n)]
    if name == "lognormal":
        return [rng.lognormvariate(-4, 1.5) for _ in range(n)]
    if name == "bimodal":
        return [
            rng.gauss(0.01, 0.001) if rng.random() < 0.9 else rng.gauss(2, 0.1) for _ in range(n)
        ]
    assert name == "with zeros"
    return [0.0 if i % 3 == 0 else rng.uniform(1e-6, 1e-3) for i in range(n)]


@pytest.mark.parametrize("name", ["uniform", "exponential", "lognormal", "bimodal", "with zeros"])
def test_percentiles_of_known_distributions(name: str) -> None:
    values = distribution(name)
    histogram = Histogram()
    for value in values:
        histogram.record(value)
    summary = histogram.snapshot()
    for p in (50, 90, 95, 99):
        assert summary.percentile(p) == pytest.approx(exact(values, p), rel=BUCKET_ERROR)
    assert summary.count == len(values)
    assert summary.sum == pytest.approx(math.fsum(values))
    assert (summary.min, summary.max) == (min(values), max(values))


def test_percentiles_of_a_uniform_integer_sequence() -> None:
    histogram = Histogram()
    histogram.record_many(float(v) for v in range(1, 1001))
    assert histogram.percentiles([50, 90, 99, 100]) == [
        pytest.approx(500, rel=BUCKET_ERROR),
        pytest.approx(900, rel=BUCKET_ERROR),
        pytest.approx(990, rel=BUCKET_ERROR),
        1000.0,
    ]


@given(st.lists(st.floats(min_value=0, max_value=1e4), min_size=1, max_size=300))
def test_every_percentile_is_within_the_bucket_error(values: list[float]) -> None:
    histogram = Histogram()
    for value in values:
        histogram.record(value)
    for p, got in zip((50, 90, 95, 99), histogram.percentiles(), strict=True):
        assert got == pytest.approx(exact(values, p), rel=BUCKET_ERROR, abs=1e-300)


@given(
    st.lists(st.lists(st.floats(min_value=0, max_value=1e6), max_size=50), max_size=5),
    st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_a_compacted_histogram_keeps_every_sample(
    batches: list[list[float]], merge_instead: list[bool]
) -> None:
    # An idle system packs its histograms (compact); recording, merging and reading go on
    # as if nothing happened: the same figures as a histogram never packed.
    packed, plain = Histogram(), Histogram()
    for batch, by_merge in zip(batches, merge_instead, strict=False):
        if by_merge:
            other = Histogram()
            other.record_many(batch)
            other.compact()
            packed.merge(other)
        else:
            for value in batch:
                packed.record(value)
        plain.record_many(batch)
        packed.compact()
        assert packed.snapshot() == plain.snapshot()
        assert packed.buckets() == plain.buckets()
        assert packed.counts == plain.counts


@given(
    st.lists(
        st.floats(min_value=0, max_value=1e300, allow_subnormal=True), min_size=1, max_size=200
    )
)
def test_every_sample_lands_in_the_bucket_that_holds_it(values: list[float]) -> None:
    # The fold computes bucket indexes from the doubles' bits (with a separate path for
    # subnormal samples): each bucket must count exactly the samples within its bounds.
    histogram = Histogram()
    histogram.record_many(values)
    positive = [value for value in values if value > 0.0]
    assert sum(histogram.counts.values()) == len(positive)
    for index, count in histogram.counts.items():
        low, high = _bucket_lower(index), _bucket_upper(index)
        if low < high:  # the tiniest subnormal buckets' bounds round to one value
            assert count == sum(1 for value in positive if low <= value < high)


def test_empty_histogram_and_negative_samples() -> None:
    histogram = Histogram()
    assert histogram.snapshot() == lanes.HistogramSnapshot(0, 0.0, 0.0, 0.0, 0, 0, 0, 0)
    histogram.record(-1.0)  # a clock step backwards counts as 0
    assert histogram.snapshot().p99 == 0.0
    assert histogram.count == 1


def test_merge_and_buckets_keep_every_sample() -> None:
    a, b = Histogram(), Histogram()
    a.record_many([0.0, 0.001, 0.002])
    for value in range(5000):  # past the 4096-sample fold
        b.record(value / 1000)
    a.merge(b)
    assert a.count == 5003
    assert sum(count for _, count in a.buckets()) == 5003
    assert a.buckets()[0] == (0.0, 2)  # the zeros come first
    bounds = [bound for bound, _ in a.buckets()]
    assert bounds == sorted(bounds)
    assert a.snapshot().max == pytest.approx(4.999)


async def test_snapshot_latencies_of_a_queue(autojump_clock: trio.abc.Clock) -> None:
    """Ten 1 s commands through one slot: waits are 0..9 s and runs are 1 s."""
    async with lanes.open_lane_system([LaneConfig("one", 0)]) as system:
        handles = [await system.submit("one", sleeper, 1.0) for _ in range(10)]
        for handle in handles:
            await handle.result()
        snapshot = system.metrics.snapshot()
    wait = snapshot.histograms["wait_seconds"]["one"]
    run = snapshot.histograms["run_seconds"]["one"]
    assert wait.count == run.count == 10
    assert (wait.p50, wait.p90, wait.p99) == (
        pytest.approx(4, rel=BUCKET_ERROR),
        pytest.approx(8, rel=BUCKET_ERROR),
        pytest.approx(9, rel=BUCKET_ERROR),
    )
    assert wait.sum == pytest.approx(45)
    assert run.p50 == run.p99 == pytest.approx(1, rel=BUCKET_ERROR)
    assert snapshot.timestamp == pytest.approx(10)


async def test_snapshot_counters_and_gauges(autojump_clock: trio.abc.Clock) -> None:
    configs = [
        LaneConfig("work", 0, max_concurrency=2, retry=lanes.RetryPolicy.fixed(1, 1.0)),
        LaneConfig("slow", 1, timeout=1.0),
    ]
    async with lanes.open_lane_system(configs) as system:
        with pytest.raises(lanes.CommandFailed):
            await system.run("work", boom)  # 1 retry, then failed and dead-lettered
        with pytest.raises(lanes.CommandTimeout):
            await system.run("slow", sleeper, 5)
        running = [await system.submit("work", sleeper, 10) for _ in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        snapshot = system.metrics.snapshot()
        for handle in running:
            handle.cancel()
    counters, gauges = snapshot.counters, snapshot.gauges
    assert counters["submitted"] == {"work": 4, "slow": 1}
    assert counters["retried"]["work"] == 1
    assert counters["failed"] == {"work": 1, "slow": 1}
    assert counters["dead_lettered"] == {"work": 1, "slow": 1}
    assert counters["timed_out"] == {"work": 0, "slow": 1}
    assert gauges["active"] == {"work": 2, "slow": 0}
    assert gauges["pending"] == {"work": 1, "slow": 0}
    assert gauges["effective_priority"] == {"work": 0, "slow": 1}
    final = system.metrics.snapshot().counters
    assert final["cancelled"]["work"] == 3


async def test_in_memory_backend_rates(autojump_clock: trio.abc.Clock) -> None:
    backend = lanes.InMemoryBackend(history=3)
    assert isinstance(backend, MetricsBackend)
    async with lanes.open_lane_system([LaneConfig("work", 0, max_concurrency=10)]) as system:
        backend.update(system.metrics.snapshot())
        assert backend.latest is not None
        assert math.isnan(backend.rate("completed", "work"))  # one snapshot: no rate yet
        for _ in range(20):
            await system.submit("work", sleeper, 1.0)
        await trio.sleep(4)
        backend.update(system.metrics.snapshot())
        assert backend.rate("completed", "work") == pytest.approx(20 / 4)
        assert backend.rate("submitted", "work") == pytest.approx(20 / 4)
        backend.update(system.metrics.snapshot())  # same instant: no rate
        assert math.isnan(backend.rate("completed", "work"))
        with pytest.raises(KeyError):
            backend.rate("completed", "nope")
    assert len(backend.snapshots) == 3


def test_in_memory_backend_counts_a_reset_from_zero() -> None:
    def snap(t: float, n: int) -> lanes.MetricsSnapshot:
        return lanes.MetricsSnapshot(t, {"completed": {"a": n}}, {}, {})

    backend = lanes.InMemoryBackend()
    backend.update(snap(0, 100))
    backend.update(snap(2, 10))  # the system restarted
    assert backend.rate("completed", "a") == 5.0
    backend.update(snap(4, 30))
    assert backend.rate("completed", "a") == 10.0
    assert [s.timestamp for s in backend.snapshots] == [2, 4]  # history=2 by default


@pytest.mark.parametrize("history", [1, 0, 2.5, "2", True])
def test_in_memory_backend_rejects_bad_history(history: object) -> None:
    with pytest.raises(lanes.LaneConfigError, match=rf"history={history!r}"):
        lanes.InMemoryBackend(history=history)  # type: ignore[arg-type]


async def test_export_metrics_feeds_backends_each_interval(
    autojump_clock: trio.abc.Clock,
) -> None:
    first, second = lanes.InMemoryBackend(history=100), lanes.InMemoryBackend(history=100)
    async with lanes.open_lane_system() as system:
        tasks_before = task_count()
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(lanes.export_metrics, system, first, second, interval=0.5))
            assert len(first.snapshots) == 1  # the first snapshot came before start returned
            await trio.sleep(2.1)
            nursery.cancel_scope.cancel()
        assert task_count() == tasks_before
    stamps = [s.timestamp for s in first.snapshots]
    assert stamps == pytest.approx([0, 0.5, 1.0, 1.5, 2.0])
    assert second.snapshots == first.snapshots


@pytest.mark.parametrize("interval", [0, -1, math.inf, math.nan, "1"])
async def test_export_metrics_rejects_bad_interval(interval: object) -> None:
    async with lanes.open_lane_system() as system, trio.open_nursery() as nursery:
        with pytest.raises(lanes.LaneConfigError, match="interval="):
            await nursery.start(partial(lanes.export_metrics, system, interval=interval))
