"""trio-lanes: lane-based priority scheduling for Trio.

.. code-block:: python

    async with lanes.open_lane_system() as system:
        handle = await system.submit("query", fetch_page, url)
        page = await handle.result()
"""

from . import events
from ._command import CommandHandle, CommandStatus, command
from ._config import DEFAULT_LANES, LaneConfig, PriorityBoost, RateLimit, RetryPolicy
from ._dlq import DeadLetter, DeadLetterNotFound, DeadLetterQueue
from ._errors import (
    CommandCancelled,
    CommandFailed,
    CommandTimeout,
    DrainTimeout,
    LaneConfigError,
    LaneError,
    LaneFull,
    LaneUsageError,
    NotDurableError,
    Permanent,
    ShutdownInProgress,
    StorageError,
    UnknownLaneError,
)
from ._histogram import HistogramSnapshot
from ._metrics import Metrics, MetricsSnapshot
from ._stats import LaneStatistics, SystemStatistics
from ._system import LaneSystem, open_lane_system

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LANES",
    "CommandCancelled",
    "CommandFailed",
    "CommandHandle",
    "CommandStatus",
    "CommandTimeout",
    "DeadLetter",
    "DeadLetterNotFound",
    "DeadLetterQueue",
    "DrainTimeout",
    "HistogramSnapshot",
    "LaneConfig",
    "LaneConfigError",
    "LaneError",
    "LaneFull",
    "LaneStatistics",
    "LaneSystem",
    "LaneUsageError",
    "Metrics",
    "MetricsSnapshot",
    "NotDurableError",
    "Permanent",
    "PriorityBoost",
    "RateLimit",
    "RetryPolicy",
    "ShutdownInProgress",
    "StorageError",
    "SystemStatistics",
    "UnknownLaneError",
    "command",
    "events",
    "open_lane_system",
]
