"""Scrape-time totals of many lane systems: the data behind one process-wide exposition.

Nothing here runs per command. Systems are read when totals are asked for (a scrape): their
counters, gauges and latency sketches are summed per lane name (and per system label, when
labels are on). A system that closes is folded once, at close, into totals kept for the
rest of the process, so the summed counters never go down; then it is let go.
"""

from __future__ import annotations

import logging
import operator
import re
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import trio

from ._errors import LaneConfigError, LaneUsageError
from ._histogram import Histogram
from ._shared import SharedLimit, SharedLimitStatistics
from ._stats import COUNTERS
from ._user_metrics import UserTotals, add_user_totals

if TYPE_CHECKING:
    from ._core import Core
    from ._system import LaneSystem

__all__ = ["OTHER", "Aggregator", "HolderTotals", "LaneTotals", "Totals"]

OTHER = "other"  # the label value of systems without a label of their own
logger = logging.getLogger("lanes")
_counts = operator.attrgetter(*COUNTERS)
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TAKEN_NAMES = frozenset({"lane", "outcome", "quantile", "metric", "limit", "le"})


@attrs.define
class LaneTotals:
    """One lane name (and label value), summed over systems."""

    counters: list[int] = attrs.field(factory=lambda: [0] * len(COUNTERS))
    pending: int = 0
    active: int = 0
    max_concurrency: int = 0
    priority: int | None = None  # the smallest configured priority seen
    effective_priority: int | None = None  # the smallest among open systems
    wait: Histogram = attrs.field(factory=Histogram)
    run: Histogram = attrs.field(factory=Histogram)

    def copy(self) -> LaneTotals:
        """A copy to add open systems to (sketches merged into fresh ones)."""
        totals = LaneTotals(list(self.counters), priority=self.priority)
        totals.wait.merge(self.wait)
        totals.run.merge(self.run)
        return totals


@attrs.define
class HolderTotals:
    """The member lanes of one shared limit with one lane name (and label value)."""

    held: int = 0
    waiting: int = 0
    wait: Histogram = attrs.field(factory=Histogram)


@attrs.frozen
class Totals:
    """What one scrape exports.

    Attributes:
        lanes: keyed by (label value, lane); the label value is "" without labels.
        holders: keyed by (limit name, label value, lane).
        limits: the statistics of every shared limit the systems use.
        systems: open systems.
        over_limit: open systems given a label that went to ``other`` (the cap was full).
        user: the systems' metrics of their own, by name.
    """

    lanes: dict[tuple[str, str], LaneTotals]
    holders: dict[tuple[str, str, str], HolderTotals]
    limits: list[SharedLimitStatistics]
    systems: int
    over_limit: int
    user: dict[str, UserTotals] = attrs.field(factory=dict)


@attrs.define
class _Entry:
    core: Core
    value: str  # the system's label value ("" without labels)
    wanted: bool  # a label was asked for
    unhook: Callable[[], None]


class Aggregator:
    """The open systems, their labels, and the folded totals of the closed ones."""

    def __init__(self, max_system_labels: object, label_name: object) -> None:
        if (
            isinstance(max_system_labels, bool)
            or not isinstance(max_system_labels, int)
            or max_system_labels < 0
        ):
            msg = (
                f"LaneCollector: max_system_labels={max_system_labels!r} is invalid; expected "
                "an integer >= 0 (0: no system label, series summed over all systems)"
            )
            raise LaneConfigError(msg)
        if (
            not isinstance(label_name, str)
            or not _LABEL_NAME.fullmatch(label_name)
            or label_name.startswith("__")
            or label_name in _TAKEN_NAMES
        ):
            msg = (
                f"LaneCollector: label_name={label_name!r} is invalid; expected a Prometheus "
                f"label name (letters, digits, _) other than {', '.join(sorted(_TAKEN_NAMES))}"
            )
            raise LaneConfigError(msg)
        self.max_labels = max_system_labels
        self.label_name = label_name
        self._live: dict[LaneSystem, _Entry] = {}
        self._labels: dict[str, LaneSystem] = {}
        self._over = 0
        self._warned = False
        self._token: trio.lowlevel.TrioToken | None = None
        self._retired: dict[tuple[str, str], LaneTotals] = {}
        self._retired_holders: dict[tuple[str, str, str], HolderTotals] = {}
        self._retired_user: dict[str, UserTotals] = {}
        self._clashes: set[str] = set()  # user metric names already warned about
        self._limits: weakref.WeakValueDictionary[str, SharedLimit] = weakref.WeakValueDictionary()

    @property
    def labelled(self) -> bool:
        return self.max_labels > 0

    def __len__(self) -> int:
        return len(self._live)

    # -- systems coming and going -------------------------------------------------------------

    def add(self, system: LaneSystem, label: str | None) -> None:
        core = self._check_system(system)
        limits = self._check_limits(core)
        value = self._label_value(label)
        unhook = core.bus.on_close(lambda: self.remove(system))
        self._live[system] = _Entry(core, value, label is not None, unhook)
        if value and value != OTHER:
            self._labels[value] = system
        elif label is not None:
            self._over += 1
        for limit in limits:
            self._limits[limit.name] = limit

    def remove(self, system: LaneSystem) -> None:
        entry = self._live.pop(system, None)
        if entry is None:
            return
        entry.unhook()
        if entry.value in ("", OTHER):  # a shared series: keep the counts in it
            self._fold(entry)
            if entry.wanted and entry.value == OTHER:
                self._over -= 1
        else:  # its own series leave with it
            del self._labels[entry.value]

    def _check_system(self, system: object) -> Core:
        from ._system import LaneSystem

        if not isinstance(system, LaneSystem):
            msg = (
                f"LaneCollector.add: {system!r} is not a local lane system; pass the system "
                "that `async with lanes.open_lane_system()` gives (remote systems export "
                "their metrics from their workers)"
            )
            raise LaneUsageError(msg)
        system._check_open("LaneCollector.add")
        if system in self._live:
            msg = "LaneCollector.add: this lane system is already added"
            raise LaneUsageError(msg)
        token = system._token
        if self._token is not None and token is not self._token:
            msg = "LaneCollector.add: the system runs in another trio.run than the others"
            raise LaneUsageError(msg)
        self._token = token
        return system._core

    def _check_limits(self, core: Core) -> list[SharedLimit]:
        limits = [c.shared_limit for c in core.configs.values() if c.shared_limit is not None]
        for limit in limits:
            known = self._limits.get(limit.name)
            if known is not None and known is not limit:
                msg = (
                    f"LaneCollector.add: two SharedLimit objects are named {limit.name!r}; "
                    "their series would collide: give each limit its own name="
                )
                raise LaneConfigError(msg)
        return limits

    def _label_value(self, label: object) -> str:
        if label is None:
            return OTHER if self.labelled else ""
        if not self.labelled:
            msg = (
                f"LaneCollector.add: label={label!r} given, but this collector has no system "
                "label; make it with LaneCollector(max_system_labels=N) to label up to N "
                "systems"
            )
            raise LaneConfigError(msg)
        if not isinstance(label, str) or not label or label == OTHER:
            msg = (
                f"LaneCollector.add: label={label!r} is invalid; expected a non-empty string "
                f"other than {OTHER!r} (which holds the systems without a label)"
            )
            raise LaneConfigError(msg)
        if label in self._labels:
            msg = (
                f"LaneCollector.add: label={label!r} is already used by an open system; "
                "each open system needs its own label (or none)"
            )
            raise LaneConfigError(msg)
        if len(self._labels) < self.max_labels:
            return label
        if not self._warned:
            self._warned = True
            logger.warning(
                "LaneCollector: %d systems carry a %r label (max_system_labels); system %r "
                "and further ones are exported as %s=%r",
                self.max_labels,
                self.label_name,
                label,
                self.label_name,
                OTHER,
            )
        return OTHER

    def _fold(self, entry: _Entry) -> None:
        """Keep a closed system's counts and latencies in its series' totals."""
        core = entry.core
        clashes = add_user_totals(self._retired_user, core.metrics.user, entry.value, gauges=False)
        self._warn_clashes(clashes)
        for lane, state in core.policy.lanes.items():
            key = (entry.value, lane)
            kept = self._retired.get(key)
            if kept is None:
                kept = self._retired[key] = LaneTotals()
            kept.counters = list(map(operator.add, kept.counters, _counts(state.counters)))
            priority = state.config.priority
            kept.priority = priority if kept.priority is None else min(kept.priority, priority)
            kept.wait.merge(state.wait)
            kept.run.merge(state.run)
            if state.shared is not None:
                hkey = (state.shared.limit.name, entry.value, lane)
                holder = self._retired_holders.setdefault(hkey, HolderTotals())
                holder.wait.merge(state.wait)

    # -- a scrape -----------------------------------------------------------------------------

    def totals(self) -> Totals:
        """Sum every open system into a copy of the closed ones' totals."""
        self._check_thread()
        now = trio.current_time() if self._live else 0.0
        lanes = {key: kept.copy() for key, kept in self._retired.items()}
        holders: dict[tuple[str, str, str], HolderTotals] = {}
        for hkey, kept_holder in self._retired_holders.items():
            holders[hkey] = holder = HolderTotals()
            holder.wait.merge(kept_holder.wait)
        rows: dict[tuple[str, str], list[tuple[int, ...]]] = {}
        user = {name: kept_user.copy() for name, kept_user in self._retired_user.items()}
        for entry in self._live.values():
            self._add_live(entry, now, lanes, holders, rows)
            clashes = add_user_totals(user, entry.core.metrics.user, entry.value, gauges=True)
            self._warn_clashes(clashes)
        for key, counted in rows.items():
            totals = lanes[key]
            counted.append(tuple(totals.counters))
            totals.counters = [sum(column) for column in zip(*counted, strict=True)]
        limits = [limit.statistics() for limit in self._limits.values()]
        return Totals(lanes, holders, limits, len(self._live), self._over, user)

    def _warn_clashes(self, names: list[str]) -> None:
        for name in names:
            if name not in self._clashes:
                self._clashes.add(name)
                logger.warning(
                    "LaneCollector: lane systems define the metric %r with different kinds "
                    "or labels; only the first definition is exported",
                    name,
                )

    def _add_live(
        self,
        entry: _Entry,
        now: float,
        lanes: dict[tuple[str, str], LaneTotals],
        holders: dict[tuple[str, str, str], HolderTotals],
        rows: dict[tuple[str, str], list[tuple[int, ...]]],
    ) -> None:
        core = entry.core
        for lane, state in core.policy.lanes.items():
            key = (entry.value, lane)
            totals = lanes.get(key)
            if totals is None:
                totals = lanes[key] = LaneTotals()
            counted = rows.get(key)
            if counted is None:
                counted = rows[key] = []
            counted.append(_counts(state.counters))
            totals.pending += state.pending
            totals.active += state.active
            config = state.config
            totals.max_concurrency += config.max_concurrency
            priority = config.priority
            if totals.priority is None or priority < totals.priority:
                totals.priority = priority
            if state.pending and state.boost is not None:
                priority = state.lane_priority(state.head(), now)
            if totals.effective_priority is None or priority < totals.effective_priority:
                totals.effective_priority = priority
            lane_wait = state.wait
            if lane_wait.count:
                totals.wait.merge(lane_wait)
            lane_run = state.run
            if lane_run.count:
                totals.run.merge(lane_run)
            member = state.shared
            if member is not None:
                hkey = (member.limit.name, entry.value, lane)
                holder = holders.get(hkey)
                if holder is None:
                    holder = holders[hkey] = HolderTotals()
                holder.held += member.held
                holder.waiting += member.waiting
                if lane_wait.count:
                    holder.wait.merge(lane_wait)

    def _check_thread(self) -> None:
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            token = None
        if self._token is not None and token is not self._token:
            msg = (
                "LaneCollector: collected outside the trio.run of its lane systems; scrape "
                "from that Trio thread (lanes.prometheus.serve_metrics does)"
            )
            raise LaneUsageError(msg)
