"""When a schedule fires: its slots, the ones due, and what the misfire policy makes of them.

Pure and synchronous: every function takes wall-clock times (seconds since the epoch) as
arguments and reads no clock, so it is tested without Trio. Cron expressions are evaluated by
``cronsim`` (Debian cron semantics, DST included) in a ``zoneinfo`` time zone.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
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
    """A schedule's slots: ``anchor + k * every`` (k >= 1), or the matches of ``cron`` in ``tz``.

    With ``after_completion`` there is one slot only, ``anchor + every``: the scheduler
    moves ``anchor`` to the moment the previous firing ended, which makes the next slot.
    A cron expression of six fields has a seconds field first.
    """

    every: float | None
    cron: str | None
    tz: str | None
    anchor: float
    after_completion: bool = False

    @property
    def zone(self) -> tzinfo:
        return UTC if self.tz is None else ZoneInfo(self.tz)

    def next_after(self, t: float) -> float | None:
        """The first slot strictly after ``t``; None if there is none (a cron that ended, or
        an interval after completion whose one slot has passed)."""
        if self.every is not None and self.after_completion:
            slot = self.anchor + self.every
            return slot if slot > t else None
        if self.every is not None:
            return self.anchor + self._index_after(t) * self.every
        return next(self._cron_from(t), None)

    def due(self, after: float, now: float, keep: int) -> tuple[list[float], int]:
        """The slots in ``(after, now]``: the latest ``keep`` of them, oldest first, and how
        many earlier ones were left out."""
        if self.every is not None and self.after_completion:
            slot = self.anchor + self.every
            return ([slot] if after < slot <= now else []), 0
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
        latest: list[float] = []
        for slot in self._cron_back(now):
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
        """The cron slots strictly after ``t``, in order."""
        seconds, minutes = _split(self.cron or "")
        if seconds is None:
            for moment in CronSim(minutes, datetime.fromtimestamp(t, self.zone)):
                yield moment.timestamp()
            return
        # Six fields: the minutes of the five others (with Debian cron's DST rules), then
        # the seconds field within each minute. The minute holding ``t`` is looked at too.
        start = _minute_of(t, self.zone) - 1.0
        for moment in CronSim(minutes, datetime.fromtimestamp(start, self.zone)):
            base = moment.timestamp()
            yield from (base + s for s in seconds if base + s > t)

    def _cron_back(self, t: float) -> Iterator[float]:
        """The cron slots at or before ``t``, latest first."""
        seconds, minutes = _split(self.cron or "")
        if seconds is None:
            later = datetime.fromtimestamp(math.floor(t) + 1, self.zone)
            for moment in CronSim(minutes, later, reverse=True):
                yield moment.timestamp()
            return
        end = _minute_of(t, self.zone) + 60.0
        for moment in CronSim(minutes, datetime.fromtimestamp(end, self.zone), reverse=True):
            base = moment.timestamp()
            yield from (base + s for s in reversed(seconds) if base + s <= t)


def _split(cron: str) -> tuple[tuple[int, ...] | None, str]:
    """A cron expression as (its seconds, or None for five fields; its five other fields)."""
    fields = cron.split()
    if len(fields) == 6:
        return _seconds_of(fields[0]), " ".join(fields[1:])
    return None, cron


def _minute_of(t: float, zone: tzinfo) -> float:
    """The start of the local minute holding ``t`` (as seconds since the epoch)."""
    moment = datetime.fromtimestamp(t, zone)
    return moment.replace(second=0, microsecond=0).timestamp()


@functools.lru_cache(maxsize=64)
def _seconds_of(field: str) -> tuple[int, ...]:
    """The seconds (0-59) a cron seconds field matches; raises ``CronSimError`` if bad."""
    start = datetime(2000, 1, 1, tzinfo=UTC) - timedelta(seconds=1)
    found: list[int] = []
    for moment in CronSim(f"{field} * * * * *", start):
        if moment.minute != 0:
            break
        found.append(moment.second)
    return tuple(found)


def make_timing(
    every: object,
    cron: object,
    tz: object,
    anchor: float,
    where: str = "schedule",
    after_completion: object = False,
) -> Timing:
    """Validate ``every`` / ``cron`` / ``tz`` / ``after_completion`` and build the :class:`Timing`.

    Raises:
        LaneConfigError: neither or both of every and cron, a non-positive interval, a bad
            cron expression (seconds field included), an unknown time zone, a time zone for
            an interval, or after_completion for a cron schedule.
    """
    if (every is None) == (cron is None):
        msg = f"{where}: pass exactly one of every=<seconds> or cron=<expression>"
        raise LaneConfigError(msg)
    if not isinstance(after_completion, bool):
        msg = f"{where}: after_completion={after_completion!r} is invalid; expected True or False"
        raise LaneConfigError(msg)
    if every is not None:
        if tz is not None:
            msg = f"{where}: tz={tz!r} only applies to cron schedules; drop it for every="
            raise LaneConfigError(msg)
        return Timing(_positive(every, where), None, None, anchor, bool(after_completion))
    if after_completion:
        msg = (
            f"{where}: after_completion=True only applies to every= schedules (a cron slot "
            "is a time of day); drop it, or use every=<seconds>"
        )
        raise LaneConfigError(msg)
    zone = _zone(tz, where)
    _check_cron(cron, zone, anchor, where)
    assert isinstance(cron, str)
    return Timing(None, cron, tz if isinstance(tz, str) else None, anchor)


def _check_cron(cron: object, zone: tzinfo, anchor: float, where: str) -> None:
    if not isinstance(cron, str):
        msg = f"{where}: cron={cron!r} is invalid; expected a cron expression string"
        raise LaneConfigError(msg)
    fields = cron.split()
    if len(fields) not in (5, 6):
        msg = (
            f"{where}: cron={cron!r} has {len(fields)} fields; expected 5 (minute hour "
            "day-of-month month day-of-week, like '30 2 * * *') or 6 with a seconds field "
            "first (like '*/15 * * * * *'); a year field is not supported"
        )
        raise LaneConfigError(msg)
    if len(fields) == 6:
        try:
            _seconds_of(fields[0])
        except CronSimError as exc:
            msg = (
                f"{where}: cron={cron!r} has a bad seconds field {fields[0]!r}; expected "
                "seconds 0-59, a range, a list or a step (like '0', '0-29', '0,30' or '*/15')"
            )
            raise LaneConfigError(msg) from exc
    try:
        CronSim(" ".join(fields[-5:]), datetime.fromtimestamp(anchor, zone))
    except CronSimError as exc:
        msg = (
            f"{where}: cron={cron!r} is not a valid cron expression ({exc}); expected five "
            "fields like '30 2 * * *' (minute hour day-of-month month day-of-week), or six "
            "with a seconds field first"
        )
        raise LaneConfigError(msg) from exc


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
