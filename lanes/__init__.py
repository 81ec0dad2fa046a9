"""trio-lanes: lane-based priority scheduling for Trio.

.. code-block:: python

    async with lanes.open_lane_system() as system:
        handle = await system.submit("query", fetch_page, url)
        page = await handle.result()
"""

from . import events
from ._alerts import AlertCallback, AlertMonitor, AlertRule, open_alert_monitor
from ._backends import InMemoryBackend, MetricsBackend, export_metrics
from ._command import CommandHandle, CommandStatus, command
from ._config import DEFAULT_LANES, LaneConfig, PriorityBoost, RateLimit, RetryPolicy
from ._dedup import Dedup
from ._dlq import DeadLetter, DeadLetterNotFound, DeadLetterQueue
from ._errors import (
    CommandCancelled,
    CommandFailed,
    CommandTimeout,
    DrainTimeout,
    JsonError,
    KeyInUse,
    LaneConfigError,
    LaneError,
    LaneFull,
    LaneUsageError,
    NotDurableError,
    PayloadError,
    Permanent,
    ShutdownInProgress,
    StorageError,
    UnknownLaneError,
)
from ._flow import Flow, open_flow
from ._histogram import HistogramSnapshot
from ._json import from_json, to_json
from ._listing import CommandInfo, Progress, report_progress
from ._metrics import Metrics, MetricsSnapshot
from ._partitioning import Partitioning, PartitionRequest
from ._pause import pause_point
from ._retention import Retention
from ._schedule_handle import ScheduleHandle
from ._send import send_partial
from ._shared import SharedLimit, SharedLimitStatistics
from ._stats import LaneStatistics, SystemStatistics
from ._stream import Partials, StreamRestarted
from ._system import LaneSystem, open_lane_system
from ._unobserved import UnobservedFailure
from ._user_metrics import (
    CounterMetric,
    GaugeMetric,
    HistogramMetric,
    UserMetricSnapshot,
    UserSeries,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LANES",
    "AlertCallback",
    "AlertMonitor",
    "AlertRule",
    "CommandCancelled",
    "CommandFailed",
    "CommandHandle",
    "CommandInfo",
    "CommandStatus",
    "CommandTimeout",
    "CounterMetric",
    "DeadLetter",
    "DeadLetterNotFound",
    "DeadLetterQueue",
    "Dedup",
    "DrainTimeout",
    "Flow",
    "GaugeMetric",
    "HistogramMetric",
    "HistogramSnapshot",
    "InMemoryBackend",
    "JsonError",
    "KeyInUse",
    "LaneConfig",
    "LaneConfigError",
    "LaneError",
    "LaneFull",
    "LaneStatistics",
    "LaneSystem",
    "LaneUsageError",
    "Metrics",
    "MetricsBackend",
    "MetricsSnapshot",
    "NotDurableError",
    "Partials",
    "PartitionRequest",
    "Partitioning",
    "PayloadError",
    "Permanent",
    "PriorityBoost",
    "Progress",
    "RateLimit",
    "Retention",
    "RetryPolicy",
    "ScheduleHandle",
    "SharedLimit",
    "SharedLimitStatistics",
    "ShutdownInProgress",
    "StorageError",
    "StreamRestarted",
    "SystemStatistics",
    "UnknownLaneError",
    "UnobservedFailure",
    "UserMetricSnapshot",
    "UserSeries",
    "command",
    "events",
    "export_metrics",
    "from_json",
    "open_alert_monitor",
    "open_flow",
    "open_lane_system",
    "pause_point",
    "report_progress",
    "send_partial",
    "to_json",
]
