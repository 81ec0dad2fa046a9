"""Partitioning: how a lane's commands spread over several queues (streams, worker shards)."""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Callable
from typing import Any, Literal

import attrs

from ._errors import LaneConfigError

__all__ = ["PartitionRequest", "Partitioning"]


@attrs.frozen
class PartitionRequest:
    """What a custom partition function (:meth:`Partitioning.custom`) chooses from.

    Attributes:
        lane: the lane the command is submitted to.
        partition_key: the ``partition_key=`` given to ``submit`` (None: none).
        command: the command object submitted (a ``@lanes.command`` instance; None when
            the caller has none to show, as :meth:`Partitioning.partition` called directly).
    """

    lane: str
    partition_key: str | None
    command: Any = None


@attrs.frozen
class Partitioning:
    """How a lane is split into ``count`` partitions, each an independent queue.

    Build one with :meth:`round_robin`, :meth:`hash`, :meth:`auto` or :meth:`custom`.

    - ``round_robin(n)``: commands go to partitions in turn; no order between partitions.
    - ``hash(n)``: a command's partition key picks its partition (the same key always lands
      on the same partition, on every machine: a stable CRC32, not Python's salted
      ``hash``); partitions are *ordered*: one command of a partition runs at a time, so
      commands of one key run in submission order.
    - ``auto()``: round robin with one partition per CPU core of this machine.
    - ``custom(n, fn)``: ``fn(request)`` returns the partition (an ``int`` from 0 to
      ``n - 1``) of each command from a :class:`PartitionRequest` (its lane, partition
      key and command object); ``ordered=True`` makes its partitions ordered, as hash
      partitions are.
    """

    kind: Literal["round_robin", "hash", "custom"]
    count: int
    fn: Callable[[PartitionRequest], int] | None = attrs.field(default=None, kw_only=True)
    in_order: bool = attrs.field(default=False, kw_only=True)
    _turn: itertools.count[int] = attrs.field(
        factory=itertools.count, init=False, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        if self.kind not in ("round_robin", "hash", "custom"):
            msg = (
                f"Partitioning: kind={self.kind!r} is invalid; use Partitioning.round_robin, "
                ".hash, .auto or .custom"
            )
            raise LaneConfigError(msg)
        if (self.kind == "custom") != (self.fn is not None) or not (
            self.fn is None or callable(self.fn)
        ):
            msg = (
                f"Partitioning.{self.kind}: fn={self.fn!r} is invalid; only "
                "Partitioning.custom takes a partition function, and it must be callable"
            )
            raise LaneConfigError(msg)
        if not isinstance(self.in_order, bool):
            msg = f"Partitioning.custom: ordered={self.in_order!r} is invalid; expected a bool"
            raise LaneConfigError(msg)
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            msg = (
                f"Partitioning.{self.kind}: n={self.count!r} is invalid; expected an integer "
                ">= 1 (the number of partitions)"
            )
            raise LaneConfigError(msg)

    @classmethod
    def round_robin(cls, n: int) -> Partitioning:
        """``n`` partitions filled in turn (no ordering between commands)."""
        return cls("round_robin", n)

    @classmethod
    def hash(cls, n: int) -> Partitioning:
        """``n`` ordered partitions chosen by a stable hash of the partition key."""
        return cls("hash", n)

    @classmethod
    def auto(cls) -> Partitioning:
        """One round-robin partition per CPU core of this machine."""
        return cls("round_robin", os.cpu_count() or 1)

    @classmethod
    def custom(
        cls, n: int, fn: Callable[[PartitionRequest], int], *, ordered: bool = False
    ) -> Partitioning:
        """``n`` partitions chosen by ``fn(request)`` for each command.

        ``fn`` gets a :class:`PartitionRequest` and returns an ``int`` from 0 to
        ``n - 1``; it runs synchronously in the submitting task, so it must be quick and
        must not block. Every process of a deployment must use the same function (the
        workers read the partitions it fills). ``ordered=True``: a partition runs one
        command at a time, in submission order (as with :meth:`hash`).

        Raises:
            LaneConfigError: ``n`` is not an integer >= 1, ``fn`` is not callable, or
                ``ordered`` is not a bool.
        """
        return cls("custom", n, fn=fn, in_order=ordered)

    @property
    def ordered(self) -> bool:
        """Whether a partition runs one command at a time, in order (hash partitioning, or
        custom partitioning with ``ordered=True``)."""
        return self.kind == "hash" or self.in_order

    def partition(self, key: str | None = None, *, lane: str = "", command: Any = None) -> int:
        """The partition (0 to ``count - 1``) of the next command.

        Args:
            key: the command's partition key; required for hash partitioning (ignored by
                round robin; passed to a custom function).
            lane, command: the command's lane and object, for a custom function.

        Raises:
            LaneConfigError: hash partitioning without a string key; a custom function
                that raised, or returned something other than an ``int`` from 0 to
                ``count - 1`` (the message names the value).
        """
        if self.kind == "round_robin":
            return next(self._turn) % self.count
        if self.kind == "custom":
            return self._custom(PartitionRequest(lane, key, command))
        if not isinstance(key, str):
            msg = (
                f"Partitioning.hash: partition key {key!r} is invalid; pass a string "
                "partition_key= when submitting to a hash-partitioned lane"
            )
            raise LaneConfigError(msg)
        return zlib.crc32(key.encode()) % self.count

    def _custom(self, request: PartitionRequest) -> int:
        assert self.fn is not None
        try:
            index = self.fn(request)
        except Exception as exc:
            msg = (
                f"Partitioning.custom: the partition function {self.fn!r} raised {exc!r} "
                f"for lane {request.lane!r}, partition key {request.partition_key!r}; "
                "fix the function (it must return a partition for every command)"
            )
            raise LaneConfigError(msg) from exc
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.count:
            msg = (
                f"Partitioning.custom: the partition function returned {index!r} for lane "
                f"{request.lane!r}, partition key {request.partition_key!r}; expected an "
                f"int from 0 to {self.count - 1} (the lane has {self.count} partitions)"
            )
            raise LaneConfigError(msg)
        return index
