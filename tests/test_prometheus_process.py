"""One Prometheus exposition for many lane systems: ``lanes.prometheus.LaneCollector``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import lanes
from lanes import LaneConfig
from lanes._dispatcher import REAP_AFTER
from lanes._histogram import Histogram
from lanes.prometheus import LaneCollector, PrometheusBackend, serve_metrics

from .helpers import boom, noop, sleeper
from .test_metrics import task_count

CONFIGS = [LaneConfig("query", 2, max_concurrency=4), LaneConfig("prompt", 5)]
Key = tuple[str, frozenset[tuple[str, str]]]


def scrape(collector: LaneCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def samples(text: str) -> dict[Key, float]:
    parsed: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in parsed, f"duplicate series {key}"
            parsed[key] = sample.value
    return parsed


def value(parsed: dict[Key, float], name: str, **labels: str) -> float:
    return parsed[name, frozenset(labels.items())]


def counters(parsed: dict[Key, float]) -> dict[Key, float]:
    return {k: v for k, v in parsed.items() if k[0].endswith(("_total", "_count", "_sum"))}


@asynccontextmanager
async def systems(
    n: int, collector: LaneCollector, **options: object
) -> AsyncIterator[list[lanes.LaneSystem]]:
    async with AsyncExitStack() as stack:
        opened = []
        for _ in range(n):
            system = await stack.enter_async_context(lanes.open_lane_system(CONFIGS, **options))  # type: ignore[arg-type]
            collector.add(system)
            opened.append(system)
        yield opened


async def test_two_systems_give_one_set_of_summed_series(autojump_clock: trio.abc.Clock) -> None:
    collector = LaneCollector()
    durations = {0: [1.0, 2.0, 3.0], 1: [10.0, 0.5]}
    async with systems(2, collector) as (first, second):
        for index, system in enumerate((first, second)):
            for seconds in durations[index]:
                await system.run("query", sleeper, seconds)
        with pytest.raises(lanes.CommandFailed):
            await second.run("query", boom)
        first.pause("prompt")
        second.pause("prompt")
        for system in (first, second, second):
            await system.submit("prompt", noop)
        parsed = samples(scrape(collector))
        for system in (first, second):
            system.resume("prompt")
    assert value(parsed, "lanes_systems") == 2
    assert value(parsed, "lanes_commands_submitted_total", lane="query") == 6
    assert value(parsed, "lanes_commands_total", lane="query", outcome="completed") == 5
    assert value(parsed, "lanes_commands_total", lane="query", outcome="failed") == 1
    assert value(parsed, "lanes_queue_depth", lane="prompt") == 3
    assert value(parsed, "lanes_max_concurrency", lane="query") == 8  # 4 + 4
    assert value(parsed, "lanes_priority", lane="prompt") == 5
    everything = Histogram()
    everything.record_many([*durations[0], *durations[1], 0.0])
    name = "lanes_command_duration_seconds"
    assert value(parsed, f"{name}_count", lane="query") == 6
    for quantile, number in zip(
        ("0.5", "0.9", "0.95", "0.99"), everything.percentiles(), strict=True
    ):
        assert value(parsed, name, lane="query", quantile=quantile) == pytest.approx(number)


async def test_closed_systems_leave_but_their_counts_stay(autojump_clock: trio.abc.Clock) -> None:
    collector = LaneCollector()
    async with lanes.open_lane_system(CONFIGS) as staying:
        collector.add(staying)
        async with lanes.open_lane_system(CONFIGS) as leaving:
            collector.add(leaving)
            for _ in range(3):
                await leaving.run("query", sleeper, 1.0)
            await staying.run("query", noop)
            before = samples(scrape(collector))
        assert len(collector) == 1
        after = samples(scrape(collector))
        await staying.run("query", noop)
        later = samples(scrape(collector))
    assert value(before, "lanes_systems") == 2
    assert value(after, "lanes_systems") == 1
    assert value(after, "lanes_max_concurrency", lane="query") == 4  # its gauges left
    for key, number in counters(before).items():  # Prometheus counters never go backwards
        assert after[key] >= number, key
        assert later[key] >= after[key], key
    assert value(after, "lanes_commands_submitted_total", lane="query") == 4
    assert value(later, "lanes_command_duration_seconds_count", lane="query") == 5


async def test_a_system_cancelled_or_failing_leaves_too(autojump_clock: trio.abc.Clock) -> None:
    collector = LaneCollector()
    with trio.move_on_after(5):
        async with lanes.open_lane_system(CONFIGS) as system:
            collector.add(system)
            await system.submit("query", sleeper, 100)
            await trio.sleep(1)
            assert value(samples(scrape(collector)), "lanes_active", lane="query") == 1
            await trio.sleep_forever()
    with pytest.raises(RuntimeError, match="body"):
        async with lanes.open_lane_system(CONFIGS) as system:
            collector.add(system)
            await system.run("query", noop)
            raise RuntimeError("the body fails")
    assert len(collector) == 0
    parsed = samples(scrape(collector))
    assert value(parsed, "lanes_systems") == 0
    assert value(parsed, "lanes_active", lane="query") == 0
    assert value(parsed, "lanes_commands_total", lane="query", outcome="cancelled") == 1
    assert value(parsed, "lanes_commands_total", lane="query", outcome="completed") == 1


async def test_remove_stops_exporting_and_keeps_the_counts(autojump_clock: trio.abc.Clock) -> None:
    collector = LaneCollector()
    async with lanes.open_lane_system(CONFIGS) as system:
        collector.add(system)
        await system.run("query", noop)
        collector.remove(system)
        collector.remove(system)  # a no-op the second time
        await system.run("query", noop)  # no longer counted
        parsed = samples(scrape(collector))
        collector.add(system)  # and it may come back
    assert value(parsed, "lanes_systems") == 0
    assert value(parsed, "lanes_commands_submitted_total", lane="query") == 1


async def test_system_labels_are_capped_and_fold_into_other(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    collector = LaneCollector(max_system_labels=2, label_name="session")
    async with AsyncExitStack() as stack:
        opened = []
        for label in ("alice", "bob", "carol", "dave", None):
            system = await stack.enter_async_context(lanes.open_lane_system(CONFIGS))
            collector.add(system, label=label)
            opened.append(system)
            await system.run("query", noop)
        parsed = samples(scrape(collector))
    series = {dict(labels).get("session") for name, labels in parsed if name == "lanes_active"}
    assert series == {"alice", "bob", "other"}  # cardinality: the cap + 1
    assert value(parsed, "lanes_commands_submitted_total", lane="query", session="alice") == 1
    assert value(parsed, "lanes_commands_submitted_total", lane="query", session="other") == 3
    assert value(parsed, "lanes_systems") == 5
    assert value(parsed, "lanes_systems_over_label_limit") == 2  # carol and dave
    warnings = [r for r in caplog.records if "max_system_labels" in r.getMessage()]
    assert len(warnings) == 1  # once, not per system
    assert "'carol'" in warnings[0].getMessage()


async def test_labelled_series_leave_and_other_never_goes_backwards(
    autojump_clock: trio.abc.Clock,
) -> None:
    collector = LaneCollector(max_system_labels=1)
    async with lanes.open_lane_system(CONFIGS) as unlabelled:
        collector.add(unlabelled)
        await unlabelled.run("query", noop)
        async with lanes.open_lane_system(CONFIGS) as labelled:
            collector.add(labelled, label="s1")
            async with lanes.open_lane_system(CONFIGS) as overflow:
                collector.add(overflow, label="s2")  # the cap is full: other
                await overflow.run("query", noop)
                await labelled.run("query", noop)
                before = samples(scrape(collector))
            middle = samples(scrape(collector))
        after = samples(scrape(collector))
        async with lanes.open_lane_system(CONFIGS) as newcomer:
            collector.add(newcomer, label="s3")  # s1's place is free again
            reused = samples(scrape(collector))
    other = {"lane": "query", "system": "other"}
    name = "lanes_commands_submitted_total"
    assert value(before, name, **other) == 2
    assert value(middle, name, **other) == 2  # the overflow system's count stayed
    assert value(after, name, **other) == 2  # s1's own series left; nothing moved into other
    assert (name, frozenset({"lane": "query", "system": "s1"}.items())) in before
    assert not [k for k in after if ("system", "s1") in k[1]]
    assert value(middle, "lanes_systems_over_label_limit") == 0
    assert value(reused, name, lane="query", system="s3") == 0
    for key, number in counters(before).items():
        if ("system", "other") in key[1]:
            assert after[key] >= number, key


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"max_system_labels": -1}, "max_system_labels=-1"),
        ({"max_system_labels": True}, "max_system_labels=True"),
        ({"max_system_labels": "10"}, "max_system_labels='10'"),
        ({"label_name": "lane"}, "label_name='lane'"),
        ({"label_name": "has space"}, "label_name='has space'"),
        ({"label_name": "__name"}, "label_name='__name'"),
    ],
)
def test_bad_collector_options_are_config_errors(options: dict[str, object], match: str) -> None:
    with pytest.raises(lanes.LaneConfigError, match=match):
        LaneCollector(**options)  # type: ignore[arg-type]


async def test_bad_labels_and_systems_are_refused(autojump_clock: trio.abc.Clock) -> None:
    plain, labelled = LaneCollector(), LaneCollector(max_system_labels=5)
    async with lanes.open_lane_system(CONFIGS) as system, lanes.open_lane_system(CONFIGS) as other:
        with pytest.raises(lanes.LaneConfigError, match="max_system_labels=N"):
            plain.add(system, label="s1")
        for bad in ("", "other", 42):
            with pytest.raises(lanes.LaneConfigError, match=f"label={bad!r}"):
                labelled.add(system, label=bad)  # type: ignore[arg-type]
        labelled.add(system, label="s1")
        with pytest.raises(lanes.LaneUsageError, match="already added"):
            labelled.add(system, label="s9")
        with pytest.raises(lanes.LaneConfigError, match="already used by an open system"):
            labelled.add(other, label="s1")
        with pytest.raises(lanes.LaneUsageError, match="not a local lane system"):
            plain.add(object())  # type: ignore[arg-type]
        assert len(plain) == 0 and len(labelled) == 1  # nothing half-added
    with pytest.raises(lanes.ShutdownInProgress, match="closed"):
        plain.add(system)


async def test_two_shared_limits_with_one_name_are_refused(autojump_clock: trio.abc.Clock) -> None:
    collector = LaneCollector()
    one, two = lanes.SharedLimit(1, name="llm"), lanes.SharedLimit(2, name="llm")
    async with (
        lanes.open_lane_system([LaneConfig("prompt", 5, shared_limit=one)]) as first,
        lanes.open_lane_system([LaneConfig("prompt", 5, shared_limit=two)]) as second,
    ):
        collector.add(first)
        with pytest.raises(lanes.LaneConfigError, match="two SharedLimit objects are named 'llm'"):
            collector.add(second)
        assert len(collector) == 1


async def test_shared_limit_series(autojump_clock: trio.abc.Clock) -> None:
    llm = lanes.SharedLimit(1, name="llm")
    configs = [LaneConfig("prompt", 5, shared_limit=llm), LaneConfig("query", 2)]
    collector = LaneCollector()
    async with systems(0, collector):
        async with (
            lanes.open_lane_system(configs) as alice,
            lanes.open_lane_system(configs) as bob,
        ):
            collector.add(alice)
            collector.add(bob)
            first = await alice.submit("prompt", sleeper, 4)
            await trio.testing.wait_all_tasks_blocked()
            second = await bob.submit("prompt", sleeper, 1)
            await trio.sleep(1)
            busy = samples(scrape(collector))
            await first.result()
            await second.result()
            done = samples(scrape(collector))
        closed = samples(scrape(collector))
    assert value(busy, "lanes_shared_limit_max_concurrency", limit="llm") == 1
    assert value(busy, "lanes_shared_limit_in_use", limit="llm") == 1
    assert value(busy, "lanes_shared_limit_waiting", limit="llm") == 1
    assert value(busy, "lanes_shared_limit_members", limit="llm") == 2
    assert value(busy, "lanes_shared_limit_held", limit="llm", lane="prompt") == 1
    assert value(busy, "lanes_shared_limit_holders_waiting", limit="llm", lane="prompt") == 1
    assert value(done, "lanes_shared_limit_grants_total", limit="llm") == 1  # bob's, granted
    wait = "lanes_shared_limit_wait_duration_seconds"
    assert value(done, f"{wait}_count", limit="llm", lane="prompt") == 2
    assert value(done, wait, limit="llm", lane="prompt", quantile="0.99") == pytest.approx(
        4, rel=0.02
    )
    assert value(closed, f"{wait}_count", limit="llm", lane="prompt") == 2  # kept after close
    assert value(closed, "lanes_shared_limit_members", limit="llm") == 0
    assert not [k for k in busy if k[0].startswith("lanes_shared") and ("lane", "query") in k[1]]


async def test_a_registry_refuses_a_second_lanes_collector(autojump_clock: trio.abc.Clock) -> None:
    registry = CollectorRegistry()
    registry.register(LaneCollector())
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(LaneCollector())
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(PrometheusBackend())
    async with lanes.open_lane_system(CONFIGS) as system, trio.open_nursery() as nursery:
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            await nursery.start(partial(serve_metrics, system, 0, registry=registry))


async def test_scraping_from_another_thread_is_a_usage_error() -> None:
    collector = LaneCollector()
    assert "lanes_systems 0.0" in await trio.to_thread.run_sync(scrape, collector)  # no system yet
    async with lanes.open_lane_system(CONFIGS) as system:
        collector.add(system)
        with pytest.raises(lanes.LaneUsageError, match="from that Trio thread"):
            await trio.to_thread.run_sync(scrape, collector)


async def test_serve_metrics_serves_a_collector_over_http() -> None:
    collector = LaneCollector()
    async with (
        lanes.open_lane_system(CONFIGS) as one,
        lanes.open_lane_system(CONFIGS) as two,
        trio.open_nursery() as nursery,
    ):
        collector.add(one)
        collector.add(two)
        server = await nursery.start(serve_metrics, collector, 0)
        assert server.host == "127.0.0.1"
        await one.run("query", noop)
        await two.run("query", noop)
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some():
                data += chunk
        nursery.cancel_scope.cancel()
    parsed = samples(data.partition(b"\r\n\r\n")[2].decode())
    assert value(parsed, "lanes_commands_submitted_total", lane="query") == 2
    assert value(parsed, "lanes_systems") == 2


async def test_idle_systems_stay_idle_with_a_collector(autojump_clock: trio.abc.Clock) -> None:
    """No task and no timer per system: the collector only works when scraped."""
    collector = LaneCollector(max_system_labels=10)
    async with AsyncExitStack() as stack:
        opened = []
        for _ in range(200):
            system = await stack.enter_async_context(lanes.open_lane_system(CONFIGS))
            await system.run("query", noop)
            opened.append(system)
        await trio.sleep(REAP_AFTER)  # idle: their parked workers are reaped
        await trio.testing.wait_all_tasks_blocked()
        tasks = task_count()
        for index, system in enumerate(opened):
            collector.add(system, label=f"s{index}")
        await trio.testing.wait_all_tasks_blocked()
        assert task_count() == tasks
        assert trio.lowlevel.current_statistics().seconds_to_next_deadline == float("inf")
        before = trio.current_time()
        parsed = samples(scrape(collector))
        await trio.testing.wait_all_tasks_blocked()
        assert task_count() == tasks
        assert trio.lowlevel.current_statistics().seconds_to_next_deadline == float("inf")
        assert trio.current_time() == before  # the autojump clock never had to jump
    assert value(parsed, "lanes_commands_submitted_total", lane="query", system="other") == 190


def test_the_observability_example_serves_every_session(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Real sockets, so the real clock (about half a second)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "observability.py"
    spec = importlib.util.spec_from_file_location("example_observability_sessions", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trio.run(module.main)
    out = capsys.readouterr().out
    assert (
        "exposition: 1 open system(s); completed in all sessions: prompt=11 query=23; "
        "llm: 0 in use, 3 waits measured"
    ) in out


async def test_the_fast_text_encoder_writes_what_prometheus_client_writes(
    autojump_clock: trio.abc.Clock,
) -> None:
    from lanes.prometheus import _AlertCollector, _encode_text

    llm = lanes.SharedLimit(1, name="llm")
    configs = [*CONFIGS, LaneConfig("tools", 3, shared_limit=llm)]
    collector = LaneCollector(max_system_labels=4)
    labels = ['quote " in it', "back\\slash", "new\nline", "ünïcode"]
    async with AsyncExitStack() as stack:
        for label in labels:
            system = await stack.enter_async_context(lanes.open_lane_system(configs))
            collector.add(system, label=label)
            await system.run("query", sleeper, 0.25)
            await system.run("tools", noop)
        system.pause("prompt")
        await system.submit("prompt", noop)
        monitor = lanes.AlertMonitor(system, [lanes.AlertRule.queue_depth("prompt", warning=1)])
        monitor.check()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        registry.register(_AlertCollector(monitor))
        fast, reference = _encode_text(registry), generate_latest(registry)
        system.resume("prompt")
    assert fast == reference
    assert "ünïcode".encode() in fast
    assert b'system="quote \\" in it"' in fast and b"NaN" in fast and b"lanes_alert_level" in fast
