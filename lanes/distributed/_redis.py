"""The Redis backend's settings, key names, connection and error translation."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import attrs
import coredis
import coredis.exceptions
import trio
from coredis.retry import NoRetryPolicy

from actors import leaves

from .._errors import LaneConfigError, StorageError
from .._partitioning import Partitioning
from ._resp import Connection, ReplyError, open_connection

if TYPE_CHECKING:
    from .._codec import CommandRegistry
    from .._config import LaneConfig
    from ._submitter import RemoteLaneSystem

__all__ = [
    "Batcher",
    "Client",
    "Lua",
    "RedisBackend",
    "connect",
    "fields_list",
    "redis_call",
    "str_fields",
    "xread",
    "xreadgroup",
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
        key_ttl: seconds a submitter's reply stream outlives a crashed process, and a
            cancel mark is kept. An idempotency key does not expire: it is held while its
            holder is queued, delayed or running (also while a dead worker's command waits
            to be reclaimed), until the script that settles the holder frees or keeps it.
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
    ReplyError,
    EOFError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
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
    for leaf in leaves(error):
        if isinstance(leaf, _FAILURES):
            msg = f"Redis at {backend.safe_url} failed: {type(leaf).__name__}: {leaf}"
            result = StorageError(msg)
            result.__cause__ = leaf
            return result
    return None


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
    real = [leaf for leaf in leaves(error) if not isinstance(leaf, trio.Cancelled)]
    return real[0] if len(real) == 1 else error


class Lua:
    """A Lua script, run by its SHA1 (``EVALSHA``), loaded on the first ``NOSCRIPT``."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class _Call:
    __slots__ = ("command", "done", "error", "script", "value")

    def __init__(self, script: Lua | None, command: list[Any]) -> None:
        self.script = script
        self.command = command
        self.done = trio.Event()
        self.value: Any = None
        self.error: StorageError | None = None

    def loaded(self) -> list[Any]:
        """The same call as ``EVAL`` with the script's source (after ``NOSCRIPT``)."""
        assert self.script is not None
        return ["EVAL", self.script.source, *self.command[2:]]


# what a connection of the RESP client may raise (ReplyError: AUTH or SELECT refused when
# it reconnects); callers that reconnect treat these as an outage
_LINK_FAILURES = (
    OSError,
    EOFError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    ReplyError,
)


class Batcher:
    """Sends the Redis calls of concurrent tasks as one pipeline per round trip.

    It has its own connection (:mod:`._resp`), opened on first use and again after a
    failure. A pipelined call costs a fraction of a lone one, so many submitters (or many
    finishing commands, and the fetches) share each round trip. Run :meth:`run` in a
    nursery.
    """

    def __init__(self, backend: RedisBackend, limit: int = 256) -> None:
        self._backend = backend
        self._limit = limit
        self._queue: list[_Call] = []
        self._wake = trio.Event()
        self._connection: Connection | None = None
        self._closed = False

    async def call(self, script: Lua, keys: list[str], args: list[Any]) -> Any:
        """Run a script in the next pipeline and return its result.

        Cancelled while waiting, the call may still have run (its result is dropped).

        Raises:
            StorageError: Redis failed (the message names the URL) or the script did.
        """
        return await self._enqueue(_Call(script, ["EVALSHA", script.sha, len(keys), *keys, *args]))

    def call_nowait(self, script: Lua, keys: list[str], args: list[Any]) -> None:
        """Queue a script call whose outcome nobody waits for (best effort: a failure is
        dropped). Calls queued by one task keep their order in the pipeline."""
        self._queue.append(_Call(script, ["EVALSHA", script.sha, len(keys), *keys, *args]))
        self._wake.set()

    async def command(self, *args: Any) -> Any:
        """Run one Redis command in the next pipeline (see :meth:`call`)."""
        return await self._enqueue(_Call(None, list(args)))

    async def _enqueue(self, call: _Call) -> Any:
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise _failure(self._backend, trio.ClosedResourceError("the client was closed"))
        self._queue.append(call)
        self._wake.set()
        await call.done.wait()
        if call.error is not None:
            raise call.error
        return call.value

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send queued calls until cancelled (then close the connection)."""
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                batch, self._queue = self._queue[: self._limit], self._queue[self._limit :]
                if self._queue:
                    self._wake.set()
                await self._send(batch)
        finally:
            self._closed = True
            closed = _failure(self._backend, trio.ClosedResourceError("the client was closed"))
            for call in self._queue:
                call.error = closed
                call.done.set()
            self._queue.clear()
            if self._connection is not None:
                await self._connection.aclose()

    async def _send(self, batch: list[_Call]) -> None:
        try:
            if self._connection is None or self._connection.broken:
                if self._connection is not None:
                    await self._connection.aclose()
                self._connection = None
                self._connection = await open_connection(self._backend.url)
            replies = await self._connection.execute([c.command for c in batch])
            missing = [i for i, r in enumerate(replies) if _noscript(r)]
            if missing:
                again = await self._connection.execute([batch[i].loaded() for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except _LINK_FAILURES as exc:
            error = _failure(self._backend, exc)
            for call in batch:
                call.error = error
                call.done.set()
            return
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, ReplyError):
                call.error = _failure(self._backend, reply)
            else:
                call.value = reply
            call.done.set()


def _noscript(reply: Any) -> bool:
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")


def _failure(backend: RedisBackend, exc: BaseException) -> StorageError:
    error = StorageError(f"Redis at {backend.safe_url} failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


async def xread(
    connection: Connection, streams: Mapping[str, str], count: int, block_ms: int
) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """``XREAD COUNT count BLOCK block_ms STREAMS ...``: stream -> [(id, fields), ...].

    Raises:
        StorageError: the server refused the read; the connection's own failures
            (``OSError``, ``EOFError``, trio's resource errors) come out as themselves.
    """
    args: list[Any] = ["XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS"]
    args += [*streams, *streams.values()]
    [reply] = await connection.execute([args])
    if isinstance(reply, ReplyError):
        raise StorageError(f"XREAD failed: {reply}")
    found: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for stream, entries in reply or ():
        found[stream] = [
            (entry_id, dict(zip(flat[::2], flat[1::2], strict=True))) for entry_id, flat in entries
        ]
    return found


async def xreadgroup(
    connection: Connection, consumer: str, streams: list[str], count: int, block_ms: int
) -> list[tuple[str, str, list[str]]]:
    """``XREADGROUP GROUP workers consumer COUNT count BLOCK block_ms STREAMS ... > ...``:
    new entries, each handed to this consumer alone, as ``(stream, id, flat fields)``.

    Raises:
        StorageError: the server refused the read (``NOGROUP``: a stream or its group is
            missing); the connection's own failures come out as themselves.
    """
    args: list[Any] = ["XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count, "BLOCK"]
    args += [block_ms, "STREAMS", *streams, *(">" for _ in streams)]
    [reply] = await connection.execute([args])
    if isinstance(reply, ReplyError):
        raise StorageError(f"XREADGROUP failed: {reply}")
    return [
        (stream, entry_id, flat)
        for stream, entries in reply or ()
        for entry_id, flat in entries
        if flat is not None  # deleted before it was read
    ]


def str_fields(fields: Mapping[Any, Any]) -> dict[str, str]:
    """A stream entry's fields as a plain ``dict[str, str]``."""
    return {str(name): str(value) for name, value in fields.items()}


def fields_list(fields: Mapping[str, Any]) -> list[str]:
    """A flat ``[name, value, ...]`` list of string fields (for Lua ``unpack``)."""
    return [str(item) for pair in fields.items() for item in pair]
