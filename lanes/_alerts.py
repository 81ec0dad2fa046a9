"""Alerts: queue-depth and latency thresholds per lane, with hysteresis, sampled periodically.

Each rule has up to two levels, ``warning`` and ``critical``, and each level is an alert of
its own: it is *raised* when a sample reaches its threshold and *cleared* only when a sample
falls below ``threshold * clear_ratio``. Between the two it keeps its state, so a value
hovering around a threshold does not flap. Every crossing is reported once, as an
:class:`~lanes.events.AlertRaised` or :class:`~lanes.events.AlertCleared` event (to the
system's subscribers and listeners) and to the monitor's callbacks.
"""

from __future__ import annotations

import collections
import math
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import trio
from trio_util import periodic

from actors import single_leaf

from ._checks import check_positive as _check_positive
from ._checks import fail as _fail
from ._errors import LaneConfigError, LaneUsageError, UnknownLaneError
from ._histogram import Histogram
from .events import AlertCleared, AlertRaised

if TYPE_CHECKING:
    from ._system import LaneSystem

__all__ = ["METRICS", "AlertCallback", "AlertMonitor", "AlertRule", "open_alert_monitor"]

PERCENTILES = (50, 90, 95, 99)
#: What a rule can watch: ``queue_depth`` (commands pending), or the latency percentile of
#: waiting (``wait_p99``: pending until an attempt started) or running (``run_p99``).
METRICS = ("queue_depth", *(f"{kind}_p{p}" for kind in ("wait", "run") for p in PERCENTILES))
AlertCallback = Callable[[AlertRaised | AlertCleared], None]


def _check_threshold(owner: str, field: str, value: object) -> float | None:
    return None if value is None else _check_positive(owner, field, value)


@attrs.frozen
class AlertRule:
    """Thresholds on one metric of one lane.

    Args:
        lane: the lane's name.
        metric: one of :data:`METRICS`, e.g. ``"queue_depth"`` or ``"run_p99"``.
        warning: the value (commands, or seconds for latencies) that raises a warning.
        critical: the value that raises a critical alert; at least one level is needed, and
            ``warning <= critical`` when both are given.
        clear_ratio: a raised level clears when the value falls below
            ``threshold * clear_ratio`` (in (0, 1]; 1 means no hysteresis).

    Raises:
        LaneConfigError: an unknown metric or an invalid threshold or ratio.
    """

    lane: str
    metric: str
    warning: float | None = attrs.field(default=None, kw_only=True)
    critical: float | None = attrs.field(default=None, kw_only=True)
    clear_ratio: float = attrs.field(default=0.8, kw_only=True)

    def __attrs_post_init__(self) -> None:
        owner = f"AlertRule({self.lane!r}, {self.metric!r})"
        if not isinstance(self.lane, str) or not self.lane:
            raise _fail("AlertRule", "lane", self.lane, "expected a lane name")
        if self.metric not in METRICS:
            raise _fail(owner, "metric", self.metric, f"expected one of {', '.join(METRICS)}")
        warning = _check_threshold(owner, "warning", self.warning)
        critical = _check_threshold(owner, "critical", self.critical)
        if warning is None and critical is None:
            raise _fail(owner, "warning", None, "give a warning or a critical threshold")
        if warning is not None and critical is not None and warning > critical:
            raise _fail(owner, "warning", self.warning, f"expected <= critical={self.critical!r}")
        ratio = _check_positive(owner, "clear_ratio", self.clear_ratio)
        if ratio > 1:
            raise _fail(owner, "clear_ratio", self.clear_ratio, "expected a number in (0, 1]")

    @classmethod
    def queue_depth(
        cls,
        lane: str,
        *,
        warning: float | None = None,
        critical: float | None = None,
        clear_ratio: float = 0.8,
    ) -> AlertRule:
        """Alert when ``lane`` has at least this many commands pending."""
        return cls(lane, "queue_depth", warning=warning, critical=critical, clear_ratio=clear_ratio)

    @classmethod
    def latency(
        cls,
        lane: str,
        *,
        warning: float | None = None,
        critical: float | None = None,
        of: str = "run",
        percentile: int = 99,
        clear_ratio: float = 0.8,
    ) -> AlertRule:
        """Alert on a latency percentile (seconds) of ``of`` = ``"run"`` or ``"wait"``.

        The percentile is taken over the attempts that started (wait) or ended (run) in the
        monitor's ``window``, each rounded up to its histogram bucket (at most 1.6% high).
        """
        metric = f"{of}_p{percentile}"
        return cls(lane, metric, warning=warning, critical=critical, clear_ratio=clear_ratio)

    def thresholds(self) -> list[tuple[str, float]]:
        """(level, threshold) of each level given, warning first."""
        pairs = [("warning", self.warning), ("critical", self.critical)]
        return [(level, float(value)) for level, value in pairs if value is not None]


class _Window:
    """The samples a histogram gained in the last ``seconds`` (its bucket counts, subtracted)."""

    def __init__(self, histogram: Histogram, seconds: float) -> None:
        self._histogram = histogram
        self._seconds = seconds
        self._before = dict(histogram.buckets())
        self._gains: collections.deque[tuple[float, dict[float, int]]] = collections.deque()

    def advance(self, now: float) -> list[tuple[float, int]]:
        """Bucket counts gained in (now - seconds, now], by rising upper bound."""
        counts = dict(self._histogram.buckets())
        before, self._before = self._before, counts
        gain = {bound: n - before.get(bound, 0) for bound, n in counts.items()}
        self._gains.append((now, {bound: n for bound, n in gain.items() if n > 0}))
        while self._gains[0][0] <= now - self._seconds:
            self._gains.popleft()
        total: collections.Counter[float] = collections.Counter()
        for _, counts_gained in self._gains:
            total.update(counts_gained)
        return sorted(total.items())


def _percentile(buckets: list[tuple[float, int]], p: float) -> float:
    """The upper bound of the bucket holding percentile ``p`` (0 with no samples)."""
    total = sum(count for _, count in buckets)
    rank, seen = max(1, math.ceil(p / 100 * total)), 0
    for bound, count in buckets:
        seen += count
        if seen >= rank:
            return bound
    return 0.0


class AlertMonitor:
    """Samples a lane system and raises and clears alerts; run it with :meth:`run`.

    Args:
        system: the lane system to watch.
        rules: the :class:`AlertRule` objects (one per lane and metric).
        interval: seconds between samples.
        window: latency rules judge the attempts of the last ``window`` seconds (at least
            the last sample's); with none in the window the latency is 0, so a latency
            alert clears ``window`` seconds after the lane went quiet.
        callbacks: called synchronously with every ``AlertRaised`` / ``AlertCleared``, in
            the monitor's task, after the event went to the system's subscribers.

    Raises:
        LaneConfigError: invalid interval, a rule that is not an ``AlertRule``, or two
            rules for the same lane and metric.
        UnknownLaneError: a rule names a lane the system does not have.
    """

    def __init__(
        self,
        system: LaneSystem,
        rules: Iterable[AlertRule],
        *,
        interval: float = 1.0,
        window: float = 60.0,
        callbacks: Iterable[AlertCallback] = (),
    ) -> None:
        self._interval = _check_positive("AlertMonitor", "interval", interval)
        self._window_seconds = _check_positive("AlertMonitor", "window", window)
        self._system = system
        self._rules = _check_rules(system, rules)
        self._callbacks = tuple(callbacks)
        self._raised: dict[tuple[str, str, str], AlertRaised] = {}
        self._windows: dict[tuple[str, str], _Window] = {}
        self._last: dict[tuple[str, str], float] = {}  # each rule's latest sampled value
        for rule in self._rules:
            self._watch(rule)
        self._running = False
        self.samples = 0

    def _watch(self, rule: AlertRule) -> None:
        """Keep a latency window for ``rule``'s lane and kind (from now on, if new)."""
        kind = rule.metric.split("_")[0]
        if kind in ("wait", "run") and (rule.lane, kind) not in self._windows:
            metrics = self._system.metrics
            histograms = metrics.wait if kind == "wait" else metrics.run
            self._windows[rule.lane, kind] = _Window(histograms[rule.lane], self._window_seconds)

    def set_rule(self, rule: AlertRule) -> list[AlertCleared]:
        """Add ``rule``, or replace the rule for its lane and metric, on a running monitor.

        The new thresholds judge the next sample (call :meth:`check` to take one now). A
        level still raised stays raised until a sample falls below the new threshold times
        the new ``clear_ratio``; a raised level the new rule no longer has is cleared at once
        (its ``AlertCleared`` is emitted and returned). A latency rule for a lane and kind
        not watched before judges the attempts from now on.

        Raises:
            LaneConfigError: ``rule`` is not an :class:`AlertRule`.
            UnknownLaneError: its lane is not one of the system's.
        """
        (rule,) = _check_rules(self._system, [rule])
        key = (rule.lane, rule.metric)
        old = next((r for r in self._rules if (r.lane, r.metric) == key), None)
        self._rules = tuple(rule if r is old else r for r in self._rules)
        if old is None:
            self._rules += (rule,)
            self._watch(rule)
            return []
        kept = {level for level, _ in rule.thresholds()}
        return self._clear(old, [(lv, t) for lv, t in old.thresholds() if lv not in kept])

    def remove_rule(self, lane: str, metric: str) -> list[AlertCleared]:
        """Stop watching ``metric`` of ``lane``; its raised levels are cleared at once (their
        ``AlertCleared`` events are emitted and returned).

        Raises:
            LaneConfigError: the monitor has no rule for that lane and metric.
        """
        old = next((r for r in self._rules if (r.lane, r.metric) == (lane, metric)), None)
        if old is None:
            known = ", ".join(f"({r.lane!r}, {r.metric!r})" for r in self._rules) or "none"
            msg = f"remove_rule: no rule for lane {lane!r} and metric {metric!r}; rules: {known}"
            raise LaneConfigError(msg)
        self._rules = tuple(r for r in self._rules if r is not old)
        events = self._clear(old, old.thresholds())
        self._last.pop((lane, metric), None)
        return events

    def _clear(self, rule: AlertRule, levels: list[tuple[str, float]]) -> list[AlertCleared]:
        now = trio.current_time() + self._system._core.wall_offset
        value = self._last.get((rule.lane, rule.metric), 0.0)
        events = []
        for level, threshold in reversed(levels):  # critical before warning
            if self._raised.pop((rule.lane, rule.metric, level), None) is not None:
                clear_at = threshold * rule.clear_ratio
                events.append(AlertCleared(rule.lane, "", now, level, rule.metric, value, clear_at))
        self._deliver(events)
        return events

    def _deliver(self, events: Iterable[AlertRaised | AlertCleared]) -> None:
        for event in events:
            self._system._core.bus.emit(event)
            for callback in self._callbacks:
                callback(event)

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        """The rules watched (changed by :meth:`set_rule` and :meth:`remove_rule`)."""
        return self._rules

    @property
    def levels(self) -> dict[tuple[str, str], str]:
        """``(lane, metric)`` -> ``"ok"``, ``"warning"`` or ``"critical"`` for every rule."""
        result = {}
        for rule in self._rules:
            level = "ok"
            for name, _ in rule.thresholds():
                if (rule.lane, rule.metric, name) in self._raised:
                    level = name
            result[rule.lane, rule.metric] = level
        return result

    @property
    def raised(self) -> list[AlertRaised]:
        """The alerts raised and not cleared, as their ``AlertRaised`` events."""
        return list(self._raised.values())

    def check(self) -> list[AlertRaised | AlertCleared]:
        """Take one sample now; emit and return the events of every level crossed."""
        self.samples += 1
        values = self._sample()
        events: list[AlertRaised | AlertCleared] = []
        for rule in self._rules:
            events.extend(self._crossings(rule, values[rule.lane, rule.metric]))
        self._last = values
        self._deliver(events)
        return events

    def _sample(self) -> dict[tuple[str, str], float]:
        stats = self._system.statistics().lanes
        now = trio.current_time()
        windows = {key: window.advance(now) for key, window in self._windows.items()}
        values = {}
        for rule in self._rules:
            if rule.metric == "queue_depth":
                lane = stats.get(rule.lane)  # None: the lane was retired (0 pending)
                value = 0.0 if lane is None else float(lane.pending)
            else:
                kind, p = rule.metric.split("_p")
                value = _percentile(windows[rule.lane, kind], float(p))
            values[rule.lane, rule.metric] = value
        return values

    def _crossings(self, rule: AlertRule, value: float) -> list[AlertRaised | AlertCleared]:
        now = trio.current_time() + self._system._core.wall_offset  # events carry wall time
        events: list[AlertRaised | AlertCleared] = []
        for level, threshold in reversed(rule.thresholds()):  # clear critical before warning
            key = (rule.lane, rule.metric, level)
            if key in self._raised and value < threshold * rule.clear_ratio:
                del self._raised[key]
                clear_at = threshold * rule.clear_ratio
                events.append(AlertCleared(rule.lane, "", now, level, rule.metric, value, clear_at))
        for level, threshold in rule.thresholds():  # raise warning before critical
            key = (rule.lane, rule.metric, level)
            if key not in self._raised and value >= threshold:
                raised = AlertRaised(rule.lane, "", now, level, rule.metric, value, threshold)
                self._raised[key] = raised
                events.append(raised)
        return events

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sample now and every ``interval`` seconds until cancelled.

        Use ``await nursery.start(monitor.run)``. It sleeps between samples, so an idle
        process is woken once per interval and no more. Cancellation leaves nothing
        behind; the alerts raised so far stay raised (see :attr:`levels`).

        Raises:
            LaneUsageError: the monitor is already running.
        """
        if self._running:
            msg = "this AlertMonitor is already running; make another one instead"
            raise LaneUsageError(msg)
        self._running = True
        started = False
        try:
            async for _ in periodic(self._interval):
                self.check()
                if not started:  # the first sample is taken before start() returns
                    task_status.started()
                    started = True
        finally:
            self._running = False


def _check_rules(system: LaneSystem, rules: Iterable[AlertRule]) -> tuple[AlertRule, ...]:
    checked = tuple(rules)
    seen: set[tuple[str, str]] = set()
    known = {config.name for config in system.lanes}
    for rule in checked:
        if not isinstance(rule, AlertRule):
            raise _fail("AlertMonitor", "rules", rule, "expected AlertRule objects")
        if rule.lane not in known:
            msg = f"AlertRule: unknown lane {rule.lane!r}; known lanes: {', '.join(known)}"
            raise UnknownLaneError(msg)
        if (rule.lane, rule.metric) in seen:
            raise _fail("AlertMonitor", "rules", rule, "one rule per lane and metric")
        seen.add((rule.lane, rule.metric))
    return checked


@asynccontextmanager
async def open_alert_monitor(
    system: LaneSystem,
    rules: Iterable[AlertRule],
    *,
    interval: float = 1.0,
    window: float = 60.0,
    callbacks: Iterable[AlertCallback] = (),
) -> AsyncIterator[AlertMonitor]:
    """Watch ``system`` for the block's duration: ``async with open_alert_monitor(...) as m:``.

    The first sample is taken before the block starts. Leaving the block (or cancelling it)
    stops the monitor; no task is left behind. Arguments are those of :class:`AlertMonitor`.
    """
    monitor = AlertMonitor(system, rules, interval=interval, window=window, callbacks=callbacks)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(monitor.run)
            yield monitor
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        leaf = single_leaf(group)
        if leaf is None:
            raise
        raise leaf from leaf.__cause__
