"""Metrics a program registers on its lane system: counters, gauges and histograms.

They live next to the system's own metrics: ``system.metrics.snapshot().user`` holds them,
and the Prometheus exports (``PrometheusBackend``, ``LaneCollector``) expose them next to
the ``lanes_*`` families. Recording is a dictionary lookup and an addition (a histogram
sample is appended to the sketch's buffer), so they may be used on a hot path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Literal

import attrs

from ._errors import LaneConfigError
from ._histogram import Histogram, HistogramSnapshot

__all__ = [
    "CounterMetric",
    "GaugeMetric",
    "HistogramMetric",
    "MetricKind",
    "UserMetricSnapshot",
    "UserMetrics",
    "UserSeries",
    "UserTotals",
    "add_user_totals",
]

MetricKind = Literal["counter", "gauge", "histogram"]
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RESERVED_LABELS = frozenset({"quantile", "le"})
_FAST = (int, float)  # exact types whose finite values need no further check (not bool)


@attrs.frozen
class UserSeries:
    """One series of a metric of your own: its label values (in the metric's label order)
    and its value (counters, gauges) or its histogram's summary (histograms)."""

    labels: tuple[str, ...]
    value: float = 0.0
    histogram: HistogramSnapshot | None = None


@attrs.frozen
class UserMetricSnapshot:
    """A metric of your own at one moment: what it is and each of its series."""

    name: str
    kind: MetricKind
    description: str
    labels: tuple[str, ...]
    series: tuple[UserSeries, ...]


class _Metric:
    """What the three kinds share: a name, a description, label names, series by labels."""

    kind: MetricKind

    def __init__(self, name: str, description: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.description = description
        self.labels = labels

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} labels={self.labels!r}>"

    def _key(self, given: Mapping[str, object]) -> tuple[str, ...]:
        labels = self.labels
        if len(given) == len(labels):
            try:
                if len(labels) == 1:
                    return (str(given[labels[0]]),)
                return tuple([str(given[name]) for name in labels])
            except KeyError:
                pass
        msg = (
            f"metric {self.name!r}: labels {sorted(given)!r} do not match its labels "
            f"{list(labels)!r}; pass exactly those, like "
            f"{', '.join(f'{n}=...' for n in labels) or 'no labels'}"
        )
        raise LaneConfigError(msg)

    def _number(self, field: str, value: object, *, minimum: float | None = None) -> float:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        result = float(value) if number else math.nan  # type: ignore[arg-type]
        if not math.isfinite(result) or (minimum is not None and result < minimum):
            bound = "" if minimum is None else f" >= {minimum:g}"
            msg = (
                f"metric {self.name!r}: {field}={value!r} is invalid; expected a finite "
                f"number{bound}"
            )
            raise LaneConfigError(msg)
        return result

    def snapshot(self) -> UserMetricSnapshot:
        return UserMetricSnapshot(
            self.name, self.kind, self.description, self.labels, tuple(self._series())
        )

    def _series(self) -> Iterable[UserSeries]:
        raise NotImplementedError


class CounterMetric(_Metric):
    """A count that only goes up. Made by ``system.metrics.counter()``."""

    kind: MetricKind = "counter"

    def __init__(self, name: str, description: str, labels: tuple[str, ...]) -> None:
        super().__init__(name, description, labels)
        self._values: dict[tuple[str, ...], float] = {} if labels else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        """Add ``amount`` (>= 0) to the series of ``labels``.

        Raises:
            LaneConfigError: a negative or non-finite amount, or labels other than the
                metric's.
        """
        key = self._key(labels) if labels or self.labels else ()
        if not (type(amount) in _FAST and 0 <= amount < math.inf):
            amount = self._number("amount", amount, minimum=0)
        values = self._values
        values[key] = values.get(key, 0.0) + amount

    def value(self, **labels: object) -> float:
        """The count of the series of ``labels`` (0 if it was never increased)."""
        return self._values.get(self._key(labels), 0.0)

    def _series(self) -> Iterable[UserSeries]:
        return (UserSeries(key, value) for key, value in self._values.items())


class GaugeMetric(_Metric):
    """A value that goes up and down. Made by ``system.metrics.gauge()``."""

    kind: MetricKind = "gauge"

    def __init__(self, name: str, description: str, labels: tuple[str, ...]) -> None:
        super().__init__(name, description, labels)
        self._values: dict[tuple[str, ...], float] = {} if labels else {(): 0.0}

    def set(self, value: float, **labels: object) -> None:
        """Set the series of ``labels`` to ``value``.

        Raises:
            LaneConfigError: a non-finite value, or labels other than the metric's.
        """
        self._values[self._key(labels)] = self._number("value", value)

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        """Add ``amount`` (may be negative) to the series of ``labels``."""
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + self._number("amount", amount)

    def dec(self, amount: float = 1.0, **labels: object) -> None:
        """Subtract ``amount`` from the series of ``labels``."""
        self.inc(-self._number("amount", amount), **labels)

    def value(self, **labels: object) -> float:
        """The value of the series of ``labels`` (0 if it was never set)."""
        return self._values.get(self._key(labels), 0.0)

    def _series(self) -> Iterable[UserSeries]:
        return (UserSeries(key, value) for key, value in self._values.items())


class HistogramMetric(_Metric):
    """A distribution of values >= 0 (durations, sizes, token counts), in the system's
    log-linear sketch: each percentile within 1.6%. Made by ``system.metrics.histogram()``."""

    kind: MetricKind = "histogram"

    def __init__(self, name: str, description: str, labels: tuple[str, ...]) -> None:
        super().__init__(name, description, labels)
        self.sketches: dict[tuple[str, ...], Histogram] = {} if labels else {(): Histogram()}

    def observe(self, value: float, **labels: object) -> None:
        """Record ``value`` (>= 0) in the series of ``labels``.

        Raises:
            LaneConfigError: a negative or non-finite value, or labels other than the
                metric's.
        """
        key = self._key(labels) if labels or self.labels else ()
        if not (type(value) in _FAST and 0 <= value < math.inf):
            value = self._number("value", value, minimum=0)
        sketch = self.sketches.get(key)
        if sketch is None:
            sketch = self.sketches[key] = Histogram()
        sketch.record(value)

    def summary(self, **labels: object) -> HistogramSnapshot:
        """Count, sum, min, max and percentiles of the series of ``labels``."""
        sketch = self.sketches.get(self._key(labels))
        return (sketch or Histogram()).snapshot()

    def _series(self) -> Iterable[UserSeries]:
        for key, sketch in self.sketches.items():
            yield UserSeries(key, float(sketch.count), sketch.snapshot())


_KINDS: dict[str, type[_Metric]] = {
    "counter": CounterMetric,
    "gauge": GaugeMetric,
    "histogram": HistogramMetric,
}


class UserMetrics:
    """The metrics a program registered on one lane system, by name."""

    def __init__(self) -> None:
        self.metrics: dict[str, _Metric] = {}

    def register(
        self, kind: MetricKind, name: object, description: object, labels: object
    ) -> _Metric:
        """The metric ``name`` of ``kind``: made now, or the one registered before with the
        same kind and labels.

        Raises:
            LaneConfigError: a bad name, description or label names, or a name registered
                before with another kind or other labels.
        """
        label_names = _check(kind, name, description, labels)
        assert isinstance(name, str) and isinstance(description, str)
        known = self.metrics.get(name)
        if known is not None:
            if known.kind != kind or known.labels != label_names:
                msg = (
                    f"metrics.{kind}({name!r}): {name!r} is already a {known.kind} with labels "
                    f"{list(known.labels)!r}; use that, or another name"
                )
                raise LaneConfigError(msg)
            return known
        metric = self.metrics[name] = _KINDS[kind](name, description, label_names)
        return metric

    def snapshot(self) -> dict[str, UserMetricSnapshot]:
        return {name: metric.snapshot() for name, metric in self.metrics.items()}


def _check(kind: str, name: object, description: object, labels: object) -> tuple[str, ...]:
    where = f"metrics.{kind}({name!r})"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        msg = (
            f"{where}: name={name!r} is invalid; expected a Prometheus metric name (letters, "
            "digits, _ and :, not starting with a digit), like 'orders_placed'"
        )
        raise LaneConfigError(msg)
    if name.startswith("lanes_"):
        msg = f"{where}: names starting with 'lanes_' are the system's; pick another prefix"
        raise LaneConfigError(msg)
    if not isinstance(description, str):
        msg = f"{where}: description={description!r} is invalid; expected a string"
        raise LaneConfigError(msg)
    if isinstance(labels, str) or not isinstance(labels, Iterable):
        msg = f"{where}: labels={labels!r} is invalid; expected a sequence of label names"
        raise LaneConfigError(msg)
    names = tuple(labels)
    for label in names:
        bad = not isinstance(label, str) or not _LABEL.fullmatch(label)
        if bad or label.startswith("__") or label in _RESERVED_LABELS:
            msg = (
                f"{where}: label name {label!r} is invalid; expected letters, digits and _ "
                "(not starting with a digit or __, and not 'quantile' or 'le')"
            )
            raise LaneConfigError(msg)
    if len(set(names)) != len(names):
        msg = f"{where}: labels={list(names)!r} names a label twice"
        raise LaneConfigError(msg)
    return names


# -- many systems: totals for one exposition ----------------------------------------------------


@attrs.define
class UserTotals:
    """One metric of your own summed over lane systems (for ``LaneCollector``).

    ``values`` (counters, gauges) and ``sketches`` (histograms) are keyed by the system's
    label value ("" without system labels), then the metric's label values.
    """

    kind: MetricKind
    description: str
    labels: tuple[str, ...]
    values: dict[tuple[str, ...], float] = attrs.field(factory=dict)
    sketches: dict[tuple[str, ...], Histogram] = attrs.field(factory=dict)

    def copy(self) -> UserTotals:
        totals = UserTotals(self.kind, self.description, self.labels, dict(self.values))
        for key, sketch in self.sketches.items():
            totals.sketches[key] = fresh = Histogram()
            fresh.merge(sketch)
        return totals


def add_user_totals(
    into: dict[str, UserTotals], metrics: UserMetrics, value: str, *, gauges: bool
) -> list[str]:
    """Add one system's metrics of its own to ``into`` (gauges only if ``gauges``: a closed
    system's gauges leave with it); return the names skipped because another system has a
    metric of that name with another kind or other labels."""
    clashes = []
    for name, metric in metrics.metrics.items():
        totals = into.get(name)
        if totals is None:
            totals = into[name] = UserTotals(metric.kind, metric.description, metric.labels)
        elif (totals.kind, totals.labels) != (metric.kind, metric.labels):
            clashes.append(name)
            continue
        if isinstance(metric, HistogramMetric):
            for key, sketch in metric.sketches.items():
                merged = totals.sketches.get((value, *key))
                if merged is None:
                    merged = totals.sketches[value, *key] = Histogram()
                merged.merge(sketch)
        elif isinstance(metric, CounterMetric) or (gauges and isinstance(metric, GaugeMetric)):
            for key, number in metric._values.items():
                full = (value, *key)
                totals.values[full] = totals.values.get(full, 0.0) + number
    return clashes
