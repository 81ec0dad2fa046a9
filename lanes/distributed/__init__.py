"""Lanes on Redis Streams: submit from any process, run commands on worker processes.

.. code-block:: python

    backend = lanes.distributed.RedisBackend("redis://127.0.0.1:6379/0")
    # submitters
    async with lanes.open_lane_system(LANES, backend=backend, commands=[Resize]) as system:
        handle = await system.submit("query", Resize(path="a.png"))
        print(await handle.result())
    # workers (or: lanes worker --redis URL --commands myapp:Resize)
    async with lanes.distributed.open_lane_worker(LANES, backend=backend, commands=[Resize]):
        await trio.sleep_forever()

Needs the ``redis`` extra (coredis: ``pip install 'trio-lanes[redis]'``, or
``pip install -e '.[redis]'`` in a checkout).
"""

try:
    import coredis as _coredis  # noqa: F401
except ImportError as _exc:  # pragma: no cover - the extra is installed in tests
    from .._extras import missing_extra as _missing

    _msg = _missing("lanes.distributed", "coredis", "redis")
    raise ModuleNotFoundError(_msg, name="coredis") from _exc

from .._partitioning import Partitioning, PartitionRequest
from ._inspect import unfinished_commands
from ._letters import RemoteDeadLetters
from ._limit import RedisSharedLimit, open_shared_limit
from ._local import LocalRedis, local_redis_server
from ._redis import RedisBackend
from ._schedules import RemoteSchedule
from ._submitter import RemoteCommandError, RemoteHandle, RemoteLaneSystem
from ._wire import RemoteDeadLetter
from ._worker import LaneWorker, WorkerLaneStatistics, WorkerStatistics, open_lane_worker

__all__ = [
    "LaneWorker",
    "LocalRedis",
    "PartitionRequest",
    "Partitioning",
    "RedisBackend",
    "RedisSharedLimit",
    "RemoteCommandError",
    "RemoteDeadLetter",
    "RemoteDeadLetters",
    "RemoteHandle",
    "RemoteLaneSystem",
    "RemoteSchedule",
    "WorkerLaneStatistics",
    "WorkerStatistics",
    "local_redis_server",
    "open_lane_worker",
    "open_shared_limit",
    "unfinished_commands",
]
