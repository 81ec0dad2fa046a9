"""Rate limits: :class:`~lanes.RateLimit` and the state behind one (pure; time is passed in)."""

from __future__ import annotations

from collections import deque
from typing import Literal

import attrs

from ._checks import check_int, check_positive, fail

__all__ = [
    "EPSILON",
    "MIN_WAIT",
    "Limiter",
    "RateLimit",
    "SlidingWindow",
    "TokenBucket",
    "make_limiter",
]

EPSILON = 1e-9
MIN_WAIT = 1e-6


@attrs.frozen
class RateLimit:
    """How many commands of a lane may start per unit of time.

    A token bucket (``kind="token_bucket"``) holds up to ``burst`` tokens, starts full and
    refills at ``rate`` tokens per second; a sliding window (``kind="sliding_window"``) allows
    ``limit`` starts in any ``window`` seconds. Each start (retries included) takes one.
    """

    kind: Literal["token_bucket", "sliding_window"]
    rate: float = 0.0
    burst: int = 0
    limit: int = 0
    window: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.kind == "token_bucket":
            check_positive("RateLimit", "rate", self.rate)
            check_int("RateLimit", "burst", self.burst, 1)
        elif self.kind == "sliding_window":
            check_int("RateLimit", "limit", self.limit, 1)
            check_positive("RateLimit", "window", self.window)
        else:
            raise fail("RateLimit", "kind", self.kind, "use RateLimit.token_bucket/.sliding_window")

    @classmethod
    def token_bucket(cls, rate: float, burst: int) -> RateLimit:
        """``rate`` starts per second on average, with bursts of up to ``burst``."""
        return cls("token_bucket", rate=rate, burst=burst)

    @classmethod
    def sliding_window(cls, limit: int, window: float) -> RateLimit:
        """At most ``limit`` starts in any period of ``window`` seconds."""
        return cls("sliding_window", limit=limit, window=window)

    @classmethod
    def per_second(cls, n: int) -> RateLimit:
        """A full bucket of ``n`` at start, then ``n`` per second."""
        return cls._per(n, 1.0, "per_second")

    @classmethod
    def per_minute(cls, n: int) -> RateLimit:
        """A full bucket of ``n`` at start, then ``n`` per minute."""
        return cls._per(n, 60.0, "per_minute")

    @classmethod
    def per_hour(cls, n: int) -> RateLimit:
        """A full bucket of ``n`` at start, then ``n`` per hour."""
        return cls._per(n, 3600.0, "per_hour")

    @classmethod
    def _per(cls, n: int, period: float, name: str) -> RateLimit:
        check_int(f"RateLimit.{name}", "n", n, 1)
        return cls.token_bucket(n / period, burst=n)


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; a full bucket at first."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, limit: RateLimit) -> None:
        self.rate = limit.rate
        self.burst = float(limit.burst)
        self.tokens = self.burst
        self.stamp: float | None = None

    def _refill(self, now: float) -> None:
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        if self.stamp is None or now > self.stamp:
            self.stamp = now

    def ready(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= 1.0 - EPSILON

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0

    def ready_at(self, now: float) -> float:
        self._refill(now)
        return now + max((1.0 - self.tokens) / self.rate, MIN_WAIT)

    def refund(self, count: int) -> None:
        """Give back ``count`` tokens taken for starts that did not happen."""
        self.tokens = min(self.burst, self.tokens + count)


class SlidingWindow:
    """At most ``limit`` starts in any ``window`` seconds."""

    __slots__ = ("limit", "starts", "window")

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit.limit
        self.window = limit.window
        self.starts: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self.starts and self.starts[0] <= now - self.window:
            self.starts.popleft()

    def ready(self, now: float) -> bool:
        self._expire(now)
        return len(self.starts) < self.limit

    def take(self, now: float) -> None:
        self.starts.append(now)

    def ready_at(self, now: float) -> float:
        self._expire(now)
        return max(self.starts[0] + self.window, now + MIN_WAIT)

    def refund(self, count: int) -> None:
        """Forget the ``count`` latest starts (they did not happen)."""
        for _ in range(min(count, len(self.starts))):
            self.starts.pop()


Limiter = TokenBucket | SlidingWindow


def make_limiter(limit: RateLimit | None) -> Limiter | None:
    """The limiter state for ``limit`` (None: no limit)."""
    if limit is None:
        return None
    return TokenBucket(limit) if limit.kind == "token_bucket" else SlidingWindow(limit)
