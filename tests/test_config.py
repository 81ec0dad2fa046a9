"""Configuration objects validate themselves with clear LaneConfigError messages."""

from __future__ import annotations

import math

import pytest

import lanes
from lanes import LaneConfig, LaneConfigError, PriorityBoost, RateLimit, RetryPolicy


def test_default_lanes_in_priority_order() -> None:
    names = [(c.name, c.priority, c.max_concurrency) for c in lanes.DEFAULT_LANES]
    assert names == [
        ("system", 0, 5),
        ("control", 1, 3),
        ("query", 2, 10),
        ("session", 3, 5),
        ("skill", 4, 3),
        ("prompt", 5, 2),
    ]
    assert isinstance(lanes.DEFAULT_LANES, tuple)


def test_lane_config_is_frozen() -> None:
    config = LaneConfig("a", 1)
    with pytest.raises(AttributeError):
        config.priority = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field", "value"),
    [
        ({"name": "", "priority": 0}, "name", "''"),
        ({"name": "   ", "priority": 0}, "name", "'   '"),
        ({"name": 3, "priority": 0}, "name", "3"),
        ({"name": "a", "priority": -1}, "priority", "-1"),
        ({"name": "a", "priority": 1.5}, "priority", "1.5"),
        ({"name": "a", "priority": 0, "max_concurrency": 0}, "max_concurrency", "0"),
        ({"name": "a", "priority": 0, "min_concurrency": -1}, "min_concurrency", "-1"),
        (
            {"name": "a", "priority": 0, "max_concurrency": 2, "min_concurrency": 3},
            "min_concurrency",
            "3",
        ),
        ({"name": "a", "priority": 0, "timeout": 0}, "timeout", "0"),
        ({"name": "a", "priority": 0, "timeout": -1.0}, "timeout", "-1.0"),
        ({"name": "a", "priority": 0, "timeout": math.nan}, "timeout", "nan"),
        ({"name": "a", "priority": 0, "inbox_size": 0}, "inbox_size", "0"),
        ({"name": "a", "priority": 0, "retry": 3}, "retry", "3"),
        ({"name": "a", "priority": 0, "rate_limit": 5}, "rate_limit", "5"),
        ({"name": "a", "priority": 0, "boost": "x"}, "boost", "'x'"),
        ({"name": "a", "priority": 0, "preemptible": 1}, "preemptible", "1"),
    ],
)
def test_lane_config_rejects_bad_values(kwargs: dict[str, object], field: str, value: str) -> None:
    with pytest.raises(LaneConfigError) as info:
        LaneConfig(**kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert f"{field}={value}" in message
    assert isinstance(info.value, ValueError)


def test_retry_policies() -> None:
    assert RetryPolicy.none().max_retries == 0
    fixed = RetryPolicy.fixed(3, 0.5)
    assert [fixed.delay(n) for n in (1, 2, 3)] == [0.5, 0.5, 0.5]
    expo = RetryPolicy.exponential(5)
    assert [expo.delay(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.8]
    capped = RetryPolicy.exponential(10, initial_delay=1, multiplier=3, max_delay=5)
    assert [capped.delay(n) for n in (1, 2, 3)] == [1, 3, 5]
    jittered = RetryPolicy.exponential(3, initial_delay=1, jitter=0.5)
    assert jittered.delay(1, random=0.0) == 1.0
    assert jittered.delay(1, random=0.999) == pytest.approx(0.5005)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RetryPolicy.fixed(-1, 1),
        lambda: RetryPolicy.fixed(1, -0.5),
        lambda: RetryPolicy.exponential(1, initial_delay=-1),
        lambda: RetryPolicy.exponential(1, multiplier=0.5),
        lambda: RetryPolicy.exponential(1, initial_delay=5, max_delay=1),
        lambda: RetryPolicy.exponential(1, jitter=1.5),
        lambda: RetryPolicy.exponential(True),
    ],
)
def test_retry_policy_rejects_bad_values(make: object) -> None:
    with pytest.raises(LaneConfigError, match="RetryPolicy"):
        make()  # type: ignore[operator]


def test_rate_limits() -> None:
    assert RateLimit.per_second(5) == RateLimit.token_bucket(5, burst=5)
    minute = RateLimit.per_minute(60)
    assert minute.rate == pytest.approx(1.0)
    assert minute.burst == 60
    assert RateLimit.per_hour(3600).rate == pytest.approx(1.0)
    window = RateLimit.sliding_window(10, 2.0)
    assert (window.limit, window.window) == (10, 2.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RateLimit.per_second(0),
        lambda: RateLimit.per_minute(-3),
        lambda: RateLimit.token_bucket(0, 1),
        lambda: RateLimit.token_bucket(1, 0),
        lambda: RateLimit.sliding_window(0, 1),
        lambda: RateLimit.sliding_window(1, 0),
        lambda: RateLimit("leaky"),  # type: ignore[arg-type]
    ],
)
def test_rate_limit_rejects_bad_values(make: object) -> None:
    with pytest.raises(LaneConfigError, match="RateLimit"):
        make()  # type: ignore[operator]


def test_priority_boosts() -> None:
    assert PriorityBoost.standard(8).at == (2.0, 4.0, 6.0)
    assert PriorityBoost.aggressive(10).at == (1.0, 2.5, 5.0, 7.5, 10.0)
    custom = PriorityBoost.custom(10, [1, 10])
    assert custom.levels(0.5) == 0
    assert custom.levels(1) == 1
    assert custom.levels(100) == 2
    assert PriorityBoost.custom(10, [5, 2]).at == (2, 5)  # any order; kept sorted


@pytest.mark.parametrize(
    "make",
    [
        lambda: PriorityBoost.standard(0),
        lambda: PriorityBoost.custom(10, [0]),
        lambda: PriorityBoost.custom(10, [11]),
        lambda: PriorityBoost.custom(10, [-1]),
        lambda: PriorityBoost.custom(10, []),
        lambda: PriorityBoost.custom(10, ["5"]),
    ],
)
def test_priority_boost_rejects_bad_values(make: object) -> None:
    with pytest.raises(LaneConfigError, match="PriorityBoost"):
        make()  # type: ignore[operator]


async def test_system_rejects_bad_lane_sets() -> None:
    with pytest.raises(LaneConfigError, match="at least one"):
        lanes.open_lane_system([])
    with pytest.raises(LaneConfigError, match="unique"):
        lanes.open_lane_system([LaneConfig("a", 0), LaneConfig("a", 1)])
    with pytest.raises(LaneConfigError, match="LaneConfig"):
        lanes.open_lane_system(["a"])  # type: ignore[list-item]
    with pytest.raises(LaneConfigError, match="max_concurrency=0"):
        lanes.open_lane_system(max_concurrency=0)
    with pytest.raises(LaneConfigError, match="reserve 3 slots"):
        lanes.open_lane_system(
            [
                LaneConfig("a", 0, max_concurrency=2, min_concurrency=2),
                LaneConfig("b", 1, min_concurrency=1),
            ],
            max_concurrency=2,
        )
    with pytest.raises(LaneConfigError, match="dead_letter_limit=0"):
        lanes.open_lane_system(dead_letter_limit=0)
    with pytest.raises(LaneConfigError, match="drain_timeout=-1"):
        lanes.open_lane_system(drain_timeout=-1)
