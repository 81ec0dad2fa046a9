"""When a schedule fires: its slots, the ones due, and what the misfire policy makes of them.

Pure and synchronous: every function takes wall-clock times (seconds since the epoch) as
arguments and reads no clock, so it is tested without Trio. Cron expressions are evaluated by
``cronsim`` (Debian cron semantics, DST included) in a ``zoneinfo`` time zone.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator
from datetime import UTC, datetime, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from cronsim import CronSim, CronSimError

from ._errors import LaneConfigError

__all__ = [
    "GRACE",
    "MISFIRE",
    "OVERLAP",
    "Decision",
    "Misfire",
    "Overlap",
    "Timing",
    "decide",
    "make_timing",
]

Misfire = Literal["skip", "run_once", "run_all"]
Overlap = Literal["skip", "queue", "allow"]
MISFIRE: tuple[Misfire, ...] = ("skip", "run_once", "run_all")
OVERLAP: tuple[Overlap, ...] = ("skip", "queue", "allow")

GRACE = 1.0
"""A slot handled at most this many seconds (plus its jitter) after its time is on time;
later, it was missed (the process was down, paused by a debugger, or the host slept)."""

_SCAN_LIMIT = 10_000  # cron slots looked at when counting a long outage


@attrs.frozen
class Timing:
    """A schedule's slots: ``anchor + k * every`` (k >= 1), or the matches of ``cron`` in ``tz``."""

    every: float | None
    cron: str | None
    tz: str | None
    anchor: float

    @property
    def zone(self) -> tzinfo:
        return UTC if self.tz is None else ZoneInfo(self.tz)

    def next_after(self, t: float) -> float | None:
        """The first slot strictly after ``t``; None if there is none (a cron that ended)."""
        if self.every is not None:
            return self.anchor + self._index_after(t) * self.every
        return next(self._cron_from(t), None)

    def due(self, after: float, now: float, keep: int) -> tuple[list[float], int]:
        """The slots in ``(after, now]``: the latest ``keep`` of them, oldest first, and how
        many earlier ones were left out."""
        if self.every is not None:
            first = self._index_after(after)
            last = self._index_after(now) - 1
            count = max(0, last - first + 1)
            kept = range(max(first, last - keep + 1), last + 1)
            return [self.anchor + k * self.every for k in kept], count - len(kept)
        window: collections.deque[float] = collections.deque(maxlen=keep)
        seen = 0
        for slot in self._cron_from(after):
            if slot > now:
                break
            window.append(slot)
            seen += 1
            if seen >= _SCAN_LIMIT:  # a long outage of a frequent cron: jump to its end
                return self._latest(after=window[-1], now=now, keep=keep, seen=seen)
        return list(window), seen - len(window)

    def _latest(self, after: float, now: float, keep: int, seen: int) -> tuple[list[float], int]:
        start = datetime.fromtimestamp(math.floor(now) + 1, self.zone)
        latest: list[float] = []
        for moment in CronSim(self.cron or "", start, reverse=True):
            slot = moment.timestamp()
            if slot <= after or len(latest) == keep:
                break
            latest.append(slot)
        return latest[::-1], seen  # the count of those left out is a lower bound here

    def _index_after(self, t: float) -> int:
        assert self.every is not None
        k = max(1, math.floor((t - self.anchor) / self.every) + 1)
        while self.anchor + k * self.every <= t:  # guard against rounding
            k += 1
        while k > 1 and self.anchor + (k - 1) * self.every > t:
            k -= 1
        return k

    def _cron_from(self, t: float) -> Iterator[float]:
        start = datetime.fromtimestamp(t, self.zone)
        for moment in CronSim(self.cron or "", start):
            yield moment.timestamp()


def make_timing(
    every: object, cron: object, tz: object, anchor: float, where: str = "schedule"
) -> Timing:
    """Validate ``every`` / ``cron`` / ``tz`` and build the :class:`Timing`.

    Raises:
        LaneConfigError: neither or both of every and cron, a non-positive interval, a bad
            cron expression, an unknown time zone, or a time zone for an interval.
    """
    if (every is None) == (cron is None):
        msg = f"{where}: pass exactly one of every=<seconds> or cron=<expression>"
        raise LaneConfigError(msg)
    if every is not None:
        if tz is not None:
            msg = f"{where}: tz={tz!r} only applies to cron schedules; drop it for every="
            raise LaneConfigError(msg)
        return Timing(_positive(every, where), None, None, anchor)
    zone = _zone(tz, where)
    if not isinstance(cron, str):
        msg = f"{where}: cron={cron!r} is invalid; expected a cron expression string"
        raise LaneConfigError(msg)
    try:
        CronSim(cron, datetime.fromtimestamp(anchor, zone))
    except CronSimError as exc:
        msg = (
            f"{where}: cron={cron!r} is not a valid cron expression ({exc}); expected five "
            "fields like '30 2 * * *' (minute hour day-of-month month day-of-week)"
        )
        raise LaneConfigError(msg) from exc
    return Timing(None, cron, tz if isinstance(tz, str) else None, anchor)


def _positive(every: object, where: str) -> float:
    ok = isinstance(every, int | float) and not isinstance(every, bool)
    if not ok or not math.isfinite(float(every)) or float(every) <= 0:  # type: ignore[arg-type]
        msg = f"{where}: every={every!r} is invalid; expected a number of seconds > 0"
        raise LaneConfigError(msg)
    return float(every)  # type: ignore[arg-type]


def _zone(tz: object, where: str) -> tzinfo:
    if tz is None:
        return UTC
    if not isinstance(tz, str):
        msg = f"{where}: tz={tz!r} is invalid; expected an IANA zone name like 'Europe/Berlin'"
        raise LaneConfigError(msg)
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        msg = (
            f"{where}: tz={tz!r} is not a known time zone; expected an IANA name like "
            "'Europe/Berlin' or 'America/New_York' (install the tzdata package if none work)"
        )
        raise LaneConfigError(msg) from exc


@attrs.frozen
class Decision:
    """What to do with the slots due at one wake-up."""

    fire: tuple[float, ...]
    """The slots to fire, oldest first."""
    skipped: int
    """Due slots that will not fire (left out by the misfire policy)."""
    handled: float | None
    """The latest due slot: every slot up to it is now dealt with (None: nothing was due)."""


def decide(
    timing: Timing, after: float, now: float, misfire: Misfire, limit: int, lateness: float
) -> Decision:
    """Apply ``misfire`` to the slots in ``(after, now]``.

    The latest due slot is on time if it is at most ``lateness`` seconds old; every other
    due slot was missed. ``"skip"`` fires only an on-time slot; ``"run_once"`` fires one
    firing for all of them (the latest); ``"run_all"`` fires each, up to the latest ``limit``.
    """
    keep = max(1, limit) if misfire == "run_all" else 1
    slots, left_out = timing.due(after, now, keep)
    if not slots:
        return Decision((), 0, None)
    latest = slots[-1]
    on_time = now - latest <= lateness
    if misfire == "run_all":
        fire = tuple(slots)
    elif misfire == "run_once" or on_time:
        fire = (latest,)
    else:
        fire = ()
    return Decision(fire, left_out + len(slots) - len(fire), latest)
