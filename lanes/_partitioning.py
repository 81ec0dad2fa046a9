"""Partitioning: how a lane's commands spread over several queues (streams, worker shards)."""

from __future__ import annotations

import itertools
import os
import zlib
from typing import Literal

import attrs

from ._errors import LaneConfigError

__all__ = ["Partitioning"]


@attrs.frozen
class Partitioning:
    """How a lane is split into ``count`` partitions, each an independent queue.

    Build one with :meth:`round_robin`, :meth:`hash` or :meth:`auto`.

    - ``round_robin(n)``: commands go to partitions in turn; no order between partitions.
    - ``hash(n)``: a command's partition key picks its partition (the same key always lands
      on the same partition, on every machine: a stable CRC32, not Python's salted
      ``hash``); partitions are *ordered*: one command of a partition runs at a time, so
      commands of one key run in submission order.
    - ``auto()``: round robin with one partition per CPU core of this machine.
    """

    kind: Literal["round_robin", "hash"]
    count: int
    _turn: itertools.count[int] = attrs.field(
        factory=itertools.count, init=False, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        if self.kind not in ("round_robin", "hash"):
            msg = (
                f"Partitioning: kind={self.kind!r} is invalid; use Partitioning.round_robin, "
                ".hash or .auto"
            )
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

    @property
    def ordered(self) -> bool:
        """Whether a partition runs one command at a time, in order (hash partitioning)."""
        return self.kind == "hash"

    def partition(self, key: str | None = None) -> int:
        """The partition (0 to ``count - 1``) of the next command.

        Args:
            key: the command's partition key; required for hash partitioning (ignored by
                round robin).

        Raises:
            LaneConfigError: hash partitioning without a string key.
        """
        if self.kind == "round_robin":
            return next(self._turn) % self.count
        if not isinstance(key, str):
            msg = (
                f"Partitioning.hash: partition key {key!r} is invalid; pass a string "
                "partition_key= when submitting to a hash-partitioned lane"
            )
            raise LaneConfigError(msg)
        return zlib.crc32(key.encode()) % self.count
