"""A Hypothesis state machine that drives the real scheduling policy against the model.

:class:`PolicyStateMachine` plays the async shell: it submits, schedules, completes, fails and
retries, preempts, cancels, pauses and lets time pass, exactly through the calls the shell
makes on ``lanes._policy.Policy``, and after every step checks the policy against
:class:`~lanes.testing.ReferenceModel` and the rules of docs/architecture.md.

Subclass it to check your own lanes::

    class MyLanes(PolicyStateMachine):
        lane_configs = st.just(MY_LANES)

        @classmethod
        def max_concurrency(cls, configs):
            return st.just(4)

    TestMyLanes = MyLanes.TestCase
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Sequence
from typing import ClassVar

from hypothesis import strategies as st
from hypothesis import target
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from .._config import LaneConfig
from .._policy import Job, JobState, Policy
from . import _strategies as strategies
from ._checker import rate_limit_violation
from ._model import ReferenceModel

__all__ = ["PolicyStateMachine"]

_MODEL_STATE = {
    JobState.QUEUED: "queued",
    JobState.DELAYED: "delayed",
    JobState.ACTIVE: "running",
    JobState.GONE: "gone",
}
_MAX_WAKEUPS = 10_000
_ROUNDING = 1e-5  # the policy may wake up to 1 µs late (its minimum wait) on rounding

_picks = st.integers(min_value=0, max_value=63)
_lanes = st.integers(min_value=0, max_value=7)
_delays = st.sampled_from([0.0, 0.0, 0.0, 1 / 16, 0.25, 1.0, 2.5])
# Mostly exact binary fractions; 0.1 and 0.3 bring float rounding in (the model notices
# when a decision hinges on it and accepts either answer then).
_steps = st.sampled_from([1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 5.0, 0.1, 0.3])
_decides = st.sampled_from([True, True, True, False])
_endings = st.sampled_from(["completed", "completed", "fail", "cancelled"])


def _pick(items: Sequence[int], index: int) -> int:
    return items[index % len(items)]


class PolicyStateMachine(RuleBasedStateMachine):
    """Model-check ``lanes._policy.Policy`` (the rules 1-4 of docs/architecture.md).

    Class attributes and hooks a subclass may override:

    * ``lane_configs``: a strategy of lane-config tuples (default
      :func:`lanes.testing.lane_configs`).
    * ``max_concurrency(configs)``: a classmethod returning a strategy of global caps for
      those configs (default :func:`lanes.testing.max_concurrencies`).
    * ``max_commands``: how many commands one run may submit (default 30).

    Commands are plain integers; the machine keeps the attempt count of each, the way the
    async shell does (a start is an attempt, a preemption gives it back).
    """

    lane_configs: ClassVar[st.SearchStrategy[tuple[LaneConfig, ...]]] = strategies.lane_configs(
        min_lanes=2
    )
    max_commands: ClassVar[int] = 30

    @classmethod
    def max_concurrency(cls, configs: Sequence[LaneConfig]) -> st.SearchStrategy[int | None]:
        """The strategy of global caps to use with ``configs``."""
        return strategies.max_concurrencies(configs)

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.configs: dict[str, LaneConfig] = {}
        self.names: list[str] = []
        self.policy = Policy((), None)
        self.model = ReferenceModel((), None)
        self.jobs: list[Job] = []  # command i is self.jobs[i]
        self.index: dict[Job, int] = {}
        self.attempts: list[int] = []
        self.outcome: list[str | None] = []  # completed / failed / cancelled, once
        self.ready = False
        self.preemptions_seen = 0
        self.requeued_at: dict[int, float] = {}  # when a preemption last requeued a command

    # -- setup -----------------------------------------------------------------------------------

    @initialize(data=st.data())
    def open_system(self, data: st.DataObject) -> None:
        """Draw the lanes and the cap, and build the policy and the model."""
        configs = data.draw(self.lane_configs, label="lane_configs")
        cap = data.draw(self.max_concurrency(configs), label="max_concurrency")
        self.configs = {c.name: c for c in configs}
        self.names = list(self.configs)
        self.policy = Policy(configs, cap)
        self.model = ReferenceModel(configs, cap)
        self.ready = True

    # -- helpers ---------------------------------------------------------------------------------

    def _lane(self, index: int) -> str:
        return self.names[index % len(self.names)]

    def _in_state(self, *states: str) -> list[int]:
        return [i for i, job in enumerate(self.jobs) if _MODEL_STATE.get(job.state) in states]

    def _running(self) -> list[int]:
        return self._in_state("running")

    def _preempting(self) -> list[int]:
        return [i for i in self._running() if self.model.commands[i].preempting]

    def _pending(self) -> list[int]:
        return self._in_state("queued", "delayed")

    def _end(self, command: int, outcome: str) -> None:
        assert self.outcome[command] is None, (
            f"rule 4: command {command} ended twice ({self.outcome[command]}, then {outcome})"
        )
        self.outcome[command] = outcome

    def _describe(self) -> str:
        lines = [f"t={self.now} cap={self.policy.cap}"]
        for name, lane in self.model.lanes.items():
            c = lane.config
            lines.append(
                f"  {name}: prio={c.priority} max={c.max_concurrency} min={c.min_concurrency}"
                f" preemptible={c.preemptible} paused={lane.paused}"
                f" queue={[cmd.id for cmd in lane.queue]}"
                f" running={[cmd.id for cmd in lane.running]}"
                f" rate={c.rate_limit} boost={c.boost}"
            )
        return "\n".join(lines)

    # -- the shell's decision round ------------------------------------------------------------

    def _decide(self) -> None:
        """One decision round at ``now``, checked start by start against the model."""
        model, now = self.model, self.now
        model.advance(now)
        decision = self.policy.schedule(now)
        for job in decision.start:
            self._check_started(job)
        model.fuzzy = False
        left = model.next_start(now)
        assert left is None or model.fuzzy, (
            f"rule 2: command {left} could start at t={now} but the policy left it pending\n"
            f"{self._describe()}"
        )
        started = {self.index[job] for job in decision.start}
        self._check_preemptions([self.index[job] for job in decision.preempt], started)
        wake = self._next_wakeup()
        self._check_no_missed_wakeup(math.inf if wake is None else wake)

    def _check_started(self, job: Job) -> None:
        """The policy started ``job`` now: the model must agree (rules 1, 2 and 4)."""
        model, now = self.model, self.now
        command = self.index[job]
        model.fuzzy = False
        expected = model.next_start(now)
        if not model.fuzzy and command != expected:
            forbidden = model.why_not(job.lane, now)
            rule = "rule 1" if forbidden else "rule 2"
            because = f": {forbidden}" if forbidden else ""
            raise AssertionError(
                f"{rule}: the policy started command {command} (lane {job.lane!r}) but "
                f"the model expects {expected}{because}\n{self._describe()}"
            )
        else:
            self._check_start_allowed(command)
        model.start(command, now)
        self.attempts[command] += 1
        retry = self.configs[job.lane].retry
        assert self.attempts[command] <= retry.max_retries + 1, (
            f"rule 4: command {command} starts attempt {self.attempts[command]} "
            f"of at most {retry.max_retries + 1}"
        )

    def _next_wakeup(self) -> float | None:
        """The policy's next wake-up; it must lie in the future."""
        wake = self.policy.next_wakeup(self.now)
        if wake is None or wake > self.now:
            return wake
        raise AssertionError(
            f"next_wakeup({self.now!r}) returned {wake!r}: not in the future, so the shell "
            f"would wake again at once, forever\n{self._describe()}"
        )

    def _check_start_allowed(self, command: int) -> None:
        """Rule 1 without the time-dependent parts (used when rounding blurs those)."""
        cmd = self.model.commands[command]
        lane = self.model.lanes[cmd.lane]
        assert lane.queue and lane.queue[0] is cmd, f"FIFO: command {command} is not its head"
        assert not lane.paused, f"rule 1: command {command} started in a paused lane"
        assert lane.active < lane.config.max_concurrency, f"rule 1: lane {cmd.lane} is full"
        assert self.model.cap_allows(cmd.lane), f"rule 1: the global cap forbids {command}"

    def _check_preemptions(self, chosen: list[int], started: set[int]) -> None:
        model = self.model
        model.fuzzy = False
        expected = model.preemptions(self.now)
        if not model.fuzzy:
            assert set(chosen) == set(expected), (
                f"rule 3: the policy preempts {chosen}, the model expects {expected}\n"
                f"{self._describe()}"
            )
        self.preemptions_seen += len(chosen)
        for command in chosen:
            assert not model.commands[command].preempting, f"rule 3: {command} preempted twice"
            assert command not in started or self.requeued_at.get(command) != self.now, (
                f"rule 3: command {command} was preempted, requeued and started again at "
                f"t={self.now}, and is preempted again: a livelock at one instant\n"
                f"{self._describe()}"
            )
            model.mark_preempting(command)

    def _check_no_missed_wakeup(self, until: float) -> None:
        """Between now and ``until`` (the policy's next wake-up), nothing may become due.

        Times within rounding distance of ``until`` count as ``until``.
        """
        at = self.model.next_change(self.now)
        while at is not None and at < until - _ROUNDING:
            probe = copy.deepcopy(self.model)
            probe.advance(at)
            probe.fuzzy = False
            start, preempt = probe.next_start(at), probe.preemptions(at)
            assert probe.fuzzy or (start is None and not preempt), (
                f"next_wakeup: at t={float(at)} command {start} could start (preempt: "
                f"{preempt}), but the policy asked to wake only at {until}\n{self._describe()}"
            )
            at = probe.next_change(at)

    # -- rules -----------------------------------------------------------------------------------
    # Each state change is followed by a decision round, as in the shell, unless ``decide``
    # is False: then the next rule's change joins the same batch.

    @precondition(lambda self: len(self.jobs) < self.max_commands)
    @rule(lane=_lanes, delay=_delays, count=st.integers(1, 3), decide=_decides)
    def submit(self, lane: int, delay: float, count: int, decide: bool) -> None:
        """``submit(lane, ..., delay=delay)``: the policy sees the command at once (rule 2)."""
        name = self._lane(lane)
        for _ in range(count):
            job = Job(name)
            command = len(self.jobs)
            self.jobs.append(job)
            self.index[job] = command
            self.attempts.append(0)
            self.outcome.append(None)
            ready_at = self.now + delay if delay else None
            self.model.advance(self.now)
            started = self.policy.add(job, self.now, ready_at=ready_at)
            self.model.submit(command, name, self.now, ready_at)
            if started:  # the fast path: a local lane with room starts it at once
                self._check_started(job)
        self._then(decide)

    def _then(self, decide: bool) -> None:
        if decide:
            self._decide()

    @precondition(lambda self: bool(self._running()))
    @rule(pick=_picks, how=_endings, decide=_decides)
    def attempt_ends(self, pick: int, how: str, decide: bool) -> None:
        """A running attempt returns, raises (or times out), or is cancelled.

        A failed attempt is retried after its backoff while retries remain, else the
        command fails for good (it is dead-lettered). A command being preempted may end
        this way too, if it ended before the preemption reached it.
        """
        command = _pick(self._running(), pick)
        if how == "fail":
            self._fail(command)
        else:
            self.model.advance(self.now)
            following = self.policy.finish_next(self.jobs[command], self.now)
            self.model.finish(command)
            self._end(command, how)
            if following is not None:  # the fast path: its lane's next command starts
                self._check_started(following)
        self._then(decide)

    def _fail(self, command: int) -> None:
        job = self.jobs[command]
        retry = self.configs[job.lane].retry
        attempts = self.attempts[command]
        if attempts > retry.max_retries:
            self.policy.finish(job)
            self.model.finish(command)
            self._end(command, "failed")
            return
        ready_at = self.now + retry.delay(attempts)
        self.policy.retry(job, self.now, ready_at)
        self.model.retry(command, self.now, ready_at)

    @precondition(lambda self: bool(self._preempting()))
    @rule(pick=_picks, decide=_decides)
    def preempted(self, pick: int, decide: bool) -> None:
        """A preempted attempt exits: its slot comes back, it is not an attempt."""
        command = _pick(self._preempting(), pick)
        self.policy.requeue_front(self.jobs[command], self.now)
        self.model.requeue_front(command)
        self.attempts[command] -= 1
        self.requeued_at[command] = self.now
        self._then(decide)

    @precondition(lambda self: bool(self.jobs))
    @rule(pick=_picks, decide=_decides)
    def cancel(self, pick: int, decide: bool) -> None:
        """``handle.cancel()``: a pending command is withdrawn, a running one ends."""
        command = pick % len(self.jobs)
        job = self.jobs[command]
        if job.state is JobState.ACTIVE:
            assert not self.policy.remove(job), "remove() withdrew a running command"
            self.policy.finish(job)  # its task saw the cancellation and exited
            self.model.finish(command)
            self._end(command, "cancelled")
        else:
            removed = self.policy.remove(job)
            assert removed == self.model.cancel(command), (
                f"remove({command}) returned {removed} for a "
                f"{self.model.commands[command].state} command"
            )
            if removed:
                self._end(command, "cancelled")
        self._then(decide)

    @precondition(lambda self: self.ready)
    @rule(lane=_lanes, action=st.sampled_from(["pause", "pause", "cancel"]), decide=_decides)
    def lane_control(self, lane: int, action: str, decide: bool) -> None:
        """``pause(lane)`` (or ``resume`` when paused), or ``cancel_lane``'s pending part."""
        name = self._lane(lane)
        if action == "cancel":
            self._cancel_lane(name)
        elif self.model.lanes[name].paused:
            self.policy.resume(name)
            self.model.resume(name)
        else:
            self.policy.pause(name)
            self.model.pause(name)
        self._then(decide)

    def _cancel_lane(self, name: str) -> None:
        """Every pending command of the lane is withdrawn, in order."""
        removed = [self.index[job] for job in self.policy.remove_lane(name)]
        expected = self.model.cancel_lane(name)
        assert removed == expected, f"remove_lane({name!r}) gave {removed}, expected {expected}"
        for command in removed:
            self._end(command, "cancelled")

    @precondition(lambda self: self.ready)
    @rule(step=_steps)
    def time_passes(self, step: float) -> None:
        """Time passes; the shell decides at once, then at each wake-up the policy asks for."""
        target = self.now + step
        self._decide()
        for _ in range(_MAX_WAKEUPS):
            wake = self._next_wakeup()
            self._check_no_missed_wakeup(math.inf if wake is None else min(wake, target))
            if wake is None or wake > target:
                break
            self.now = wake
            self._decide()
        else:
            raise AssertionError(f"next_wakeup keeps waking before t={target}")
        self.now = target
        self._decide()

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def counts_match_the_model(self) -> None:
        """Pending and active counts per lane and in total agree with the model."""
        for name, lane in self.policy.lanes.items():
            assert lane.pending == self.model.pending(name), f"pending of {name}"
            assert lane.active == self.model.lanes[name].active, f"active of {name}"
        assert self.policy.active_total == self.model.active_total

    @invariant()
    def bounds_hold(self) -> None:
        """Rule 1: per-lane max, the global cap and the reservations are never exceeded."""
        for name, lane in self.policy.lanes.items():
            assert lane.active <= self.configs[name].max_concurrency, f"rule 1: {name} over max"
        cap = self.policy.cap
        if cap is not None:
            assert self.policy.active_total <= cap, "rule 1: global cap exceeded"
            claimed = sum(
                max(lane.active, self.configs[name].min_concurrency)
                for name, lane in self.policy.lanes.items()
            )
            assert claimed <= cap, (
                f"rule 1: running plus unmet reservations is {claimed} > cap {cap}"
            )

    @invariant()
    def rate_limits_hold(self) -> None:
        """Rule 1: every lane's starts fit its rate limit."""
        for name, lane in self.model.lanes.items():
            broken = rate_limit_violation(lane.config.rate_limit, [float(t) for t in lane.starts])
            assert broken is None, f"rule 1: lane {name} starts break its rate limit: {broken}"

    @invariant()
    def every_command_accounted_for(self) -> None:
        """Rule 4: each command is pending, running, or ended exactly once; none is lost."""
        for command, job in enumerate(self.jobs):
            state = _MODEL_STATE.get(job.state)
            assert state == self.model.commands[command].state, (
                f"command {command}: policy says {job.state.name}, model says "
                f"{self.model.commands[command].state}"
            )
            assert (state == "gone") == (self.outcome[command] is not None), (
                f"rule 4: command {command} is {state} with outcome {self.outcome[command]}"
            )
            retry = self.configs[job.lane].retry
            assert 0 <= self.attempts[command] <= retry.max_retries + 1

    @invariant()
    def effective_priorities_match(self) -> None:
        """Boosting: each lane's effective priority agrees with the model."""
        for name in self.names:
            self.model.fuzzy = False
            expected = self.model.effective_priority(name, self.now)
            got = self.policy.effective_priority(name, self.now)
            assert got == expected or self.model.fuzzy, (
                f"effective priority of {name}: policy {got}, model {expected}"
            )

    def teardown(self) -> None:
        """Drain: resume every lane and run everything to the end.

        Nothing may wait for a wake-up the policy does not ask for; what can never start
        (say, a lane left no room by the reservations of others) is cancelled at the end.
        """
        if not self.ready or sys.exc_info()[0] is not None:
            return  # a step failed: report that, not what draining would make of it
        target(float(self.preemptions_seen), label="preemptions")
        for name in self.names:
            self.policy.resume(name)
            self.model.resume(name)
        for _ in range(_MAX_WAKEUPS):
            self._decide()
            while self._running():
                self.attempt_ends(0, "completed", decide=False)
            if not self._pending():
                break
            if self.model.next_start(self.now) is not None:
                continue
            wake = self._next_wakeup()
            self._check_no_missed_wakeup(math.inf if wake is None else wake)
            if wake is None:  # blocked for good (say, by reservations): cancel the rest
                for name in self.names:
                    self._cancel_lane(name)
                break
            self.now = wake
        assert all(outcome is not None for outcome in self.outcome), "a command was lost"
