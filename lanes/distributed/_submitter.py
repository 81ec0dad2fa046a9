"""The submitting side: ``open_lane_system(backend=RedisBackend(url))``."""

from __future__ import annotations

import contextlib
import math
import reprlib
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from typing import Any, Literal, TypeVar

import attrs
import trio
from coredis.tokens import PureToken

from actors import leaves

from .._boundary import check_key
from .._codec import CommandRegistry
from .._command import command_name, is_command
from .._config import LaneConfig
from .._dedup import Dedup, check_dedup, check_extend
from .._dlq import DeadLetterNotFound
from .._errors import (
    DrainTimeout,
    LaneConfigError,
    LaneUsageError,
    NotDurableError,
    ShutdownInProgress,
    StorageError,
    UnknownLaneError,
)
from .._schedule import Misfire
from .._stats import SystemStatistics
from ..events import Event
from . import _scripts, _scripts_dedup
from ._events import subscription
from ._handle import RemoteCommandError, RemoteHandle
from ._letters import RemoteDeadLetters
from ._redis import (
    _LINK_FAILURES,
    GROUP,
    Batcher,
    Client,
    Lua,
    RedisBackend,
    connect,
    fields_list,
    redis_call,
    translate,
    xread,
)
from ._resp import Connection, open_connection
from ._schedules import RemoteSchedule, RemoteScheduler
from ._statistics import StatisticsReader
from ._wire import Envelope, KeptKey, Reply

__all__ = ["RemoteCommandError", "RemoteHandle", "RemoteLaneSystem", "open_remote_system"]

T = TypeVar("T")
_BACKOFF = (0.05, 2.0)  # first and longest pause between reconnection attempts
_EARLY_REPLIES = 1000  # replies kept for handles not registered yet
_READ_COUNT = 500  # entries per stream per read of the reply reader
_KEYS_KEPT = 10_000  # the handles of the last keys submitted, kept to be returned again
_FOREVER_MS = 10**15  # a key kept longer (some 30,000 years) is kept until released


class RemoteLaneSystem:
    """Submits commands to lanes that live in Redis; workers elsewhere run them.

    Made by ``open_lane_system(lanes, backend=RedisBackend(url), commands=[...])``; it has
    no public constructor. Only ``@lanes.command`` objects can be submitted (they travel as
    JSON). Compared with the in-process :class:`~lanes.LaneSystem`, priority, boosts and
    preemption are decided by each worker's fetch from what Redis holds, reserved slots
    (``min_concurrency``) hold per worker, and delivery is at-least-once.
    """

    def __init__(
        self,
        client: Client,
        backend: RedisBackend,
        configs: tuple[LaneConfig, ...],
        registry: CommandRegistry,
    ) -> None:
        self._client = client
        self._backend = backend
        self._configs = {config.name: config for config in configs}
        self._registry = registry
        self._submitter = uuid.uuid4().hex
        self.reply_stream = backend.key(f"reply:{self._submitter}")
        self._handles: dict[str, RemoteHandle[Any]] = {}
        self._keys: OrderedDict[str, RemoteHandle[Any]] = OrderedDict()
        self._early: OrderedDict[str, Reply] = OrderedDict()
        self._idle = trio.Event()
        self._idle.set()
        self._accepting = True
        self._submit = Lua(_scripts.SUBMIT)
        self._batcher = Batcher(backend)
        self._cancel = Lua(_scripts.CANCEL)
        self._pause = Lua(_scripts.PAUSE)
        self._cancel_lane = Lua(_scripts.CANCEL_LANE)
        self._release_key = Lua(_scripts_dedup.RELEASE_KEY)
        self._extend_key = Lua(_scripts_dedup.EXTEND_KEY)
        self._nursery: trio.Nursery | None = None
        self._letters = RemoteDeadLetters(self)
        self._statistics = StatisticsReader(backend, self._configs)
        self._scheduler = RemoteScheduler(self)
        self._events_keys = [backend.key("events"), backend.key("events:on")]
        self._events_dropped = 0

    @property
    def lanes(self) -> tuple[LaneConfig, ...]:
        """The lanes' configurations, in the order given."""
        return tuple(self._configs.values())

    @property
    def backend(self) -> RedisBackend:
        """The Redis backend."""
        return self._backend

    async def submit(
        self,
        lane: str,
        command: Any,
        *,
        key: str | None = None,
        partition_key: str | None = None,
        delay: float | None = None,
        timeout: float | None = None,
        dedup: Dedup | None = None,
    ) -> RemoteHandle[Any]:
        """Queue a ``@lanes.command`` object in ``lane``; return once Redis has it.

        Args:
            lane: the lane's name.
            command: a ``@lanes.command`` instance whose class is listed in ``commands``.
            key: idempotency key: while a command with this key is queued or running
                (on any machine), the existing command's handle is returned instead.
            dedup: how ``key`` deduplicates, as in process (a :class:`lanes.Dedup`; None:
                as above): ``Dedup.hold(ttl=30)`` keeps the key 30 s (Redis time) after its
                command finished, and a submit with it meanwhile gets a handle resolved
                with that command's result or error; ``Dedup.replace()`` cancels a holder
                no worker has taken yet (queued, delayed, or preempted back to the front)
                and takes its place; ``Dedup.keep_last()`` also waits (in Redis) behind a
                running holder, and starts once that one finished.
            partition_key: picks the partition of a hash-partitioned lane (commands of one
                key run in order); passed to a custom partition function
                (``Partitioning.custom``); ignored by round-robin partitioning.
            delay: seconds before the command becomes available to workers.
            timeout: hard timeout of each attempt (default: the lane's, on the worker).

        Cancellation before Redis answered leaves the command possibly queued (Redis may
        have received it, and with ``dedup=`` replaced the key's holder); use ``key=`` to
        make a resubmission safe.

        Raises:
            UnknownLaneError, LaneConfigError, LaneUsageError: bad arguments (``key``
                and ``dedup`` by the same rules as in process: a non-blank string of valid
                text, a ``lanes.Dedup`` that needs a key;
                ``LaneConfigError`` also for a command whose JSON is longer than the
                backend's ``max_payload``).
            NotDurableError: the command's class is not listed in ``commands``, or the
                command cannot be sent as JSON and rebuilt from it (wrong field types,
                values JSON cannot hold, nesting too deep). Nothing was written.
            StorageError: Redis cannot be reached (the message names the URL); the command
                was not accepted.
            ShutdownInProgress: the system is closing.
        """
        if not self._accepting:
            raise ShutdownInProgress("the lane system is closing and accepts no new commands")
        stream = self._stream(lane, partition_key, command)
        type_name, payload = self._encode(command)
        _check_optional_seconds("delay", delay, zero_ok=True)
        _check_optional_seconds("timeout", timeout, zero_ok=False)
        mode = "0" if key is None else "1"
        ttl = ""
        if dedup is not None:
            dedup, key = check_dedup(dedup, key, "submit")
            mode, ttl = dedup.mode, _ttl_ms(dedup.ttl)
        if key is not None:  # asked in Redis every time: a key is the deployment's
            check_key(key, "submit")
        envelope = Envelope(
            id=uuid.uuid4().hex,
            lane=lane,
            type=type_name,
            payload=payload,
            reply=self.reply_stream,
            key=key,
            attempt=1,
            timeout=timeout,
            submitted=time.time(),
        )
        return await self._send(stream, envelope, delay or 0.0, mode, ttl)

    async def _send(
        self, stream: str, envelope: Envelope, delay: float, mode: str, ttl: str
    ) -> RemoteHandle[Any]:
        key = envelope.key
        reason = (
            ""
            if key is None
            else f"replaced by command {envelope.id} (a newer submit with key {key!r})"
        )
        args = [
            mode,
            envelope.id,
            self._backend.prefix,
            self.reply_stream,
            str(int(self._backend.key_ttl * 1000)),
            str(math.ceil(delay * 1000)),
            ttl,
            reason,
            GROUP,
            envelope.lane,
            envelope.type,
            *fields_list(envelope.fields(self._registry.converter)),
        ]
        keys = [
            stream,
            self._backend.key("delayed"),
            self._backend.key(f"key:{key or ''}"),
            self._backend.key("notify"),
            self._backend.key(f"stats:{envelope.lane}"),
            *self._events_keys,
            self._backend.key(f"kept:{key or ''}"),
            self._backend.key(f"dedup:{key or ''}"),
        ]
        # registered before Redis can run the script: its reply may arrive (and be read)
        # before this task runs again
        own = self._register(envelope.id, envelope.lane, envelope.type)
        try:
            answer = await self._batcher.call(self._submit, keys, args)
        except BaseException:
            self._unregister(own)
            raise
        command_id, entry_id, record = str(answer[0]), str(answer[1]), str(answer[2])
        handle = own
        if command_id == envelope.id:
            own._stream, own._entry, own._key = stream, entry_id, key
        elif record:  # the key's holder finished and its key is kept: its outcome
            self._unregister(own)
            handle = self._kept(command_id, key, record)
        else:  # another command holds the key: wait for that one
            self._unregister(own)
            handle = self._handles.get(command_id) or self._register(
                command_id, envelope.lane, envelope.type
            )
        if key:  # the last handle of each key (bounded): a kept key returns it again
            self._keys[key] = handle
            self._keys.move_to_end(key)
            if len(self._keys) > _KEYS_KEPT:
                self._keys.popitem(last=False)
        return handle

    def _kept(self, command_id: str, key: str | None, record: str) -> RemoteHandle[Any]:
        """The handle of a finished command whose key is kept: this system's own one if it
        has it, else a new one resolved with the stored reply."""
        handle = self._handles.get(command_id)
        known = self._keys.get(key or "")
        if handle is None and known is not None and known.id == command_id:
            handle = known
        if handle is None:
            kept, reply = KeptKey.load(self._registry.converter, record)
            handle = RemoteHandle(self, kept.id, kept.lane, kept.type)
            handle._resolve(reply)
        return handle

    def _register(self, command_id: str, lane: str, type_name: str) -> RemoteHandle[Any]:
        """A handle for ``command_id``, resolved at once by a reply that came early."""
        handle: RemoteHandle[Any] = RemoteHandle(self, command_id, lane, type_name)
        early = self._early.pop(command_id, None)
        if early is not None:
            handle._resolve(early)
            return handle
        self._handles[command_id] = handle
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        return handle

    def _unregister(self, handle: RemoteHandle[Any]) -> None:
        if self._handles.get(handle.id) is handle:
            del self._handles[handle.id]
            if not self._handles:
                self._idle.set()

    async def run(
        self,
        lane: str,
        command: Any,
        *,
        key: str | None = None,
        partition_key: str | None = None,
        delay: float | None = None,
        timeout: float | None = None,
        dedup: Dedup | None = None,
    ) -> Any:
        """Submit and wait for the result (see :meth:`submit` and ``RemoteHandle.result``)."""
        handle = await self.submit(
            lane,
            command,
            key=key,
            partition_key=partition_key,
            delay=delay,
            timeout=timeout,
            dedup=dedup,
        )
        return await handle.result()

    def _stream(self, lane: object, partition_key: str | None, command: Any = None) -> str:
        if not isinstance(lane, str) or lane not in self._configs:
            known = ", ".join(self._configs)
            msg = f"submit: unknown lane {lane!r}; known lanes: {known}"
            raise UnknownLaneError(msg)
        if partition_key is not None:
            _check_partition_key(partition_key)
        part = self._backend.partitioning(lane)
        index = part.partition(partition_key, lane=lane, command=command) if part else 0
        return self._backend.stream(lane, index)

    def _encode(self, command: Any) -> tuple[str, str]:
        if not is_command(command):
            msg = (
                f"submit: {command!r} is not a @lanes.command object; a Redis backend runs "
                "commands on other processes, so only @lanes.command objects (sent as JSON) "
                "can be submitted"
            )
            raise LaneUsageError(msg)
        name = command_name(command)
        if self._registry.classes.get(name) is not type(command):
            self._registry.encode(command)  # raises NotDurableError: not listed
        try:  # not the registry's encode: its message repr()s the (maybe hostile) object
            payload = self._registry.converter.dumps(command)
        except Exception as exc:
            msg = (
                f"submit: {reprlib.repr(command)} cannot be sent as JSON: "
                f"{type(exc).__name__}: {reprlib.repr(str(exc))}"
            )
            raise NotDurableError(msg) from None
        limit = self._backend.max_payload
        if len(payload) > limit:
            msg = (
                f"submit: {name!r} command is {len(payload):,} characters of JSON, more than "
                f"RedisBackend(max_payload={limit:,}); pass large data by reference (a path, "
                "a URL, an object-store key) or raise max_payload"
            )
            raise LaneConfigError(msg)
        try:  # what a worker could not rebuild is refused here, not dead-lettered there
            self._registry.decode(name, payload)
        except StorageError as exc:
            msg = f"submit: {reprlib.repr(command)} does not survive its trip as JSON: {exc}"
            raise NotDurableError(msg) from exc
        return name, payload

    # -- cancelling --------------------------------------------------------------------------

    def _request_cancel(self, handle: RemoteHandle[Any]) -> None:
        if self._nursery is None:  # closed: every handle was resolved then
            return
        handle._cancelling = True
        self._nursery.start_soon(self._send_cancel, handle)

    async def _send_cancel(self, handle: RemoteHandle[Any]) -> None:
        """Run the CANCEL script until Redis takes it (backoff); resolve a queued one."""
        keys = [
            handle._stream or self._backend.stream(handle.lane, 0),
            self._backend.key("cancelled"),
            self._backend.key("control"),
            self._backend.key(f"key:{handle._key or ''}"),
            self._backend.key(f"stats:{handle.lane}"),
            *self._events_keys,
        ]
        args = [
            GROUP,
            handle._entry,
            handle.id,
            str(int(self._backend.key_ttl * 1000)),
            "1" if handle._key else "0",
            handle.lane,
            self._backend.prefix,
        ]
        pause = _BACKOFF[0]
        while not handle.done():
            try:
                answer = await self._batcher.call(self._cancel, keys, args)
            except StorageError:
                await trio.sleep(pause)
                pause = min(pause * 2, _BACKOFF[1])
                continue
            if int(answer) == 1:  # deleted while queued: it never starts
                self._handles.pop(handle.id, None)
                handle._resolve(Reply(handle.id, "cancelled", "null", "", 0))
                if not self._handles:
                    self._idle.set()
            return

    # -- idempotency keys by hand ----------------------------------------------------------------

    async def release_key(self, key: str) -> bool:
        """Free ``key`` at once, as ``LaneSystem.release_key`` (but awaited: the keys live
        in Redis, one script call); return whether anything held it.

        A finished command's kept key is forgotten; a live holder keeps running without
        the key (its end keeps nothing); a command waiting behind it (``keep_last``) is
        queued at once, without the key. Cancelled, the release may still have run.

        Raises:
            LaneConfigError: ``key`` is not a valid idempotency key.
            StorageError: Redis cannot be reached; nothing was released.
            ShutdownInProgress: the system is closed.
        """
        checked = check_key(key, "release_key")
        self._open_nursery("release_key")
        names = [self._backend.key(f"{kind}:{checked}") for kind in ("key", "kept", "dedup")]
        names.append(self._backend.key("parked"))
        args = [self._backend.prefix, checked]
        return bool(await self._batcher.call(self._release_key, names, args))

    async def extend_key(self, key: str, ttl: float) -> bool:
        """Keep ``key`` ``ttl`` seconds, as ``LaneSystem.extend_key`` (but awaited); return
        whether anything held it.

        A live holder's key will be kept ``ttl`` seconds after it ends (``math.inf``:
        until :meth:`release_key`); a finished command's kept key is kept ``ttl`` seconds
        from now (Redis time), shorter too. Cancelled, the change may still have run.

        Raises:
            LaneConfigError: ``key`` is not a valid idempotency key, or ``ttl`` is not a
                number of seconds > 0.
            StorageError: Redis cannot be reached; nothing changed.
            ShutdownInProgress: the system is closed.
        """
        checked, seconds = check_extend(key, ttl)
        self._open_nursery("extend_key")
        names = [self._backend.key(f"{kind}:{checked}") for kind in ("key", "kept", "dedup")]
        life = str(int(self._backend.key_ttl * 1000))
        return bool(await self._batcher.call(self._extend_key, names, [_ttl_ms(seconds), life]))

    # -- lanes across every worker ---------------------------------------------------------------

    def pause(self, lane: str) -> None:
        """Stop starting commands of ``lane`` on every worker (running ones continue;
        submits still queue). Synchronous, as in process; the request reaches Redis in
        the background, in one round trip, retried with backoff while Redis is away.

        From the moment Redis has it no fetch starts a command of the lane; a worker
        whose blocking read began before then and takes a new command of the lane hands
        it back at once (to the end of its lane stream), unless that happens before the
        worker read the control stream (then it runs).

        Raises:
            UnknownLaneError: no such lane.
            ShutdownInProgress: the system is closed.
        """
        self._lane_control("pause", lane, True)

    def resume(self, lane: str) -> None:
        """Start the commands of ``lane`` again on every worker (see :meth:`pause`).

        Raises:
            UnknownLaneError: no such lane.
            ShutdownInProgress: the system is closed.
        """
        self._lane_control("resume", lane, False)

    def _lane_control(self, what: str, lane: str, paused: bool) -> None:
        if self._nursery is None:
            msg = f"{what}: the lane system is closed (its async with block ended)"
            raise ShutdownInProgress(msg)
        self._check_lane(lane, what)
        keys = [self._backend.key(n) for n in ("paused", "control", "notify")]
        call = self._batcher.call
        self._nursery.start_soon(
            self._until_taken, lambda: call(self._pause, keys, [lane, "1" if paused else "0"])
        )

    async def _until_taken(self, call: Callable[[], Awaitable[Any]]) -> None:
        pause = _BACKOFF[0]
        while True:
            try:
                await call()
                return
            except StorageError:
                await trio.sleep(pause)
                pause = min(pause * 2, _BACKOFF[1])

    def _check_lane(self, lane: object, what: str) -> None:
        if not isinstance(lane, str) or lane not in self._configs:
            known = ", ".join(self._configs)
            raise UnknownLaneError(f"{what}: unknown lane {lane!r}; known lanes: {known}")

    async def cancel_lane(self, lane: str, *, running: bool = True, queued: bool = True) -> int:
        """Cancel the running and/or the queued commands of ``lane`` on every worker;
        return how many.

        "Queued" means queued in a lane stream (no worker holds it), delayed or waiting
        for a retry's backoff: those are deleted in one script and their handles (in any
        submitter) raise :class:`CommandCancelled`. The running ones (held by a worker)
        are announced on the control stream: each worker cancels its own at once, and
        their handles raise ``CommandCancelled`` when the attempts exit. As in process,
        this returns once those attempts have exited and their workers settled them
        (this system is told like a submitter of each; one that finished meanwhile
        counts too). Cancelling this call stops the wait and leaves the cancel requested
        or not (Redis may have run it).

        Closing the system while it waits makes it return.

        Raises:
            UnknownLaneError: no such lane.
            LaneConfigError: ``running`` or ``queued`` is not a bool, or both are False.
            ShutdownInProgress: the system is closed.
            StorageError: Redis cannot be reached; nothing was cancelled.
        """
        if self._nursery is None:
            msg = "cancel_lane: the lane system is closed (its async with block ended)"
            raise ShutdownInProgress(msg)
        self._check_lane(lane, "cancel_lane")
        for name, value in (("running", running), ("queued", queued)):
            if not isinstance(value, bool):
                msg = f"cancel_lane: {name}={value!r} is invalid; expected True or False"
                raise LaneConfigError(msg)
        if not (running or queued):
            msg = "cancel_lane: running=False and queued=False cancel nothing; pass one True"
            raise LaneConfigError(msg)
        keys = [self._backend.key(n) for n in ("delayed", "control", f"stats:{lane}")]
        keys += [*self._events_keys, *self._backend.streams(lane)]
        args = [GROUP, lane, "1" if queued else "0", "1" if running else "0"]
        args += [self._backend.prefix, self.reply_stream]
        dropped, stopping, ids = await self._batcher.call(self._cancel_lane, keys, args)
        await self._wait_for(lane, [str(command_id) for command_id in ids])
        return int(dropped) + int(stopping)

    async def _wait_for(self, lane: str, command_ids: list[str]) -> None:
        """Wait for the outcomes of ``command_ids`` (this system is among their waiters);
        handles made for other submitters' commands are dropped afterwards."""
        made = []
        waiting = []
        for command_id in command_ids:
            handle = self._handles.get(command_id)
            if handle is None:
                handle = self._register(command_id, lane, "")
                made.append(handle)
            waiting.append(handle)
        try:
            for handle in waiting:
                await handle._done.wait()
        finally:
            for handle in made:
                self._unregister(handle)

    # -- schedules -----------------------------------------------------------------------------

    async def schedule(
        self,
        lane: str,
        command: Any,
        *,
        every: float | None = None,
        cron: str | None = None,
        tz: str | None = None,
        key: str | None = None,
        jitter: float = 0.0,
        misfire: Misfire = "run_once",
        misfire_limit: int = 100,
        overlap: Literal["skip", "allow"] = "skip",
    ) -> RemoteSchedule:
        """Submit ``command`` to ``lane`` at every slot of a recurring schedule, once per
        slot for the whole deployment however many replicas schedule the same ``key``.

        The arguments are those of the in-process ``LaneSystem.schedule``; ``key`` is
        required (it names the schedule for every replica), ``command`` is a
        ``@lanes.command`` object and ``overlap`` is ``"skip"`` (no firing while the
        previous one is queued or running anywhere) or ``"allow"``. The first definition
        of a key sets the deployment's slots; every replica then sleeps until each slot,
        and one script records the slot and queues the firing atomically, so the first
        replica there fires it and the others find it dealt with. Returns once Redis has
        the definition. Closing the system stops this replica's share (the schedule stays
        in Redis for the others and the next start); cancelling this call leaves the
        definition written or not (Redis may have run it).

        Raises:
            UnknownLaneError, LaneConfigError, LaneUsageError, NotDurableError: bad
                arguments (as in process, and no key, or ``overlap="queue"``).
            StorageError: Redis cannot be reached; nothing was defined.
            ShutdownInProgress: the system is closing.
        """
        return await self._scheduler.add(
            lane, command, every, cron, tz, key, jitter, misfire, misfire_limit, overlap
        )

    @property
    def schedules(self) -> Mapping[str, RemoteSchedule]:
        """The schedules this replica runs, by key (a read-only live view)."""
        return self._scheduler.view

    # -- events --------------------------------------------------------------------------------

    def subscribe(
        self, *event_types: type[Event], buffer: int = 1000
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Event]]:
        """Receive the events of the whole deployment, of the given types (all if none).

        Use as ``async with system.subscribe(lanes.events.Completed) as events:``. The
        same event classes as in process, written by the workers (``Started``,
        ``Completed``, ``Retrying``, ``TimedOut``, ``Failed``, ``DeadLettered``,
        ``Cancelled``) and by the submitting scripts (``Submitted``, and ``Cancelled`` for
        a queued command), for every process of the deployment. Nothing is written to
        Redis while nobody subscribes: entering turns the events on (a key every script
        checks, and a note on the control stream every worker reads), so the events of
        workers start once they have read it. Past ``buffer`` unread events, new ones are
        dropped for this subscriber and counted in ``statistics().events_dropped``.
        Leaving the block stops reading; the events stay on for up to 10 s after the last
        subscriber left.

        Raises:
            LaneConfigError: a type that is not an event class, or a bad buffer.
            StorageError: Redis cannot be reached (on entering).
            ShutdownInProgress: the system is closed.
        """
        return subscription(self, tuple(event_types), buffer)

    def _open_nursery(self, what: str) -> trio.Nursery:
        if self._nursery is None:
            msg = f"{what}: the lane system is closed (its async with block ended)"
            raise ShutdownInProgress(msg)
        return self._nursery

    # -- dead letters and statistics -----------------------------------------------------------

    @property
    def dead_letters(self) -> RemoteDeadLetters:
        """The deployment's dead-letter queue (``list()``, ``len()``, ``await pop()``,
        ``await requeue(id)``, ``await discard(id)``, ``await clear()``), as in process; see
        :class:`RemoteDeadLetters`."""
        return self._letters

    async def requeue(self, letter_id: str) -> RemoteHandle[Any]:
        """Deprecated: use ``await system.dead_letters.requeue(letter_id)``.

        Raises:
            LaneConfigError: no dead letter has that id (it was requeued or evicted).
            StorageError: Redis cannot be reached.
        """
        warnings.warn(
            "system.requeue(id) is deprecated; use await system.dead_letters.requeue(id)",
            DeprecationWarning,
            stacklevel=2,
        )
        try:
            return await self._letters.requeue(letter_id)
        except DeadLetterNotFound as exc:
            raise LaneConfigError(str(exc)) from None

    async def statistics(self) -> SystemStatistics:
        """The whole deployment's statistics, read from Redis in one script call.

        The same frozen :class:`~lanes.SystemStatistics` as in process, but awaited: the
        counts live in Redis. Counters count events across every submitter and worker
        since the deployment's keys were created (they survive restarts as far as Redis
        persists them); once a handle resolved, they include its outcome. ``pending`` is
        queued plus delayed and retrying commands, ``active`` the commands workers hold
        (a dead worker's until they are reclaimed), ``max_concurrency`` the slots of the
        workers alive now (per lane: at most its ``cluster_concurrency``).
        ``effective_priority`` is the lane's priority (the fetch applies boosts, per command);
        ``preempted`` counts the commands workers preempted;
        ``events_dropped`` counts this system's subscribers' drops. Cancelling it leaves
        nothing behind.

        Raises:
            StorageError: Redis cannot be reached.
            ShutdownInProgress: the system is closed.
        """
        self._open_nursery("statistics")
        stats = await self._statistics.read(self._batcher, self._accepting)
        return attrs.evolve(stats, events_dropped=self._events_dropped)

    async def backlog(self) -> dict[str, int]:
        """How many commands each lane holds in Redis (queued or running, not delayed).

        Raises:
            StorageError: Redis cannot be reached.
        """
        counts: dict[str, int] = {}
        for lane in self._configs:
            total = 0
            for stream in self._backend.streams(lane):
                total += await redis_call(self._backend, self._client.xlen(stream))
            counts[lane] = total
        return counts

    # -- replies and closing -------------------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every command this system submitted has its outcome.

        Raises:
            DrainTimeout: the timeout passed first (the commands stay in Redis and run).
        """
        _check_optional_seconds("timeout", timeout, zero_ok=True, where="drain")
        with trio.move_on_after(math.inf if timeout is None else timeout):
            while self._handles:
                await self._idle.wait()
            return
        msg = (
            f"drain timed out after {timeout} s; {len(self._handles)} command(s) still have "
            "no outcome (they stay queued in Redis)"
        )
        raise DrainTimeout(msg)

    async def _create_reply_stream(self) -> None:
        """Create (or renew) the empty reply stream; workers reply only while it exists."""
        stream = self.reply_stream
        ttl = int(self._backend.key_ttl * 1000)
        if await redis_call(self._backend, self._client.pexpire(stream, ttl)):
            return
        await redis_call(self._backend, self._client.xadd(stream, {"hello": "1"}))
        await redis_call(self._backend, self._client.xtrim(stream, PureToken.MAXLEN, 0))
        await redis_call(self._backend, self._client.pexpire(stream, ttl))

    async def _renew_reply_stream(self) -> None:
        """Keep the reply stream alive (its TTL only bounds a crashed submitter's)."""
        while True:
            await trio.sleep(min(60.0, self._backend.key_ttl / 3))
            with contextlib.suppress(StorageError):  # the reader reports outages
                await self._create_reply_stream()

    async def _read_replies(self, task_status: trio.TaskStatus[None]) -> None:
        """Resolve handles from the reply stream and follow the dead-letter streams;
        reconnect with backoff when Redis is away."""
        last = "0-0"
        pause = _BACKOFF[0]
        connection: Connection | None = None
        letters = self._letters
        task_status.started()
        try:
            while True:
                streams = {
                    letters.stream: letters.last,
                    letters.removed_stream: letters.removed_last,
                    self.reply_stream: last,
                }
                try:
                    if connection is None or connection.broken:
                        if connection is not None:
                            await connection.aclose()
                        connection = None
                        connection = await open_connection(self._backend.url)
                    answer = await xread(connection, streams, _READ_COUNT, 1000)
                except (StorageError, *_LINK_FAILURES):
                    await trio.sleep(pause)
                    pause = min(pause * 2, _BACKOFF[1])
                    continue
                pause = _BACKOFF[0]
                added = answer.get(letters.stream, ())
                removed = answer.get(letters.removed_stream, ())
                letters.added(added)  # before the replies: a failed handle resolves
                letters.removed(removed)  # once its letter is in the snapshot
                if len(added) == _READ_COUNT or len(removed) == _READ_COUNT:
                    continue  # more letters to read first; the replies are read again
                entries = answer.get(self.reply_stream, ())
                for entry_id, fields in entries:
                    last = entry_id
                    with contextlib.suppress(StorageError):  # not a reply of ours: skip it
                        self._deliver(Reply.from_fields(self._registry.converter, fields))
                if entries:  # replies are read by id: a leftover is harmless
                    with contextlib.suppress(StorageError):
                        await self._batcher.command(
                            "XDEL", self.reply_stream, *(entry_id for entry_id, _ in entries)
                        )
        finally:
            if connection is not None:
                await connection.aclose()

    def _deliver(self, reply: Reply) -> None:
        handle = self._handles.pop(reply.id, None)
        if handle is None:
            # the reply of a command whose handle is not registered yet (a submit with an
            # idempotency key that another command holds): kept, a bounded number
            self._early[reply.id] = reply
            while len(self._early) > _EARLY_REPLIES:
                self._early.popitem(last=False)
            return
        handle._resolve(reply)
        if not self._handles:
            self._idle.set()

    async def _close(self, drain_timeout: float | None) -> None:
        self._accepting = False
        with suppress(DrainTimeout):
            await self.drain(drain_timeout)

    def _abandon(self) -> None:
        self._accepting = False
        error = ShutdownInProgress(
            "the lane system closed before this command's outcome arrived; it stays queued "
            "in Redis and a worker still runs it"
        )
        for handle in self._handles.values():
            handle._resolve(error)
        self._handles.clear()
        self._idle.set()

    async def _delete_reply_stream(self) -> None:
        with trio.move_on_after(1.0) as scope:
            scope.shield = True
            try:
                await self._client.delete([self.reply_stream])
            except Exception as exc:  # the stream expires by itself
                if translate(self._backend, exc) is None:
                    raise


def _ttl_ms(ttl: float | None) -> str:
    """A ``Dedup`` ttl as the scripts read it: '' none, 'inf', or milliseconds (>= 1)."""
    if ttl is None:
        return ""
    if ttl * 1000 >= _FOREVER_MS:
        return "inf"
    return str(max(1, math.ceil(ttl * 1000)))


def _check_partition_key(value: object) -> None:
    """A partition key must be a string that Redis can store (UTF-8: no lone surrogates)."""
    ok = isinstance(value, str) and bool(value)
    if ok:
        try:
            str(value).encode()
        except UnicodeEncodeError:
            ok = False
    if not ok:
        msg = (
            f"submit: partition_key={value!r} is invalid; expected a non-empty string of "
            "valid Unicode (no lone surrogates), or None"
        )
        raise LaneConfigError(msg)


def _check_optional_seconds(
    field: str, value: object, *, zero_ok: bool, where: str = "submit"
) -> None:
    if value is None:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero_ok):  # type: ignore[operator]
        bound = ">= 0" if zero_ok else "> 0"
        msg = f"{where}: {field}={value!r} is invalid; expected a number of seconds {bound}"
        raise LaneConfigError(msg)


@asynccontextmanager
async def open_remote_system(
    backend: RedisBackend,
    configs: tuple[LaneConfig, ...],
    registry: CommandRegistry,
    drain_timeout: float | None,
) -> AsyncIterator[RemoteLaneSystem]:
    """Connect, start reading replies, yield the system; on normal exit wait for outcomes.

    Leaving the block normally waits up to ``drain_timeout`` for the outcomes of this
    system's commands; leaving it by an exception does not wait. Either way, handles still
    without an outcome then raise :class:`ShutdownInProgress` (their commands stay in Redis).

    Raises:
        StorageError: Redis cannot be reached at start (the message names the URL).
    """
    async with connect(backend) as client:
        system = RemoteLaneSystem(client, backend, configs, registry)
        await system._create_reply_stream()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(system._batcher.run)
                await system._letters.load()
                await nursery.start(system._read_replies)
                nursery.start_soon(system._renew_reply_stream)
                system._nursery = nursery
                try:
                    yield system
                    await system._close(drain_timeout)
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            real = [e for e in leaves(group) if not isinstance(e, trio.Cancelled)]
            if len(real) == 1:
                raise real[0] from real[0].__cause__
            raise
        finally:
            system._nursery = None
            system._abandon()
            await system._delete_reply_stream()
