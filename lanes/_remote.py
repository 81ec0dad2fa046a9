"""The protocol of a backend that hosts lanes outside this process (``backend=``)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from ._codec import CommandRegistry
    from ._config import LaneConfig

__all__ = ["SystemBackend"]

S_co = TypeVar("S_co", covariant=True)


class SystemBackend(Protocol[S_co]):
    """What ``open_lane_system(backend=...)`` accepts, e.g. ``lanes.distributed.RedisBackend``."""

    def open_system(
        self,
        lanes: tuple[LaneConfig, ...],
        registry: CommandRegistry,
        drain_timeout: float | None,
    ) -> AbstractAsyncContextManager[S_co]:
        """Open a submitting system on this backend."""
        ...
