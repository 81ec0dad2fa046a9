"""``open_lane_system()`` and the ``LaneSystem`` handle."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from types import MappingProxyType, TracebackType
from typing import Any, Protocol, TypeVar, TypeVarTuple, overload

import trio

from actors import WorkerPool, leaves, single_leaf

from . import _dedup as dedup_modes
from . import _live_lanes as live_lanes
from . import _retention as retention_mod
from . import _submission as submission
from ._boundary import check_key, check_run
from ._bus import check_user_event
from ._checks import check_seconds as _check_seconds
from ._codec import DEFAULT_MAX_PAYLOAD_BYTES, CommandRegistry
from ._command import Command, CommandHandle, Reason
from ._config import DEFAULT_LANES, LaneConfig, validate_lanes
from ._core import Core, no_pool
from ._dedup import Dedup
from ._dispatcher import Dispatcher
from ._dlq import DeadLetter, DeadLetterQueue
from ._durable import Durability
from ._errors import DrainTimeout, LaneConfigError, LaneUsageError, ShutdownInProgress
from ._lane import new_lane_pool
from ._listing import CommandInfo, check_listing, list_commands
from ._metrics import Metrics
from ._on_done import Callbacks, OnDone, check_on_done
from ._policy import DONE, LaneState
from ._process import require_trio_parallel
from ._recurring import Scheduler
from ._remote import SystemBackend
from ._retention import Retention
from ._schedule import Misfire, Overlap
from ._schedule_handle import ScheduleHandle
from ._stats import LaneStatistics, SystemStatistics
from ._stream import Stream, check_buffer
from ._unobserved import UnobservedCallback, check_callback
from .events import Event
from .storage import Storage, as_storage

__all__ = ["LaneSystem", "open_lane_system"]

_NO_SCHEDULES: Mapping[str, ScheduleHandle] = MappingProxyType({})
"""``system.schedules`` of a system that never had one."""

logger = logging.getLogger("lanes")

T = TypeVar("T")
S = TypeVar("S")
T_co = TypeVar("T_co", covariant=True)
PosArgs = TypeVarTuple("PosArgs")


class SupportsExecute(Protocol[T_co]):
    """A ``@lanes.command`` object: it has ``async def execute(self)``."""

    def execute(self) -> Awaitable[T_co]: ...


Submittable = Callable[[*PosArgs], Awaitable[T]] | SupportsExecute[T]


class LaneSystem:
    """A running lane system. Made by ``open_lane_system()``; it has no public constructor.

    Synchronous methods never block; async ones always checkpoint.
    """

    def __init__(self, core: Core, drain_timeout: float | None) -> None:
        self._core = core
        self._token = core.token  # the owning run's: every entry point checks it
        self._closed = False  # the ``async with`` block has ended
        self._leave_now = False  # close_now(): leaving the block does not drain
        self._drain_timeout = drain_timeout
        self.dispatcher: Dispatcher | None = None
        self.recovered: tuple[CommandHandle[Any], ...] = ()
        """Handles of the commands requeued from storage at start, in order."""
        # The schedules' owner: made by the first schedule() (or at start, with storage).
        self._scheduler: Scheduler | None = None
        self._wall: Callable[[], float] = time.time  # (the clock given at open)
        self._lane_nursery: trio.Nursery | None = None  # where lanes added later serve

    @property
    def lanes(self) -> tuple[LaneConfig, ...]:
        """The lanes' configurations, in the order given."""
        return tuple(self._core.configs.values())

    @property
    def metrics(self) -> Metrics:
        """Counters, gauges and latency histograms: ``system.metrics.snapshot()``."""
        return self._core.metrics

    @property
    def dead_letters(self) -> DeadLetterQueue:
        """The dead-letter queue (``list()``, ``len()``, ``await pop/requeue/clear``)."""
        return self._core.dlq

    # -- submitting --------------------------------------------------------------------------------

    @overload
    async def submit(
        self,
        lane: str,
        fn: Submittable[*PosArgs, T],
        *args: *PosArgs,
        key: str | None = None,
        dedup: Dedup | None = None,
        delay: float | None = None,
        timeout: float | None = None,
        durable: bool | None = None,
        priority: int = 0,
        on_done: OnDone | None = None,
    ) -> CommandHandle[T]: ...
    @overload
    async def submit(
        self,
        lane: str,
        fn: Callable[[*PosArgs], T],
        *args: *PosArgs,
        key: str | None = None,
        dedup: Dedup | None = None,
        delay: float | None = None,
        timeout: float | None = None,
        durable: bool | None = None,
        priority: int = 0,
        on_done: OnDone | None = None,
    ) -> CommandHandle[T]: ...
    async def submit(
        self,
        lane: str,
        fn: Callable[[*PosArgs], Any] | SupportsExecute[Any],
        *args: *PosArgs,
        key: str | None = None,
        dedup: Dedup | None = None,
        delay: float | None = None,
        timeout: float | None = None,
        durable: bool | None = None,
        priority: int = 0,
        on_done: OnDone | None = None,
    ) -> CommandHandle[Any]:
        """Submit a command to ``lane``; return its handle once it is accepted.

        Waits while the lane already has ``inbox_size`` commands pending (backpressure).
        Cancellation while waiting leaves nothing behind: the command was not accepted.

        Args:
            lane: the lane's name.
            fn: an async callable (called with ``args``, whose number must fit its
                signature) or a ``@lanes.command`` instance; on a lane with
                ``executor="process"``, a synchronous function (importable, so it can be
                pickled) that runs in a worker process. A synchronous callable on an
                ordinary lane is refused. Keyword arguments for ``fn`` are bound with
                ``functools.partial(fn, name=value)``: ``submit``'s own keywords are only
                ``key``, ``dedup``, ``delay``, ``timeout``, ``durable``, ``priority`` and
                ``on_done``.
            key: idempotency key (a non-blank string): while a command with this key is
                pending or running, the existing handle is returned instead.
            dedup: how ``key`` deduplicates (a :class:`lanes.Dedup`; None: as above):
                ``Dedup.hold(ttl=30)`` keeps the key 30 s after its command finished,
                ``Dedup.replace()`` replaces a waiting holder, ``Dedup.keep_last()`` also
                queues the newest behind a running one. See the reliability guide.
            delay: seconds before the command becomes pending.
            timeout: hard timeout of each attempt (default: the lane's).
            durable: with storage, whether to store the command (default: yes; a plain
                callable needs ``durable=False``).
            priority: its priority within the lane (an integer, lower starts first; 0 by
                default), FIFO among equals; lanes keep their own priorities across each
                other. ``handle.reprioritize()`` changes it while it waits.
            on_done: ``async def callback(handle)``, run once the command has ended
                (completed, failed or cancelled, after its last retry), in a task of the
                system's nursery, outside the command's slot and timeout. It replaces a
                task per command that only awaits the handle: this task exists only once
                the command has ended. A submit that returns an existing command's
                handle (``key``) adds the callback to that command's; one that already
                ended gets it started at once. Callbacks are cancelled by leaving at
                once (``close_now()``, an error, a cancellation) and at a drain's
                deadline; a normal exit waits for them. An exception one raises is an
                error of the system's nursery: it cancels the system and propagates
                from its ``async with`` block. A durable command recovered at a later
                start has no callback.

        With storage, returns only once the command is on disk; once that write started,
        cancellation waits for it (the command is then accepted and runs).

        Raises:
            UnknownLaneError, LaneConfigError, LaneUsageError: bad arguments (a synchronous
                callable, arguments that do not fit its signature, a blank key...).
            LaneUsageError: called outside the ``trio.run`` that owns the system.
            NotDurableError: a plain callable (or an unlisted command class) for storage.
            StorageError: the write failed; the command was not accepted.
            ShutdownInProgress: the system no longer accepts commands.
        """
        if on_done is not None:
            check_on_done(on_done, "submit")
            handle = await self.submit(
                lane,
                fn,
                *args,
                key=key,
                dedup=dedup,
                delay=delay,
                timeout=timeout,
                durable=durable,
                priority=priority,
            )
            self._on_done(handle._command, on_done)  # (no checkpoint since it returned)
            return handle
        core = self._core
        if dedup is not None:  # a deduplication mode (lanes/_dedup.py)
            return await dedup_modes.submit(
                core, lane, fn, args, key, dedup, delay, timeout, durable, priority
            )
        cmd = submission.prepare(
            core, lane, fn, args, key, delay, timeout, durable, priority=priority
        )
        if isinstance(cmd, CommandHandle):  # the live command holding the key
            await trio.lowlevel.checkpoint()
            return cmd
        return await submission.accept(core, cmd, delay)

    async def submit_many(
        self,
        lane: str,
        calls: Iterable[Submittable[T]],
        *,
        delay: float | None = None,
        timeout: float | None = None,
        durable: bool | None = None,
        priority: int = 0,
    ) -> list[CommandHandle[T]]:
        """Submit several commands to ``lane`` in one call: all are accepted, or none.

        Every item is checked first (a bad one raises, naming its index, and nothing is
        accepted); then ``submit_many`` waits until the lane's inbox has a place for each,
        writes the durable ones in one transaction (one fsync for the lot), and makes them
        all pending at once, in order: FIFO among them as if submitted one by one.

        Cancellation while waiting for room leaves nothing behind; once the write started,
        it waits for the write (then every command runs).

        Args:
            lane: the lane's name.
            calls: zero-argument async callables (bind arguments with
                ``functools.partial``) or ``@lanes.command`` instances; at most the lane's
                ``inbox_size`` of them. Items carry no idempotency key: submit keyed
                commands with :meth:`submit`.
            delay, timeout, durable, priority: as for :meth:`submit`, for every item.

        Returns:
            The handles, in the order of ``calls``.

        Raises:
            LaneUsageError: ``calls`` is not a collection of commands, or holds more than
                the lane's ``inbox_size``; an item the lane cannot run.
            UnknownLaneError, LaneConfigError, NotDurableError, PayloadError: as for
                :meth:`submit`, for the first bad item.
            StorageError: the write failed; no command was accepted.
            ShutdownInProgress: the system no longer accepts commands.
        """
        core = self._core
        commands = submission.prepare_many(core, lane, calls, delay, timeout, durable, priority)
        return await submission.accept_many(core, commands, delay)

    @overload
    def submit_nowait(
        self,
        lane: str,
        fn: Submittable[*PosArgs, T],
        *args: *PosArgs,
        key: str | None = None,
        dedup: Dedup | None = None,
        delay: float | None = None,
        timeout: float | None = None,
        durable: bool | None = None,
        priority: int = 0,
        on_done: OnDone | None = None,
    ) -> CommandHandle[T]: ...
    @overload
    def submit_nowait(
        self,
        lane: str,
        fn: Callable[[*PosArgs], T],
        *args: *PosArgs,
        key: str | None = None,
        dedup: Dedup | None = None,
        delay: float | None = None,
        timeout: float | None = None,
        durable: bool | None = None,
        priority: int = 0,
        on_done: OnDone | None = None,
    ) -> CommandHandle[T]: ...
    def submit_nowait(
        self,
        lane: str,
        fn: Callable[[*PosArgs], Any] | SupportsExecute[Any],
        *args: *PosArgs,
        key: str | None = None,
        dedup: Dedup | None = None,
        delay: float | None = None,
        timeout: float | None = None,
        durable: bool | None = None,
        priority: int = 0,
        on_done: OnDone | None = None,
    ) -> CommandHandle[Any]:
        """Like :meth:`submit` (``on_done`` included), but raise :class:`LaneFull` instead
        of waiting for room.

        Raises:
            LaneUsageError: a durable command (it cannot wait for storage; use ``submit``).
        """
        if on_done is not None:
            check_on_done(on_done, "submit_nowait")
            handle = self.submit_nowait(
                lane,
                fn,
                *args,
                key=key,
                dedup=dedup,
                delay=delay,
                timeout=timeout,
                durable=durable,
                priority=priority,
            )
            self._on_done(handle._command, on_done)
            return handle
        core = self._core
        if dedup is not None:  # a deduplication mode (lanes/_dedup.py)
            return dedup_modes.submit_nowait(
                core, lane, fn, args, key, dedup, delay, timeout, durable, priority
            )
        cmd = submission.prepare(
            core, lane, fn, args, key, delay, timeout, durable, priority=priority
        )
        if isinstance(cmd, CommandHandle):  # the live command holding the key
            return cmd
        return submission.accept_nowait(core, cmd, delay)

    def _on_done(self, cmd: Command, fn: OnDone) -> None:
        """Run ``fn(handle)`` once ``cmd`` has ended (lanes/_on_done.py)."""
        callbacks = self._core.callbacks
        if callbacks is None:
            assert self._lane_nursery is not None
            callbacks = self._core.callbacks = Callbacks(self._core, self._lane_nursery)
        callbacks.attach(cmd, fn)

    @overload
    async def run(
        self,
        lane: str,
        fn: Submittable[*PosArgs, T],
        *args: *PosArgs,
        key: str | None = None,
        dedup: Dedup | None = None,
        delay: float | None = None,
        timeout: float | None = None,
        durable: bool | None = None,
        priority: int = 0,
    ) -> T: ...
    @overload
    async def run(
        self,
        lane: str,
        fn: Callable[[*PosArgs], T],
        *args: *PosArgs,
        key: str | None = None,
        dedup: Dedup | None = None,
        delay: float | None = None,
        timeout: float | None = None,
        durable: bool | None = None,
        priority: int = 0,
    ) -> T: ...
    async def run(
        self,
        lane: str,
        fn: Callable[[*PosArgs], Any] | SupportsExecute[Any],
        *args: *PosArgs,
        key: str | None = None,
        dedup: Dedup | None = None,
        delay: float | None = None,
        timeout: float | None = None,
        durable: bool | None = None,
        priority: int = 0,
    ) -> Any:
        """Submit and wait for the result, like calling ``fn`` in the lane.

        Cancelling ``run`` cancels the command too (unless another caller shares it by key).
        """
        handle: CommandHandle[Any] = await self.submit(
            lane,
            fn,
            *args,
            key=key,
            dedup=dedup,
            delay=delay,
            timeout=timeout,
            durable=durable,
            priority=priority,
        )
        try:
            return await handle.result()
        except trio.Cancelled:
            if key is None:
                handle.cancel()
            raise

    def _check_lane(self, lane: object, where: str) -> None:
        submission.check_lane(self._core.configs, lane, where)

    # -- schedules ---------------------------------------------------------------------------------

    async def schedule(
        self,
        lane: str,
        command: Callable[[], Awaitable[Any]] | SupportsExecute[Any],
        *,
        every: float | None = None,
        cron: str | None = None,
        tz: str | None = None,
        key: str | None = None,
        jitter: float = 0.0,
        misfire: Misfire = "run_once",
        misfire_limit: int = 100,
        overlap: Overlap = "skip",
        durable: bool | None = None,
        times: int | None = None,
        after_completion: bool = False,
    ) -> ScheduleHandle:
        """Submit ``command`` to ``lane`` at every slot of a recurring schedule.

        Each firing is an ordinary command of the lane (priorities, limits, retries and the
        dead-letter queue apply). With storage, ``command`` must be a ``@lanes.command``
        object; the schedule and its last slot are stored, a firing's slot is written in the
        same transaction as its command, and the schedule runs again at the next start.

        Args:
            lane: the lane's name.
            command: an async callable taking no arguments, or a ``@lanes.command`` object.
            every: an interval in seconds (> 0); slots are ``now + k * every``.
            cron: a cron expression (``"0 9 * * MON-FRI"``), evaluated in ``tz``; with six
                fields, the first is seconds (``"*/15 * * * * *"``).
            tz: an IANA time zone name for ``cron`` (default UTC); DST as Debian cron does.
            key: the schedule's name; scheduling the same key again returns the existing
                schedule, or redefines it if anything differs (its last slot and paused
                state are kept). Required with storage.
            jitter: up to this many seconds of random delay for each firing.
            misfire: for slots missed (the process was down, or more than 1 s late):
                ``"skip"`` them, ``"run_once"`` (one firing for all), or ``"run_all"``.
            misfire_limit: ``"run_all"`` fires at most this many missed slots (the latest).
            overlap: when the previous firing has not finished: ``"skip"`` the slot,
                ``"queue"`` it (submit once the previous one ends), or ``"allow"`` it.
            durable: with storage, whether to store the schedule and its firings (default:
                yes; a plain callable needs ``durable=False``, and is then memory-only).
            times: a repeat limit: after this many firings (counted across restarts when
                stored) the schedule ends (``handle.finished``); None repeats for ever.
            after_completion: with ``every``, count each interval from the moment the
                previous firing ended (after its retries) instead of from fixed slots; the
                firings never overlap.

        With storage, returns once the schedule is stored; cancellation while writing waits
        for the write (the schedule is then stored and runs).

        Raises:
            UnknownLaneError, LaneConfigError, LaneUsageError: bad arguments (neither or both
                of every and cron, a non-positive interval, a bad cron expression or
                seconds field, an unknown time zone, ``times`` < 1...).
            NotDurableError: a plain callable on a system with storage (without
                ``durable=False``).
            StorageError: the schedule could not be stored.
            ShutdownInProgress: the system is closing.
            LaneUsageError: called outside the ``trio.run`` that owns the system.
        """
        self._check_run("schedule")
        return await self._schedules().add(
            lane,
            command,
            every,
            cron,
            tz,
            key,
            jitter,
            misfire,
            misfire_limit,
            overlap,
            durable,
            times,
            after_completion,
        )

    @property
    def schedules(self) -> Mapping[str, ScheduleHandle]:
        """The schedules by key (a read-only live view), those restored from storage included."""
        return _NO_SCHEDULES if self._scheduler is None else self._scheduler.view

    def _schedules(self) -> Scheduler:
        """The schedules' owner, made (and started, if the system runs) on first use."""
        scheduler = self._scheduler
        if scheduler is None:
            scheduler = self._scheduler = Scheduler(self._core)
            if self._lane_nursery is not None and self._core.accepting:
                scheduler.start(self._lane_nursery, self._wall)
        return scheduler

    # -- control -----------------------------------------------------------------------------------

    def pause(self, lane: str) -> None:
        """Stop starting commands of ``lane`` (running ones continue; submits still queue).

        Running commands that call :func:`lanes.pause_point` between steps wait there
        until :meth:`resume`.

        A paused lane's pending commands wait until :meth:`resume`, a drain included: a
        drain that starts while a paused lane holds commands logs a warning naming it.

        Raises:
            UnknownLaneError: no such lane.
            ShutdownInProgress: the system is closed (its ``async with`` block ended).
        """
        self._check_open("pause")
        self._check_lane(lane, "pause")
        self._core.policy.pause(lane)

    def resume(self, lane: str) -> None:
        """Start dispatching ``lane`` again (also during a shutdown or drain), and let its
        running commands waiting in :func:`lanes.pause_point` go on.

        Raises:
            UnknownLaneError: no such lane.
            ShutdownInProgress: the system is closed (its ``async with`` block ended).
        """
        self._check_open("resume")
        self._check_lane(lane, "resume")
        self._core.resume(lane)  # also wakes its commands waiting in lanes.pause_point()

    def add_lane(self, config: LaneConfig) -> None:
        """Add a lane to the running system; it accepts commands at once.

        The lane comes after the others in :attr:`lanes`, starts idle, and shows in
        :meth:`statistics`, ``metrics.snapshot()``, the Prometheus and OpenTelemetry
        exports and the events of its commands from now on. With storage, its durable
        commands are stored as any lane's; after a restart, give the lane to
        ``open_lane_system(lanes=...)`` (or add it again before its commands are
        recovered: they are recovered at start, so a lane missing then sends its stored
        commands to the dead-letter queue, never dropped).

        Raises:
            LaneConfigError: ``config`` is not a :class:`LaneConfig`, its name is taken
                (by a lane, or one being retired), or the lanes would reserve more slots
                than ``max_concurrency`` (sum of ``min_concurrency``); nothing changed.
            ShutdownInProgress: the system no longer accepts commands (``shutdown()``, or
                its block ended).
            LaneUsageError: called outside the ``trio.run`` that owns the system.
        """
        self._check_open("add_lane")
        waker = self.dispatcher.poke if self.dispatcher is not None else _no_decision
        live_lanes.add_lane(self._core, config, self._lane_nursery, waker)

    async def retire_lane(self, name: str, *, timeout: float | None = None) -> int:
        """Retire lane ``name``: stop accepting on it, let it empty, then remove it.

        From the call on, the lane is no longer in :attr:`lanes` (it stays in
        :meth:`statistics` while it empties) and ``submit`` to it raises
        :class:`UnknownLaneError`; a submit already waiting for room in its inbox raises
        :class:`ShutdownInProgress`, and so does a durable one whose write was under way
        (its row is deleted). The lane's queued, delayed and running commands go on
        (retries included) until none is left; at ``timeout`` seconds, what is left is
        cancelled, running commands first, as :meth:`drain` does (durable ones are
        deleted, as by :meth:`cancel_lane`). Then the lane leaves :meth:`statistics` and
        the metrics (its series leave the Prometheus export), its worker pool ends, and
        its name is free again; finished commands it kept (``retention=``) stay listed. A
        paused lane's commands cannot start: without a timeout, resume it first.

        Cancelling this call undoes the retirement: the lane accepts commands again, its
        commands go on, and those already cancelled at the timeout stay cancelled.

        Args:
            name: the lane's name.
            timeout: seconds to let its commands finish; None waits as long as it takes.

        Returns:
            How many of its commands were cancelled at the timeout (0: all finished).

        Raises:
            UnknownLaneError: no such lane (or it is already being retired).
            LaneUsageError: a schedule fires into the lane (cancel it first), or called
                outside the ``trio.run`` that owns the system.
            LaneConfigError: ``timeout`` is not a number of seconds >= 0.
            ShutdownInProgress: the system is closed (its ``async with`` block ended).
        """
        self._check_open("retire_lane")
        wait = _check_seconds("retire_lane", "timeout", timeout, zero_ok=True)
        schedules = list(self.schedules.values())
        return await live_lanes.retire_lane(self._core, name, wait, schedules)

    async def cancel_lane(self, lane: str, *, running: bool = True, queued: bool = True) -> int:
        """Cancel the running and/or the queued commands of ``lane``; return how many.

        - ``cancel_lane(lane)``: both (everything of the lane).
        - ``cancel_lane(lane, queued=False)``: "stop this turn": the running commands are
          cancelled, the queued ones stay and start next.
        - ``cancel_lane(lane, running=False)``: drop the queue, keep what runs.

        "Queued" means pending: queued, delayed (``delay=``) or waiting for a retry's
        backoff. The running commands' cancel scopes are cancelled first, in
        O(running) whatever the queue holds; dropping the queued ones costs O(queued) and
        is done synchronously before this waits. Returns once the running ones cancelled
        have exited (their slots are free). If this call is cancelled while waiting, the
        commands stay cancelled.

        Raises:
            UnknownLaneError: no such lane.
            LaneConfigError: ``running`` or ``queued`` is not a bool, or both are False.
            ShutdownInProgress: the system is closed (its ``async with`` block ended).
        """
        self._check_open("cancel_lane")
        self._check_lane(lane, "cancel_lane")
        _check_parts("cancel_lane", running, queued)
        counters = self._core.lanes[lane].counters
        before = counters.cancelled
        cancelled = self._core.cancel_lane(lane, Reason.CANCEL, running=running, queued=queued)
        await _wait_exits(cancelled)
        return counters.cancelled - before

    async def cancel_all(self, *, running: bool = True, queued: bool = True) -> int:
        """:meth:`cancel_lane` for every lane at once; return how many were cancelled.

        The system keeps accepting commands (to stop that too and leave, see
        :meth:`close_now`). Returns once the running commands cancelled have exited.

        Raises:
            LaneConfigError: ``running`` or ``queued`` is not a bool, or both are False.
            ShutdownInProgress: the system is closed (its ``async with`` block ended).
        """
        self._check_open("cancel_all")
        _check_parts("cancel_all", running, queued)
        counters = [state.counters for state in self._core.lanes.values()]
        before = sum(c.cancelled for c in counters)
        cancelled = self._core.cancel_all(Reason.CANCEL, running=running, queued=queued)
        await _wait_exits(cancelled)
        return sum(c.cancelled for c in counters) - before

    def close_now(self) -> None:
        """Leave now: stop accepting commands and cancel everything queued and running.

        Synchronous (like ``CancelScope.cancel``): pending commands resolve as cancelled
        at once, running ones at their next checkpoint; leaving the ``async with`` block
        afterwards does not drain (no ``drain_timeout`` wait): it returns as soon as the
        running commands have exited. ``submit`` raises :class:`ShutdownInProgress` from
        now on. Durable commands stay stored and run again at the next start, as after an
        exit by exception. A no-op once the system is closed.

        Raises:
            LaneUsageError: called outside the ``trio.run`` that owns the system.
        """
        self._check_run("close_now")
        if self._closed:
            return
        self._leave_now = True
        self._stop_accepting()
        self._core.cancel_all(Reason.SHUTDOWN)
        if self._core.callbacks is not None:  # and the on_done callbacks, later ones too
            self._core.callbacks.cancel()

    async def submit_streaming(
        self,
        lane: str,
        fn: Any,
        *args: Any,
        buffer: int = 16,
        key: str | None = None,
        dedup: Dedup | None = None,
        delay: float | None = None,
        timeout: float | None = None,
        durable: bool | None = None,
        priority: int = 0,
        on_done: OnDone | None = None,
    ) -> CommandHandle[Any]:
        """:meth:`submit` a command whose partial results the caller reads as they come.

        The command's body calls ``await lanes.send_partial(item)``; the caller reads
        ``async for item in handle`` (or ``handle.partials()``), then
        ``await handle.result()``. At most ``buffer`` partials wait unread: then
        ``send_partial`` waits for the reader (a slow reader slows the command). Commands
        submitted with plain :meth:`submit` have no stream (``send_partial`` is then a
        no-op). See the streaming guide for timeouts, cancellation and retries.

        A ``key`` shared with a command already pending or running returns that command's
        handle (a stream only if that command was submitted streaming too).

        ``on_done`` is :meth:`submit`'s: a callback once the command has ended.

        Raises:
            LaneConfigError: ``buffer`` is not an integer >= 1; and whatever
                :meth:`submit` raises. Nothing is accepted then.
        """
        size = check_buffer(buffer)
        handle: CommandHandle[Any] = await self.submit(
            lane,
            fn,
            *args,
            key=key,
            dedup=dedup,
            delay=delay,
            timeout=timeout,
            durable=durable,
            priority=priority,
            on_done=on_done,
        )
        # No checkpoint since the command was accepted: its body has not started yet.
        cmd = handle._command
        if cmd.stream is None and not cmd.entered and cmd.state < DONE:
            cmd.stream = Stream(size)
        return handle

    # -- observing ---------------------------------------------------------------------------------

    def commands(
        self,
        lane: str | None = None,
        *,
        state: str | Iterable[str] | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[CommandInfo]:
        """List the live commands, in the order they were accepted, a page at a time.

        Args:
            lane: only this lane's (None: every lane's).
            state: ``"waiting"``, ``"delayed"`` or ``"running"``, or several of them
                (None: all three). Finished commands are listed only when the system
                keeps them (``open_lane_system(retention=lanes.Retention(...))``) and
                ``state`` asks for ``"done"``, ``"failed"`` or ``"cancelled"``: they come
                after the live ones, in the order they ended, with their ``error`` or
                ``result``.
            offset: how many matching commands to skip (the page's start).
            limit: the page's size (>= 1).

        Each entry is a frozen :class:`~lanes.CommandInfo` snapshot: id, lane, type,
        state, priority, attempts, key, age, how long it has been running, its place in
        its lane's queue (``position``: how many start before it; None unless waiting),
        and the progress and log lines its body reported with
        :func:`lanes.report_progress`. O(live commands) per call: an inspection tool,
        not a hot path.

        Raises:
            UnknownLaneError: an unknown lane.
            LaneConfigError: an unknown state, a finished state without a retention, a
                negative offset, a limit < 1.
            LaneUsageError: called outside the ``trio.run`` that owns the system.
        """
        self._check_run("commands")
        if lane is not None:
            self._check_lane(lane, "commands")
        core = self._core
        finished = retention_mod.finished_records(core)
        states = check_listing("commands", state, offset, limit, retains=finished is not None)
        return list_commands(
            core.live,
            core.now(),
            lane=lane,
            states=states,
            offset=offset,
            limit=limit,
            finished=finished or (),
        )

    def statistics(self) -> SystemStatistics:
        """A frozen snapshot of every lane and of the system (also once it is closed)."""
        self._check_run("statistics")
        core = self._core
        policy = core.policy
        now = trio.current_time()
        lanes = {}
        for name, state in policy.lanes.items():
            config = state.config
            p50, p99 = core.metrics.recent_waits(name)
            lanes[name] = LaneStatistics(
                name=name,
                priority=config.priority,
                effective_priority=policy.effective_priority(name, now),
                paused=state.paused,
                pending=state.pending,
                active=state.active,
                max_concurrency=config.max_concurrency,
                **core.lanes[name].counters.as_dict(),
                recent_wait_p50=p50,
                recent_wait_p99=p99,
            )
        return SystemStatistics(
            lanes=lanes,
            pending=policy.pending_total(),
            active=policy.active_total,
            max_concurrency=policy.cap,
            accepting=core.accepting,
            dead_letters=core.dead_letters_held,
            dead_letters_evicted=core.dead_letters_evicted,
            events_dropped=core.bus.dropped,
        )

    def subscribe(
        self, *event_types: type[Event], buffer: int = 1000
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Event]]:
        """Receive events of the given types (all types if none are given).

        Use as ``async with system.subscribe(lanes.events.Completed) as events:``. Past
        ``buffer`` unread events, new ones are dropped for this subscriber and counted in
        ``statistics().events_dropped``; scheduling never waits for a subscriber.
        """
        self._check_run("subscribe")
        return self._core.bus.subscribe(tuple(event_types), buffer)

    def emit(self, event: Event) -> None:
        """Deliver an event of your own to the subscribers and listeners, like the system's.

        Define it as a frozen attrs subclass of :class:`lanes.events.Event` with a ``key``
        of its own (``"shop.order.shipped"``; keys under ``"lane."`` are the system's), and
        give it ``timestamp=system.wall_time()`` to line it up with the system's events.
        ``subscribe(OrderShipped)`` receives it; ``subscribe()`` with no types receives it
        too. Synchronous and never blocks: a full subscriber drops it and counts it in
        ``statistics().events_dropped``, as for every event.

        Raises:
            LaneConfigError: ``event`` is not an instance of an event class of your own
                (the built-in ones are the system's to emit), or its key is not its own.
            UnknownLaneError: its ``lane`` is neither ``""`` nor a lane of this system.
            LaneUsageError: called outside the ``trio.run`` that owns the system.
        """
        self._check_run("emit")
        self._core.bus.emit(check_user_event(event, self._core.configs))

    def wall_time(self) -> float:
        """The wall-clock time events carry now (seconds since the epoch): Trio's clock plus
        the offset read when the system opened (see :mod:`lanes.events`)."""
        self._check_run("wall_time")
        return trio.current_time() + self._core.wall_offset

    def listen(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` synchronously for every event; return an unlisten function.

        For integrations that must run in the task that caused the event (tracing, alerts):
        the callback runs before the command's handle resolves, must be quick and must not
        raise. Most code wants :meth:`subscribe` instead.
        """
        self._check_run("listen")
        return self._core.bus.listen(callback)

    # -- stopping ----------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop accepting commands: ``submit`` raises :class:`ShutdownInProgress` from now on.

        Commands already accepted keep running; use :meth:`drain` to wait for them. A no-op
        once the system is closed.
        """
        self._check_run("shutdown")
        self._stop_accepting()
        await trio.lowlevel.checkpoint()

    def _stop_accepting(self) -> None:
        self._core.accepting = False
        if self._scheduler is not None:
            self._scheduler.close()
        for state in self._core.lanes.values():
            state.room.close()

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until no command is pending or running (retries and delays included) and
        no ``on_done`` callback runs.

        A paused lane's commands cannot start until it is resumed: if a paused lane holds
        pending commands when the drain starts, a warning naming it is logged (logger
        ``"lanes"``), and a :class:`DrainTimeout` names the paused lanes still holding
        commands.

        Args:
            timeout: seconds to wait; None waits as long as it takes.

        Raises:
            DrainTimeout: the timeout passed; every command and ``on_done`` callback left
                has been cancelled (and has exited) before this is raised.
            ShutdownInProgress: the system is closed (its ``async with`` block ended).
        """
        self._check_open("drain")
        _check_seconds("drain", "timeout", timeout, zero_ok=True)
        paused = self._paused_with_pending()
        if paused:
            logger.warning(
                "drain: paused lane(s) %s hold commands that cannot start until resumed "
                "(system.resume(lane)); the drain waits for them %s",
                paused,
                "as long as it takes" if timeout is None else f"up to {timeout} s",
            )
        with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
            await self._core.wait_idle()
        callbacks = self._core.callbacks
        busy = self._core.live or (callbacks is not None and callbacks.running)
        if not scope.cancelled_caught or not busy:
            return  # idle (a zero timeout may cancel wait_idle's last checkpoint)
        left = len(self._core.live)
        hooks = 0 if callbacks is None else callbacks.running
        paused = self._paused_with_pending()
        self._core.cancel_all(Reason.SHUTDOWN)
        if callbacks is not None:  # on_done callbacks too, those of the cancelled ones
            callbacks.cancel()
        await self._core.wait_idle()
        if callbacks is not None:
            callbacks.reopen()  # (the system may go on: later callbacks run)
        msg = f"drain timed out after {timeout} s; cancelled {left} unfinished command(s)"
        if hooks:
            msg += f" and {hooks} running on_done callback(s)"
        if paused:
            msg += f"; paused lane(s) still holding commands: {paused}"
        raise DrainTimeout(msg)

    def _paused_with_pending(self) -> str:
        """``"'work' (2 pending), ..."`` for the paused lanes holding commands, or ""."""
        lanes = self._core.policy.lanes
        return ", ".join(
            f"{name!r} ({state.pending} pending)"
            for name, state in lanes.items()
            if state.paused and state.pending
        )

    async def _close_gracefully(self) -> None:
        self._stop_accepting()
        try:
            await self.drain(self._drain_timeout)
        except DrainTimeout as exc:  # what was left is cancelled; handles say so
            logger.warning("leaving the lane system: %s", exc)

    def _check_run(self, where: str) -> None:
        check_run(self._token, where)

    def _check_open(self, where: str) -> None:
        """The owning run, and a system whose block has not ended."""
        check_run(self._token, where)
        if self._closed:
            msg = (
                f"{where}: the lane system is closed (its `async with open_lane_system()` "
                "block has ended); open a new one"
            )
            raise ShutdownInProgress(msg)

    def handle_for(self, key: str) -> CommandHandle[Any] | None:
        """The handle of the pending or running command holding idempotency key ``key``.

        None when no command holds it (it never existed, or it finished: a finished
        command frees its key, unless it was submitted with ``dedup=lanes.Dedup...(ttl=)``:
        then its finished handle is returned until the key's time to live is up).
        Recovered commands are found too, so an application can map recovered work back
        to its sessions by key.

        Raises:
            LaneConfigError: ``key`` is not a valid key (blank, not a string...).
            LaneUsageError: called outside the ``trio.run`` that owns the system.
        """
        self._check_run("handle_for")
        return submission.existing(self._core, check_key(key, "handle_for"))

    def release_key(self, key: str) -> bool:
        """Free idempotency key ``key`` now; return whether anything held it.

        A finished command's kept key (``Dedup.hold(ttl=...)``) is forgotten; a pending or
        running holder keeps running but no longer holds the key (the next submit with it
        makes a new command, and the holder's end keeps nothing); a command waiting behind
        a running holder (``Dedup.keep_last()``) no longer waits for it. With storage, the
        stored key is deleted with the next write.

        Raises:
            LaneConfigError: ``key`` is not a valid key (blank, not a string...).
            LaneUsageError: called outside the ``trio.run`` that owns the system.
        """
        self._check_run("release_key")
        return dedup_modes.release_key(self._core, key)

    def extend_key(self, key: str, ttl: float) -> bool:
        """Keep idempotency key ``key`` for ``ttl`` seconds from now; return whether it is held.

        For a finished command's kept key, ``ttl`` replaces what was left of its time to
        live (longer or shorter); for a pending or running holder, the key is kept ``ttl``
        seconds after it finishes (whatever ``dedup=`` it was submitted with). False, and
        nothing changes, when no command holds the key.

        Raises:
            LaneConfigError: an invalid key, or ``ttl`` is not a number of seconds > 0.
            LaneUsageError: called outside the ``trio.run`` that owns the system.
        """
        self._check_run("extend_key")
        return dedup_modes.extend_key(self._core, key, ttl)

    def _halt(self) -> None:
        """Stop accepting and stop starting commands: the system is closing."""
        self._stop_accepting()
        self._core.wake = _no_decision
        self._core.new_pool = no_pool
        if self.dispatcher is not None:
            self.dispatcher.close()
        for state in self._core.lanes.values():
            if state.pool is not None:
                state.pool.close()

    def _new_pool(self, state: LaneState) -> WorkerPool[Command, int]:
        """``state``'s worker pool, made with its lane's first command (``Core.new_pool``):
        its workers are tasks of the system's nursery."""
        assert self._lane_nursery is not None
        state.pool = pool = new_lane_pool(self._core, state.config)
        pool.attach(self._lane_nursery)
        return pool

    def _finalize(self) -> None:
        self._closed = True
        self._halt()
        if self._core.callbacks is not None:
            self._core.callbacks.closed = True  # its nursery is gone
        self._core.abandon_all()
        self._core.policy.detach()
        self._core.bus.close()

    async def _requeue_letter(self, letter: DeadLetter) -> CommandHandle[Any]:
        """Submit a dead letter's command again (``dead_letters.requeue``)."""
        return await submission.requeue_letter(self._core, letter)


def _only(group: BaseExceptionGroup[BaseException], error: BaseException) -> bool:
    """Whether ``group`` holds ``error``'s exceptions and otherwise only trio.Cancelled.

    Trio's nursery may rebuild an exception group the body raised, so compare leaves.
    """
    wanted = {id(leaf) for leaf in leaves(error)}
    found = {id(leaf) for leaf in leaves(group) if not isinstance(leaf, trio.Cancelled)}
    return wanted == found


def _check_parts(where: str, running: object, queued: object) -> None:
    for name, value in (("running", running), ("queued", queued)):
        if not isinstance(value, bool):
            msg = f"{where}: {name}={value!r} is invalid; expected True or False"
            raise LaneConfigError(msg)
    if not (running or queued):
        msg = (
            f"{where}: running=False and queued=False cancel nothing; pass queued=False "
            "to cancel only the running commands, or running=False for only the queued ones"
        )
        raise LaneConfigError(msg)


def _no_decision() -> None:
    """What waking the dispatcher does once the system is closing: nothing starts."""


class _LaneSystemContext:
    """What ``open_lane_system()`` returns: use it with ``async with``.

    A class, not an ``@asynccontextmanager`` generator: a session's lane system stays open
    as long as the session, and a suspended generator would hold its frame, its arguments
    and its context manager's all that time.
    """

    __slots__ = ("_args", "_manager", "_system")

    def __init__(self, args: _ServeArgs) -> None:
        self._args: _ServeArgs | None = args  # dropped once entered
        self._system: LaneSystem | None = None
        self._manager: AbstractAsyncContextManager[trio.Nursery] | None = None

    def __enter__(self) -> None:
        msg = "use `async with open_lane_system()`, not `with open_lane_system()`"
        raise LaneUsageError(msg)

    def __exit__(self, *exc: object) -> None:  # pragma: no cover - __enter__ always raises
        return None

    async def __aenter__(self) -> LaneSystem:
        args, self._args = self._args, None
        if args is None:
            msg = "this open_lane_system() context is already in use; call it again"
            raise LaneUsageError(msg)
        configs, cap, dead_letter_limit, drain, storage, registry, wall, on_unobserved, keep = args
        core = Core(configs, cap, dead_letter_limit, _no_resubmit, wall=wall)
        core.on_unobserved = on_unobserved
        if keep is not None:
            retention_mod.install(core, keep)
        system = LaneSystem(core, drain)
        core.resubmit = system._requeue_letter  # (the dead-letter queue is made later)
        if storage is not None:  # opened before any task starts: errors surface as themselves
            try:
                await storage.open()
            except BaseException:
                core.policy.detach()  # leave the shared limits joined by Core()
                raise
            core.durable = Durability(storage, registry)
        self._system = system
        self._manager = manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        system._lane_nursery = nursery
        try:
            if core.durable is not None:
                await nursery.start(core.durable.journal.run)
            core.new_pool = system._new_pool  # a lane's pool comes with its first command
            system.dispatcher = Dispatcher(core, nursery)  # its task starts on demand
            if core.durable is not None:
                recovered = await submission.recover(core)
                dedup_modes.recovered(core, recovered, core.durable.keys)
                retention_mod.restore(core)
                system.recovered = tuple(cmd.handle for cmd in recovered)
            system._wall = wall
            if core.durable is not None:  # its stored schedules run from now on
                system._schedules()
        except BaseException as exc:
            await self._leave(exc, body=False)  # raises (the nursery never swallows it here)
            raise
        return system

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Leave: a body's error cancels everything at once; a normal exit drains first."""
        return await self._leave(exc, body=True)

    async def _leave(self, exc: BaseException | None, *, body: bool) -> bool:
        """Close the nursery with ``exc`` (the body's error, or one while starting: then
        ``body`` is False); True if the body's error is to be suppressed."""
        system, manager = self._system, self._manager
        assert system is not None and manager is not None
        self._system = self._manager = None  # a context kept after its block keeps neither
        core = system._core
        nursery = system._lane_nursery
        assert nursery is not None
        error = exc
        try:
            if body:
                if error is None:
                    try:
                        if not system._leave_now:
                            await system._close_gracefully()
                    except BaseException as drain_error:  # an outer cancellation, too
                        error = drain_error
                system._halt()
                nursery.cancel_scope.cancel()
            try:
                if error is None:
                    await manager.__aexit__(None, None, None)
                else:
                    # Whether the nursery swallowed it (a Cancelled its own scope caught).
                    swallowed = await manager.__aexit__(type(error), error, error.__traceback__)
                    return bool(swallowed) and exc is not None and body
            except BaseExceptionGroup as group:
                if body and exc is not None and _only(group, exc):
                    exc.__suppress_context__ = True  # the body's own error, as it was
                    return False
                leaf = single_leaf(group)
                if leaf is None:
                    raise
                if (
                    error is not None
                    and isinstance(leaf, trio.Cancelled)
                    and any(x is error for x in leaves(group))
                ):
                    # Only cancellations: the body's (or the drain's) own, not a worker's
                    # that happened to end first (workers are tasks of this nursery).
                    if body and error is exc:
                        error.__suppress_context__ = True
                        return False
                    leaf = error
                raise leaf from leaf.__cause__
            except BaseException as other:
                if body and other is exc:
                    return False  # the body's own error, as it was
                raise
            return False
        finally:
            system._finalize()
            if core.durable is not None:
                await core.durable.journal.close()


_ServeArgs = tuple[
    tuple[LaneConfig, ...],
    int | None,
    int,
    float | None,
    "Storage | None",
    CommandRegistry,
    Callable[[], float],
    "UnobservedCallback | None",
    "Retention | None",
]


async def _no_resubmit(letter: DeadLetter) -> CommandHandle[Any]:  # pragma: no cover
    """A placeholder until the system exists (it replaces it before any letter can be)."""
    raise AssertionError(letter)


@overload
def open_lane_system(
    lanes: Iterable[LaneConfig] = ...,
    *,
    max_concurrency: int | None = ...,
    storage: str | os.PathLike[str] | Storage | None = ...,
    commands: Iterable[type] = ...,
    dead_letter_limit: int = ...,
    drain_timeout: float | None = ...,
    clock: Callable[[], float] | None = ...,
    backend: None = ...,
    max_payload_bytes: int = ...,
    on_unobserved_failure: UnobservedCallback | None = ...,
    retention: Retention | None = ...,
) -> _LaneSystemContext: ...
@overload
def open_lane_system(
    lanes: Iterable[LaneConfig] = ...,
    *,
    max_concurrency: None = ...,
    storage: None = ...,
    commands: Iterable[type] = ...,
    dead_letter_limit: int = ...,
    drain_timeout: float | None = ...,
    clock: None = ...,
    backend: SystemBackend[S],
    max_payload_bytes: int = ...,
    on_unobserved_failure: None = ...,
    retention: None = ...,
) -> AbstractAsyncContextManager[S]: ...
def open_lane_system(
    lanes: Iterable[LaneConfig] = DEFAULT_LANES,
    *,
    max_concurrency: int | None = None,
    storage: str | os.PathLike[str] | Storage | None = None,
    commands: Iterable[type] = (),
    dead_letter_limit: int = 1000,
    drain_timeout: float | None = 30.0,
    clock: Callable[[], float] | None = None,
    backend: SystemBackend[Any] | None = None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    on_unobserved_failure: UnobservedCallback | None = None,
    retention: Retention | None = None,
) -> Any:
    """Open a lane system: ``async with open_lane_system() as lanes: ...``.

    Args:
        lanes: the lane configurations (default: :data:`DEFAULT_LANES`).
        max_concurrency: global cap on running commands across lanes (None: no cap).
        storage: a path (embedded SQLite), a ``Storage`` object, or None (memory only).
            With storage, ``@lanes.command`` objects are written before ``submit``
            returns, and what is unfinished at exit is requeued at the next start.
        commands: the ``@lanes.command`` classes that may be stored and rebuilt; only with
            ``storage`` or ``backend`` (without either nothing is stored, so a list is
            refused rather than ignored).
        dead_letter_limit: how many dead letters are kept (the oldest is evicted beyond).
        drain_timeout: on normal exit, how long to wait for accepted commands before
            cancelling what is left (None: wait as long as it takes).
        clock: the wall clock (seconds since the epoch) schedules follow; default
            ``time.time``. With storage, give the storage the clock instead
            (``SqliteStorage(path, clock=...)``): the system uses the storage's.
        backend: lanes hosted outside this process, e.g.
            ``lanes.distributed.RedisBackend(url)``: the system then submits to them (see
            ``lanes.distributed``); ``max_concurrency`` and ``storage`` belong to the workers
            and must stay None, and ``dead_letter_limit`` is set on the workers instead.
        max_payload_bytes: the largest JSON payload a durable command may have (default
            1 MiB); a bigger one is refused at ``submit`` (``LaneUsageError``) before
            anything is stored.
        on_unobserved_failure: called with a :class:`lanes.UnobservedFailure` for each
            command that fails for good while nobody retrieves its result (no
            ``result()`` waits for it, and its handle is dropped unretrieved); default
            None: such failures are logged at ERROR with their traceback (logger
            ``"lanes"``). It runs synchronously (possibly when a handle is freed), must
            be quick, and its exceptions are logged, not raised. Not with ``backend``.
        retention: keep finished commands listable by ``system.commands(state="done")``
            (and ``"failed"``, ``"cancelled"``), with their error or result: a
            :class:`lanes.Retention` (how many, how long); None (default): a finished
            command leaves the listing. With storage, durable commands' records (and JSON
            results) survive restarts. Not with ``backend``.

    Leaving the block normally stops accepting commands and drains; leaving it by an
    exception (or cancellation) cancels every command at once, and so does leaving it after
    :meth:`LaneSystem.close_now`. Either way every handle is resolved and no task is left
    behind.

    Raises:
        LaneConfigError: invalid lanes or parameters (before anything starts), or
            ``commands`` without ``storage`` or ``backend``.
        StorageError: on entering: the storage cannot be opened (a missing directory, a
            file that is not a trio-lanes database, a newer schema, a read-only file or
            folder, a database another lane system holds); nothing has started.
    """
    configs, cap = validate_lanes(lanes, max_concurrency)
    require_trio_parallel(configs)
    store = as_storage(storage)
    if isinstance(commands, str) or not isinstance(commands, Iterable):
        msg = f"open_lane_system: commands={commands!r} is invalid; expected a list of classes"
        raise LaneConfigError(msg)
    commands = tuple(commands)
    registry = CommandRegistry(commands, max_payload_bytes)  # checks each class first
    if commands and store is None and backend is None:
        names = ", ".join(getattr(c, "__qualname__", repr(c)) for c in commands)
        msg = (
            f"open_lane_system: commands=[{names}] given without storage=; the list names "
            "the command types that may be stored and rebuilt, and without storage nothing "
            "is stored: pass storage=PATH (or a Storage) to make them durable, or leave "
            "commands= out"
        )
        raise LaneConfigError(msg)
    if (
        isinstance(dead_letter_limit, bool)
        or not isinstance(dead_letter_limit, int)
        or dead_letter_limit < 1
    ):
        msg = (
            f"open_lane_system: dead_letter_limit={dead_letter_limit!r} is invalid; "
            "expected an integer >= 1"
        )
        raise LaneConfigError(msg)
    drain = _check_seconds("open_lane_system", "drain_timeout", drain_timeout, zero_ok=True)
    on_unobserved = check_callback(on_unobserved_failure)
    retain = retention_mod.check_retention(retention)
    if backend is not None:
        if retain is not None:
            msg = (
                "open_lane_system: retention= cannot be combined with backend=; the "
                "workers run the commands (and their listings are the workers')"
            )
            raise LaneConfigError(msg)
        if on_unobserved is not None:
            msg = (
                "open_lane_system: on_unobserved_failure= cannot be combined with backend=; "
                "the workers run the commands (and log unobserved failures there)"
            )
            raise LaneConfigError(msg)
        if clock is not None:
            msg = (
                f"open_lane_system: clock={clock!r} cannot be combined with backend=; "
                "a distributed system's schedules and delays follow the wall clock "
                "(time.time()) that every replica and worker shares"
            )
            raise LaneConfigError(msg)
        return _open_remote(backend, configs, cap, store, registry, drain)
    wall = _wall_clock(clock, store)
    return _LaneSystemContext(
        (configs, cap, dead_letter_limit, drain, store, registry, wall, on_unobserved, retain)
    )


async def _wait_exits(cancelled: list[Command]) -> None:
    """Wait until every command of ``cancelled`` is terminal.

    A checkpoint in any case, but no more schedule points than the commands that are still
    running need: a cancel is acknowledged a round of the run queue sooner than with a
    checkpoint after the waits (with thousands of sessions, a round is milliseconds).
    """
    waited = False
    for cmd in cancelled:
        if cmd.state < DONE:
            await cmd.wait_done()
            waited = True
    if not waited:
        await trio.lowlevel.checkpoint()


def _wall_clock(clock: object, store: Storage | None) -> Callable[[], float]:
    if clock is not None and (store is not None or not callable(clock)):
        msg = (
            f"open_lane_system: clock={clock!r} is invalid; expected a function returning "
            "seconds since the epoch, and with storage none (pass it to the storage: "
            "MemoryStorage(clock=...) or SqliteStorage(path, clock=...))"
        )
        raise LaneConfigError(msg)
    if store is not None:
        return store.clock
    return clock or time.time


def _open_remote(
    backend: SystemBackend[S],
    configs: tuple[LaneConfig, ...],
    cap: int | None,
    store: Storage | None,
    registry: CommandRegistry,
    drain: float | None,
) -> AbstractAsyncContextManager[S]:
    for field, value in (("max_concurrency", cap), ("storage", store)):
        if value is not None:
            msg = (
                f"open_lane_system: {field}={value!r} cannot be combined with backend=; "
                "with a backend, workers run the commands (set limits on the workers)"
            )
            raise LaneConfigError(msg)
    return backend.open_system(configs, registry, drain)
