"""A plain, slow, obviously-correct model of scheduling rules 1-4 (docs/architecture.md).

It is written from the rules, not from ``lanes._policy``: lanes hold explicit lists, rate limits
replay their start history, and every time is an exact :class:`~fractions.Fraction`, so there
is no rounding to reason about. The state machine in :mod:`lanes.testing` drives the real policy
and this model side by side and compares their answers.

Times of the real policy are floats. With the values the strategies of :mod:`lanes.testing`
draw (multiples of powers of two) float arithmetic is exact, so both agree to the last bit.
With other values a comparison can land within rounding distance of a threshold (a token that
arrives at ``0.9999999999999999``); the model then sets :attr:`ReferenceModel.fuzzy` and the
state machine accepts either answer for that decision instead of reporting a false failure.

Within a lane, the head is the queued command with the smallest priority of its own
(``submit(priority=)``, 0 by default), FIFO among equals: the model keeps each lane's commands
in the order they joined its queue (a preempted command at the front) and sorts that list,
stably, by command priority. :meth:`ReferenceModel.reprioritize` changes a waiting
command's priority and nothing else (its place among its new equals stays the one its
queueing gave it), and answers False for a command that is not waiting. Boosting is a lane's
matter: the lane's effective priority is its base priority boosted by how long its
longest-waiting queued command has waited (the smallest ``pending_since``, whatever its
command priority; delayed commands count once they are due), while the lane starts its head.

Rule 4 and the retry rules are modelled too: each command's attempts (a start counts, a
preemption gives it back), its deadline (its lane's timeout), and what follows a failed attempt
(:meth:`ReferenceModel.fail`): a retry after the backoff the lane's policy gives (fixed,
exponential, jitter) or, for a :class:`~lanes.Permanent` error or the last allowed attempt, the
dead-letter queue. The model raises :class:`ModelViolation` when it is told of a step the
rules forbid (a start past the attempt limit, a cancelled command starting, a timeout that is
not at the deadline).
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterable
from fractions import Fraction

import attrs

from .._config import LaneConfig, PriorityBoost, RateLimit, RetryPolicy

__all__ = ["ModelCommand", "ModelLane", "ModelStep", "ModelViolation", "ReferenceModel"]

_FUZZ = Fraction(1, 10**7)  # closer than this to a threshold (but not on it): rounding noise
_TOKEN_SLACK = Fraction(1, 10**9)  # a token counts when at least 1 - 1e-9 of it has arrived

CommandId = Hashable


class ModelViolation(AssertionError):
    """A step the rules forbid, as the model sees it (the message names the rule)."""


@attrs.frozen
class ModelStep:
    """What follows a failed attempt by the rules: ``"retry"`` (after ``delay`` seconds,
    within ``bounds``, the jitter range of the policy) or ``"dead letter"``."""

    next: str
    delay: Fraction = Fraction(0)
    bounds: tuple[Fraction, Fraction] = (Fraction(0), Fraction(0))


def retry_delay_bounds(policy: RetryPolicy, retry: int) -> tuple[Fraction, Fraction]:
    """The shortest and longest delay the rules allow before retry number ``retry`` (from 1).

    ``min(max_delay, initial_delay * multiplier**(retry - 1))``, shortened by up to
    ``jitter`` of itself (a fixed policy is the case multiplier 1).
    """
    base = min(
        exact(policy.max_delay),
        exact(policy.initial_delay) * exact(policy.multiplier) ** (retry - 1),
    )
    return base * (1 - exact(policy.jitter)), base


def retry_delay(policy: RetryPolicy, retry: int, draw: float | Fraction) -> Fraction:
    """The delay before retry number ``retry`` for the jitter draw ``draw`` in [0, 1)."""
    _, base = retry_delay_bounds(policy, retry)
    return base * (1 - exact(policy.jitter) * exact(draw))


def exact(value: float | Fraction) -> Fraction:
    """``value`` as an exact fraction (a float converts without rounding)."""
    return value if isinstance(value, Fraction) else Fraction(value)


@attrs.define(eq=False)
class ModelCommand:
    """One command as the model sees it.

    ``order`` is its place in submission order (renewed when a retry queues it again, kept
    when a preemption puts it back); ``pending_since`` is when it last joined its lane's
    queue (its boost clock); ``start_number`` orders starts; ``priority`` is its priority
    within its lane (lower starts first; kept by a retry and a preemption).
    """

    id: CommandId
    lane: str
    order: int
    priority: int = 0
    state: str = "queued"  # delayed, queued, running, gone
    due: Fraction = Fraction(0)
    pending_since: Fraction = Fraction(0)
    start_number: int = 0
    preempting: bool = False
    attempts: int = 0  # attempts begun (a preemption gives its attempt back)
    deadline: Fraction | None = None  # of the running attempt (None: no timeout)
    outcome: str | None = None  # completed, dead letter, cancelled


@attrs.define(eq=False)
class ModelLane:
    """One lane: its config, its queued commands, its running commands.

    ``joined`` holds the queued commands in the order they joined the queue (appended;
    a preempted command goes to the front); :attr:`queue` is the order they start in.
    """

    config: LaneConfig
    joined: list[ModelCommand] = attrs.Factory(list)
    running: list[ModelCommand] = attrs.Factory(list)  # in start order
    starts: list[Fraction] = attrs.Factory(list)  # every start time (rate-limit history)
    paused: bool = False

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def queue(self) -> list[ModelCommand]:
        """The queued commands in the order they would start, head first: by command
        priority, then the order they joined (a stable sort keeps that among equals)."""
        return sorted(self.joined, key=_by_priority)

    @property
    def head(self) -> ModelCommand | None:
        """The command that starts next in this lane (None: nothing is queued)."""
        return min(self.joined, key=_by_priority, default=None)  # the first of the smallest

    @property
    def longest_waiting(self) -> ModelCommand | None:
        """The queued command that has waited longest: the lane's boost clock (None:
        nothing is queued)."""
        return min(self.joined, key=_by_age, default=None)

    @property
    def active(self) -> int:
        return len(self.running)


class ReferenceModel:
    """The reference model of one lane system's scheduling state.

    State changes mirror what an async shell reports to a policy: :meth:`submit`,
    :meth:`start`, :meth:`finish`, :meth:`retry`, :meth:`requeue_front`, :meth:`cancel`,
    :meth:`cancel_lane`, :meth:`reprioritize`, :meth:`pause`, :meth:`resume`,
    :meth:`advance`. Questions take the current time: :meth:`startable`, :meth:`next_start`,
    :meth:`preemptions`, :meth:`next_change`; :meth:`position` does not.

    Args:
        configs: the lanes.
        max_concurrency: the global cap (None: no cap).
    """

    def __init__(self, configs: Iterable[LaneConfig], max_concurrency: int | None) -> None:
        self.lanes: dict[str, ModelLane] = {c.name: ModelLane(c) for c in configs}
        self.cap = max_concurrency
        self.commands: dict[CommandId, ModelCommand] = {}
        self.delayed: list[ModelCommand] = []
        self.dead_letters: list[CommandId] = []  # in the order they were dead-lettered
        self.fuzzy = False
        self._orders = 0
        self._starts = 0

    def copy(self) -> ReferenceModel:
        """An independent copy (cheaper than ``copy.deepcopy``: configs are shared)."""
        clone = copy.copy(self)
        twins = {id(cmd): copy.copy(cmd) for cmd in self.commands.values()}
        clone.commands = {key: twins[id(cmd)] for key, cmd in self.commands.items()}
        clone.delayed = [twins[id(cmd)] for cmd in self.delayed]
        clone.dead_letters = list(self.dead_letters)
        clone.lanes = {
            name: ModelLane(
                lane.config,
                [twins[id(cmd)] for cmd in lane.joined],
                [twins[id(cmd)] for cmd in lane.running],
                list(lane.starts),
                lane.paused,
            )
            for name, lane in self.lanes.items()
        }
        return clone

    # -- state changes ------------------------------------------------------------------------

    def submit(
        self,
        command_id: CommandId,
        lane: str,
        now: float | Fraction,
        ready_at: float | Fraction | None = None,
        *,
        priority: int = 0,
    ) -> None:
        """Accept a command with its ``priority`` within the lane; it queues now, or at
        ``ready_at`` if that is later."""
        if command_id in self.commands:
            msg = f"command {command_id!r} was submitted twice"
            raise ValueError(msg)
        cmd = ModelCommand(command_id, lane, self._next_order(), priority)
        self.commands[command_id] = cmd
        self._enqueue(cmd, exact(now), exact(now if ready_at is None else ready_at))

    def advance(self, now: float | Fraction) -> None:
        """Let time reach ``now``: delayed commands that are due join their queues."""
        for cmd in self._due(exact(now)):
            self.delayed.remove(cmd)
            self._join(cmd, cmd.due)

    def start(self, command_id: CommandId, now: float | Fraction) -> None:
        """The head of a lane starts (it must be that lane's head)."""
        cmd = self.commands[command_id]
        lane = self.lanes[cmd.lane]
        if cmd.outcome == "cancelled":
            msg = f"a cancelled command never starts: command {command_id!r} starts"
            raise ModelViolation(msg)
        if lane.head is not cmd:
            msg = f"command {command_id!r} is not the head of lane {cmd.lane!r}"
            raise ValueError(msg)
        limit = lane.config.retry.max_retries + 1
        if cmd.attempts >= limit:
            msg = (
                f"rule 4: attempts never exceed max_retries + 1: command {command_id!r} "
                f"starts attempt {cmd.attempts + 1} of at most {limit}"
            )
            raise ModelViolation(msg)
        lane.joined.remove(cmd)
        lane.running.append(cmd)
        lane.starts.append(exact(now))
        self._starts += 1
        cmd.start_number = self._starts
        cmd.state = "running"
        cmd.attempts += 1
        timeout = lane.config.timeout
        cmd.deadline = None if timeout is None else _float_sum(exact(now), exact(timeout))

    def finish(
        self,
        command_id: CommandId,
        outcome: str = "completed",
        *,
        now: float | Fraction | None = None,
    ) -> None:
        """A running command ended for good: ``"completed"`` or ``"cancelled"``.

        With ``now``, an attempt that returns after its deadline is a violation (it should
        have timed out).
        """
        cmd = self.commands[command_id]
        if now is not None:
            self._check_deadline(cmd, exact(now), False)
        cmd = self._release(command_id)
        cmd.state = "gone"
        cmd.outcome = outcome

    def retry(
        self, command_id: CommandId, now: float | Fraction, ready_at: float | Fraction
    ) -> None:
        """A running command failed and queues again (at the tail) at ``ready_at``.

        This takes the shell's word for the delay; :meth:`fail` decides it by the rules.
        """
        cmd = self._release(command_id)
        cmd.order = self._next_order()
        self._enqueue(cmd, exact(now), exact(ready_at))

    def fail(
        self,
        command_id: CommandId,
        now: float | Fraction,
        *,
        permanent: bool = False,
        timed_out: bool = False,
        draw: float | Fraction = 0,
    ) -> ModelStep:
        """A running attempt failed (raised, or ``timed_out`` at its deadline): apply the rules.

        A :class:`~lanes.Permanent` error is never retried; an attempt below the policy's
        ``max_retries + 1`` is retried after the backoff (``draw`` in [0, 1) drives the
        jitter) and queues at its lane's tail when that has passed; otherwise the command is
        dead-lettered (it joins :attr:`dead_letters`). Returns what the rules chose.

        Raises:
            ModelViolation: a timeout away from the attempt's deadline, or an attempt that
                ended after its deadline without timing out.
        """
        cmd = self.commands[command_id]
        t = exact(now)
        self._check_deadline(cmd, t, timed_out)
        retry = self.lanes[cmd.lane].config.retry
        if permanent or cmd.attempts > retry.max_retries:
            self._release(command_id)
            cmd.state, cmd.outcome = "gone", "dead letter"
            self.dead_letters.append(command_id)
            return ModelStep("dead letter")
        delay = retry_delay(retry, cmd.attempts, draw)
        # The shell adds the delay to its float clock; so does the model (ties and
        # "is it due yet" then agree to the last bit).
        self.retry(command_id, t, _float_sum(t, delay))
        return ModelStep("retry", delay, retry_delay_bounds(retry, cmd.attempts))

    def _check_deadline(self, cmd: ModelCommand, now: Fraction, timed_out: bool) -> None:
        if cmd.state != "running":
            msg = f"command {cmd.id!r} is not running (it is {cmd.state})"
            raise ValueError(msg)
        if timed_out and cmd.deadline != now:
            msg = (
                f"a timed-out attempt ends at its deadline: command {cmd.id!r} timed out at "
                f"t={float(now)}, its deadline is {_seconds(cmd.deadline)}"
            )
            raise ModelViolation(msg)
        if not timed_out and cmd.deadline is not None and now > cmd.deadline:
            msg = (
                f"a timed-out attempt ends at its deadline: command {cmd.id!r} ran until "
                f"t={float(now)}, past its deadline {float(cmd.deadline)}"
            )
            raise ModelViolation(msg)

    def next_deadline(self) -> tuple[Fraction, CommandId] | None:
        """The earliest deadline of a running attempt, and its command (None: none)."""
        deadlines = [(c.deadline, c.start_number, c.id) for c in self._running() if c.deadline]
        if not deadlines:
            return None
        at, _, command_id = min(deadlines)
        return at, command_id

    def mark_preempting(self, command_id: CommandId) -> None:
        """The shell was told to preempt this running command."""
        self.commands[command_id].preempting = True

    def requeue_front(self, command_id: CommandId) -> None:
        """A preempted command gave its slot back; it goes to the head of its lane."""
        cmd = self._release(command_id)
        cmd.attempts -= 1  # a preemption is not an attempt
        cmd.state = "queued"  # keeps its order, its priority and its boost clock
        self.lanes[cmd.lane].joined.insert(0, cmd)  # first among its equals

    def cancel(self, command_id: CommandId) -> bool:
        """Withdraw a pending (queued or delayed) command; False if it is not pending."""
        cmd = self.commands[command_id]
        if cmd.state == "queued":
            self.lanes[cmd.lane].joined.remove(cmd)
        elif cmd.state == "delayed":
            self.delayed.remove(cmd)
        else:
            return False
        cmd.state, cmd.outcome = "gone", "cancelled"
        return True

    def cancel_lane(self, lane: str) -> list[CommandId]:
        """Withdraw every pending command of ``lane``: queued ones in the order they would
        start, then delayed ones by due time."""
        queued = list(self.lanes[lane].queue)
        delayed = sorted((c for c in self.delayed if c.lane == lane), key=_due_key)
        for cmd in queued + delayed:
            self.cancel(cmd.id)
        return [cmd.id for cmd in queued + delayed]

    def reprioritize(self, command_id: CommandId, priority: int) -> bool:
        """``handle.reprioritize(priority)``: a waiting (queued or delayed) command takes
        ``priority`` within its lane; False for a running or finished one (nothing changes).

        A queued command keeps its place in the order it joined, so among its new equals it
        stands where its queueing put it; a delayed one joins by the new priority when due.
        Its boost clock keeps running.
        """
        cmd = self.commands[command_id]
        if cmd.state not in ("queued", "delayed"):
            return False
        cmd.priority = priority
        return True

    def position(self, command_id: CommandId) -> int | None:
        """How many commands of its lane start before a queued command (None: not queued)."""
        cmd = self.commands[command_id]
        if cmd.state != "queued":
            return None
        return self.lanes[cmd.lane].queue.index(cmd)

    def pause(self, lane: str) -> None:
        self.lanes[lane].paused = True

    def resume(self, lane: str) -> None:
        self.lanes[lane].paused = False

    def _next_order(self) -> int:
        self._orders += 1
        return self._orders

    def _enqueue(self, cmd: ModelCommand, now: Fraction, ready_at: Fraction) -> None:
        if ready_at > now:
            cmd.state = "delayed"
            cmd.due = ready_at
            self.delayed.append(cmd)
        else:
            self._join(cmd, now)

    def _join(self, cmd: ModelCommand, at: Fraction) -> None:
        cmd.state = "queued"
        cmd.pending_since = at
        self.lanes[cmd.lane].joined.append(cmd)

    def _release(self, command_id: CommandId) -> ModelCommand:
        cmd = self.commands[command_id]
        if cmd.state != "running":
            msg = f"command {command_id!r} is not running (it is {cmd.state})"
            raise ValueError(msg)
        self.lanes[cmd.lane].running.remove(cmd)
        cmd.preempting = False
        cmd.deadline = None
        return cmd

    def _due(self, now: Fraction) -> list[ModelCommand]:
        return sorted((c for c in self.delayed if c.due <= now), key=_due_key)

    # -- counts ---------------------------------------------------------------------------------

    @property
    def active_total(self) -> int:
        return sum(lane.active for lane in self.lanes.values())

    def pending(self, lane: str) -> int:
        """Queued plus delayed commands of ``lane``."""
        return len(self.lanes[lane].joined) + sum(1 for c in self.delayed if c.lane == lane)

    def unmet(self, lane: str) -> int:
        """Reserved slots of ``lane`` that it does not use."""
        state = self.lanes[lane]
        return max(0, state.config.min_concurrency - state.active)

    # -- rule 1: may a lane start a command now? --------------------------------------------

    def _compare(self, value: Fraction, threshold: Fraction) -> bool:
        """``value >= threshold``, noting when rounding could have decided otherwise."""
        if value != threshold and abs(value - threshold) < _FUZZ:
            self.fuzzy = True
        return value >= threshold

    def has_token(self, lane: str, now: float | Fraction) -> bool:
        """Whether ``lane``'s rate limit allows one more start at ``now``."""
        state = self.lanes[lane]
        limit = state.config.rate_limit
        if limit is None:
            return True
        if limit.kind == "token_bucket":
            tokens = _tokens(limit, state.starts, exact(now))
            if tokens != 1 and abs(tokens - 1) < _FUZZ:
                self.fuzzy = True
            return tokens >= 1 - _TOKEN_SLACK
        window = exact(limit.window)
        t = exact(now)
        # a start at s still counts at t while t < s + window
        live = sum(1 for s in state.starts if not self._compare(t, s + window))
        return live < limit.limit

    def cap_allows(self, lane: str) -> bool:
        """The global-cap part of rule 1 for the next command of ``lane``."""
        if self.cap is None:
            return True
        total = self.active_total
        if total >= self.cap:
            return False
        state = self.lanes[lane]
        if state.active < state.config.min_concurrency:
            return True  # a reserved slot
        others = sum(self.unmet(name) for name in self.lanes if name != lane)
        return total + others < self.cap

    def lane_ready(self, lane: str, now: float | Fraction) -> bool:
        """Rule 1 except the global cap: a head, not paused, below max, a token."""
        state = self.lanes[lane]
        if not state.joined or state.paused:
            return False
        if state.active >= state.config.max_concurrency:
            return False
        return self.has_token(lane, now)

    def why_not(self, lane: str, now: float | Fraction) -> str | None:
        """Why rule 1 forbids ``lane`` to start its head at ``now`` (None: it may)."""
        state = self.lanes[lane]
        if not state.joined:
            return f"lane {lane!r} has no queued command"
        if state.paused:
            return f"lane {lane!r} is paused"
        if state.active >= state.config.max_concurrency:
            return f"lane {lane!r} already runs {state.active} (max_concurrency)"
        if not self.has_token(lane, now):
            return f"lane {lane!r} has no rate-limit token"
        if not self.cap_allows(lane):
            return f"the global cap (and reservations) leave lane {lane!r} no slot"
        return None

    def startable(self, now: float | Fraction) -> list[str]:
        """The lanes whose head may start at ``now`` (rule 1)."""
        return [name for name in self.lanes if self.lane_ready(name, now) and self.cap_allows(name)]

    # -- rule 2: which command starts next? -----------------------------------------------------

    def effective_priority(self, lane: str, now: float | Fraction) -> int:
        """The lane priority of ``lane`` with its boost (the base priority when nothing is
        queued). The boost counts how long the lane's longest-waiting queued command has
        waited, whatever its command priority (the head, chosen by command priority, may
        have joined later)."""
        oldest = self.lanes[lane].longest_waiting
        if oldest is None:
            return self.lanes[lane].config.priority
        return self.command_priority(oldest, now)

    def command_priority(self, cmd: ModelCommand, now: float | Fraction) -> int:
        """``cmd``'s lane priority with boosting, by its boost clock (which runs while it
        runs). Not its priority within the lane (:attr:`ModelCommand.priority`): that only
        orders the lane's own queue."""
        config = self.lanes[cmd.lane].config
        if config.boost is None:
            return config.priority
        age = exact(now) - cmd.pending_since
        passed = sum(1 for point in config.boost.at if self._compare(age, exact(point)))
        return max(0, config.priority - passed)

    def requeued_priority(self, cmd: ModelCommand, now: float | Fraction) -> int:
        """The effective priority running ``cmd``'s lane would have with ``cmd`` back in
        its queue: boosted by the older of ``cmd``'s clock and the lane's longest-waiting
        command's."""
        oldest = self.lanes[cmd.lane].longest_waiting
        if oldest is None or cmd.pending_since <= oldest.pending_since:
            return self.command_priority(cmd, now)
        return self.command_priority(oldest, now)

    def _urgency(self, lane: str, now: float | Fraction) -> tuple[int, int]:
        head = self.lanes[lane].head
        assert head is not None
        return (self.effective_priority(lane, now), head.order)

    def next_start(self, now: float | Fraction) -> CommandId | None:
        """The command that must start next at ``now`` (None: nothing may start).

        The startable lane head (by command priority) with the smallest effective priority;
        ties go to the earlier submission.
        """
        lanes = self.startable(now)
        if not lanes:
            return None
        best = min(lanes, key=lambda name: self._urgency(name, now))
        head = self.lanes[best].head
        assert head is not None
        return head.id

    # -- rule 3: which running command is preempted? --------------------------------------------

    def blocked_by_cap(self, now: float | Fraction) -> list[str]:
        """Lanes whose head could start but for the global cap, most urgent first."""
        blocked = [n for n in self.lanes if self.lane_ready(n, now) and not self.cap_allows(n)]
        return sorted(blocked, key=lambda name: self._urgency(name, now))

    def preemptions(self, now: float | Fraction) -> list[CommandId]:
        """The running commands to preempt at ``now``, one per uncovered blocked head.

        Each lane head blocked only by the cap needs one slot. Preemptions already under way
        cover the most urgent of them; each other one takes the most recently started running
        command of a preemptible lane less urgent than it (by that lane's boosted priority
        with the victim back in its queue, :meth:`requeued_priority`: a victim that would win
        the slot back at once is none), other than its own, that keeps that lane at or above
        its reservation, if one freed slot would let it start.
        """
        if self.cap is None:
            return []
        in_flight = sum(1 for c in self._running() if c.preempting)
        chosen: list[ModelCommand] = []
        for lane in self.blocked_by_cap(now)[in_flight:]:
            victim = self._victim(lane, self.effective_priority(lane, now), chosen, now)
            if victim is not None:
                chosen.append(victim)
        return [cmd.id for cmd in chosen]

    def _victim(
        self, waiting: str, priority: int, chosen: list[ModelCommand], now: float | Fraction
    ) -> ModelCommand | None:
        if not self._fits_with_one_more_slot(waiting):
            return None
        candidates = [
            cmd
            for cmd in self._running()
            if not cmd.preempting
            and cmd not in chosen
            and cmd.lane != waiting
            and self.lanes[cmd.lane].config.preemptible
            and self.requeued_priority(cmd, now) > priority
            and self._keeps_reservation(cmd.lane, chosen)
        ]
        return max(candidates, key=lambda cmd: cmd.start_number, default=None)

    def _keeps_reservation(self, lane: str, chosen: list[ModelCommand]) -> bool:
        """After giving one more slot back, ``lane`` would still fill its reservation."""
        state = self.lanes[lane]
        leaving = sum(1 for cmd in state.running if cmd.preempting or cmd in chosen)
        return state.active - leaving - 1 >= state.config.min_concurrency

    def _fits_with_one_more_slot(self, lane: str) -> bool:
        assert self.cap is not None
        state = self.lanes[lane]
        if state.active < state.config.min_concurrency:
            return True
        others = sum(self.unmet(name) for name in self.lanes if name != lane)
        return self.active_total - 1 + others < self.cap

    def _running(self) -> list[ModelCommand]:
        return [cmd for lane in self.lanes.values() for cmd in lane.running]

    # -- time ---------------------------------------------------------------------------------

    def next_change(self, now: float | Fraction) -> Fraction | None:
        """The first time after ``now`` at which an answer could change with no state change.

        That is: a delayed command falls due, a token arrives, a window start expires, or a
        lane's longest-waiting command passes a boost point.
        """
        t = exact(now)
        times = [cmd.due for cmd in self.delayed if cmd.due > t]
        for state in self.lanes.values():
            times.extend(_limit_changes(state.config.rate_limit, state.starts, t))
            boost = state.config.boost
            oldest = state.longest_waiting
            if oldest is not None and boost is not None:
                since = oldest.pending_since
                times.extend(since + exact(p) for p in boost.at if since + exact(p) > t)
        return min(times, default=None)


def _float_sum(a: Fraction, b: Fraction) -> Fraction:
    """``a + b`` as the float arithmetic of the shell computes it."""
    return Fraction(float(a) + float(b))


def _seconds(value: Fraction | None) -> str:
    return "none" if value is None else f"t={float(value)}"


def _by_priority(cmd: ModelCommand) -> int:
    return cmd.priority


def _by_age(cmd: ModelCommand) -> Fraction:
    return cmd.pending_since


def _due_key(cmd: ModelCommand) -> tuple[Fraction, int]:
    return (cmd.due, cmd.order)


def _tokens(limit: RateLimit, starts: list[Fraction], now: Fraction) -> Fraction:
    """Replay a token bucket: full at first, ``rate`` per second, one per start."""
    rate, burst = exact(limit.rate), Fraction(limit.burst)
    tokens = burst
    last: Fraction | None = None
    for at in starts:
        if last is not None:
            tokens = min(burst, tokens + (at - last) * rate)
        tokens -= 1
        last = at
    if last is not None:
        tokens = min(burst, tokens + (now - last) * rate)
    return tokens


def _limit_changes(
    limit: RateLimit | None, starts: list[Fraction], now: Fraction
) -> list[Fraction]:
    if limit is None or not starts:
        return []
    if limit.kind == "sliding_window":
        window = exact(limit.window)
        return [s + window for s in starts if s + window > now]
    tokens = _tokens(limit, starts, now)
    if tokens >= 1:
        return []
    return [now + (1 - tokens) / exact(limit.rate)]


def boost_levels(boost: PriorityBoost | None, age: float) -> int:
    """How many boost points a command pending for ``age`` seconds has passed."""
    if boost is None:
        return 0
    return sum(1 for point in boost.at if exact(point) <= exact(age))
