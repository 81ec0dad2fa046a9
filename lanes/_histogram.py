"""A small log-linear latency histogram (the bucketing scheme of HdrHistogram).

Recording appends to a list (a few tens of nanoseconds), so it can sit on the hot path of
every command; samples are folded into the buckets in batches (when 4096 are waiting, or when
a summary is read). Percentiles come from the cumulative bucket counts. Each bucket
spans 1/64 of a power of two, so a reported percentile is within 1.6% of the true sample
value. Only buckets that were hit are stored.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence

import attrs

__all__ = ["Histogram", "HistogramSnapshot"]

_SUB = 64  # buckets per power of two
_frexp = math.frexp
# A positive normal double is 1.f * 2**(E - 1023), E its 11 exponent bits and f its 52 bits of
# fraction. With frexp's m * 2**e (0.5 <= m < 1): e = E - 1022 and the 1/SUB step of m is the
# top 6 bits of f, so the bucket e * SUB + step is the top 17 bits of the double minus a
# constant: one shift per sample instead of a frexp call and float arithmetic.
_SHIFT = 52 - 6  # keep the exponent and the top log2(_SUB) fraction bits
_OFFSET = 1022 * _SUB
_MIN_NORMAL = sys.float_info.min  # below this (subnormals) the bit layout differs
_PERCENTILES = (50.0, 90.0, 95.0, 99.0)
_NO_BUCKETS: array[int] = array("q")
"""The packed buckets of every histogram with no bucket yet (shared: never appended to;
:meth:`Histogram._table` makes a histogram a dict of its own)."""


@attrs.frozen
class HistogramSnapshot:
    """Summary of a histogram: count, sum, min, max and the p50/p90/p95/p99 values."""

    count: int
    sum: float
    min: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float

    def percentile(self, p: float) -> float:
        """One of the stored percentiles (50, 90, 95 or 99)."""
        return {50.0: self.p50, 90.0: self.p90, 95.0: self.p95, 99.0: self.p99}[float(p)]


class Histogram:
    """Latency samples in seconds (>= 0), bucketed log-linearly."""

    __slots__ = ("_buckets", "_count", "_max", "_min", "_pending", "_sum", "_zeros")

    def __init__(self) -> None:
        # Bucket index -> count: a dict while samples come in; packed by compact() into an
        # array of (index, count) pairs in rising order (an idle session's histograms then
        # hold 16 bytes a bucket, not a dict and two int objects a bucket).
        # Both start as shared empty values (an unused lane's histograms allocate nothing):
        # the first sample gets a list, the first fold a dict of its own.
        self._buckets: dict[int, int] | array[int] = _NO_BUCKETS
        self._pending: list[float] | tuple[()] = ()
        self._zeros = 0
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = 0.0

    def record(self, value: float) -> None:
        """Add one sample (seconds; negative values count as 0)."""
        pending = self._pending
        if isinstance(pending, tuple):
            self._pending = [value]
            return
        pending.append(value)
        if len(pending) >= 4096:
            self.fold()

    def record_many(self, values: Iterable[float]) -> None:
        pending = self._pending
        if isinstance(pending, tuple):
            pending = self._pending = []
        pending.extend(values)
        self.fold()

    def fold(self) -> None:
        """Fold the pending samples into the buckets (done lazily; an idle system does it to
        give back the pending list's memory)."""
        pending = self._pending
        if not pending:
            return
        self._count += len(pending)
        self._min = min(self._min, max(0.0, min(pending)))
        self._max = max(self._max, max(pending))
        positive = [value for value in pending if value > 0.0]
        self._zeros += len(pending) - len(positive)
        total = math.fsum(positive)
        if positive and min(positive) >= _MIN_NORMAL:
            bits = array("Q")
            bits.frombytes(array("d", positive).tobytes())
            indexes = Counter([(word >> _SHIFT) - _OFFSET for word in bits])
        else:  # subnormal samples (below 2.2e-308 s): the general formula
            # value = m * 2**e with 0.5 <= m < 1; the bucket is e * SUB + the 1/SUB step of m.
            indexes = Counter(
                [e * _SUB + int((m - 0.5) * (2 * _SUB)) for m, e in map(_frexp, positive)]
            )
        counts = self._table()
        for index, count in indexes.items():
            counts[index] = counts.get(index, 0) + count
        self._sum += total
        self._pending = ()  # (a list never shrinks: the next sample gets a fresh one)

    @property
    def count(self) -> int:
        return self._count + len(self._pending)

    @property
    def sum(self) -> float:
        self.fold()
        return self._sum

    def percentiles(self, ps: Sequence[float] = _PERCENTILES) -> list[float]:
        """The value at each percentile in ``ps`` (0 when empty). Rising ``ps`` are fastest."""
        self.fold()
        if not self._count:
            return [0.0 for _ in ps]
        ordered = self._ordered()
        result = []
        for p in ps:
            rank = max(1, math.ceil(p / 100.0 * self._count))
            result.append(self._value_at_rank(rank, ordered))
        return result

    def _value_at_rank(self, rank: int, ordered: list[tuple[int, int]]) -> float:
        seen = self._zeros
        if rank <= seen:
            return 0.0
        for index, count in ordered:
            seen += count
            if seen >= rank:
                return min(max(_bucket_middle(index), self._min), self._max)
        return self._max

    def snapshot(self) -> HistogramSnapshot:
        p50, p90, p95, p99 = self.percentiles()
        low = 0.0 if not self._count else self._min
        return HistogramSnapshot(self._count, self._sum, low, self._max, p50, p90, p95, p99)

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s samples to this histogram."""
        self.fold()
        other.fold()
        counts = self._table()
        for index, count in other._ordered():
            counts[index] = counts.get(index, 0) + count
        self._zeros += other._zeros
        self._count += other._count
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def buckets(self) -> list[tuple[float, int]]:
        """(upper bound in seconds, count) of each bucket hit, in rising order (zeros first)."""
        self.fold()
        pairs = [(0.0, self._zeros)] if self._zeros else []
        pairs.extend((_bucket_upper(i), c) for i, c in self._ordered())
        return pairs

    @property
    def counts(self) -> dict[int, int]:
        """The samples of each bucket hit, by bucket index (a new dict; pending ones
        folded in first)."""
        self.fold()
        return dict(self._ordered())

    def compact(self) -> None:
        """Fold the pending samples and pack the buckets (an idle system's step): the
        next sample unpacks them. Nothing recorded is lost."""
        self.fold()
        buckets = self._buckets
        if isinstance(buckets, dict):
            if not buckets:
                self._buckets = _NO_BUCKETS
                return
            packed = array("q")
            for index, count in sorted(buckets.items()):
                packed.append(index)
                packed.append(count)
            self._buckets = packed

    def _table(self) -> dict[int, int]:
        """The buckets as a dict, unpacked if they were packed."""
        buckets = self._buckets
        if isinstance(buckets, dict):
            return buckets
        table = dict(zip(buckets[::2], buckets[1::2], strict=True))
        self._buckets = table
        return table

    def _ordered(self) -> list[tuple[int, int]]:
        """(index, count) of each bucket hit, in rising order of index."""
        buckets = self._buckets
        if isinstance(buckets, dict):
            return sorted(buckets.items())
        return list(zip(buckets[::2], buckets[1::2], strict=True))


def _bucket_lower(index: int) -> float:
    exponent, sub = divmod(index, _SUB)
    return math.ldexp(0.5 + sub / (2 * _SUB), exponent)


def _bucket_upper(index: int) -> float:
    return _bucket_lower(index + 1)


def _bucket_middle(index: int) -> float:
    return (_bucket_lower(index) + _bucket_upper(index)) / 2
