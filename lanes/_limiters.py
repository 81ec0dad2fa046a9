"""Rate limiters: the state behind a :class:`~lanes.RateLimit` (pure; time is passed in)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._config import RateLimit

__all__ = ["EPSILON", "MIN_WAIT", "Limiter", "SlidingWindow", "TokenBucket", "make_limiter"]

EPSILON = 1e-9
MIN_WAIT = 1e-6


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
