"""Statistics of a whole deployment on Redis, as the in-process frozen snapshot types.

The counters live in one hash per lane (``<prefix>:stats:<lane>``), added to by the same
scripts that settle each command (submit, finish, retry, cancel), so a count is never ahead
of or behind its outcome: once a handle resolved, the counters include its outcome. The
gauges come from the streams (queued = entries no worker holds, active = entries a worker
holds), the delayed set, the paused set and the registry of live workers (each worker
renews ``<prefix>:worker:<name>`` with its capacities every ``lease / 3`` seconds; one
silent for a lease drops out).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._stats import COUNTERS, LaneStatistics, SystemStatistics
from . import _scripts_api
from ._redis import GROUP, Lua

if TYPE_CHECKING:
    from .._config import LaneConfig
    from ._redis import Batcher, RedisBackend

__all__ = ["StatisticsReader", "registration"]


class StatisticsReader:
    """Reads a deployment's statistics in one script call."""

    def __init__(self, backend: RedisBackend, configs: Mapping[str, LaneConfig]) -> None:
        self._backend = backend
        self._configs = configs
        self._script = Lua(_scripts_api.STATS)

    async def read(self, batcher: Batcher, accepting: bool) -> SystemStatistics:
        """One consistent snapshot (the script runs atomically in Redis).

        Raises:
            StorageError: Redis cannot be reached.
        """
        backend = self._backend
        keys = [backend.key(n) for n in ("paused", "delayed", "dead", "stats", "workers")]
        args: list[Any] = [GROUP, backend.prefix]
        for lane in self._configs:
            streams = backend.streams(lane)
            keys += [backend.key(f"stats:{lane}"), *streams]
            args += [lane, len(streams)]
        total, letters, evicted, rows = await batcher.call(self._script, keys, args)
        lanes = {str(row[0]): self._lane(row) for row in rows}
        return SystemStatistics(
            lanes=lanes,
            pending=sum(s.pending for s in lanes.values()),
            active=sum(s.active for s in lanes.values()),
            max_concurrency=int(total),
            accepting=accepting,
            dead_letters=int(letters),
            dead_letters_evicted=int(evicted),
            events_dropped=0,
        )

    def _lane(self, row: list[Any]) -> LaneStatistics:
        name, flat, queued, running, delayed, paused, capacity = row
        counts = dict.fromkeys(COUNTERS, 0)
        for field, value in zip(flat[::2], flat[1::2], strict=True):
            if field in counts:
                counts[str(field)] = int(value)
        config = self._configs[str(name)]
        return LaneStatistics(
            name=config.name,
            priority=config.priority,
            effective_priority=config.priority,
            paused=bool(int(paused)),
            pending=int(queued) + int(delayed),
            active=int(running),
            max_concurrency=int(capacity),
            **counts,
        )


def registration(
    configs: tuple[LaneConfig, ...], cap: int, cluster: Mapping[str, int]
) -> list[str]:
    """A worker's registry fields: its cap, each lane's slots on it, the cluster caps."""
    fields = ["max_concurrency", str(cap)]
    for config in configs:
        fields += [f"lane:{config.name}", str(min(config.max_concurrency, cap))]
    for lane, limit in cluster.items():
        fields += [f"cluster:{lane}", str(limit)]
    return fields
