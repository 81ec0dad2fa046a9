"""``lanes.to_json`` / ``lanes.from_json``: config, statistics, metrics, events, dead letters."""

from __future__ import annotations

import json
from typing import ClassVar

import attrs
import pytest
import trio

import lanes
from lanes import LaneConfig, PriorityBoost, RateLimit, RetryPolicy
from lanes import events as ev

from .helpers import boom, noop


@attrs.frozen
class OrderShipped(ev.Event):
    key: ClassVar[str] = "shop.order.shipped"
    order: str = ""


def drained(stream: trio.MemoryReceiveChannel[ev.Event]) -> list[ev.Event]:
    got = []
    while True:
        try:
            got.append(stream.receive_nowait())
        except trio.WouldBlock:
            return got


def test_lane_configs_round_trip() -> None:
    llm = lanes.SharedLimit(4, name="llm", rate_limit=RateLimit.per_second(10))
    configs = [
        LaneConfig(
            "prompt",
            5,
            max_concurrency=2,
            timeout=30.0,
            retry=RetryPolicy.exponential(3, jitter=0.1),
            rate_limit=RateLimit.sliding_window(100, 60.0),
            boost=PriorityBoost.custom(20.0, at=[5.0, 10.0]),
            shared_limit=llm,
        ),
        LaneConfig("tools", 4, shared_limit=llm, preemptible=True),
        *lanes.DEFAULT_LANES,
    ]
    text = lanes.to_json(configs)
    data = json.loads(text)
    assert data[0]["shared_limit"] == {
        "name": "llm",
        "max_concurrency": 4,
        "rate_limit": {
            "kind": "token_bucket",
            "rate": 10.0,
            "burst": 10,
            "limit": 0,
            "window": 0.0,
        },
    }
    back = lanes.from_json(text, list[LaneConfig])
    assert [attrs.evolve(c, shared_limit=None) for c in back] == [
        attrs.evolve(c, shared_limit=None) for c in configs
    ]
    limit = back[0].shared_limit
    assert limit is not None and limit is back[1].shared_limit and limit is not llm
    assert (limit.name, limit.max_concurrency, limit.rate_limit) == ("llm", 4, llm.rate_limit)
    assert lanes.from_json(lanes.to_json(configs[2]), LaneConfig) == configs[2]


async def test_statistics_metrics_and_dead_letters_round_trip(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system() as system:
        system.metrics.counter("orders", labels=["shop"]).inc(2, shop="eu")
        system.metrics.histogram("tokens").observe(120)
        await system.run("query", trio.sleep, 2)
        with pytest.raises(lanes.CommandFailed):
            await system.run("query", boom)
        statistics = system.statistics()
        snapshot = system.metrics.snapshot()
        letters = system.dead_letters.list()
    assert lanes.from_json(lanes.to_json(statistics), lanes.SystemStatistics) == statistics
    assert lanes.from_json(lanes.to_json(snapshot), lanes.MetricsSnapshot) == snapshot
    back = lanes.from_json(lanes.to_json(letters, indent=2), list[lanes.DeadLetter])
    assert back == letters and back[0].error == "RuntimeError('boom')"
    assert back[0].fn is None and back[0].args == ()  # a record, not the command
    assert set(json.loads(lanes.to_json(letters[0]))) == {
        "id",
        "lane",
        "command_type",
        "error",
        "attempts",
        "failed_at",
    }


async def test_events_round_trip_as_their_own_classes(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system() as system, system.subscribe() as stream:
        await system.run("query", noop)
        system.emit(OrderShipped("", "", system.wall_time(), order="A-1"))
        handle = await system.submit("query", trio.sleep, 10)
        handle.cancel()
        await trio.testing.wait_all_tasks_blocked()
        seen = drained(stream)
    text = lanes.to_json(seen)
    assert [e["event"] for e in json.loads(text)] == [e.key for e in seen]
    back = lanes.from_json(text, list[ev.Event], events=[OrderShipped])
    assert back == seen
    assert [type(e) for e in back] == [type(e) for e in seen]
    one = lanes.from_json(lanes.to_json(seen[2]), ev.Event)
    assert isinstance(one, ev.Completed) and one == seen[2]
    assert lanes.from_json(lanes.to_json(seen[2]), ev.Completed) == seen[2]
    with pytest.raises(lanes.JsonError, match=r"unknown event key 'shop\.order\.shipped'"):
        lanes.from_json(text, list[ev.Event])  # its class was not given


@pytest.mark.parametrize(
    ("text", "kind", "words"),
    [
        ("{not json", LaneConfig, "the text is not JSON"),
        ('{"name": "a", "priority": "high"}', LaneConfig, r"@ \$\.priority"),
        ('[{"name": "a", "priority": 1}, {"name": "b"}]', list[LaneConfig], r"\$\[1\]\.priority"),
        ('{"name": "a", "priority": -1}', LaneConfig, "priority=-1 is invalid"),
        (
            '{"name": "a", "priority": 1, "retry": {"max_retries": -2}}',
            LaneConfig,
            "max_retries",
        ),
        ('{"lane": "q", "command_id": "", "timestamp": 0}', ev.Event, "needs its key under"),
        ('{"event": "lane.nope", "lane": "q"}', ev.Event, "unknown event key 'lane.nope'"),
        (
            '[{"name": "a", "priority": 1, "shared_limit": {"name": "x", "max_concurrency": 1}},'
            ' {"name": "b", "priority": 2, "shared_limit": {"name": "x", "max_concurrency": 2}}]',
            list[LaneConfig],
            "two different shared limits are named 'x'",
        ),
    ],
)
def test_bad_json_raises_json_error_naming_the_fault(text: str, kind: object, words: str) -> None:
    with pytest.raises(lanes.JsonError, match=words) as caught:
        lanes.from_json(text, kind)
    assert isinstance(caught.value, lanes.LaneError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("events", "words"),
    [
        ([dict], "events= holds <class 'dict'>"),
        ([ev.Event], "events= holds <class 'lanes.events.Event'>"),
        (OrderShipped, "events=<class .* is invalid; expected a list"),
    ],
)
def test_bad_event_classes(events: object, words: str) -> None:
    with pytest.raises(lanes.JsonError, match=words):
        lanes.from_json("[]", list[ev.Event], events=events)  # type: ignore[arg-type]


def test_two_event_classes_with_one_key() -> None:
    @attrs.frozen
    class Twin(ev.Event):
        key: ClassVar[str] = "shop.order.shipped"

    with pytest.raises(lanes.JsonError, match=r"have the same key 'shop\.order\.shipped'"):
        lanes.from_json("[]", list[ev.Event], events=[OrderShipped, Twin])


async def test_what_has_no_json_form_is_refused(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system() as system:
        with pytest.raises(lanes.JsonError, match="cannot be exported"):
            lanes.to_json(system)
        with pytest.raises(lanes.JsonError, match="cannot be exported"):
            lanes.to_json([noop])


async def test_a_read_back_config_opens_a_system(autojump_clock: trio.abc.Clock) -> None:
    configs = lanes.from_json(lanes.to_json(lanes.DEFAULT_LANES), list[LaneConfig])
    async with lanes.open_lane_system(configs) as system:
        assert await system.run("query", trio.sleep, 1) is None
        assert lanes.from_json(lanes.to_json(system.lanes), tuple[LaneConfig, ...]) == system.lanes
