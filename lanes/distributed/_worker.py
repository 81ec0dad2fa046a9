"""The executing side: ``open_lane_worker()`` fetches commands from Redis and runs them."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from coredis.tokens import PureToken

from .. import events as ev
from .._codec import CommandRegistry
from .._config import DEFAULT_LANES, LaneConfig, validate_lanes
from .._dlq import format_traceback
from .._errors import LaneConfigError, Permanent, StorageError
from .._outcome import Ended, Next, next_step
from . import _scripts, _scripts_api
from ._events import encode_all
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
    xread,
    xreadgroup,
)
from ._resp import Connection, open_connection
from ._statistics import registration
from ._wire import Envelope, RemoteDeadLetter, Reply, salvage

__all__ = ["LaneWorker", "WorkerLaneStatistics", "WorkerStatistics", "open_lane_worker"]

_log = logging.getLogger("lanes.distributed")
_BACKOFF = (0.05, 2.0)  # first and longest pause between reconnection attempts
_TRIM_1: dict[str, Any] = {"trim_strategy": PureToken.MAXLEN, "threshold": 1}


@attrs.frozen
class WorkerLaneStatistics:
    """One lane as seen by one worker (counters since the worker started).

    Attributes:
        active: commands of the lane running on this worker now.
        completed: attempts that succeeded and were acknowledged by this worker.
        failed: commands that ended failed here (dead-lettered, their submitter told).
        timed_out: attempts that exceeded their timeout.
        retried: failed attempts queued again for another attempt.
        dead_lettered: commands this worker moved to the dead-letter stream.
        reclaimed: commands taken over from a worker whose lease expired.
        lost: attempts cancelled because another worker had reclaimed them meanwhile.
        duplicates: attempts that finished after another worker settled the same command.
        malformed: entries that held no command this version can read (a missing or
            malformed field): each was dead-lettered once, acknowledged and logged.
        cancelled: commands cancelled by their handle that this worker settled (stopped
            while running, or found marked cancelled when fetched).
        preempted: commands of this (preemptible) lane this worker stopped to give the
            slot to a more urgent command that waited; each went back to the front of
            the lane, its attempt not counted.
    """

    name: str
    active: int
    completed: int
    failed: int
    timed_out: int
    retried: int
    dead_lettered: int
    reclaimed: int
    lost: int
    duplicates: int
    malformed: int
    cancelled: int
    preempted: int


@attrs.frozen
class WorkerStatistics:
    """A frozen snapshot of a worker: ``worker.statistics()``."""

    name: str
    lanes: Mapping[str, WorkerLaneStatistics]
    active: int
    max_concurrency: int
    connection_errors: int


_COUNTERS = (
    "completed",
    "failed",
    "timed_out",
    "retried",
    "dead_lettered",
    "reclaimed",
    "lost",
    "duplicates",
    "malformed",
    "cancelled",
    "preempted",
)
_CANCELLED_KEPT = 100_000  # ids of cancelled commands a worker remembers


class _Running:
    __slots__ = (
        "attempt",
        "cancelled",
        "command_id",
        "lane",
        "preempted",
        "release",
        "scope",
        "seq",
        "settling",
        "stopped",
    )

    def __init__(self, lane: str, seq: int) -> None:
        self.lane = lane
        self.seq = seq  # start order on this worker (the latest started is preempted)
        self.preempted = False  # stopped for a more urgent command: back to the front
        self.scope = trio.CancelScope()
        self.settling = False
        self.release = False
        self.cancelled = False  # by its handle (the control stream)
        self.stopped = False  # stop() was called (not the attempt's timeout)
        self.command_id = ""
        self.attempt = 1

    def stop(self) -> None:
        """Cancel the attempt (a lost lease, its handle, its lane, or shutdown)."""
        self.stopped = True
        self.scope.cancel()


class LaneWorker:
    """A process's share of the work of lanes on Redis. Made by ``open_lane_worker()``.

    Each fetch takes commands from the most urgent lane first (by the effective priority
    of each stream: boosts count from its longest-waiting queued command), up to the free
    slots of each lane on this worker (``LaneConfig.max_concurrency``) and of the worker
    as a whole, keeping the slots the lanes' ``min_concurrency`` reserve. A full worker
    that runs a ``preemptible`` lane's command gives its slot to a more urgent command no
    idle worker took (see :meth:`_preempt_loop`).
    """

    def __init__(
        self,
        client: Client,
        backend: RedisBackend,
        configs: tuple[LaneConfig, ...],
        registry: CommandRegistry,
        settings: _Settings,
    ) -> None:
        self._client = client
        self._reader: Connection | None = None  # the blocking reads' own connection
        self._backend = backend
        self._configs = {c.name: c for c in configs}
        self._order = sorted(configs, key=lambda c: c.priority)  # stable: ties keep order
        self._boost_points = {  # for FETCH: ms a lane's longest-waiting command waited
            c.name: " ".join(str(math.ceil(p * 1000)) for p in c.boost.at) if c.boost else ""
            for c in configs
        }
        self._registry = registry
        self._settings = settings
        self.name = settings.name
        self._streams = {lane: backend.streams(lane) for lane in self._configs}
        self._lane_of = {s: lane for lane, streams in self._streams.items() for s in streams}
        self._active = dict.fromkeys(self._configs, 0)
        self._counts = {lane: dict.fromkeys(_COUNTERS, 0) for lane in self._configs}
        self._running: dict[tuple[str, str], _Running] = {}
        self._by_command: dict[str, _Running] = {}
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._paused: set[str] = set()
        self._slot_freed = trio.Event()
        self._turn = 0
        self._started = 0  # commands started (the seq of the next _Running)
        self._draining = False  # fetching stopped: a freed slot would stay empty
        self._requeue_front = Lua(_scripts.REQUEUE_FRONT)
        self._next_reclaim = 0.0
        self.connection_errors = 0
        self._wake_last = self._notify_last = "0-0"
        self._random = random.Random()
        self._batcher = Batcher(backend)
        self._scripts = {
            name: Lua(getattr(_scripts, name))
            for name in ("FETCH", "FINISH", "RETRY", "HEARTBEAT", "EMIT", "PREEMPT")
        }
        self._events_keys = [backend.key("events"), backend.key("events:on")]
        self._events_until = -math.inf  # events are written until then (a subscription)
        self._leaving = False  # left the registry of live workers
        self._register_script = Lua(_scripts_api.REGISTER)
        self._registry_keys = [backend.key("workers"), backend.key(f"worker:{self.name}")]
        self._registry_fields = registration(
            configs, settings.max_concurrency, settings.cluster_concurrency
        )

    def statistics(self) -> WorkerStatistics:
        """A frozen snapshot of this worker's lanes."""
        lanes = {
            lane: WorkerLaneStatistics(name=lane, active=self._active[lane], **counts)
            for lane, counts in self._counts.items()
        }
        return WorkerStatistics(
            name=self.name,
            lanes=lanes,
            active=sum(self._active.values()),
            max_concurrency=self._settings.max_concurrency,
            connection_errors=self.connection_errors,
        )

    # -- fetching ------------------------------------------------------------------------------

    async def _ensure_groups(self) -> None:
        """Create the consumer groups that are missing: the lanes' streams (from their
        first entry), this worker's wake stream and the notify stream (from now on)."""
        starts = [(s, "0") for streams in self._streams.values() for s in streams]
        starts += [
            (self._backend.key(f"wake:{self.name}"), "$"),
            (self._backend.key("notify"), "$"),
        ]
        for stream, start in starts:
            with contextlib.suppress(StorageError):  # BUSYGROUP: it exists already
                await redis_call(
                    self._backend,
                    self._client.xgroup_create(stream, GROUP, start, mkstream=True),
                )

    async def _fetch_loop(self) -> None:
        """Fetch and start commands until cancelled; reconnect with backoff on failures."""
        pause = _BACKOFF[0]
        drained = False  # the last fetch took what the plan's lanes held, up to their slots
        hint = -math.inf  # when the last fetch's wait hint (a delayed command) falls due
        while True:
            self._slot_freed = trio.Event()
            plan, budget, partial = self._plan()
            if not plan:
                await self._slot_freed.wait()
                continue
            now = trio.current_time()
            due = now >= self._next_reclaim or now >= hint
            if drained and not due and self._exclusive(plan, budget):
                # the lanes left with free slots were emptied by that fetch: a blocking
                # XREADGROUP hands over what arrived since (or waits), one fetch sooner
                drained = False
                wait_ms = -1 if hint == math.inf else max(1, math.ceil((hint - now) * 1000))
                await self._block(plan, budget, [], wait_ms, partial)
                continue
            try:
                # shielded: a fetch the server ran must reach us, or its commands would
                # wait for a lease to expire; when stopping they still run (drain)
                with trio.CancelScope(shield=True), trio.fail_after(max(5.0, self._backend.lease)):
                    entries, wait_ms, last = await self._fetch(plan, budget)
            except (StorageError, trio.TooSlowError):
                self.connection_errors += 1
                await trio.sleep(pause * (0.5 + self._random.random()))
                pause = min(pause * 2, _BACKOFF[1])
                with contextlib.suppress(StorageError):
                    await self._ensure_groups()  # a server restarted empty lost them
                continue
            pause = _BACKOFF[0]
            for entry in entries:
                self._start(entry)
            drained = bool(entries)
            now = trio.current_time()
            hint = math.inf if wait_ms < 0 else now + wait_ms / 1000
            if not entries:
                await self._block(plan, budget, last, wait_ms, partial)

    def _reserved(self) -> tuple[dict[str, int], int]:
        """Each lane's reserved slots left on this worker (``min_concurrency`` not yet
        running) and the pool: the free slots of the worker not reserved for any lane."""
        reserved = {c.name: max(0, c.min_concurrency - self._active[c.name]) for c in self._order}
        budget = self._settings.max_concurrency - sum(self._active.values())
        return reserved, budget - sum(reserved.values())

    def _plan(self) -> tuple[list[tuple[LaneConfig, str, int]], int, bool]:
        """(lane, stream, free slots) in priority order, the worker's budget, and whether
        some lane was left out for lack of a slot (its own, or one not reserved for
        another lane's ``min_concurrency``)."""
        budget = self._settings.max_concurrency - sum(self._active.values())
        plan: list[tuple[LaneConfig, str, int]] = []
        partial = False
        if budget <= 0:
            return plan, 0, True
        self._turn += 1
        reserved, pool = self._reserved()
        for config in self._order:
            if config.name in self._paused:
                continue
            free = config.max_concurrency - self._active[config.name]
            free = min(free, reserved[config.name] + max(0, pool))
            if free <= 0:
                partial = True
                continue
            streams = self._streams[config.name]
            start = self._turn % len(streams)  # rotate partitions between fetches
            for stream in streams[start:] + streams[:start]:
                plan.append((config, stream, free))
        return plan, budget, partial

    async def _fetch(
        self, plan: list[tuple[LaneConfig, str, int]], budget: int
    ) -> tuple[list[Any], int, list[str]]:
        now = trio.current_time()
        reclaim = 0
        if now >= self._next_reclaim:
            reclaim = max(1, int(self._backend.lease * 1000))
            self._next_reclaim = now + self._backend.lease / 4
        reserved, pool = self._reserved()
        args: list[Any] = [GROUP, self.name, budget, reclaim, self._settings.poll_ms, pool]
        for config, _stream, free in plan:
            part = self._backend.partitioning(config.name)
            limit = config.rate_limit
            rate = limit.rate / 1000 if limit is not None else 0
            args += [
                config.name,
                free,
                "1" if part is not None and part.ordered else "0",
                self._settings.cluster_concurrency.get(config.name, 0),
                repr(rate),
                limit.burst if limit is not None else 0,
                self._backend.key(f"bucket:{config.name}"),
                reserved[config.name],
                config.priority,
                self._boost_points[config.name],
            ]
        keys = [self._backend.key("delayed")] + [stream for _, stream, _ in plan]
        keys.append(self._backend.key("paused"))
        answer = await self._batcher.call(self._scripts["FETCH"], keys, args)
        entries, wait_ms, last = answer
        return list(entries), int(wait_ms), [str(x) for x in last]

    async def _block(
        self,
        plan: list[tuple[LaneConfig, str, int]],
        budget: int,
        last: list[str],
        wait_ms: int,
        partial: bool,
    ) -> None:
        """Wait for a new entry in the plan's streams, a hint's time, or (if ``partial``)
        a slot.

        When every lane of the plan is free of cluster-wide limits (see
        :meth:`_exclusive`), the read is an ``XREADGROUP``: a new entry goes to one idle
        worker, which starts it; otherwise an ``XREAD`` wakes every idle worker and the
        next fetch decides. A freed slot wakes the read by an entry in this worker's wake
        stream, so the blocking read is never cancelled (that would drop its connection).
        """
        timeout = self._settings.block_ms
        if wait_ms >= 0:
            timeout = max(1, min(timeout, wait_ms))
        wake = self._backend.key(f"wake:{self.name}")
        notify = self._backend.key("notify")
        exclusive = self._exclusive(plan, budget)

        async def read() -> None:
            try:
                if exclusive:
                    await self._read_group([s for _, s, _ in plan], wake, notify, timeout)
                else:
                    streams = dict(zip([s for _, s, _ in plan], last, strict=False))
                    await self._read_all(streams, wake, notify, timeout)
            except (StorageError, *_LINK_FAILURES) as exc:
                self.connection_errors += 1
                await trio.sleep(_BACKOFF[0])
                if "NOGROUP" in str(exc):  # a group is gone (a server restarted empty,
                    with contextlib.suppress(StorageError):  # an expired wake stream)
                        await self._ensure_groups()
            nursery.cancel_scope.cancel()

        async def slot() -> None:
            await self._slot_freed.wait()
            with contextlib.suppress(StorageError):
                await self._batcher.command("XADD", wake, "MAXLEN", 1, "*", "w", "1")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            if partial:
                nursery.start_soon(slot)

    def _exclusive(self, plan: list[tuple[LaneConfig, str, int]], budget: int) -> bool:
        """Whether an idle read may take entries itself: no lane of the plan has a rate
        limit, a cluster cap or ordered partitions (those the fetch script enforces), and
        one entry from every stream fits the worker's and each lane's free slots, and the
        slots not reserved for other lanes' ``min_concurrency``."""
        per_lane: dict[str, int] = {}
        for config, _stream, free in plan:
            part = self._backend.partitioning(config.name)
            if config.rate_limit is not None or (part is not None and part.ordered):
                return False
            if config.name in self._settings.cluster_concurrency:
                return False
            per_lane[config.name] = per_lane.get(config.name, 0) + 1
            if per_lane[config.name] > free:
                return False
        reserved, pool = self._reserved()
        beyond = sum(max(0, n - reserved[lane]) for lane, n in per_lane.items())
        return len(plan) <= budget and beyond <= pool

    async def _read_group(self, streams: list[str], wake: str, notify: str, timeout: int) -> None:
        """Block on ``XREADGROUP``; start the commands it hands to this worker."""
        reader = await self._reader_connection()
        try:
            found = await xreadgroup(reader, self.name, [*streams, wake, notify], 1, timeout)
        except trio.Cancelled:
            # close at once: Redis must not hand a later entry to a read nobody awaits
            # (one it handed over meanwhile is reclaimed by a worker after the lease)
            await reader.aclose()
            raise
        signals: dict[str, list[str]] = {}
        for stream, entry_id, flat in found:
            if stream == wake:
                self._wake_last = entry_id  # for a later XREAD
                signals.setdefault(stream, []).append(entry_id)
            elif stream == notify:
                self._notify_last = entry_id
                signals.setdefault(stream, []).append(entry_id)
            else:
                self._start([stream, entry_id, flat, 1])
        for stream, ids in signals.items():  # read by the group: acknowledge, in the
            self._commands.start_soon(self._acknowledge, stream, ids)  # background

    async def _acknowledge(self, stream: str, ids: list[str]) -> None:
        with contextlib.suppress(StorageError):
            await self._batcher.command("XACK", stream, GROUP, *ids)

    async def _read_all(
        self, streams: dict[str, str], wake: str, notify: str, timeout: int
    ) -> None:
        """Block on ``XREAD`` (every idle worker wakes); note the wake streams' last ids."""
        streams[wake] = self._wake_last
        streams[notify] = self._notify_last
        answer = await xread(await self._reader_connection(), streams, 1, timeout)
        for entry_id, _ in answer.get(wake, ()):
            self._wake_last = entry_id
        for entry_id, _ in answer.get(notify, ()):
            self._notify_last = entry_id

    async def _reader_connection(self) -> Connection:
        """The worker's reading connection (reopened after a failure or a cancelled
        read)."""
        if self._reader is None or self._reader.broken:
            if self._reader is not None:
                await self._reader.aclose()
            self._reader = None
            self._reader = await open_connection(self._backend.url)
        return self._reader

    async def _open_wake_stream(self) -> None:
        wake = self._backend.key(f"wake:{self.name}")
        self._wake_last = str(
            await redis_call(self._backend, self._client.xadd(wake, {"w": "0"}, **_TRIM_1))
        )
        await redis_call(
            self._backend, self._client.pexpire(wake, int(self._backend.key_ttl * 1000))
        )

    # -- running -------------------------------------------------------------------------------

    def _start(self, entry: list[Any]) -> None:
        stream, message_id, flat, deliveries = entry
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        lane = self._lane_of[stream]
        if (stream, message_id) in self._running:  # our own lease expired (an outage)
            return  # and we took it back: it is still running here
        if lane in self._paused:  # a blocking read that began before the pause took it
            self._commands.start_soon(self._release, stream, message_id, fields)
            return
        self._started += 1
        running = _Running(lane, self._started)
        self._running[(stream, message_id)] = running
        self._active[lane] += 1
        if int(deliveries) > 1:
            self._counts[lane]["reclaimed"] += 1
        self._commands.start_soon(self._run, running, stream, message_id, fields, int(deliveries))

    async def _run(
        self,
        running: _Running,
        stream: str,
        message_id: str,
        fields: dict[str, str],
        deliveries: int,
    ) -> None:
        holding = True
        try:
            settle = await self._attempt(running, stream, message_id, fields, deliveries)
            if settle is not None:
                running.settling = True
                # the command has stopped: its slot is free while Redis settles it, so the
                # next fetch shares the settling call's round trip (the entry stays
                # pending in Redis, and counted by a cluster cap, until then)
                holding = False
                self._active[running.lane] -= 1
                self._slot_freed.set()
                await self._settle(running.lane, settle)
            elif running.preempted:
                await self._to_front(running, stream, message_id)
            elif running.release:
                await self._release(stream, message_id, fields)
        finally:
            del self._running[(stream, message_id)]
            if self._by_command.get(running.command_id) is running:
                del self._by_command[running.command_id]
            if holding:
                self._active[running.lane] -= 1
            self._slot_freed.set()

    async def _attempt(
        self,
        running: _Running,
        stream: str,
        message_id: str,
        fields: dict[str, str],
        deliveries: int,
    ) -> Callable[[], Awaitable[Any]] | None:
        """Run one attempt; return how to settle it (None: cancelled, leave it to others)."""
        try:
            envelope = Envelope.from_fields(self._registry.converter, fields)
        except StorageError as exc:
            return self._malformed(running.lane, stream, message_id, fields, exc)
        config = self._configs[running.lane]
        running.command_id = envelope.id
        running.attempt = envelope.attempt
        if envelope.id in self._cancelled:  # cancelled by its handle before it started
            return self._cancel_call(stream, message_id, envelope, 0)
        self._by_command[envelope.id] = running
        started = self._events(lambda: [_started(envelope)])
        if started:  # queued now: before the attempt's outcome in the same pipeline order
            self._batcher.call_nowait(self._scripts["EMIT"], self._events_keys, [started])
        if deliveries > self._settings.max_deliveries:
            poison = (
                f"LeaseExpired: delivered {deliveries} times; the workers running it died or "
                f"stalled past the lease ({self._backend.lease} s)"
            )
            return self._next(stream, message_id, envelope, _Outcome.failed(Permanent(poison)))
        try:
            command = self._registry.decode(envelope.type, envelope.payload)
        except StorageError as exc:
            outcome = _Outcome.failed(Permanent(f"StorageError: {exc}"))
            return self._next(stream, message_id, envelope, outcome)
        timeout = envelope.timeout or config.timeout or math.inf
        outcome = await self._execute(running, command, envelope.attempt, timeout)
        if outcome.ended is Ended.CANCELLED:
            if running.cancelled:
                return self._cancel_call(stream, message_id, envelope, envelope.attempt)
            return None
        if outcome.ended is Ended.TIMED_OUT:
            self._counts[running.lane]["timed_out"] += 1
        return self._next(stream, message_id, envelope, outcome)

    def _next(
        self, stream: str, message_id: str, envelope: Envelope, outcome: _Outcome
    ) -> Callable[[], Awaitable[Any]]:
        """How to settle an attempt: the step :func:`lanes._outcome.next_step` decides."""
        step = next_step(
            outcome.ended,
            attempt=envelope.attempt,
            retry=self._configs[self._lane_of[stream]].retry,
            error=outcome.error,
            draw=self._random.random,
        )
        if step.next is Next.DONE:
            return self._done(stream, message_id, envelope, outcome.value, outcome.duration)
        if step.next is Next.RETRY:
            return self._retry(stream, message_id, envelope, step.delay, outcome)
        assert step.next is Next.DEAD_LETTER and step.error is not None
        trace = format_traceback(outcome.error or step.error)
        if outcome.ended is Ended.TIMED_OUT:
            text = f"CommandTimeout: {step.error}"
            return self._final(stream, message_id, envelope, "timeout", text, trace)
        return self._final(stream, message_id, envelope, "failed", _describe(step.error), trace)

    async def _execute(
        self, running: _Running, command: Any, attempt: int, timeout: float
    ) -> _Outcome:
        """Run the command under its scope and say how the attempt ended (cancelled: the
        scope was cancelled, by a lost lease or shutdown). The value comes back as JSON."""
        outcome = _Outcome(Ended.RETURNED)
        began = trio.current_time()
        scope = running.scope
        scope.deadline = began + timeout  # one scope: the timeout and the stops of _Running
        with scope:
            try:
                value = await command.execute()
            except Exception as exc:
                outcome = _Outcome.failed(exc)
            else:
                try:
                    outcome.value = json.dumps(self._registry.converter.unstructure(value))
                except Exception as exc:
                    outcome = _Outcome.failed(Permanent(f"ResultNotJSON: {exc!r}"))
        if running.stopped:
            return _Outcome(Ended.CANCELLED)
        if scope.cancelled_caught:
            error = trio.TooSlowError(f"attempt {attempt} exceeded {timeout} s")
            outcome = _Outcome(Ended.TIMED_OUT, error=error)
        outcome.duration = trio.current_time() - began
        return outcome

    def _done(
        self, stream: str, message_id: str, envelope: Envelope, value: str, duration: float
    ) -> Callable[[], Awaitable[Any]]:
        reply = Reply(envelope.id, "done", value, "", envelope.attempt)
        counter = "completed"
        events = self._events(
            lambda: [ev.Completed(*_about(envelope), attempt=envelope.attempt, duration=duration)]
        )
        return self._finish_call(
            stream, message_id, envelope, reply, None, counter, counter, events
        )

    def _cancel_call(
        self, stream: str, message_id: str, envelope: Envelope, attempt: int
    ) -> Callable[[], Awaitable[Any]]:
        """Settle a command cancelled by its handle: acknowledged, its submitter told, no
        dead letter (``attempt`` 0: it never started)."""
        reply = Reply(envelope.id, "cancelled", "null", "", attempt)
        counter = "cancelled"
        events = self._events(lambda: [ev.Cancelled(*_about(envelope))])
        return self._finish_call(
            stream, message_id, envelope, reply, None, counter, counter, events
        )

    def _final(
        self,
        stream: str,
        message_id: str,
        envelope: Envelope,
        outcome: str,
        error: str,
        trace: str,
    ) -> Callable[[], Awaitable[Any]]:
        reply = Reply(envelope.id, outcome, "null", error, envelope.attempt)
        letter = RemoteDeadLetter.build(
            envelope, stream, error, envelope.attempt, time.time(), trace
        )
        shared = "failed dead_lettered" + (" timed_out" if outcome == "timeout" else "")
        events = self._events(lambda: _ended(envelope, outcome == "timeout", error))
        return self._finish_call(
            stream, message_id, envelope, reply, letter, "failed", shared, events
        )

    def _finish_call(
        self,
        stream: str,
        message_id: str,
        envelope: Envelope,
        reply: Reply,
        letter: dict[str, str] | None,
        counter: str,
        shared: str,
        events: str,
    ) -> Callable[[], Awaitable[Any]]:
        target = _Target(envelope.lane, envelope.id, envelope.reply, envelope.key)
        return self._finish(stream, message_id, target, reply, letter, counter, shared, events)

    def _finish(
        self,
        stream: str,
        message_id: str,
        target: _Target,
        reply: Reply | None,
        letter: dict[str, str] | None,
        counter: str,
        shared: str,
        events: str = "",
    ) -> Callable[[], Awaitable[Any]]:
        """The FINISH call: acknowledge, reply (unless None), dead-letter, release the key;
        ``counter`` is this worker's counter, ``shared`` the deployment's lane counters."""
        reply_fields = fields_list(reply.fields(self._registry.converter)) if reply else []
        args = [
            GROUP,
            message_id,
            self._backend.prefix,
            target.command_id,
            "1" if target.key else "0",
            self._settings.dead_letter_limit,
            shared,
            events,
            len(reply_fields),
            *reply_fields,
            *(fields_list(letter) if letter else ()),
        ]
        keys = [
            stream,
            target.reply or self._backend.key("reply:-"),
            self._backend.key("dead"),
            self._backend.key(f"key:{target.key or ''}"),
            self._backend.key(f"stats:{target.lane}"),
            self._backend.key("stats"),
            self._backend.key("dead:removed"),
            *self._events_keys,
        ]

        async def call() -> None:
            settled = await self._batcher.call(self._scripts["FINISH"], keys, args)
            counts = self._counts[target.lane]
            if not settled:
                counts["duplicates"] += 1
                return
            counts[counter] += 1
            if letter is not None:
                counts["dead_lettered"] += 1

        return call

    def _retry(
        self, stream: str, message_id: str, envelope: Envelope, delay: float, outcome: _Outcome
    ) -> Callable[[], Awaitable[Any]]:
        next_attempt = attrs.evolve(envelope, attempt=envelope.attempt + 1)
        fields = fields_list(next_attempt.fields(self._registry.converter))
        timed_out = outcome.ended is Ended.TIMED_OUT
        shared = "retried timed_out" if timed_out else "retried"
        events = self._events(lambda: _retrying(envelope, timed_out, delay, outcome.error))
        held = envelope.id if envelope.key else ""
        args = [GROUP, message_id, math.ceil(delay * 1000), shared, events, held, *fields]
        keys = [stream, self._backend.key("delayed"), self._backend.key(f"stats:{envelope.lane}")]
        keys += [*self._events_keys, self._backend.key(f"dedup:{envelope.key or ''}")]

        async def call() -> None:
            settled = await self._batcher.call(self._scripts["RETRY"], keys, args)
            self._counts[envelope.lane]["retried" if settled else "duplicates"] += 1

        return call

    def _malformed(
        self,
        lane: str,
        stream: str,
        message_id: str,
        fields: Mapping[str, str],
        error: StorageError,
    ) -> Callable[[], Awaitable[Any]]:
        """Settle an entry that is not a command of ours: dead-letter it once, acknowledge
        and delete it, count and log it, and fail its submitter's handle if it names one."""
        raw = salvage(fields)
        text = f"MalformedEntry: {error}"
        _log.error("lane %r: entry %s of %s dead-lettered: %s", lane, message_id, stream, error)
        letter = {
            "command_id": raw.get("id", ""),
            "lane": lane,
            "stream": stream,
            "type": raw.get("type", ""),
            "payload": raw.get("payload", ""),
            "timeout": "",
            "error": text,
            "attempts": "0",
            "failed_at": repr(time.time()),
            "traceback": format_traceback(error),
        }
        target = _Target(lane, raw.get("id", ""), raw.get("reply", ""), raw.get("key"))
        reply = Reply(target.command_id, "failed", "null", text, 0) if target.command_id else None
        events = self._events(
            lambda: [
                cls(lane, target.command_id, time.time(), attempts=0, error=text)
                for cls in (ev.Failed, ev.DeadLettered)
            ]
        )
        return self._finish(
            stream, message_id, target, reply, letter, "malformed", "failed dead_lettered", events
        )

    async def _settle(self, lane: str, call: Callable[[], Awaitable[Any]]) -> None:
        """Run a settling call until Redis takes it (reconnecting with backoff).

        If the worker is cancelled first, the command stays pending in Redis and is
        reclaimed by a worker after the lease: nothing is lost, it may run again.
        """
        pause = _BACKOFF[0]
        while True:
            try:
                await call()
                return
            except StorageError:
                self.connection_errors += 1
                await trio.sleep(pause * (0.5 + self._random.random()))
                pause = min(pause * 2, _BACKOFF[1])

    async def _to_front(self, running: _Running, stream: str, message_id: str) -> None:
        """Put a preempted command back at the front of its lane (REQUEUE_FRONT), best
        effort: if Redis cannot be reached, another worker reclaims it after the lease."""
        keys = [
            stream,
            f"{stream}:front",
            self._backend.key("notify"),
            self._backend.key(f"stats:{running.lane}"),
            *self._events_keys,
        ]
        events = self._events(
            lambda: [ev.Preempted(running.lane, running.command_id, time.time(), running.attempt)]
        )
        with trio.move_on_after(1.0) as scope:
            scope.shield = True
            with contextlib.suppress(StorageError):
                moved = await self._batcher.call(
                    self._requeue_front, keys, [GROUP, message_id, self.name, events]
                )
                if moved:
                    self._counts[running.lane]["preempted"] += 1

    # -- preemption ------------------------------------------------------------------------------

    async def _preempt_loop(self) -> None:
        """While every slot is full and a preemptible lane's command runs here, look each
        poll interval for a more urgent command that waited past the grace; when this
        worker claims one, stop its latest started command of the least urgent
        preemptible lane that is less urgent than the waiting one (it goes back to the
        front of its lane: :meth:`_to_front`)."""
        interval = self._settings.poll_ms / 1000
        grace = self._settings.poll_ms
        script = self._scripts["PREEMPT"]
        while True:
            await trio.sleep(interval)
            lanes = [] if self._draining else self._preemptible_for()
            if not lanes:
                continue
            keys = [self._backend.key("paused")]
            args: list[Any] = [GROUP, self._backend.prefix, grace, int(self._backend.lease * 1000)]
            for config in lanes:
                for stream in self._streams[config.name]:
                    keys.append(stream)
                    args.append(config.name)
            try:
                answer = await self._batcher.call(script, keys, args)
            except StorageError:
                self.connection_errors += 1
                continue
            if answer:
                victim = self._victim(self._configs[self._lane_of[str(answer[0])]].priority)
                if victim is not None:
                    victim.preempted = True
                    victim.stop()

    def _preemptible_for(self) -> list[LaneConfig]:
        """The lanes a waiting command of which could preempt here (most urgent first):
        none unless the worker's slots are all taken; then those more urgent than some
        running preemptible command, with a free slot of their own on this worker, and
        not held back by a rate limit, cluster cap or ordered partitions."""
        if sum(self._active.values()) < self._settings.max_concurrency:
            return []
        least = max(  # the least urgent preemptible lane running here
            (
                self._configs[r.lane].priority
                for r in self._running.values()
                if self._configs[r.lane].preemptible and not r.settling and not r.preempted
            ),
            default=None,
        )
        if least is None:
            return []
        return [
            c
            for c in self._order
            if c.priority < least
            and c.name not in self._paused
            and self._active[c.name] < c.max_concurrency
            and not self._gated(c)
        ]

    def _gated(self, config: LaneConfig) -> bool:
        """Whether a waiting command of the lane may be held back by more than a slot (a
        rate limit, a cluster cap, ordered partitions): such a lane never preempts, as a
        freed slot might not start it (in process, a lane without a token never does)."""
        part = self._backend.partitioning(config.name)
        return (
            config.rate_limit is not None
            or config.name in self._settings.cluster_concurrency
            or (part is not None and part.ordered)
        )

    def _victim(self, priority: int) -> _Running | None:
        """The latest started running command of a preemptible lane less urgent than
        ``priority`` (as in process), leaving that lane its ``min_concurrency`` here."""
        leaving: dict[str, int] = {}
        for running in self._running.values():
            if running.preempted:
                leaving[running.lane] = leaving.get(running.lane, 0) + 1
        best: _Running | None = None
        for running in self._running.values():
            config = self._configs[running.lane]
            if running.settling or running.preempted or running.stopped:
                continue
            if not config.preemptible or config.priority <= priority:
                continue
            if self._active[running.lane] - leaving.get(running.lane, 0) <= config.min_concurrency:
                continue
            if best is None or running.seq > best.seq:
                best = running
        return best

    async def _release(self, stream: str, message_id: str, fields: dict[str, str]) -> None:
        """Hand a command cancelled by shutdown back to its lane at once (best effort)."""
        known = salvage(fields)  # its id and key, if it has them (its key's hash follows it)
        key, held = known.get("key", ""), known.get("id", "")
        args = [GROUP, message_id, 0, "", "", held if key else "", *fields_list(fields)]
        lane = self._lane_of[stream]
        keys = [stream, self._backend.key("delayed"), self._backend.key(f"stats:{lane}")]
        keys += [*self._events_keys, self._backend.key(f"dedup:{key}")]
        with trio.move_on_after(1.0) as scope:
            scope.shield = True
            with contextlib.suppress(StorageError):
                await self._batcher.call(self._scripts["RETRY"], keys, args)

    # -- events -------------------------------------------------------------------------------

    def _events(self, build: Callable[[], list[ev.Event]]) -> str:
        """The events ``build`` makes, for a script, while a subscription wants them."""
        return encode_all(build()) if trio.current_time() < self._events_until else ""

    # -- control --------------------------------------------------------------------------------

    async def _control_loop(self, task_status: trio.TaskStatus[None]) -> None:
        """Read the control stream (cancel requests from any submitter) next to the work.

        Before it reports started it has loaded the ids marked cancelled in Redis, so a
        command cancelled before this worker fetched it is settled without starting.
        """
        control = self._backend.key("control")
        last = "0-0"
        newest = await redis_call(self._backend, self._client.xrevrange(control, count=1))
        if newest:
            last = str(newest[0][0])
        marked = await redis_call(
            self._backend, self._client.zrange(self._backend.key("cancelled"), 0, -1)
        )
        for command_id in marked:
            self._note_cancelled(str(command_id))
        left = await redis_call(self._backend, self._client.pttl(self._events_keys[1]))
        if left > 0:
            self._events_until = trio.current_time() + left / 1000
        paused = await redis_call(self._backend, self._client.smembers(self._backend.key("paused")))
        self._paused = {str(lane) for lane in paused if str(lane) in self._configs}
        task_status.started()
        connection: Connection | None = None
        pause = _BACKOFF[0]
        try:
            while True:
                try:
                    if connection is None or connection.broken:
                        if connection is not None:
                            await connection.aclose()
                        connection = None
                        connection = await open_connection(self._backend.url)
                    answer = await xread(connection, {control: last}, 256, self._settings.block_ms)
                except (StorageError, *_LINK_FAILURES):
                    self.connection_errors += 1
                    await trio.sleep(pause)
                    pause = min(pause * 2, _BACKOFF[1])
                    continue
                pause = _BACKOFF[0]
                for entry_id, fields in answer.get(control, ()):
                    last = entry_id
                    self._control(fields)
        finally:
            if connection is not None:
                await connection.aclose()

    def _control(self, fields: Mapping[str, str]) -> None:
        """Act on one control entry (entries of unknown kinds or lanes are ignored)."""
        if "cancel" in fields:
            self._note_cancelled(fields["cancel"])
        if fields.get("events", "").isdigit():  # a subscription: write events for a while
            self._events_until = trio.current_time() + int(fields["events"]) / 1000
        lane = fields.get("pause")
        if lane in self._configs:
            self._paused.add(lane)
        lane = fields.get("resume")
        if lane in self._configs:
            self._paused.discard(lane)
            self._slot_freed.set()  # plan again, with the lane
        lane = fields.get("cancel_lane")
        if lane in self._configs:
            for running in self._running.values():
                if running.lane == lane and not running.settling:
                    running.cancelled = True
                    running.stop()

    def _note_cancelled(self, command_id: str) -> None:
        """Remember a cancelled id; cancel its attempt if it runs here."""
        self._cancelled[command_id] = None
        while len(self._cancelled) > _CANCELLED_KEPT:
            self._cancelled.popitem(last=False)
        running = self._by_command.get(command_id)
        if running is not None and not running.settling:
            running.cancelled = True
            running.stop()

    # -- leases --------------------------------------------------------------------------------

    async def _register(self) -> None:
        """Say in Redis that this worker is alive, with its slots (for ``statistics()``).

        Raises:
            StorageError: Redis cannot be reached.
        """
        ttl = max(1, int(self._backend.lease * 1000))
        args = [self.name, ttl, *self._registry_fields]
        await self._batcher.call(self._register_script, self._registry_keys, args)

    async def _unregister(self) -> None:
        """Leave the registry at once (best effort: else it expires after a lease)."""
        self._leaving = True  # a renewal queued before this call lands before it
        with trio.move_on_after(1.0) as scope:
            scope.shield = True
            with contextlib.suppress(StorageError):
                await self._batcher.call(
                    Lua(_scripts_api.UNREGISTER), self._registry_keys, [self.name]
                )

    async def _heartbeat_loop(self) -> None:
        """Renew the lease of running commands; cancel those another worker took over."""
        while True:
            await trio.sleep(self._backend.lease / 3)
            try:
                if not self._leaving:
                    await self._register()
            except StorageError:
                self.connection_errors += 1
            by_stream: dict[str, list[str]] = {}
            for (stream, message_id), running in self._running.items():
                if not running.settling:
                    by_stream.setdefault(stream, []).append(message_id)
            for stream, ids in by_stream.items():
                try:
                    lost = await self._batcher.call(
                        self._scripts["HEARTBEAT"],
                        [stream],
                        [GROUP, self.name, *ids],
                    )
                except StorageError:
                    self.connection_errors += 1
                    continue
                for message_id in lost:
                    owner = self._running.get((stream, str(message_id)))
                    if owner is not None and not owner.settling:
                        self._counts[owner.lane]["lost"] += 1
                        owner.stop()

    async def _stop(self, drain_timeout: float | None) -> None:
        """Wait for running commands (up to ``drain_timeout``), then hand the rest back."""
        with trio.move_on_after(math.inf if drain_timeout is None else drain_timeout):
            while self._running:
                self._slot_freed = trio.Event()
                await self._slot_freed.wait()
        self._abort()

    def _abort(self) -> None:
        """Cancel every running command; each is handed back to its lane (best effort)."""
        for running in self._running.values():
            if not running.settling:
                running.release = True
                running.stop()

    _commands: trio.Nursery


@attrs.frozen
class _Target:
    """Whom a FINISH call settles: the lane, command id, reply stream and key."""

    lane: str
    command_id: str
    reply: str
    key: str | None


@attrs.define
class _Outcome:
    """How an attempt ended, its error (None unless it failed) and its value as JSON."""

    ended: Ended
    error: BaseException | None = None
    value: str = "null"
    duration: float = 0.0

    @classmethod
    def failed(cls, error: BaseException) -> _Outcome:
        return cls(Ended.RAISED, error=error)


@attrs.frozen
class _Settings:
    name: str
    max_concurrency: int
    cluster_concurrency: Mapping[str, int]
    max_deliveries: int
    dead_letter_limit: int
    block_ms: int
    poll_ms: int


def _about(envelope: Envelope) -> tuple[str, str, float]:
    """An event's lane, command id and timestamp (now)."""
    return envelope.lane, envelope.id, time.time()


def _started(envelope: Envelope) -> ev.Started:
    waited = max(0.0, time.time() - envelope.submitted) if envelope.attempt == 1 else 0.0
    return ev.Started(*_about(envelope), attempt=envelope.attempt, waited=waited)


def _retrying(
    envelope: Envelope, timed_out: bool, delay: float, error: BaseException | None
) -> list[ev.Event]:
    events: list[ev.Event] = []
    if timed_out:
        events.append(ev.TimedOut(*_about(envelope), attempt=envelope.attempt))
    text = "" if error is None else _describe(error)
    events.append(ev.Retrying(*_about(envelope), attempt=envelope.attempt, delay=delay, error=text))
    return events


def _ended(envelope: Envelope, timed_out: bool, error: str) -> list[ev.Event]:
    events: list[ev.Event] = []
    if timed_out:
        events.append(ev.TimedOut(*_about(envelope), attempt=envelope.attempt))
    attempts = envelope.attempt
    events.append(ev.Failed(*_about(envelope), attempts=attempts, error=error))
    events.append(ev.DeadLettered(*_about(envelope), attempts=attempts, error=error))
    return events


def _describe(error: BaseException) -> str:
    """``"Type: message"``; a ``Permanent`` that wraps a message is that message."""
    if isinstance(error, Permanent) and isinstance(error.error, str):
        return error.error
    return f"{type(error).__name__}: {error}"


def _check_int(field: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        msg = f"open_lane_worker: {field}={value!r} is invalid; expected an integer >= {minimum}"
        raise LaneConfigError(msg)
    return value


def _settings(
    configs: tuple[LaneConfig, ...],
    backend: RedisBackend,
    name: str | None,
    max_concurrency: int | None,
    cluster_concurrency: Mapping[str, int] | None,
    max_deliveries: int,
    dead_letter_limit: int,
) -> _Settings:
    if name is None:
        name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    elif not isinstance(name, str) or not name.strip():
        msg = f"open_lane_worker: name={name!r} is invalid; expected a non-empty string"
        raise LaneConfigError(msg)
    total = sum(c.max_concurrency for c in configs)
    cap = total if max_concurrency is None else _check_int("max_concurrency", max_concurrency, 1)
    reserved = sum(c.min_concurrency for c in configs)
    if reserved > cap:
        msg = (
            f"open_lane_worker: max_concurrency={cap} is below the {reserved} slots the lanes "
            "reserve (sum of min_concurrency); raise max_concurrency or lower the reservations"
        )
        raise LaneConfigError(msg)
    limits = dict(cluster_concurrency or {})
    known = {c.name for c in configs}
    for lane, limit in limits.items():
        if lane not in known:
            msg = (
                f"open_lane_worker: cluster_concurrency names unknown lane {lane!r}; "
                f"known lanes: {', '.join(known)}"
            )
            raise LaneConfigError(msg)
        _check_int(f"cluster_concurrency[{lane!r}]", limit, 1)
    for config in configs:
        rate = config.rate_limit
        if rate is not None and rate.kind != "token_bucket":
            msg = (
                f"open_lane_worker: lane {config.name!r} has a sliding-window rate limit; "
                "lanes on Redis support token buckets only (RateLimit.per_second, "
                ".per_minute, .per_hour, .token_bucket)"
            )
            raise LaneConfigError(msg)
    block = min(1.0, backend.lease / 2)  # idle workers look for expired leases this often
    return _Settings(
        name=name,
        max_concurrency=cap,
        cluster_concurrency=limits,
        max_deliveries=_check_int("max_deliveries", max_deliveries, 1),
        dead_letter_limit=_check_int("dead_letter_limit", dead_letter_limit, 1),
        block_ms=max(1, int(block * 1000)),
        poll_ms=max(1, int(min(block, 0.05) * 1000)),
    )


@asynccontextmanager
async def open_lane_worker(
    lanes: Iterable[LaneConfig] = DEFAULT_LANES,
    *,
    backend: RedisBackend,
    commands: Iterable[type] = (),
    name: str | None = None,
    max_concurrency: int | None = None,
    cluster_concurrency: Mapping[str, int] | None = None,
    max_deliveries: int = 5,
    dead_letter_limit: int = 1000,
    drain_timeout: float | None = 30.0,
) -> AsyncIterator[LaneWorker]:
    """Run commands from lanes on Redis while the block runs: ``async with ... as worker:``.

    Args:
        lanes: the lane configurations (the same names as the submitters'); each lane's
            ``max_concurrency`` and ``min_concurrency`` hold per worker, its ``timeout``
            and ``retry`` apply to each attempt, its token-bucket ``rate_limit`` holds
            cluster-wide, its ``boost`` applies at each fetch, and ``preemptible`` lets
            a full worker stop its command for a more urgent one that waits.
        backend: the :class:`RedisBackend`.
        commands: the ``@lanes.command`` classes this worker can rebuild and run.
        name: this worker's consumer name (default: host, pid and a random suffix).
        max_concurrency: cap on commands running on this worker across lanes (default:
            the sum of the lanes' ``max_concurrency``).
        cluster_concurrency: lane name -> how many of its commands may run at once across
            all workers (counted from Redis' pending entries).
        max_deliveries: how often one attempt may be handed out after lease expiries
            (dead workers) before it is dead-lettered as poison.
        dead_letter_limit: the dead-letter stream keeps this many letters (oldest evicted).
        drain_timeout: on normal exit, how long running commands may finish; the rest
            are cancelled and handed back to their lanes for other workers.

    Leaving the block normally stops fetching, waits for running commands (up to
    ``drain_timeout``) and hands the rest back. Leaving it by an exception or cancellation
    cancels running commands at once and hands them back when Redis is reachable (else
    other workers reclaim them when the lease expires).

    Raises:
        LaneConfigError: invalid arguments (before connecting), or lanes reserving more
            slots (``min_concurrency``) than ``max_concurrency``.
        StorageError: Redis cannot be reached at start (the message names the URL).
    """
    configs, _ = validate_lanes(lanes, None)
    if not isinstance(backend, RedisBackend):
        msg = f"open_lane_worker: backend={backend!r} is invalid; expected a RedisBackend"
        raise LaneConfigError(msg)
    registry = CommandRegistry(commands)
    settings = _settings(
        configs,
        backend,
        name,
        max_concurrency,
        cluster_concurrency,
        max_deliveries,
        dead_letter_limit,
    )
    async with connect(backend) as client:
        worker = LaneWorker(client, backend, configs, registry, settings)
        await worker._ensure_groups()
        await worker._open_wake_stream()
        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(worker._heartbeat_loop)
                if any(c.preemptible for c in configs):
                    outer.start_soon(worker._preempt_loop)
                await outer.start(worker._batcher.run)
                await worker._register()
                # loaded before the first Started event: a NOSCRIPT retry would put it after
                # the outcome of its attempt in the pipeline
                await worker._batcher.command("SCRIPT", "LOAD", worker._scripts["EMIT"].source)
                await outer.start(worker._control_loop)
                async with trio.open_nursery() as work:
                    worker._commands = work
                    fetching = trio.CancelScope()

                    async def fetch() -> None:
                        with fetching:
                            await worker._fetch_loop()

                    work.start_soon(fetch)
                    try:
                        yield worker
                    except BaseException:
                        fetching.cancel()
                        worker._draining = True
                        worker._abort()
                        raise
                    fetching.cancel()
                    worker._draining = True
                    await worker._stop(drain_timeout)
                await worker._unregister()
                outer.cancel_scope.cancel()
        finally:
            if worker._reader is not None:
                await worker._reader.aclose()
