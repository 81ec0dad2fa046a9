"""Metrics of a program's own: registered on a system, in snapshots and in Prometheus."""

from __future__ import annotations

import logging
import math

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest

import lanes
from lanes.prometheus import LaneCollector, PrometheusBackend

from .test_prometheus import samples, value


async def test_counter_gauge_and_histogram_in_the_snapshot(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system() as system:
        metrics = system.metrics
        orders = metrics.counter("orders_placed", "Orders placed.", labels=["shop"])
        carts = metrics.gauge("open_carts", "Carts open now.")
        tokens = metrics.histogram("prompt_tokens", "Tokens per prompt.")

        async def place(shop: str) -> None:
            orders.inc(shop=shop)
            carts.inc()
            tokens.observe(100 if shop == "eu" else 300)

        for shop in ("eu", "eu", "us"):
            await system.run("query", place, shop)
        carts.dec(2)
        orders.inc(0.5, shop="us")
        snapshot = metrics.snapshot()
    user = snapshot.user
    assert set(user) == {"orders_placed", "open_carts", "prompt_tokens"}
    assert user["orders_placed"].kind == "counter"
    assert user["orders_placed"].labels == ("shop",)
    assert {s.labels: s.value for s in user["orders_placed"].series} == {
        ("eu",): 2.0,
        ("us",): 1.5,
    }
    assert [s.value for s in user["open_carts"].series] == [1.0]
    (series,) = user["prompt_tokens"].series
    assert series.histogram is not None and series.histogram.count == 3
    assert series.histogram.max == pytest.approx(300, rel=0.016)
    assert orders.value(shop="eu") == 2 and orders.value(shop="asia") == 0
    assert tokens.summary().count == 3


async def test_registering_again_returns_the_same_metric(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system() as system:
        first = system.metrics.counter("jobs", labels=("kind",))
        assert system.metrics.counter("jobs", "again", labels=["kind"]) is first
        with pytest.raises(lanes.LaneConfigError, match="'jobs' is already a counter"):
            system.metrics.gauge("jobs", labels=("kind",))
        with pytest.raises(lanes.LaneConfigError, match=r"with labels \['kind'\]"):
            system.metrics.counter("jobs")


@pytest.mark.parametrize(
    ("kind", "name", "labels", "words"),
    [
        ("counter", "9lives", (), "name='9lives' is invalid; expected a Prometheus metric name"),
        ("gauge", "my-metric", (), "name='my-metric' is invalid"),
        ("counter", "lanes_mine", (), "names starting with 'lanes_' are the system's"),
        ("histogram", "h", ("quantile",), "label name 'quantile' is invalid"),
        ("counter", "c", ("__x",), "label name '__x' is invalid"),
        ("counter", "c", ("a", "a"), "names a label twice"),
        ("gauge", "g", "shop", "labels='shop' is invalid; expected a sequence"),
    ],
)
async def test_bad_definitions(
    autojump_clock: trio.abc.Clock, kind: str, name: str, labels: object, words: str
) -> None:
    async with lanes.open_lane_system() as system:
        with pytest.raises(lanes.LaneConfigError, match=words):
            getattr(system.metrics, kind)(name, labels=labels)
        assert system.metrics.snapshot().user == {}


async def test_bad_values_and_labels_change_nothing(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system() as system:
        counter = system.metrics.counter("c", labels=["shop"])
        gauge = system.metrics.gauge("g")
        histogram = system.metrics.histogram("h")
        bad = [
            (
                lambda: counter.inc(-1, shop="eu"),
                "amount=-1 is invalid; expected a finite number >= 0",
            ),
            (lambda: counter.inc(shop="eu", region="x"), "do not match its labels"),
            (lambda: counter.inc(True, shop="eu"), "amount=True is invalid"),
            (lambda: counter.inc(math.nan, shop="eu"), "amount=nan is invalid"),
            (lambda: counter.inc(1, shop_="eu"), "do not match its labels"),
            (lambda: counter.inc(), r"labels \[\] do not match its labels \['shop'\]"),
            (lambda: gauge.set(math.inf), "value=inf is invalid"),
            (lambda: gauge.set("3"), "value='3' is invalid"),  # type: ignore[arg-type]
            (
                lambda: histogram.observe(-0.5),
                "value=-0.5 is invalid; expected a finite number >= 0",
            ),
            (lambda: histogram.observe(True), "value=True is invalid"),
        ]
        for call, words in bad:
            with pytest.raises(lanes.LaneConfigError, match=words):
                call()
        user = system.metrics.snapshot().user
    assert user["c"].series == ()
    assert [s.value for s in user["g"].series] == [0.0]
    assert user["h"].series[0].histogram is not None
    assert user["h"].series[0].histogram.count == 0


async def test_a_cancelled_command_keeps_what_it_counted(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system() as system:
        steps = system.metrics.counter("steps")

        async def slow() -> None:
            steps.inc()
            await trio.sleep(10)
            steps.inc()

        handle = await system.submit("query", slow)
        await trio.sleep(1)
        handle.cancel()
        with pytest.raises(lanes.CommandCancelled):
            await handle.result()
        assert steps.value() == 1


async def test_one_system_in_prometheus(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system() as system:
        system.metrics.counter("orders", "Orders.", labels=["shop"]).inc(3, shop="eu")
        system.metrics.gauge("carts", "Carts.").set(4)
        system.metrics.histogram("tokens", "Tokens.").observe(200)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(PrometheusBackend.for_system(system))
        parsed = samples(generate_latest(registry).decode())
    assert value(parsed, "orders_total", shop="eu") == 3
    assert value(parsed, "carts") == 4
    assert value(parsed, "tokens_count") == 1
    assert value(parsed, "tokens", quantile="0.99") == pytest.approx(200, rel=0.016)


async def test_many_systems_sum_and_keep_closed_counts(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    collector = LaneCollector()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    async def session(orders: int, carts: int) -> None:
        async with lanes.open_lane_system() as system:
            collector.add(system)
            system.metrics.counter("orders", labels=["shop"]).inc(orders, shop="eu")
            system.metrics.gauge("carts").set(carts)
            system.metrics.histogram("tokens").observe(orders)
            await trio.sleep(10)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(session, 2, 5)
        await trio.sleep(5)
        async with lanes.open_lane_system() as other:
            collector.add(other)
            other.metrics.counter("orders", labels=["shop"]).inc(1, shop="eu")
            other.metrics.gauge("carts").set(1)
            other.metrics.gauge("tokens")  # clashes with the histogram: not exported
            with caplog.at_level(logging.WARNING, logger="lanes"):
                both = samples(generate_latest(registry).decode())
            await trio.sleep(10)  # the first session closes at 10
            after = samples(generate_latest(registry).decode())
    assert value(both, "orders_total", shop="eu") == 3
    assert value(both, "carts") == 6
    assert value(both, "tokens_count") == 1
    assert "define the metric 'tokens' with different kinds" in caplog.text
    assert value(after, "orders_total", shop="eu") == 3  # the closed session's count stays
    assert value(after, "carts") == 1  # its gauge left with it
    assert value(after, "tokens_count") == 1


async def test_system_labels_apply_to_user_metrics(autojump_clock: trio.abc.Clock) -> None:
    collector = LaneCollector(max_system_labels=2)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    async with lanes.open_lane_system() as a, lanes.open_lane_system() as b:
        collector.add(a, label="a")
        collector.add(b, label="b")
        a.metrics.counter("orders").inc(2)
        b.metrics.counter("orders").inc(5)
        b.metrics.gauge("by_system", labels=["system"]).set(1, system="x")  # would collide
        parsed = samples(generate_latest(registry).decode())
    assert value(parsed, "orders_total", system="a") == 2
    assert value(parsed, "orders_total", system="b") == 5
    assert not any(name == "by_system" for name, _ in parsed)
