"""Lane configuration: frozen, validated at construction.

Every object here is immutable and checks its own values, raising :class:`LaneConfigError`
that names the field, the bad value and what would be accepted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import attrs

from ._checks import check_int as _check_int
from ._checks import check_non_negative as _check_non_negative
from ._checks import check_number as _check_number
from ._checks import check_positive as _check_positive
from ._checks import check_type as _check_type
from ._checks import fail as _fail
from ._limiters import RateLimit
from ._shared import SharedLimit

__all__ = ["DEFAULT_LANES", "LaneConfig", "PriorityBoost", "RateLimit", "RetryPolicy"]


@attrs.frozen
class RetryPolicy:
    """How often and how soon a failed command is tried again.

    Build one with :meth:`none`, :meth:`fixed` or :meth:`exponential`. An attempt that raises
    (or times out) is retried until ``max_retries`` retries were made; ``lanes.Permanent``
    skips the retries. A success is never retried.
    """

    max_retries: int = 0
    initial_delay: float = 0.0
    multiplier: float = 1.0
    max_delay: float = 0.0
    jitter: float = 0.0

    def __attrs_post_init__(self) -> None:
        _check_int("RetryPolicy", "max_retries", self.max_retries, 0)
        _check_non_negative("RetryPolicy", "initial_delay", self.initial_delay)
        if _check_number("RetryPolicy", "multiplier", self.multiplier) < 1.0:
            raise _fail("RetryPolicy", "multiplier", self.multiplier, "expected a number >= 1")
        _check_non_negative("RetryPolicy", "max_delay", self.max_delay)
        if self.max_delay < self.initial_delay:
            raise _fail(
                "RetryPolicy",
                "max_delay",
                self.max_delay,
                f"expected max_delay >= initial_delay ({self.initial_delay!r})",
            )
        jitter = _check_number("RetryPolicy", "jitter", self.jitter)
        if not 0.0 <= jitter <= 1.0:
            raise _fail("RetryPolicy", "jitter", self.jitter, "expected a fraction in [0, 1]")

    @classmethod
    def none(cls) -> RetryPolicy:
        """No retries: the first failure is final."""
        return cls()

    @classmethod
    def fixed(cls, max_retries: int, delay: float) -> RetryPolicy:
        """Up to ``max_retries`` retries, each ``delay`` seconds after the failure."""
        _check_non_negative("RetryPolicy.fixed", "delay", delay)
        return cls(max_retries, delay, 1.0, delay)

    @classmethod
    def exponential(
        cls,
        max_retries: int,
        *,
        initial_delay: float = 0.1,
        multiplier: float = 2.0,
        max_delay: float = 30.0,
        jitter: float = 0.0,
    ) -> RetryPolicy:
        """Retry ``n`` waits ``min(max_delay, initial_delay * multiplier**(n-1))`` seconds.

        ``jitter`` (a fraction in [0, 1]) shortens each delay by a random part of up to that
        fraction, so retries of many commands spread out without exceeding ``max_delay``.
        """
        return cls(max_retries, initial_delay, multiplier, max_delay, jitter)

    def delay(self, retry: int, random: float = 0.0) -> float:
        """The delay before retry number ``retry`` (1 = the first retry).

        Args:
            retry: which retry, counting from 1.
            random: a number in [0, 1) used for the jitter (ignored when jitter is 0).
        """
        try:
            base = min(self.max_delay, self.initial_delay * self.multiplier ** (retry - 1))
        except OverflowError:
            base = self.max_delay
        return base * (1.0 - self.jitter * random)


_BOOST_SHAPES = {
    "standard": (0.25, 0.5, 0.75),
    "aggressive": (0.1, 0.25, 0.5, 0.75, 1.0),
}


def _as_points(points: Iterable[float]) -> tuple[float, ...]:
    return tuple(points)


@attrs.frozen
class PriorityBoost:
    """Raise the effective priority of commands that wait long.

    ``at`` holds times in seconds since the command became pending; each point passed makes
    it one level more urgent (never below 0). FIFO order within a lane is kept.
    """

    deadline: float
    at: tuple[float, ...] = attrs.field(converter=_as_points)

    def __attrs_post_init__(self) -> None:
        _check_positive("PriorityBoost", "deadline", self.deadline)
        if not self.at:
            raise _fail("PriorityBoost", "at", self.at, "expected at least one boost point")
        for point in self.at:
            value = _check_number("PriorityBoost", "at", point)
            if not 0 < value <= self.deadline:
                raise _fail(
                    "PriorityBoost",
                    "at",
                    point,
                    f"each boost point must lie in (0, deadline={self.deadline!r}]",
                )
        if list(self.at) != sorted(self.at):  # any order is fine; kept sorted
            object.__setattr__(self, "at", tuple(sorted(self.at)))

    @classmethod
    def standard(cls, deadline: float) -> PriorityBoost:
        """Boost points at 25%, 50% and 75% of ``deadline``."""
        return cls._shape(deadline, "standard")

    @classmethod
    def aggressive(cls, deadline: float) -> PriorityBoost:
        """Boost points at 10%, 25%, 50%, 75% and 100% of ``deadline``."""
        return cls._shape(deadline, "aggressive")

    @classmethod
    def custom(cls, deadline: float, at: Iterable[float]) -> PriorityBoost:
        """Boost points at the given times (seconds), each in (0, deadline]."""
        points: tuple[float, ...] = tuple(at)
        return cls(deadline, points)

    @classmethod
    def _shape(cls, deadline: float, shape: str) -> PriorityBoost:
        _check_positive(f"PriorityBoost.{shape}", "deadline", deadline)
        points: tuple[float, ...] = tuple(deadline * f for f in _BOOST_SHAPES[shape])
        return cls(deadline, points)

    def levels(self, age: float) -> int:
        """How many boost points a command pending for ``age`` seconds has passed."""
        return sum(1 for point in self.at if point <= age)


def _check_name(value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _fail("LaneConfig", "name", value, "expected a non-empty string")


@attrs.frozen
class LaneConfig:
    """One lane: its name, priority and limits.

    Args:
        name: unique lane name.
        priority: 0 is the most urgent; larger numbers are less urgent.
        max_concurrency: how many of the lane's commands may run at once (>= 1).
        min_concurrency: slots reserved for this lane under the system's global cap.
        timeout: hard timeout of each attempt in seconds (None: no timeout).
        retry: the lane's :class:`RetryPolicy`.
        rate_limit: a :class:`RateLimit` on starts, or None.
        boost: a :class:`PriorityBoost` for commands that wait long, or None.
        preemptible: whether a more urgent command blocked by the global cap may cancel
            (and requeue) this lane's most recently started command.
        inbox_size: how many commands may be pending in the lane before ``submit`` waits.
        shared_limit: a :class:`SharedLimit` this lane shares with lanes of other lane
            systems (an app-wide concurrency and/or rate limit), or None.
        executor: ``"async"`` (default): commands are async callables run in the event loop;
            ``"process"``: commands are synchronous functions run in worker processes (needs
            ``trio-lanes[process]``; see "Multi-core: process lanes" in the docs).
    """

    name: str
    priority: int
    max_concurrency: int = attrs.field(default=1, kw_only=True)
    min_concurrency: int = attrs.field(default=0, kw_only=True)
    timeout: float | None = attrs.field(default=None, kw_only=True)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy.none, kw_only=True)
    rate_limit: RateLimit | None = attrs.field(default=None, kw_only=True)
    boost: PriorityBoost | None = attrs.field(default=None, kw_only=True)
    preemptible: bool = attrs.field(default=False, kw_only=True)
    inbox_size: int = attrs.field(default=10_000, kw_only=True)
    shared_limit: SharedLimit | None = attrs.field(default=None, kw_only=True)
    executor: Literal["async", "process"] = attrs.field(default="async", kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_name(self.name)
        owner = f"LaneConfig({self.name!r})"
        _check_int(owner, "priority", self.priority, 0)
        _check_int(owner, "max_concurrency", self.max_concurrency, 1)
        _check_int(owner, "min_concurrency", self.min_concurrency, 0)
        if self.min_concurrency > self.max_concurrency:
            raise _fail(
                owner,
                "min_concurrency",
                self.min_concurrency,
                f"expected min_concurrency <= max_concurrency ({self.max_concurrency})",
            )
        if self.timeout is not None:
            _check_positive(owner, "timeout", self.timeout, allow_inf=True)
        _check_type(owner, "retry", self.retry, RetryPolicy)
        _check_type(owner, "rate_limit", self.rate_limit, RateLimit, optional=True)
        _check_type(owner, "boost", self.boost, PriorityBoost, optional=True)
        _check_type(owner, "preemptible", self.preemptible, bool)
        _check_int(owner, "inbox_size", self.inbox_size, 1)
        _check_type(owner, "shared_limit", self.shared_limit, SharedLimit, optional=True)
        if self.executor not in EXECUTORS:
            raise _fail(owner, "executor", self.executor, "expected 'async' or 'process'")


EXECUTORS = ("async", "process")
"""The values of ``LaneConfig.executor``."""


def validate_lanes(
    lanes: object, max_concurrency: object
) -> tuple[tuple[LaneConfig, ...], int | None]:
    """Check a whole lane set and the global cap; return them normalised.

    Raises:
        LaneConfigError: no lanes, a non-LaneConfig entry, duplicate names, a bad cap, or
            reservations (sum of ``min_concurrency``) above the cap.
    """
    if isinstance(lanes, LaneConfig) or not isinstance(lanes, Iterable):
        raise _fail("open_lane_system", "lanes", lanes, "expected an iterable of LaneConfig")
    configs = tuple(lanes)
    if not configs:
        raise _fail("open_lane_system", "lanes", configs, "expected at least one LaneConfig")
    seen: set[str] = set()
    for config in configs:
        _check_type("open_lane_system", "lanes", config, LaneConfig)
        if config.name in seen:
            raise _fail("open_lane_system", "lanes", config.name, "lane names must be unique")
        seen.add(config.name)
    if max_concurrency is None:
        return configs, None
    cap = _check_int("open_lane_system", "max_concurrency", max_concurrency, 1)
    reserved = sum(c.min_concurrency for c in configs)
    if reserved > cap:
        raise _fail(
            "open_lane_system",
            "max_concurrency",
            cap,
            f"the lanes reserve {reserved} slots (sum of min_concurrency); raise the cap",
        )
    return configs, cap


DEFAULT_LANES: tuple[LaneConfig, ...] = (
    LaneConfig("system", 0, max_concurrency=5),
    LaneConfig("control", 1, max_concurrency=3),
    LaneConfig("query", 2, max_concurrency=10),
    LaneConfig("session", 3, max_concurrency=5),
    LaneConfig("skill", 4, max_concurrency=3),
    LaneConfig("prompt", 5, max_concurrency=2),
)
"""The six default lanes of an agent session, most urgent first."""
