"""The state of one lane system and the life cycle of its commands.

Everything here is synchronous: it runs between checkpoints, so the policy, the counters, the
dead-letter queue and the events always agree when a handle resolves.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from actors import WorkerPool

from . import events as ev
from ._bus import EventBus
from ._command import Command, Reason
from ._config import LaneConfig
from ._dlq import DeadLetter, DeadLetterQueue, Resubmit, format_traceback

if TYPE_CHECKING:
    from ._durable import Durability
    from ._on_done import Callbacks
from ._errors import CommandCancelled, CommandFailed, CommandTimeout
from ._metrics import RECENT_STARTS, Metrics
from ._outcome import Ended, Next, next_step
from ._policy import ACTIVE, CANCELLED, DELAYED, DONE, FAILED, JobState, LaneState, Policy
from ._stats import LaneCounters
from ._unobserved import UnobservedCallback, report

__all__ = ["Core"]

logger = logging.getLogger("lanes")
_reschedule = trio.lowlevel.reschedule


class Core:
    """Policy, counters, events, dead letters and the command life cycle of one system."""

    def __init__(
        self,
        configs: tuple[LaneConfig, ...],
        cap: int | None,
        dead_letter_limit: int,
        resubmit: Resubmit,
        rng: random.Random | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        # Events and dead letters are stamped in wall time (seconds since the epoch): the
        # system's wall clock minus the Trio clock, read once (durations stay on Trio's clock).
        # Rounded to 1/1024 s, so that `trio time + offset` rounds the same way in every run.
        self.wall_offset = round((wall() - trio.current_time()) * 1024) / 1024
        # The run's clock, read directly: cheaper than trio.current_time() on the hot path.
        self.now: Callable[[], float] = trio.lowlevel.current_clock().current_time
        self.configs = {c.name: c for c in configs}
        self.policy = Policy(configs, cap)
        # Each lane's whole state, one record (the policy's dict: lanes being retired too).
        self.lanes: dict[str, LaneState] = self.policy.lanes
        self.bus = EventBus()
        # The dead-letter queue is made with its first letter, or when someone asks for it
        # (most systems never have one): see the dlq property.
        self._dlq: DeadLetterQueue | None = None
        self.dead_letter_limit = dead_letter_limit
        self.resubmit = resubmit
        self.durable: Durability | None = None
        self.metrics = Metrics(self)
        self.keys: dict[str, Command] = {}
        self.live: dict[Command, None] = {}  # accepted, not yet terminal
        self.accepting = True
        self.token = trio.lowlevel.current_trio_token()  # the owning run's (see _boundary)
        self._random = rng
        self.wake: Callable[[], None] = _nothing
        # Makes a lane's worker pool, attached to the system's nursery, with the lane's
        # first command (an unused lane has none); None once the system is closing.
        self.new_pool: Callable[[LaneState], WorkerPool[Command, int] | None] = no_pool
        # Parked workers outlive the system's last command by REAP_AFTER seconds (a
        # command a moment later reuses one instead of spawning a task); then the
        # dispatcher reaps them. `idle_since`: when the system last became idle.
        self.idle_since = 0.0
        self.reap_armed = False
        self.arm_reap: Callable[[], None] = self.reap
        self._idle: trio.Event | None = None
        self.callbacks: Callbacks | None = None  # submit(on_done=): made with the first one
        self.on_unobserved: UnobservedCallback | None = None
        self.resumed: dict[str, trio.Event] = {}  # lanes whose pause_point callers wait
        self.prefix = secrets.token_hex(4)
        self._last_id = 0  # (an int: an itertools.count would be one more object for the GC)

    # -- acceptance --------------------------------------------------------------------------

    def new_command(
        self,
        lane: str,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        type_name: str,
        key: str | None,
        timeout: float | None,
        command_id: str | None = None,
    ) -> Command:
        if timeout is None:
            timeout = self.configs[lane].timeout
        if command_id is None:
            self._last_id += 1
            return Command(self, self._last_id, lane, fn, args, type_name, key, timeout)
        return Command(self, command_id, lane, fn, args, type_name, key, timeout)

    def accept(self, cmd: Command, delay: float | None, *, holds_room: bool = True) -> None:
        """Make ``cmd`` pending; ``holds_room``: it took an inbox place (recovery: it did not).

        The fast path: a command of a local lane (no global cap, rate limit or shared
        limit) with a free slot starts here and now, without a decision round.
        """
        now = self.now()
        cmd.accepted_at = now
        cmd.holds_room = holds_room
        self.live[cmd] = None
        if cmd.key is not None:
            self.keys[cmd.key] = cmd
        self.lanes[cmd.lane].counters.submitted += 1
        if self.bus.active:
            wall = now + self.wall_offset
            self.bus.emit(ev.Submitted(cmd.lane, cmd.id, wall, cmd.type_name, cmd.priority))
        policy = self.policy
        if policy.add(cmd, now, ready_at=now + delay if delay else None):
            self.grant(cmd, now)
        elif delay or policy.needs_round(cmd.lane, now):
            self.wake()  # a timer to arm, a cap to share, or a possible preemption
        # Otherwise the decision would change nothing: the command's lane is local and
        # paused or at its max_concurrency; the next completion or resume there decides.

    def grant(self, cmd: Command, now: float) -> None:
        """The policy started ``cmd``: begin its attempt and hand it to its lane's worker."""
        state = self.lanes[cmd.lane]
        pool = state.pool
        if pool is None:  # the lane's first command: its pool is made now
            pool = self.new_pool(state)
            if pool is None:
                return  # the system is being torn down: it is resolved as cancelled
        if not pool.serving:
            return
        self.begin(cmd, now)
        pool.deliver(cmd)

    # -- attempts ------------------------------------------------------------------------------

    def begin(self, cmd: Command, now: float) -> None:
        """The policy granted ``cmd`` a slot: it starts now (count the attempt, set its deadline).

        Called in policy order, so ``Started`` events and attempt counts follow the
        policy's decisions exactly; the lane's worker runs the body next.
        """
        state = self.lanes[cmd.lane]
        if cmd.holds_room:  # _release_room, inlined
            cmd.holds_room = False
            state.room.give()
        cmd.attempts += 1
        cmd.started_at = now
        waited = now - cmd.pending_since
        state.wait.record(waited)
        recent = state.recent
        recent.append(waited)
        if len(recent) >= 2 * RECENT_STARTS:
            del recent[:RECENT_STARTS]
        if cmd.payload is not None and self.durable is not None:
            self.durable.started(cmd)
        cmd.deadline = now + cmd.timeout if cmd.timeout is not None else math.inf
        if self.bus.active:
            self.bus.emit(
                ev.Started(cmd.lane, cmd.id, now + self.wall_offset, cmd.attempts, waited)
            )

    def settle(self, cmd: Command, attempt: int) -> None:
        """Account for an attempt that ended (``attempt`` is an ``Attempt`` code)."""
        now = self.now()
        if attempt:  # it ran (0 = skipped before it started)
            self.lanes[cmd.lane].run.record(now - cmd.started_at)
        if attempt == 1:  # returned
            self.completed(cmd, now)
        elif attempt == 2:  # raised
            error, cmd.error = cmd.error, None
            assert error is not None
            self.attempt_failed(cmd, error)
        elif attempt == 3:  # its scope caught a cancellation
            self.scope_cancelled(cmd)

    def completed(self, cmd: Command, now: float) -> None:
        policy = self.policy
        following = policy.finish_next(cmd, now)  # the fast path: the lane's next command
        if cmd.payload is not None and self.durable is not None:
            self.durable.finished(cmd)
        self.lanes[cmd.lane].counters.completed += 1
        if self.bus.active:
            wall = now + self.wall_offset
            self.bus.emit(ev.Completed(cmd.lane, cmd.id, wall, cmd.attempts, now - cmd.started_at))
        self._resolve(cmd, DONE, None)
        if following is not None:
            # Its worker is this one: it runs next, back to back.
            self.grant(following, now)  # type: ignore[arg-type]
        elif policy.needs_round(cmd.lane, now) and not policy.quiet():
            self.wake()  # (a quiet system keeps the round it owes for its next change)

    def scope_cancelled(self, cmd: Command) -> None:
        """The command's own scope caught a cancellation: timeout, preemption or cancel."""
        reason = cmd.cancel_reason
        if reason is None:
            self.attempt_failed(
                cmd, trio.TooSlowError(f"attempt timed out after {cmd.timeout} s"), timed_out=True
            )
        elif reason is Reason.PREEMPT:
            self._requeue_preempted(cmd)
        else:
            self.policy.finish(cmd)
            self._cancelled(cmd)

    def interrupted(self, cmd: Command) -> None:
        """An outer cancellation (system exit) ended the attempt."""
        if cmd.state is ACTIVE:
            self.policy.finish(cmd)
        cmd.cancel_reason = Reason.SHUTDOWN  # whatever was asked before, the system stopped it
        self._cancelled(cmd)

    @property
    def random(self) -> random.Random:
        """Randomness for retry jitter and schedule jitter, seeded on first use."""
        if self._random is None:
            self._random = random.Random()
        return self._random

    def attempt_failed(
        self, cmd: Command, error: BaseException, *, timed_out: bool = False
    ) -> None:
        now = self.now()
        lane = cmd.lane
        state = self.lanes[lane]
        counters = state.counters
        if timed_out:
            counters.timed_out += 1
            if self.bus.active:
                wall = now + self.wall_offset
                self.bus.emit(ev.TimedOut(lane, cmd.id, wall, cmd.attempts, cmd.timeout or 0.0))
        step = next_step(
            Ended.TIMED_OUT if timed_out else Ended.RAISED,
            attempt=cmd.attempts,
            retry=state.config.retry,  # also while it is retired
            error=error,
            draw=self.random.random,
        )
        assert step.error is not None
        if step.next is Next.DEAD_LETTER:
            self.policy.finish(cmd)
            self._failed(cmd, step.error, timed_out, now)
            return
        delay = step.delay
        error = step.error
        counters.retried += 1
        cmd.scope = None
        cmd.entered = False
        if cmd.stream is not None:
            cmd.stream.restart()
        self.policy.retry(cmd, now, now + delay)
        if cmd.payload is not None and self.durable is not None:
            self.durable.requeued(cmd, now + delay)
        if self.bus.active:
            self.bus.emit(
                ev.Retrying(lane, cmd.id, now + self.wall_offset, cmd.attempts, delay, repr(error))
            )
        self.wake()

    def _failed(self, cmd: Command, error: BaseException, timed_out: bool, now: float) -> None:
        lane = cmd.lane
        cmd.error = error
        counters = self.lanes[lane].counters
        counters.failed += 1
        counters.dead_lettered += 1
        text = repr(error)
        letter = DeadLetter(
            cmd.id,
            lane,
            cmd.type_name,
            text,
            cmd.attempts,
            now + self.wall_offset,
            cmd.fn,
            cmd.args,
            cmd.timeout,
            cmd.key,
            cmd.payload,
            format_traceback(error),
        )
        if cmd.payload is not None and self.durable is not None:
            self.durable.dead_lettered(cmd, letter)
        self.dlq.add(letter)
        if self.bus.active:
            wall = now + self.wall_offset
            self.bus.emit(ev.Failed(lane, cmd.id, wall, cmd.attempts, text))
            self.bus.emit(ev.DeadLettered(lane, cmd.id, wall, cmd.attempts, text))
        self._resolve(cmd, FAILED, CommandTimeout if timed_out else CommandFailed)
        if cmd.observers:
            cmd.observed = True  # a result() caller is waiting: it gets the error
        elif not cmd.handle_alive():
            self.report_unobserved(cmd)  # nobody can ever retrieve it
        # Otherwise a handle is held: result() may still come; reported when it goes.
        self.wake()

    def position(self, cmd: Command) -> int | None:
        """How many commands of ``cmd``'s lane start before it (``handle.position``)."""
        return self.policy.position(cmd)

    def reprioritize(self, cmd: Command, priority: int) -> bool:
        """``handle.reprioritize``: a pending command's new priority within its lane."""
        previous = cmd.priority
        if not self.policy.reprioritize(cmd, priority):
            return False
        if self.bus.active and priority != previous:
            wall = self.now() + self.wall_offset
            self.bus.emit(ev.Reprioritized(cmd.lane, cmd.id, wall, priority, previous))
        self._pending_changed(cmd)
        return True

    def reschedule(self, cmd: Command, delay: float) -> bool:
        """``handle.reschedule``: a pending command becomes due ``delay`` seconds from now."""
        now = self.now()
        if not self.policy.move(cmd, now, now + delay):
            return False
        self._pending_changed(cmd)
        return True

    def _pending_changed(self, cmd: Command) -> None:
        """A pending command moved in its lane: store it (with the next write), decide."""
        if cmd.payload is not None and self.durable is not None:
            ready_at = cmd.ready_at if cmd.state is DELAYED else None
            self.durable.requeued(cmd, ready_at)
        self.wake()

    def report_unobserved(self, cmd: Command) -> None:
        """Log (or pass to ``on_unobserved_failure``) a failure nobody retrieved; once."""
        cmd.observed = True
        report(cmd, self.on_unobserved)

    def _requeue_preempted(self, cmd: Command) -> None:
        now = self.now()
        cmd.attempts -= 1  # a preemption is not an attempt (it was counted when it began)
        cmd.cancel_reason = None
        cmd.scope = None
        cmd.entered = False
        if cmd.stream is not None:
            cmd.stream.restart()
        self.policy.requeue_front(cmd, now)
        if cmd.payload is not None and self.durable is not None:
            self.durable.requeued(cmd)
        self.lanes[cmd.lane].counters.preempted += 1
        if self.bus.active:
            self.bus.emit(ev.Preempted(cmd.lane, cmd.id, now + self.wall_offset, cmd.attempts + 1))
        self.wake()

    # -- cancellation --------------------------------------------------------------------------

    def cancel(self, cmd: Command, reason: Reason, *, wake: bool = True) -> None:
        """Cancel ``cmd`` wherever it is; no-op once it is terminal.

        ``wake=False``: no decision round for a slot or place it frees (the caller runs one).
        """
        if cmd.state >= DONE:
            return
        if self.policy.remove(cmd):  # it was pending: resolve now
            self._release_room(cmd)
            cmd.cancel_reason = reason
            self._cancelled(cmd, wake=wake)
            return
        cmd.cancel_reason = reason
        if cmd.entered:
            assert cmd.scope is not None
            self._pool(cmd.lane).cancel(cmd.scope)  # its body runs: its attempt resolves it
        else:  # granted, body not entered yet: free the slot and resolve now (never runs)
            self.policy.finish(cmd)
            self._cancelled(cmd, wake=wake)

    def cancel_lane(
        self, lane: str, reason: Reason, *, running: bool = True, queued: bool = True
    ) -> list[Command]:
        """Cancel the running and/or the pending (queued or delayed) commands of ``lane``;
        return the running ones cancelled (their attempts resolve them as they exit).

        The running ones are cancelled first, in O(running): their scopes are cancelled
        before anything else happens, however many commands are queued. The pending ones
        are then resolved in O(pending of the lane), with one decision round at the end.
        """
        cancelled: list[Command] = []
        if running:
            cancelled = [job for job in self.lanes[lane].running]  # type: ignore[misc]
            for cmd in cancelled:
                self.cancel(cmd, reason, wake=False)  # no round yet: it could start a queued one
        if queued:
            for job in self.policy.remove_lane(lane):
                assert isinstance(job, Command)
                self._release_room(job)
                job.cancel_reason = reason
                self._cancelled(job, wake=False)
        self.wake()
        return cancelled

    def cancel_all(
        self, reason: Reason, *, running: bool = True, queued: bool = True
    ) -> list[Command]:
        """Cancel the running and/or pending commands of every lane; return the running ones."""
        cancelled: list[Command] = []
        if running:
            for lane in list(self.lanes):  # lanes being retired included
                cancelled.extend(self.cancel_lane(lane, reason, queued=False))
        if queued:
            for lane in list(self.lanes):
                self.cancel_lane(lane, reason, running=False)
        if running and queued:
            for cmd in list(self.live):  # whatever is left between states (none expected)
                self.cancel(cmd, reason)
        return cancelled

    def resume(self, lane: str) -> None:
        """Start dispatching ``lane`` again, and wake its commands waiting in pause_point."""
        self.policy.resume(lane)
        event = self.resumed.pop(lane, None)
        if event is not None:
            event.set()
        self.wake()

    def abandon_all(self) -> None:
        """The system is gone: resolve whatever is left as cancelled (never run again)."""
        for cmd in list(self.live):
            if cmd.state is ACTIVE:
                self.interrupted(cmd)
            else:
                self.cancel(cmd, Reason.SHUTDOWN)

    def preempt(self, cmd: Command) -> None:
        """Take the slot of a running command back (the supervisor's decision)."""
        if cmd.cancel_reason is not None:
            return  # already being cancelled; that frees the slot too
        cmd.cancel_reason = Reason.PREEMPT
        if cmd.entered:
            assert cmd.scope is not None
            self._pool(cmd.lane).cancel(cmd.scope)  # its worker requeues it
        # Not entered yet: its worker finds the reason and requeues it without running it.

    def _cancelled(self, cmd: Command, *, wake: bool = True) -> None:
        if cmd.payload is not None and self.durable is not None:
            self.durable.cancelled(cmd, cmd.cancel_reason)
        self.lanes[cmd.lane].counters.cancelled += 1
        if self.bus.active:
            self.bus.emit(ev.Cancelled(cmd.lane, cmd.id, self.now() + self.wall_offset))
        self._resolve(cmd, CANCELLED, CommandCancelled)
        if wake:
            self.wake()

    def abort(self, cmd: Command, error: Exception) -> None:
        """A command that was never accepted (its storage write failed or came too late).

        Its handle, which a concurrent submit with the same key may hold, fails with
        ``error``; it never entered the policy.
        """
        if cmd.key is not None and self.keys.get(cmd.key) is cmd:
            del self.keys[cmd.key]
        cmd.state = FAILED
        cmd.outcome_kind = CommandFailed
        cmd.error = error
        cmd.observed = True  # its submit raised the error
        cmd.wake_waiters()

    @property
    def dlq(self) -> DeadLetterQueue:
        """The system's dead-letter queue (made on first use)."""
        dlq = self._dlq
        if dlq is None:
            dlq = self._dlq = DeadLetterQueue(
                self.dead_letter_limit, self.resubmit, self._letter_removed, self.commit
            )
        return dlq

    @property
    def dead_letters_held(self) -> int:
        """How many letters the dead-letter queue holds (without making one)."""
        return 0 if self._dlq is None else len(self._dlq)

    @property
    def dead_letters_evicted(self) -> int:
        """How many letters the full dead-letter queue evicted (without making one)."""
        return 0 if self._dlq is None else self._dlq.evicted

    def _letter_removed(self, letter_id: str) -> None:
        if self.durable is not None:
            self.durable.letter_removed(letter_id)

    async def commit(self) -> None:
        """Wait until storage holds every change made so far (no-op without storage)."""
        if self.durable is not None:
            await self.durable.journal.commit()

    def _release_room(self, cmd: Command) -> None:
        """A command leaves the pending queue for the first time: free its inbox place."""
        if cmd.holds_room:
            cmd.holds_room = False
            self.lanes[cmd.lane].room.give()

    def _pool(self, lane: str) -> WorkerPool[Command, int]:
        pool = self.lanes[lane].pool
        assert pool is not None  # a command entered its body: its lane's pool ran it
        return pool

    @property
    def counters(self) -> dict[str, LaneCounters]:
        """Each lane's counters, by name (lanes being retired included); a new dict."""
        return {name: state.counters for name, state in self.lanes.items()}

    @property
    def pools(self) -> dict[str, WorkerPool[Command, int]]:
        """Each lane's worker pool, by name (lanes being retired included); a new dict."""
        return {n: s.pool for n, s in self.lanes.items() if s.pool is not None}

    # -- lanes added and retired while the system runs -----------------------------------------

    def add_lane(self, config: LaneConfig) -> LaneState:
        """Make ``config`` a lane of the running system (``LaneSystem.add_lane``, checked);
        its worker pool is made with its first command (``Core.new_pool``)."""
        state = self.policy.add_lane(config)
        self.configs[config.name] = config
        return state

    def drop_lane(self, name: str) -> None:
        """Forget a retired lane, idle by now: its counters, metrics, room and pool go."""
        self.configs.pop(name, None)
        state = self.lanes[name]
        self.policy.drop_lane(name)
        state.room.close()
        pool, state.pool = state.pool, None
        if pool is not None:
            pool.close()  # its parked workers exit; it has no job left
        event = self.resumed.pop(name, None)
        if event is not None:
            event.set()
        self.wake()

    # -- resolution ------------------------------------------------------------------------------

    def _resolve(self, cmd: Command, state: JobState, kind: type[Exception] | None) -> None:
        """Terminal ``state``; the caller decides whether a decision round follows."""
        cmd.state = state
        cmd.outcome_kind = kind
        cmd.scope = None
        cmd.context = None  # it refers back to cmd: cut, so that refcounting frees cmd
        cmd.args = ()  # what the body was called with goes now, not with the last handle
        if cmd.key is not None and self.keys.get(cmd.key) is cmd:
            del self.keys[cmd.key]
        del self.live[cmd]
        if cmd.stream is not None:
            cmd.stream.close()
        waiters = cmd._waiters  # Command.wake_waiters, inlined
        if waiters:
            cmd._waiters = None
            for task in waiters:
                _reschedule(task)
        if cmd.on_done is not None:
            callbacks = self.callbacks
            assert callbacks is not None  # (only Callbacks.attach sets on_done)
            callbacks.fire(cmd)
        if not self.live:
            if self._idle is not None and not (self.callbacks and self.callbacks.running):
                self._idle.set()
            self.idle_since = self.now()
            if not self.reap_armed:
                self.reap_armed = True
                self.arm_reap()  # the dispatcher reaps the parked workers if this lasts

    def reap(self) -> None:
        """End every parked worker: an idle system keeps no worker task."""
        self.reap_armed = False
        if not self.live and type(self.live) is dict:  # (retention's table keeps records)
            self.live = {}  # a dict never shrinks: an idle system's is a fresh, empty one
        for state in self.lanes.values():
            if state.pool is not None:
                state.pool.reap()
        self.policy.compact()
        self.metrics.compact()

    def callbacks_ended(self) -> None:
        """The last running ``on_done`` callback returned."""
        if not self.live and self._idle is not None:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until no accepted command is left unresolved, nor its ``on_done`` running."""
        while self.live or (self.callbacks is not None and self.callbacks.running):
            if self._idle is None or self._idle.is_set():
                self._idle = trio.Event()
            await self._idle.wait()
        await trio.lowlevel.checkpoint()


def _nothing() -> None:
    return None


def no_pool(state: LaneState) -> None:
    """``Core.new_pool`` of a system that is not running (or no longer)."""
    return None
