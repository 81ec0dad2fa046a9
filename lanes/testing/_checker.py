"""Check a recorded event log of a real lane system against the scheduling rules.

An event log does not show everything the scheduler knew: pauses are not events, a command
granted a slot and preempted before it began leaves only a ``Preempted`` event, and commands
that start at the same instant may be logged in any order. :func:`check_invariants` therefore
checks only what the log proves. Counts it derives are lower bounds of the scheduler's (a
command is running from its ``Started`` to its end event), so a bound exceeded in the log was
exceeded for real; a priority inversion is reported only when the better command was certainly
queued and its lane certainly startable.

Timing checks (rate limits, FIFO, priority) assume virtual time (a ``trio.testing.MockClock``,
as under pytest-trio's ``autojump_clock``): there an attempt is logged at the instant it was
granted. With a real clock pass a ``tolerance`` of a few milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar

import attrs

from .._config import LaneConfig, RateLimit
from ..events import (
    Cancelled,
    Completed,
    DeadLettered,
    Event,
    Failed,
    Preempted,
    Reprioritized,
    Retrying,
    Started,
    Submitted,
    TimedOut,
)
from ._model import retry_delay_bounds

__all__ = ["InvariantViolation", "check_invariants", "rate_limit_violation"]

_KNOWN = (
    Submitted,
    Started,
    Completed,
    Retrying,
    TimedOut,
    Failed,
    DeadLettered,
    Preempted,
    Cancelled,
    Reprioritized,
)
_SLACK = 1e-6  # rounding slack on token counts


class InvariantViolation(AssertionError):
    """An event log breaks a scheduling rule.

    Attributes:
        rule: which rule, like ``"rule 1: lane max_concurrency"``.
        detail: what happened.
        events: the events that show it (the last one is where it became visible).
    """

    def __init__(self, rule: str, detail: str, events: Sequence[tuple[int, Event]]) -> None:
        self.rule = rule
        self.detail = detail
        self.events = tuple(event for _, event in events)
        lines = [f"{rule}: {detail}"]
        lines.extend(f"  [{index}] {event!r}" for index, event in events)
        super().__init__("\n".join(lines))


def rate_limit_violation(
    limit: RateLimit | None, starts: Sequence[float], *, tolerance: float = 1e-9
) -> str | None:
    """Whether start times (in order) break ``limit``; a description of the first break.

    A token bucket starts full with ``burst`` tokens and gains ``rate`` per second; a sliding
    window allows ``limit`` starts in any ``window`` seconds.
    """
    if limit is None:
        return None
    if limit.kind == "token_bucket":
        tokens, last = float(limit.burst), None
        for i, at in enumerate(starts):
            if last is not None:
                tokens = min(limit.burst, tokens + (at - last + tolerance) * limit.rate)
            if tokens < 1.0 - _SLACK:
                return f"start #{i + 1} at t={at} found {tokens:.6g} tokens"
            tokens, last = tokens - 1.0, at
        return None
    for i, at in enumerate(starts):
        recent = [s for s in starts[: i + 1] if at - s < limit.window - tolerance]
        if len(recent) > limit.limit:
            return f"{len(recent)} starts in the {limit.window} s before t={at}"
    return None


@attrs.define(eq=False)
class _Stint:
    """A stretch of time a command spent pending, as far as the log shows it."""

    command: str
    lane: str
    begin: float  # the time of the event that made it pending
    origin: int  # that event's index in the log
    front: bool  # requeued at the head of its lane by a preemption
    join: float | None = None  # when it joined its lane's queue (None: unknown)
    leave: float | None = None  # when it left the queue (None: unknown or never)
    left_by: str = ""  # started / cancelled / granted (then preempted before it began)
    key: tuple[int, float] = (1, 0.0)

    def ahead_of(self, other: _Stint, tolerance: float) -> bool:
        """Whether this stint certainly sits in front of ``other`` in their lane's queue."""
        if self.front != other.front:
            return self.front
        if self.front:  # the later requeue sits in front
            assert self.join is not None and other.join is not None
            return self.join > other.join + tolerance
        assert self.join is not None and other.join is not None
        return self.join < other.join - tolerance


@attrs.define(eq=False)
class _Run:
    """One attempt as the log shows it: from ``Started`` to the event that ended it."""

    command: str
    lane: str
    start: float
    end: float | None = None


class _Log:
    """Pass one: index the log by command; collect stints and runs."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = events
        self.stints: dict[str, list[_Stint]] = {}  # lane -> stints
        self.runs: dict[str, list[_Run]] = {}  # lane -> runs
        self.stint_of_start: dict[int, _Stint] = {}  # index of a Started -> its stint
        self.submitted: dict[str, int | None] = {}  # id -> Submitted.priority
        self.changes: dict[str, list[tuple[float, int]]] = {}  # id -> its Reprioritized
        self.first_begin: dict[str, float] = {}  # id -> when its first stint began
        open_stints: dict[str, _Stint] = {}
        open_runs: dict[str, _Run] = {}
        for index, event in enumerate(events):
            cid, lane, t = event.command_id, event.lane, event.timestamp
            if isinstance(event, Reprioritized):
                self.changes.setdefault(cid, []).append((t, event.priority))
                continue
            if isinstance(event, Submitted):
                self.submitted.setdefault(cid, event.priority)
            if isinstance(event, Submitted | Retrying | Preempted):
                self._close_run(open_runs, cid, t)
                if isinstance(event, Preempted) and cid in open_stints:
                    stint = open_stints.pop(cid)  # granted, then preempted before it began
                    stint.left_by, stint.leave = "granted", t
                stint = _Stint(cid, lane, t, index, front=isinstance(event, Preempted))
                if isinstance(event, Preempted):
                    stint.join = t
                elif isinstance(event, Retrying):
                    stint.join = t + event.delay
                open_stints[cid] = stint
                self.stints.setdefault(lane, []).append(stint)
                self.first_begin.setdefault(cid, t)
            elif isinstance(event, Started):
                began = open_stints.pop(cid, None) or _Stint(cid, lane, t, index, front=False)
                if not began.front:
                    began.join = t - event.waited
                began.leave, began.left_by = t, "started"
                self.stint_of_start[index] = began
                run = _Run(cid, lane, t)
                open_runs[cid] = run
                self.runs.setdefault(lane, []).append(run)
            elif isinstance(event, Completed | Failed):
                self._close_run(open_runs, cid, t)
            elif isinstance(event, Cancelled):
                self._close_run(open_runs, cid, t)
                dropped = open_stints.pop(cid, None)
                if dropped is not None:
                    dropped.leave, dropped.left_by = t, "cancelled"
        for stints in self.stints.values():
            for stint in stints:
                stint.key = (0 if stint.front else 1, stint.join or 0.0)

    @staticmethod
    def _close_run(open_runs: dict[str, _Run], cid: str, t: float) -> None:
        run = open_runs.pop(cid, None)
        if run is not None:
            run.end = t


@attrs.define(eq=False)
class _Life:
    """Pass two: where one command is in its life, replayed event by event."""

    lane: str
    state: str = "pending"  # pending, running, timed_out, failed, ended
    attempt: int = 0  # the attempt running (or that ran last)
    next_attempt: int = 1
    end: str = ""  # completed, failed, cancelled
    started_at: float = 0.0  # when the running attempt started
    ready_at: float = 0.0  # when its retry backoff ends (0: not retrying)
    priority: int | None = None  # its priority within its lane (None: unknown)
    history: list[tuple[int, Event]] = attrs.Factory(list)


class _Checker:
    """Replays the log once, keeping the earliest violation of each kind of check."""

    TERMINAL: ClassVar[tuple[type[Event], ...]] = (Completed, Failed, Cancelled)

    def __init__(
        self,
        events: Sequence[Event],
        configs: dict[str, LaneConfig],
        cap: int | None,
        paused: frozenset[str],
        complete: bool,
        tolerance: float,
        priorities: Mapping[str, int | None],
    ) -> None:
        self.events = events
        self.priorities = priorities
        self.configs = configs
        self.cap = cap
        self.paused = paused
        self.complete = complete
        self.tolerance = tolerance
        self.log = _Log(events)
        self.lives: dict[str, _Life] = {}
        self.running: dict[str, set[str]] = {name: set() for name in configs}
        self.starts: dict[str, list[float]] = {name: [] for name in configs}
        self.violations: list[tuple[int, InvariantViolation]] = []

    def fail(self, index: int, rule: str, detail: str, events: Sequence[tuple[int, Event]]) -> None:
        self.violations.append((index, InvariantViolation(rule, detail, events)))

    def run(self) -> None:
        for index, event in enumerate(self.events):
            if not isinstance(event, _KNOWN):
                continue
            if event.lane not in self.configs:
                self.fail(
                    index, "config", f"event of unknown lane {event.lane!r}", [(index, event)]
                )
                continue
            life = self._life(index, event)
            if life is None:
                continue
            life.history.append((index, event))
            self._step(index, event, life)
        if self.complete:
            self._check_ends()

    def _life(self, index: int, event: Event) -> _Life | None:
        cid = event.command_id
        life = self.lives.get(cid)
        if isinstance(event, Submitted):
            if life is not None:
                self.fail(
                    index,
                    "rule 4: one run per id",
                    f"{cid} submitted twice",
                    [*life.history[:1], (index, event)],
                )
                return None
            life = self.lives[cid] = _Life(event.lane, priority=self._base_priority(cid))
            return life
        if life is None:
            if self.complete:
                self.fail(
                    index,
                    "lifecycle",
                    f"{cid} has events but was never submitted",
                    [(index, event)],
                )
            return None
        return life

    # -- per-command life ---------------------------------------------------------------------

    def _base_priority(self, cid: str) -> int | None:
        """A command's priority before any ``Reprioritized``: its ``Submitted``'s, else
        the ``priorities`` argument's (0 for a command in neither)."""
        priority = self.log.submitted.get(cid)
        return self.priorities.get(cid, 0) if priority is None else priority

    def _priority_at(self, cid: str, t: float) -> int | None:
        """The priority ``cid`` certainly had at ``t`` (None: unknown, not compared).

        A ``Reprioritized`` within ``tolerance`` of ``t`` leaves it unknown: the log does
        not show whether the change came before or after a start logged at that instant.
        """
        priority = self._base_priority(cid)
        for at, new in self.log.changes.get(cid, ()):
            if at < t - self.tolerance:
                priority = new
            elif at <= t + self.tolerance:
                return None
        return priority

    def _step(self, index: int, event: Event, life: _Life) -> None:
        if isinstance(event, Reprioritized):
            self._reprioritized(index, event, life)
        elif life.state == "ended":
            self._after_end(index, event, life)
        elif life.state == "failed":
            self._after_failed(index, event, life)
        elif isinstance(event, Started):
            self._started(index, event, life)
        elif isinstance(event, Preempted):
            self._preempted(index, event, life)
        elif isinstance(event, Cancelled):
            self._stop_running(event, life)
            life.state, life.end = "ended", "cancelled"
        elif isinstance(event, Submitted):
            pass
        elif life.state == "pending":
            self.fail(
                index,
                "lifecycle",
                f"{type(event).__name__} of a command that is not running",
                life.history[-2:],
            )
        else:
            self._attempt_event(index, event, life)

    def _after_end(self, index: int, event: Event, life: _Life) -> None:
        if life.end == "completed" and isinstance(event, Started | Retrying):
            rule = "rule 4: a success is never retried"
        else:
            rule = "rule 4: exactly one terminal state"
        self.fail(
            index, rule, f"{type(event).__name__} after the command {life.end}", life.history[-2:]
        )

    def _after_failed(self, index: int, event: Event, life: _Life) -> None:
        life.state, life.end = "ended", "failed"
        if not isinstance(event, DeadLettered):
            self.fail(
                index,
                "rule 4: failed commands are dead-lettered",
                f"{type(event).__name__} follows Failed instead of DeadLettered",
                life.history[-2:],
            )
        elif event.attempts != life.attempt:
            self.fail(
                index,
                "rule 4: attempts",
                f"DeadLettered says {event.attempts} "
                f"attempts, Failed came after attempt {life.attempt}",
                life.history[-2:],
            )

    def _reprioritized(self, index: int, event: Reprioritized, life: _Life) -> None:
        if life.state != "pending":
            state = f"after the command {life.end}" if life.state == "ended" else life.state
            self.fail(
                index,
                "reprioritize: only a waiting command takes another priority",
                f"Reprioritized while {state}",
                life.history[-2:],
            )
        elif life.priority is not None and event.previous != life.priority:
            self.fail(
                index,
                "reprioritize: previous is the priority the command had",
                f"Reprioritized from {event.previous}, the command's priority was {life.priority}",
                life.history[-2:],
            )
        life.priority = event.priority

    def _started(self, index: int, event: Started, life: _Life) -> None:
        if life.state != "pending":
            self.fail(index, "lifecycle", "Started while already running", life.history[-2:])
            return
        retry = self.configs[life.lane].retry
        if event.attempt != life.next_attempt:
            self.fail(
                index,
                "rule 4: attempts (a preemption is not an attempt)",
                f"attempt {event.attempt} started, expected attempt {life.next_attempt}",
                life.history[-3:],
            )
        elif event.attempt > retry.max_retries + 1:
            self.fail(
                index,
                "rule 4: attempts never exceed max_retries + 1",
                f"attempt {event.attempt} with max_retries={retry.max_retries}",
                life.history[-3:],
            )
        if event.timestamp < life.ready_at - self.tolerance:
            self.fail(
                index,
                "retry backoff: a retry starts no earlier than its delay",
                f"attempt {event.attempt} started at t={event.timestamp}, its backoff ends "
                f"at t={life.ready_at}",
                life.history[-2:],
            )
        life.state, life.attempt = "running", event.attempt
        life.started_at = event.timestamp
        self._count_start(index, event)

    def _preempted(self, index: int, event: Preempted, life: _Life) -> None:
        config = self.configs[life.lane]
        if not config.preemptible:
            self.fail(
                index,
                "rule 3: only preemptible lanes are preempted",
                f"lane {life.lane!r} is not preemptible",
                [(index, event)],
            )
        elif self.cap is None:
            self.fail(
                index,
                "rule 3: preemption needs a global cap",
                "a command was preempted in a system without max_concurrency",
                [(index, event)],
            )
        expected = life.attempt if life.state == "running" else life.next_attempt
        if life.state not in ("running", "pending"):
            self.fail(index, "lifecycle", f"Preempted while {life.state}", life.history[-2:])
        elif event.attempt != expected:
            self.fail(
                index,
                "rule 4: attempts (a preemption is not an attempt)",
                f"Preempted reports attempt {event.attempt}, the attempt was {expected}",
                life.history[-2:],
            )
        if life.state == "running":
            self._stop_running(event, life)
            life.next_attempt = life.attempt
        life.state = "pending"

    def _attempt_event(self, index: int, event: Event, life: _Life) -> None:
        """Completed, Retrying, TimedOut, Failed or DeadLettered of a running attempt."""
        attempt = getattr(event, "attempt", getattr(event, "attempts", life.attempt))
        if attempt != life.attempt:
            self.fail(
                index,
                "rule 4: attempts",
                f"{type(event).__name__} reports attempt {attempt} during attempt {life.attempt}",
                life.history[-2:],
            )
        if life.state == "timed_out" and not isinstance(event, Retrying | Failed):
            self.fail(
                index,
                "rule 4: a timeout is a failed attempt",
                f"{type(event).__name__} follows TimedOut",
                life.history[-2:],
            )
        if isinstance(event, TimedOut):
            self._timed_out(index, event, life)
            life.state = "timed_out"
        elif isinstance(event, Completed):
            self._stop_running(event, life)
            life.state, life.end = "ended", "completed"
        elif isinstance(event, Retrying):
            self._retrying(index, event, life)
        elif isinstance(event, Failed):
            self._stop_running(event, life)
            life.state = "failed"
        else:  # DeadLettered without Failed
            self.fail(
                index,
                "rule 4: failed commands are dead-lettered",
                "DeadLettered without Failed",
                life.history[-2:],
            )

    def _timed_out(self, index: int, event: TimedOut, life: _Life) -> None:
        deadline = life.started_at + event.timeout
        if abs(event.timestamp - deadline) > self.tolerance:
            self.fail(
                index,
                "a timed-out attempt ends at its deadline",
                f"attempt {life.attempt} started at t={life.started_at} with a "
                f"{event.timeout} s timeout, timed out at t={event.timestamp}",
                life.history[-2:],
            )

    def _retrying(self, index: int, event: Retrying, life: _Life) -> None:
        retry = self.configs[life.lane].retry
        low, high = (float(b) for b in retry_delay_bounds(retry, max(1, life.attempt)))
        if not low - self.tolerance <= event.delay <= high + self.tolerance:
            self.fail(
                index,
                "retry backoff: the delay the lane's retry policy gives",
                f"retry {life.attempt} waits {event.delay} s; {retry} asks for "
                f"{low}{f'-{high}' if high != low else ''} s",
                life.history[-2:],
            )
        life.ready_at = event.timestamp + event.delay
        if life.attempt > retry.max_retries:
            self.fail(
                index,
                "rule 4: attempts never exceed max_retries + 1",
                f"retrying after attempt {life.attempt} with max_retries={retry.max_retries}",
                life.history[-2:],
            )
        self._stop_running(event, life)
        life.state, life.next_attempt = "pending", life.attempt + 1

    def _stop_running(self, event: Event, life: _Life) -> None:
        if life.state in ("running", "timed_out"):
            self.running[life.lane].discard(event.command_id)

    def _check_ends(self) -> None:
        end = len(self.events)
        for cid, life in self.lives.items():
            if life.state == "failed":
                self.fail(
                    end,
                    "rule 4: failed commands are dead-lettered",
                    f"{cid} failed but was never dead-lettered",
                    life.history[-2:],
                )
            elif life.state != "ended":
                self.fail(
                    end,
                    "rule 4: every accepted command ends",
                    f"{cid} is still {life.state} at the end of the log",
                    life.history[-3:],
                )

    # -- rule 1: bounds and rate limits at each start --------------------------------------

    def _count_start(self, index: int, event: Started) -> None:
        lane = event.lane
        config = self.configs[lane]
        self.running[lane].add(event.command_id)
        here = [(index, event)]
        active = len(self.running[lane])
        if active > config.max_concurrency:
            self.fail(
                index,
                "rule 1: lane max_concurrency",
                f"lane {lane!r} runs {active} "
                f"commands, its max_concurrency is {config.max_concurrency}",
                self._running_starts(lane),
            )
        if self.cap is not None:
            total = sum(len(ids) for ids in self.running.values())
            claimed = sum(
                max(len(self.running[name]), c.min_concurrency) for name, c in self.configs.items()
            )
            if total > self.cap:
                self.fail(
                    index,
                    "rule 1: global max_concurrency",
                    f"{total} commands run, the cap is {self.cap}",
                    here,
                )
            elif claimed > self.cap:
                self.fail(
                    index,
                    "rule 1: min_concurrency reservations",
                    f"running commands plus unmet reservations of other lanes are "
                    f"{claimed}, over the cap {self.cap}",
                    here,
                )
        self.starts[lane].append(event.timestamp)
        broken = rate_limit_violation(
            config.rate_limit, self.starts[lane], tolerance=self.tolerance
        )
        if (
            broken is not None
            and rate_limit_violation(
                config.rate_limit, self.starts[lane][:-1], tolerance=self.tolerance
            )
            is None
        ):
            self.fail(
                index, "rule 1: rate limit", f"lane {lane!r} ({config.rate_limit}): {broken}", here
            )
        self._check_order(index, event)

    def _running_starts(self, lane: str) -> list[tuple[int, Event]]:
        ids = self.running[lane]
        found: list[tuple[int, Event]] = [
            (i, e)
            for i, e in enumerate(self.events)
            if isinstance(e, Started) and e.command_id in ids and e.lane == lane
        ]
        return found[-len(ids) :]

    # -- rule 2: FIFO within a lane, priority across lanes ----------------------------------

    def _check_order(self, index: int, event: Started) -> None:
        stint = self.log.stint_of_start.get(index)
        if stint is None or stint.join is None:
            return
        t, tol = event.timestamp, self.tolerance
        mine = self._priority_at(event.command_id, t)
        for other in self.log.stints.get(event.lane, []):
            if other is stint or mine is None or not self._queued_across(other, t):
                continue
            theirs = self._priority_at(other.command, t)
            if theirs is None or theirs > mine:
                continue
            if theirs < mine:
                self.fail(
                    index,
                    "rule 2: command priority within a lane",
                    f"{other.command} (priority {theirs}) waited in lane {event.lane!r} "
                    f"(queued since t={other.join}) while {event.command_id} (priority "
                    f"{mine}) started",
                    self._with_origin(other, index, event),
                )
                return
            if other.ahead_of(stint, tol):
                self.fail(
                    index,
                    "rule 2: FIFO within a lane",
                    f"{other.command} was ahead of {event.command_id} in lane "
                    f"{event.lane!r} (queued since t={other.join}) but started later",
                    self._with_origin(other, index, event),
                )
                return
        self._check_priority(index, event)

    def _with_origin(self, stint: _Stint, index: int, event: Event) -> list[tuple[int, Event]]:
        """The event that queued ``stint``, then ``event``."""
        return [(stint.origin, self.events[stint.origin]), (index, event)]

    def _queued_across(self, stint: _Stint, t: float) -> bool:
        """Whether ``stint`` certainly held a queue place just before and just after ``t``.

        A stint the log never shows ending is still queued when the log ends.
        """
        if stint.join is None or stint.left_by == "granted":
            return False
        leave = math.inf if stint.leave is None else stint.leave
        return stint.join < t - self.tolerance and leave > t + self.tolerance

    def _longest_wait(self, event: Started) -> float:
        """How long, at most, a command queued in ``event``'s lane at its start had waited.

        A lane is boosted by the age of its longest-waiting queued command, which need not
        be the one that starts (a more urgent command joined later). The log shows each
        stint's queue time only in part, so each one possibly queued at the start counts
        with the earliest boost clock it can have: its join time when known, else when it
        became pending, and for a preempted command (whose clock is the one its earlier
        stint had) when it was first seen.
        """
        t, tol = event.timestamp, self.tolerance
        longest = event.waited
        for stint in self.log.stints.get(event.lane, []):
            if stint.begin > t + tol or (stint.leave is not None and stint.leave < t - tol):
                continue
            if stint.front:
                since = self.log.first_begin.get(stint.command, stint.begin)
            else:
                since = stint.begin if stint.join is None else stint.join
            longest = max(longest, t - since)
        return longest

    def _check_priority(self, index: int, event: Started) -> None:
        config = self.configs[event.lane]
        levels = 0
        if config.boost is not None:
            waited = self._longest_wait(event)
            levels = sum(1 for p in config.boost.at if p <= waited + self.tolerance)
        urgency = max(0, config.priority - levels)
        t = event.timestamp
        for name, other in self.configs.items():
            if name == event.lane or name in self.paused or other.priority >= urgency:
                continue
            waiting = next(
                (s for s in self.log.stints.get(name, []) if self._queued_across(s, t)), None
            )
            if waiting is not None and self._certainly_startable(name, t, event):
                self.fail(
                    index,
                    "rule 2: priority",
                    f"{event.command_id} (lane {event.lane!r}, effective priority "
                    f"{urgency}) started while {waiting.command} waited in lane "
                    f"{name!r} (priority {other.priority}), which could start",
                    self._with_origin(waiting, index, event),
                )
                return

    def _active_bounds(self, lane: str, t: float, exclude: str) -> tuple[int, int]:
        """(certainly, possibly) how many commands of ``lane`` held a slot just before ``t``."""
        tol = self.tolerance
        low = high = 0
        for run in self.log.runs.get(lane, []):
            if run.command == exclude and run.start == t:
                continue
            end = float("inf") if run.end is None else run.end
            if run.start < t - tol and end > t + tol:
                low += 1
            if run.start <= t + tol and end >= t - tol:
                high += 1
        for stint in self.log.stints.get(lane, []):
            if (
                stint.left_by == "granted"
                and stint.begin <= t + tol
                and (stint.leave is None or stint.leave >= t - tol)
            ):
                high += 1
        return low, high

    def _certainly_startable(self, lane: str, t: float, started: Started) -> bool:
        """Whether rule 1 certainly let ``lane`` start a command when ``started`` was granted."""
        config = self.configs[lane]
        exclude = started.command_id
        bounds = {name: self._active_bounds(name, t, exclude) for name in self.configs}
        high = bounds[lane][1]
        if high >= config.max_concurrency or not self._certainly_has_token(lane, t):
            return False
        if self.cap is None:
            return True
        # The grant itself proves room under the cap: active_total < cap, and when its lane
        # was at or above its reservation, active_total + unmet reservations < cap, which is
        # the cap part of rule 1 for any lane.
        own = self.configs[started.lane]
        if bounds[started.lane][0] >= own.min_concurrency:
            return True
        total = sum(h for _, h in bounds.values())
        if total >= self.cap:
            return False
        if high < config.min_concurrency:
            return True
        unmet = sum(
            max(0, c.min_concurrency - bounds[name][0])
            for name, c in self.configs.items()
            if name != lane
        )
        return total + unmet < self.cap

    def _certainly_has_token(self, lane: str, t: float) -> bool:
        limit = self.configs[lane].rate_limit
        if limit is None:
            return True
        tol = self.tolerance
        if any(s.left_by == "granted" for s in self.log.stints.get(lane, [])):
            return False  # a grant the log does not show took a token at an unknown time
        starts = [run.start for run in self.log.runs.get(lane, []) if run.start <= t + tol]
        if limit.kind == "sliding_window":
            recent = [s for s in starts if t - s < limit.window + tol]
            return len(recent) < limit.limit
        tokens, last = float(limit.burst), None
        for at in starts:
            if last is not None:
                tokens = min(limit.burst, tokens + (at - last) * limit.rate)
            tokens, last = tokens - 1.0, at
        if last is not None:
            tokens = min(limit.burst, tokens + (t - last - tol) * limit.rate)
        return tokens >= 1.0 + _SLACK


def check_invariants(
    events: Iterable[Event],
    configs: Iterable[LaneConfig],
    max_concurrency: int | None = None,
    *,
    paused: Iterable[str] = (),
    complete: bool = True,
    tolerance: float = 1e-6,
    priorities: Mapping[str, int | None] | None = None,
) -> None:
    """Check an event log of a lane system against the rules of docs/architecture.md.

    Checked, in log order: per-lane ``max_concurrency``, the global cap and the
    ``min_concurrency`` reservations are never exceeded; starts respect each lane's rate
    limit; within a lane, commands start by command priority (each one's priority at the
    start: ``Submitted.priority``, then each ``Reprioritized``), in FIFO order among equals
    (a preempted command first among them); no command starts while a command of a more
    urgent lane was certainly queued and startable; only preemptible lanes are preempted;
    only a waiting command is reprioritized, from the priority it had; attempts count up
    from 1, a preemption does not count, never above ``max_retries + 1``; a
    timeout is followed by a retry or a failure, a failure by exactly one dead letter; a
    success is never retried; every command ends in exactly one terminal state. Retries: each
    ``Retrying`` delay is the one the lane's policy gives (within its jitter bounds, by the
    reference model's :func:`retry_delay_bounds`) and the retry starts no earlier; a
    ``TimedOut`` comes exactly ``timeout`` seconds after its attempt started.

    Args:
        events: the log, in the order the system emitted it (from ``system.subscribe()``
            with a buffer large enough that nothing was dropped).
        configs: the system's lanes.
        max_concurrency: the system's global cap (None: no cap).
        paused: lanes that were paused at some time (the log does not show pauses, so the
            priority check does not expect them to start).
        complete: whether the log covers each command's whole life (subscribed before the
            first submit, read until the system closed or drained). With False, commands
            whose submit is not in the log are skipped and unfinished ones are not reported.
        tolerance: seconds of timestamp noise to allow (use a few ms with a real clock).
        priorities: command priorities by id, for a log whose ``Submitted`` events carry
            none (``priority=None``: events built by hand, or a log of the distributed
            mode) or are not in it: such a command has the priority given here (0 if not
            given), or, mapped to None, is not compared with the others of its lane.
            ``Reprioritized`` events in the log still apply to it. The priority a
            ``Submitted`` carries wins over this. A command reprioritized at the instant
            (within ``tolerance``) of a start is not compared at that start: the log does
            not show which came first.

    Raises:
        InvariantViolation: the first violated rule (by log position), with the events
            that break it.
    """
    checker = _Checker(
        list(events),
        {c.name: c for c in configs},
        max_concurrency,
        frozenset(paused),
        complete,
        tolerance,
        priorities or {},
    )
    checker.run()
    if checker.violations:
        raise min(checker.violations, key=lambda item: item[0])[1]
