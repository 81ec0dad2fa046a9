"""The Redis backend's settings, key names, connection and error translation."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import attrs
import coredis
import coredis.exceptions
import trio
from coredis.commands.script import Script
from coredis.retry import NoRetryPolicy

from .._errors import LaneConfigError, StorageError
from .._partitioning import Partitioning

if TYPE_CHECKING:
    from .._codec import CommandRegistry
    from .._config import LaneConfig
    from ._submitter import RemoteLaneSystem

__all__ = [
    "Batcher",
    "Client",
    "RedisBackend",
    "connect",
    "fields_list",
    "redis_call",
    "run_script",
    "str_fields",
]

T = TypeVar("T")
Client = coredis.Redis[str]
GROUP = "workers"


def _check_url(value: object) -> str:
    if not isinstance(value, str) or not re.match(r"^(redis|rediss|unix)://", value):
        msg = (
            f"RedisBackend: url={value!r} is invalid; expected a redis:// (or rediss://, "
            "unix://) URL such as 'redis://127.0.0.1:6379/0'"
        )
        raise LaneConfigError(msg)
    return value


def _check_prefix(value: object) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        msg = f"RedisBackend: prefix={value!r} is invalid; expected a non-empty word"
        raise LaneConfigError(msg)
    return value


def _check_seconds(field: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        msg = f"RedisBackend: {field}={value!r} is invalid; expected a number of seconds > 0"
        raise LaneConfigError(msg)
    return float(value)


def _check_partitions(value: object) -> Partitioning | Mapping[str, Partitioning] | None:
    if value is None or isinstance(value, Partitioning):
        return value
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, Partitioning) for k, v in value.items()
    ):
        return dict(value)
    msg = (
        f"RedisBackend: partitions={value!r} is invalid; expected a Partitioning, a mapping "
        "of lane name to Partitioning, or None"
    )
    raise LaneConfigError(msg)


@attrs.frozen
class RedisBackend:
    """Where and how lanes live in Redis; shared by submitters and workers.

    Every process of one deployment must use the same ``prefix``, ``partitions`` and lane
    names (they name the streams).

    Args:
        url: the server, e.g. ``"redis://127.0.0.1:6379/0"``.
        prefix: the first part of every key this backend writes.
        partitions: how lanes split into streams: one :class:`~lanes.Partitioning` for
            every lane, a mapping of lane name to one, or None (one stream per lane).
        lease: seconds a worker owns a fetched command without a heartbeat; a command
            whose worker stays silent that long is reclaimed by another worker.
        key_ttl: seconds an idempotency key (and a submitter's reply stream) outlives a
            crashed process at most.
        max_payload: the longest command JSON (in characters) ``submit`` accepts; a
            longer one raises ``LaneConfigError`` (Redis itself refuses 512 MB and slows
            every worker long before that).
    """

    url: str = attrs.field(converter=_check_url)
    prefix: str = attrs.field(default="lanes", kw_only=True, converter=_check_prefix)
    partitions: Partitioning | Mapping[str, Partitioning] | None = attrs.field(
        default=None, kw_only=True, converter=_check_partitions
    )
    lease: float = attrs.field(default=30.0, kw_only=True)
    key_ttl: float = attrs.field(default=86_400.0, kw_only=True)
    max_payload: int = attrs.field(default=16 * 1024 * 1024, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_seconds("lease", self.lease)
        _check_seconds("key_ttl", self.key_ttl)
        size = self.max_payload
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            msg = f"RedisBackend: max_payload={size!r} is invalid; expected a positive integer"
            raise LaneConfigError(msg)

    @property
    def safe_url(self) -> str:
        """The URL with any password replaced by ``***`` (for messages)."""
        return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", self.url)

    def partitioning(self, lane: str) -> Partitioning | None:
        """The partitioning of ``lane`` (None: a single stream)."""
        if isinstance(self.partitions, Mapping):
            return self.partitions.get(lane)
        return self.partitions

    def streams(self, lane: str) -> list[str]:
        """Every stream of ``lane``, partition 0 first."""
        part = self.partitioning(lane)
        return [self.stream(lane, p) for p in range(part.count if part else 1)]

    def stream(self, lane: str, partition: int) -> str:
        """The stream key of one partition of a lane."""
        return f"{self.prefix}:stream:{lane}:{partition}"

    def key(self, name: str) -> str:
        """The key ``prefix:name``."""
        return f"{self.prefix}:{name}"

    def open_system(
        self,
        lanes: tuple[LaneConfig, ...],
        registry: CommandRegistry,
        drain_timeout: float | None,
    ) -> AbstractAsyncContextManager[RemoteLaneSystem]:
        """Open a submitting lane system on this backend (used by ``open_lane_system``)."""
        from ._submitter import open_remote_system

        return open_remote_system(self, lanes, registry, drain_timeout)


_FAILURES = (
    coredis.exceptions.RedisError,
    OSError,
    TimeoutError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
)


def translate(backend: RedisBackend, error: BaseException) -> StorageError | None:
    """A :class:`StorageError` naming the URL for a Redis or network failure, else None.

    coredis raises its errors as themselves or wrapped in (nested) exception groups.
    """
    for leaf in _leaves(error):
        if isinstance(leaf, _FAILURES):
            msg = f"Redis at {backend.safe_url} failed: {type(leaf).__name__}: {leaf}"
            result = StorageError(msg)
            result.__cause__ = leaf
            return result
    return None


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


async def redis_call(backend: RedisBackend, call: Awaitable[T]) -> T:
    """Await one coredis call; Redis and network failures raise :class:`StorageError`."""
    try:
        return await call
    except BaseException as exc:
        error = translate(backend, exc)
        if error is None:
            raise
        raise error from error.__cause__


@asynccontextmanager
async def connect(backend: RedisBackend) -> AsyncIterator[Client]:
    """An open client on ``backend``, checked with a PING.

    The body's own exceptions come out as themselves (a single one is unwrapped from the
    exception group that coredis' internal task group adds).

    Raises:
        StorageError: the server cannot be reached (the message names the URL).
    """
    client: Client = coredis.Redis.from_url(
        backend.url, decode_responses=True, retry_policy=NoRetryPolicy()
    )
    connected = False
    try:
        async with client:
            await client.ping()
            connected = True
            yield client
    except BaseException as exc:
        if not connected:
            error = translate(backend, exc)
            if error is not None:
                msg = f"cannot connect: {error}"
                raise StorageError(msg) from error.__cause__
            raise
        leaf = _single_leaf(exc)
        if leaf is exc:
            raise
        raise leaf from leaf.__cause__


def _single_leaf(error: BaseException) -> BaseException:
    """The one exception inside ``error`` (other than trio.Cancelled), else ``error``."""
    leaves = [leaf for leaf in _leaves(error) if not isinstance(leaf, trio.Cancelled)]
    return leaves[0] if len(leaves) == 1 else error


async def run_script(
    backend: RedisBackend, script: Script[str], keys: list[str], args: list[Any]
) -> Any:
    """Run a registered Lua script; failures raise :class:`StorageError`."""
    values: list[str | int | float] = [a if isinstance(a, int | float) else str(a) for a in args]
    result: Any = await redis_call(backend, script(keys, values))
    return result


class _Call:
    __slots__ = ("args", "done", "error", "keys", "script", "value")

    def __init__(self, script: Script[str], keys: list[str], args: list[Any]) -> None:
        self.script = script
        self.keys = keys
        self.args: list[str | int | float] = [
            a if isinstance(a, int | float) else str(a) for a in args
        ]
        self.done = trio.Event()
        self.value: Any = None
        self.error: StorageError | None = None


class Batcher:
    """Sends the script calls of concurrent tasks as one pipeline per round trip.

    A pipelined call costs the client a fraction of a lone one, so many submitters (or many
    finishing commands) share each round trip. Run :meth:`run` in a nursery.
    """

    def __init__(self, backend: RedisBackend, client: Client, limit: int = 256) -> None:
        self._backend = backend
        self._client = client
        self._limit = limit
        self._queue: list[_Call] = []
        self._wake = trio.Event()

    async def call(self, script: Script[str], keys: list[str], args: list[Any]) -> Any:
        """Run a script in the next pipeline and return its result.

        Cancelled while waiting, the call may still have run (its result is dropped).

        Raises:
            StorageError: Redis failed (the message names the URL) or the script did.
        """
        call = _Call(script, keys, args)
        self._queue.append(call)
        self._wake.set()
        await call.done.wait()
        if call.error is not None:
            raise call.error
        return call.value

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send queued calls until cancelled."""
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            batch, self._queue = self._queue[: self._limit], self._queue[self._limit :]
            if self._queue:
                self._wake.set()
            await self._send(batch)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            async with self._client.pipeline(transaction=False, raise_on_error=False) as pipe:
                requests: list[Any] = [c.script(c.keys, c.args, client=pipe) for c in batch]
        except Exception as exc:
            error = self._error(exc)
            for call in batch:
                call.error = error
                call.done.set()
            return
        for call, request in zip(batch, requests, strict=True):
            try:
                call.value = await request
            except Exception as exc:
                call.error = self._error(exc)
            call.done.set()

    def _error(self, exc: Exception) -> StorageError:
        error = translate(self._backend, exc)
        if error is None:
            error = StorageError(f"Redis at {self._backend.safe_url} failed: {exc!r}")
            error.__cause__ = exc
        return error


def str_fields(fields: Mapping[Any, Any]) -> dict[str, str]:
    """A stream entry's fields as a plain ``dict[str, str]``."""
    return {str(name): str(value) for name, value in fields.items()}


def fields_list(fields: Mapping[str, Any]) -> list[str]:
    """A flat ``[name, value, ...]`` list of string fields (for Lua ``unpack``)."""
    return [str(item) for pair in fields.items() for item in pair]
