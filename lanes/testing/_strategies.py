"""Hypothesis strategies for lane configurations and workloads.

Every time these strategies draw (delays, windows, rates, deadlines) is a multiple of 1/16 s
and every rate a power of two, so the scheduler's float arithmetic on them is exact: a token
that is due at 2.0 s arrives at exactly 2.0 s, and a property failure is a real failure, not
rounding.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from hypothesis import strategies as st

from .._config import LaneConfig, PriorityBoost, RateLimit, RetryPolicy
from ._workload import WorkItem

__all__ = [
    "lane_configs",
    "lane_systems",
    "max_concurrencies",
    "priority_boosts",
    "rate_limits",
    "retry_policies",
    "seconds",
    "workloads",
]

_TICK = 16  # times are multiples of 1/_TICK seconds


@functools.cache
def seconds(min_value: float = 0.0, max_value: float = 4.0) -> st.SearchStrategy[float]:
    """Durations in seconds: multiples of 1/16 between the bounds (inclusive)."""
    low, high = round(min_value * _TICK), round(max_value * _TICK)
    return st.integers(low, high).map(lambda ticks: ticks / _TICK)


@functools.cache
def retry_policies(max_retries: int = 3) -> st.SearchStrategy[RetryPolicy]:
    """``RetryPolicy.none()``, ``.fixed(...)`` or ``.exponential(...)`` (jitter 0 or 1/2)."""
    retries = st.integers(0, max_retries)
    fixed = st.builds(RetryPolicy.fixed, retries, seconds(0.0, 1.0))
    exponential = st.builds(
        lambda n, initial, doublings, jitter: RetryPolicy.exponential(
            n,
            initial_delay=initial,
            multiplier=2.0,
            max_delay=initial * 2**doublings,
            jitter=jitter,
        ),
        retries,
        seconds(1 / _TICK, 0.5),
        st.integers(0, 3),
        st.sampled_from([0.0, 0.0, 0.5]),
    )
    return st.one_of(st.just(RetryPolicy.none()), fixed, exponential)


@functools.cache
def rate_limits() -> st.SearchStrategy[RateLimit]:
    """Token buckets (power-of-two rates), sliding windows and ``per_second(n)`` limits."""
    rates = st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0, 8.0])
    bucket = st.builds(RateLimit.token_bucket, rates, st.integers(1, 3))
    window = st.builds(
        RateLimit.sliding_window, st.integers(1, 3), st.sampled_from([0.25, 0.5, 1.0, 2.0])
    )
    per_second = st.builds(RateLimit.per_second, st.sampled_from([1, 2, 4]))
    return st.one_of(bucket, window, per_second)


@st.composite
def _custom_boost(draw: st.DrawFn, deadline: float) -> PriorityBoost:
    points = draw(st.sets(seconds(1 / _TICK, deadline), min_size=1, max_size=3))
    return PriorityBoost.custom(deadline, sorted(points))


@functools.cache
def priority_boosts() -> st.SearchStrategy[PriorityBoost]:
    """``PriorityBoost.standard(deadline)`` or ``.custom(deadline, at=...)``."""
    deadlines = seconds(0.25, 4.0)
    return st.one_of(deadlines.map(PriorityBoost.standard), deadlines.flatmap(_custom_boost))


@st.composite
def _lane(draw: st.DrawFn, name: str, max_priority: int) -> LaneConfig:
    maximum = draw(st.integers(1, 3))
    return LaneConfig(
        name,
        draw(st.integers(0, max_priority)),
        max_concurrency=maximum,
        min_concurrency=draw(st.sampled_from([0, 0, 1])),
        timeout=draw(st.none() | seconds(0.5, 2.0)),
        retry=draw(retry_policies()),
        rate_limit=draw(st.none() | rate_limits()),
        boost=draw(st.none() | priority_boosts()),
        preemptible=draw(st.sampled_from([False, True, True])),
    )


@functools.cache
def lane_configs(
    min_lanes: int = 1, max_lanes: int = 4, *, max_priority: int = 5
) -> st.SearchStrategy[tuple[LaneConfig, ...]]:
    """Tuples of valid ``LaneConfig`` with unique names ``"lane0"``, ``"lane1"``, ...

    Priorities are drawn independently (ties happen, and lanes are not listed in priority
    order); each lane may have a retry policy, a rate limit, a boost, a timeout, a small
    reservation (``min_concurrency`` 0 or 1) and may be preemptible.
    """
    return st.integers(min_lanes, max_lanes).flatmap(
        lambda n: st.tuples(*(_lane(f"lane{i}", max_priority) for i in range(n)))
    )


def max_concurrencies(configs: Sequence[LaneConfig]) -> st.SearchStrategy[int | None]:
    """A global cap for ``configs``, or None.

    The cap leaves every lane room to run: it is at least the sum of the reservations, plus
    one when some lane reserves nothing (with less, such a lane could never start).
    """
    reserved = sum(c.min_concurrency for c in configs)
    low = max(1, reserved + any(c.min_concurrency == 0 for c in configs))
    return st.integers(low, low + 2) | st.integers(low, low + 2) | st.none()


def lane_systems(
    lanes: st.SearchStrategy[tuple[LaneConfig, ...]] | None = None,
) -> st.SearchStrategy[tuple[tuple[LaneConfig, ...], int | None]]:
    """``(configs, max_concurrency)`` pairs, ready for ``open_lane_system``."""
    configs = lane_configs() if lanes is None else lanes
    return configs.flatmap(lambda cs: st.tuples(st.just(cs), max_concurrencies(cs)))


_BAD_PRIORITY = 2**31  # out of range: reprioritize must refuse it with LaneConfigError


def _work_item(
    lanes: Sequence[str], horizon: float, priorities: bool
) -> st.SearchStrategy[WorkItem]:
    extra: dict[str, st.SearchStrategy[object]] = {}
    if priorities:
        extra = {
            "priority": st.sampled_from([0, 0, 1, -1]),
            "reprioritize_after": st.none() | st.none() | seconds(0.0, 2.0),
            "new_priority": st.sampled_from([0, 1, -1, 2, _BAD_PRIORITY]),
        }
    return st.builds(
        WorkItem,
        lane=st.sampled_from(lanes),
        at=seconds(0.0, horizon),
        outcome=st.sampled_from(
            ["success", "success", "fail", "flaky", "permanent", "slow", "cancel"]
        ),
        duration=seconds(0.0, 1.0),
        delay=st.just(0.0) | seconds(0.0, 1.0),
        failures=st.integers(1, 3),
        cancel_after=seconds(0.0, 2.0),
        **extra,
    )


def workloads(
    lanes: Sequence[str] | Sequence[LaneConfig],
    *,
    min_size: int = 1,
    max_size: int = 20,
    horizon: float = 4.0,
    priorities: bool = False,
) -> st.SearchStrategy[list[WorkItem]]:
    """Random workloads over ``lanes``: lists of :class:`WorkItem`, sorted by submit time.

    Args:
        lanes: lane names (or configs) the commands go to.
        min_size: fewest commands.
        max_size: most commands.
        horizon: the latest submit time, in seconds.
        priorities: also draw command priorities (``submit(priority=)``) and, for about a
            third of the items, a ``handle.reprioritize()`` call some time after the submit
            (now and then with a priority out of range, which must be refused). The
            system's events carry each priority and change, so ``check_invariants``
            checks the log's order by them as it is.
    """
    names = [lane.name if isinstance(lane, LaneConfig) else lane for lane in lanes]
    if not names:
        msg = "workloads() needs at least one lane"
        raise ValueError(msg)
    item = _work_item(names, horizon, priorities)
    items = st.lists(item, min_size=min_size, max_size=max_size)
    return items.map(lambda work: sorted(work, key=lambda item: item.at))
