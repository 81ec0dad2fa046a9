"""A Hypothesis state machine that drives the real scheduling policy against the model.

:class:`PolicyStateMachine` plays the async shell: it submits, schedules, completes, fails
(raised, :class:`~lanes.Permanent`, timed out at the deadline) and retries through the real
outcome code (``lanes._outcome.next_step``), preempts, cancels, reprioritizes (a waiting
command, and one that is not, which must be refused), pauses and lets time pass,
exactly through the calls the shell makes on ``lanes._policy.Policy``, and after every step
checks the policy and the outcome code against :class:`~lanes.testing.ReferenceModel`
and the rules of docs/architecture.md.

Subclass it to check your own lanes::

    class MyLanes(PolicyStateMachine):
        lane_configs = st.just(MY_LANES)

        @classmethod
        def max_concurrency(cls, configs):
            return st.just(4)

    TestMyLanes = MyLanes.TestCase

Your own checks and rules use the public actions (:meth:`~PolicyStateMachine.submit`,
:meth:`~PolicyStateMachine.complete`, :meth:`~PolicyStateMachine.fail`,
:meth:`~PolicyStateMachine.advance`, ...) and the snapshot :meth:`~PolicyStateMachine.view`;
:meth:`~PolicyStateMachine.check_decision` is called after every decision. A failing run
carries a replayable script of its schedule and the last decisions (exception notes).
"""

from __future__ import annotations

import collections
import functools
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from typing import Any, ClassVar, TypeVar, cast

import attrs
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context, event
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from .._config import LaneConfig
from .._errors import Permanent
from .._outcome import Ended, Next, next_step
from .._policy import Job, JobState, Policy
from . import _strategies as strategies
from ._checker import rate_limit_violation
from ._model import ModelCommand, ModelViolation, ReferenceModel, exact
from ._view import CommandView, LaneView, SchedulerView, TraceEntry, source

__all__ = ["PolicyStateMachine"]

_MODEL_STATE = {
    JobState.QUEUED: "queued",
    JobState.DELAYED: "delayed",
    JobState.ACTIVE: "running",
    JobState.GONE: "gone",
}
_MAX_WAKEUPS = 10_000
_ROUNDING = 1e-5  # the policy may wake up to 1 µs late (its minimum wait) on rounding
_TRACE = 200  # decisions kept for the failure report
_REPORTED = 12  # of which the report prints the last ones

_picks = st.integers(min_value=0, max_value=63)
_lanes = st.integers(min_value=0, max_value=7)
_delays = st.sampled_from([0.0, 0.0, 0.0, 1 / 16, 0.25, 1.0, 2.5])
# Mostly exact binary fractions; 0.1 and 0.3 bring float rounding in (the model notices
# when a decision hinges on it and accepts either answer then).
_steps = st.sampled_from([1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 5.0, 0.1, 0.3])
_decides = st.sampled_from([True, True, True, False])
_endings = st.sampled_from(["completed", "completed", "fail", "fail", "permanent", "cancelled"])
_draws = st.sampled_from([0.0, 0.25, 0.5, 0.75])  # jitter draws (exact with jitter 1/2)
# Command priorities within a lane: mostly the default, few values so that equals (FIFO
# among them) are common.
_priorities = st.sampled_from([0, 0, 0, 1, 1, -1, 2])
_new_priorities = st.sampled_from([0, 1, -1, 2])
_waiting_first = st.sampled_from([True, True, True, False])
_begin_contended = st.sampled_from([True, True, True, False])

F = TypeVar("F", bound=Callable[..., Any])


@st.composite
def _contended(draw: st.DrawFn, lanes: tuple[LaneConfig, ...]) -> tuple[LaneConfig, ...]:
    """``lanes`` with one lane made more urgent than another, preemptible one (that can run
    above its reservation): a system where rule 3 can apply."""
    configs = list(lanes)
    urgent, victim = draw(st.permutations(range(len(configs))))[:2]
    high = draw(st.integers(0, 4))
    low = draw(st.integers(high + 1, 5))
    configs[urgent] = attrs.evolve(configs[urgent], priority=high)
    slow = configs[victim]
    configs[victim] = attrs.evolve(
        slow,
        priority=low,
        preemptible=True,
        max_concurrency=max(slow.max_concurrency, slow.min_concurrency + 1),
    )
    return tuple(configs)


_any_lanes = strategies.lane_configs(min_lanes=2)
# Half the systems drawn are contended: with independent draws alone, fewer than half of the
# systems had a lane that could preempt another at all.
_machine_lanes = st.one_of(_any_lanes, _any_lanes.flatmap(_contended))


class WorkloadFailure(Exception):
    """The error a failing attempt of the state machine raises (wrapped in Permanent or not)."""


def _pick(items: Sequence[int], index: int) -> int:
    return items[index % len(items)]


def _action(method: F) -> F:
    """A public action: recorded in the replay script when called from outside the machine."""

    @functools.wraps(method)
    def recorded(self: PolicyStateMachine, *args: Any, **kwargs: Any) -> Any:
        if self._depth == 0:
            self._script.append(_call_source(method.__name__, args, kwargs, self.now))
        self._depth += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            self._depth -= 1

    return recorded  # type: ignore[return-value]


def _call_source(name: str, args: Sequence[Any], kwargs: dict[str, Any], now: float) -> str:
    parts = [repr(a) for a in args]
    defaults = {"decide": True, "delay": 0.0, "priority": 0}
    parts += [f"{k}={v!r}" for k, v in kwargs.items() if k not in defaults or v != defaults[k]]
    return f"m.{name}({', '.join(parts)})  # t={now:g}"


class _FastTestCase:
    """``Machine.TestCase`` with the explain phase turned off (it replays a failing run once
    per step to explain it, which costs minutes on a state machine)."""

    def __get__(self, obj: object, owner: type[RuleBasedStateMachine]) -> Any:
        case: Any = owner._to_test_case()
        if "_lanes_fast" not in case.__dict__:
            phases = tuple(p for p in case.settings.phases if p is not Phase.explain)
            case.settings = settings(case.settings, phases=phases)
            case._lanes_fast = True
        return case


class PolicyStateMachine(RuleBasedStateMachine):
    """Model-check ``lanes._policy.Policy`` and the outcome rules (docs/architecture.md, 1-4).

    Class attributes and hooks a subclass may override:

    * ``lane_configs``: a strategy of lane-config tuples (default: half
      :func:`lanes.testing.lane_configs` with at least two lanes, half the same made
      contended: one lane more urgent than another, preemptible one).
    * ``max_concurrency(configs)``: a classmethod returning a strategy of global caps for
      those configs (default :func:`lanes.testing.max_concurrencies`).
    * ``max_commands``: how many commands one run may submit (default 30).
    * :meth:`check_decision`: your check of every decision.
    * your own ``@rule()`` methods calling the public actions, and ``@invariant()`` methods
      reading :meth:`view`.

    Commands are integers counted from 0 in submission order; lanes are named.
    """

    TestCase = _FastTestCase()

    lane_configs: ClassVar[st.SearchStrategy[tuple[LaneConfig, ...]]] = _machine_lanes
    max_commands: ClassVar[int] = 30
    _coverage: ClassVar[dict[type, collections.Counter[str]]] = collections.defaultdict(
        collections.Counter
    )

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
        self.attempts: list[int] = []  # as the shell counts them (next_step is told these)
        self.outcome: list[str | None] = []  # completed / dead letter / cancelled, once
        self.ready = False
        self.requeued_at: dict[int, float] = {}  # when a preemption last requeued a command
        self.trace: collections.deque[TraceEntry] = collections.deque(maxlen=_TRACE)
        self.seen: set[str] = set()  # the paths this run took (see coverage())
        self._script: list[str] = []
        self._depth = 0
        self._cap: int | None = None
        self._checks_decisions = type(self).check_decision is not PolicyStateMachine.check_decision

    # -- running it --------------------------------------------------------------------------

    @classmethod
    def coverage(cls) -> collections.Counter[str]:
        """How many runs of this class took each path since the last :meth:`run`.

        Keys: ``runs``, ``preemption``, ``retry``, ``timeout``, ``permanent``,
        ``dead letter``, ``cancelled while pending``, ``boosted`` (a command started
        with a boosted priority), ``aged past a boost point``.
        """
        return cls._coverage[cls]

    @classmethod
    def run(
        cls,
        settings: settings | None = None,
        *,
        min_coverage: dict[str, int] | None = None,
    ) -> collections.Counter[str]:
        """Run the machine as a test (``settings`` default: ``cls.TestCase.settings``).

        Args:
            settings: Hypothesis settings for the run.
            min_coverage: paths (keys of :meth:`coverage`) and the fewest runs that must
                take each; fewer fail the run with a clear message (a strategy that no
                longer builds the situations it should is a weakened test).

        Returns:
            The coverage counts of this run.
        """
        cls._coverage[cls] = collections.Counter()
        run_state_machine_as_test(cls, settings=settings or cls.TestCase.settings)
        counts = cls.coverage()
        short = {k: (counts[k], n) for k, n in (min_coverage or {}).items() if counts[k] < n}
        if short:
            detail = ", ".join(f"{k!r} in {got} (minimum {n})" for k, (got, n) in short.items())
            msg = f"{cls.__name__}: too few of {counts['runs']} runs took these paths: {detail}"
            raise AssertionError(msg)
        return counts

    @classmethod
    def replay(
        cls, lane_configs: Sequence[LaneConfig], max_concurrency: int | None = None
    ) -> PolicyStateMachine:
        """A machine on these lanes, to drive by hand (the failure report's script does).

        Every action checks the policy against the model as in a Hypothesis run; call
        :meth:`check` to run the invariants and :meth:`drain` to end.
        """
        machine = cls()
        machine._open(tuple(lane_configs), max_concurrency)
        return machine

    # -- setup -----------------------------------------------------------------------------------

    @initialize(data=st.data())
    def open_system(self, data: st.DataObject) -> None:
        """Draw the lanes and the cap, build the policy and the model, and submit a first
        batch of commands; half the runs that can preempt then begin in the situation
        preemption is for (see :meth:`fill_the_cap_then_send_urgent_work`).

        Hypothesis switches rules off at random per run (swarm testing): without this
        start, the runs that lost ``submit_commands`` or the fill rule never got far (a
        quarter of the runs submitted nothing, and half never filled the cap).
        """
        configs = data.draw(self.lane_configs, label="lane_configs")
        cap = data.draw(self.max_concurrency(configs), label="max_concurrency")
        self._open(configs, cap)
        first = data.draw(st.lists(st.tuples(_lanes, _delays, _priorities), max_size=4))
        for lane, delay, priority in first:
            self.submit(self._lane(lane), delay=delay, priority=priority)
        contended = bool(self._preemption_fronts())
        if contended and data.draw(_begin_contended, label="begin contended"):
            self.fill_the_cap_then_send_urgent_work(data.draw(_lanes, label="urgent"))

    def _open(self, configs: tuple[LaneConfig, ...], cap: int | None) -> None:
        self.configs = {c.name: c for c in configs}
        self.names = list(self.configs)
        self._cap = cap
        self.policy = Policy(configs, cap)
        self.model = ReferenceModel(configs, cap)
        self.ready = True

    # -- the public view -------------------------------------------------------------------------

    def view(self) -> SchedulerView:
        """A snapshot of the scheduling state (the model's, which the policy agrees with)."""
        model = self.model
        lanes = {}
        for name, lane in model.lanes.items():
            delayed = sorted((c for c in model.delayed if c.lane == name), key=lambda c: c.due)
            lanes[name] = LaneView(
                name,
                lane.config,
                _ids(lane.queue),
                _ids(delayed),
                _ids(lane.running),
                _ids(c for c in lane.running if c.preempting),
                lane.paused,
            )
        commands = {
            i: CommandView(i, cmd.lane, cmd.state, cmd.attempts, cmd.outcome, cmd.priority)
            for i, cmd in enumerate(model.commands.values())
        }
        letters = tuple(cast(int, c) for c in model.dead_letters)
        return SchedulerView(self.now, self._cap, lanes, commands, letters)

    def check_decision(self, view: SchedulerView, entry: TraceEntry) -> None:
        """Your check of each decision (default: none), called after every decision round
        and every fast-path start with the state after it. Raise ``AssertionError`` to fail.

        Checks that must hold only once the scheduler has decided belong here rather than
        in an ``@invariant()``: invariants also run between a change and its decision round.
        """

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
                f" queue={[_with_priority(cmd) for cmd in lane.queue]}"
                f" running={[cmd.id for cmd in lane.running]}"
                f" rate={c.rate_limit} boost={c.boost} retry={c.retry} timeout={c.timeout}"
            )
        return "\n".join(lines)

    def _record(self, kind: str, started: Sequence[int], preempted: Sequence[int]) -> None:
        queues = tuple((name, _ids(lane.queue)) for name, lane in self.model.lanes.items())
        entry = TraceEntry(
            self.now,
            tuple((c, self.jobs[c].lane) for c in started),
            tuple((c, self.jobs[c].lane) for c in preempted),
            queues,
            kind,
        )
        self.trace.append(entry)
        if self._checks_decisions:
            self.check_decision(self.view(), entry)

    # -- the failure report ------------------------------------------------------------------------

    def replay_script(self) -> str:
        """This run so far as a test you can paste: the lanes, then every action and its time."""
        cls = type(self)
        configs = ",\n".join(f"            {source(c)}" for c in self.configs.values())
        module = "lanes.testing" if cls.__module__.startswith("lanes.testing.") else cls.__module__
        lines = [
            "from lanes import LaneConfig, PriorityBoost, RateLimit, RetryPolicy",
            f"from {module} import {cls.__qualname__}",
            "",
            "",
            "def test_replay() -> None:",
            f"    m = {cls.__qualname__}.replay(",
            f"        [\n{configs},\n        ],",
            f"        max_concurrency={self._cap!r},",
            "    )",
            *(f"    {line}" for line in self._script),
        ]
        if not self._script or not self._script[-1].startswith("m.drain("):
            lines.append("    m.drain()")
        return "\n".join(lines)

    def report(self) -> str:
        """The replay script and the last decisions (what a failing run prints)."""
        trace = "\n".join(f"  {entry}" for entry in list(self.trace)[-_REPORTED:])
        return (
            f"Replay this schedule (paste it into a test):\n\n{self.replay_script()}\n\n"
            f"The last decisions (time, started, preempted, queues after it):\n{trace}"
        )

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
        started = [self.index[job] for job in decision.start]
        preempted = [self.index[job] for job in decision.preempt]
        self._check_preemptions(preempted, set(started))
        wake = self._next_wakeup()
        self._check_no_missed_wakeup(math.inf if wake is None else wake)
        self._record("round", started, preempted)

    def _check_started(self, job: Job) -> None:
        """The policy started ``job`` now: the model must agree (rules 1, 2 and 4)."""
        model, now = self.model, self.now
        command = self.index[job]
        cmd = model.commands[command]
        if cmd.state == "delayed":
            raise ModelViolation(
                f"retry backoff: command {command} (lane {job.lane!r}) started at t={now}, "
                f"before its delay ends at t={float(cmd.due)}\n{self._describe()}"
            )
        model.fuzzy = False
        # Without a global cap lanes never compete for a slot: a start anywhere takes
        # nothing from another lane, so only its own lane's rules apply (FIFO, rule 1).
        expected = model.next_start(now) if self._cap is not None else command
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
            assert model.has_token(job.lane, now) or model.fuzzy, (
                f"rule 1: command {command} started without a rate-limit token"
            )
        lane = model.lanes[job.lane]
        if lane.joined and lane.joined[0] is not cmd and lane.head is cmd:
            self.seen.add("overtook by priority")  # an earlier-queued command waits on
        model.start(command, now)
        self.attempts[command] += 1
        if model.command_priority(cmd, now) < self.configs[job.lane].priority:
            self.seen.add("boosted")

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
        assert lane.head is cmd, (
            f"rule 2: command {command} is not its lane's head (by command priority, then "
            f"FIFO), {lane.head and lane.head.id} is\n{self._describe()}"
        )
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
        for command in chosen:
            self.seen.add("preemption")
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
        probe: ReferenceModel | None = None
        while at is not None and at < until - _ROUNDING:
            probe = probe or self.model.copy()
            probe.advance(at)
            probe.fuzzy = False
            start, preempt = probe.next_start(at), probe.preemptions(at)
            assert probe.fuzzy or (start is None and not preempt), (
                f"next_wakeup: at t={float(at)} command {start} could start (preempt: "
                f"{preempt}), but the policy asked to wake only at {until}\n{self._describe()}"
            )
            at = probe.next_change(at)

    # -- public actions (each is what the shell tells the policy, then a decision round) ----------

    def _then(self, decide: bool) -> None:
        if decide:
            self._decide()

    @_action
    def submit(
        self, lane: str, *, delay: float = 0.0, priority: int = 0, decide: bool = True
    ) -> int:
        """``submit(lane, ..., delay=delay, priority=priority)``: the policy sees the command
        at once (rule 2).

        Returns the new command's id.
        """
        job = Job(lane, priority)
        command = len(self.jobs)
        self.jobs.append(job)
        self.index[job] = command
        self.attempts.append(0)
        self.outcome.append(None)
        ready_at = self.now + delay if delay else None
        self.model.advance(self.now)
        started = self.policy.add(job, self.now, ready_at=ready_at)
        self.model.submit(command, lane, self.now, ready_at, priority=priority)
        if started:  # the fast path: a local lane with room starts it at once
            self._check_started(job)
            self._record("fast path", [command], [])
        self._then(decide)
        return command

    @_action
    def complete(self, command: int, *, decide: bool = True) -> None:
        """The running ``command`` returns: its slot goes (on a local lane) to the next."""
        self.model.advance(self.now)
        following = self.policy.finish_next(self.jobs[command], self.now)
        self.model.finish(command, "completed", now=self.now)
        self._end(command, "completed")
        if following is not None:  # the fast path: its lane's next command starts
            self._check_started(following)
            self._record("fast path", [self.index[following]], [])
        self._then(decide)

    @_action
    def fail(
        self, command: int, *, permanent: bool = False, draw: float = 0.0, decide: bool = True
    ) -> None:
        """The running ``command`` raises (a :class:`~lanes.Permanent` error if
        ``permanent``); the outcome code decides: a retry after its backoff (``draw`` in
        [0, 1) is the jitter draw) or the dead-letter queue. The rules must agree."""
        self._failed(command, self.now, permanent=permanent, timed_out=False, draw=draw)
        self._then(decide)

    def _failed(
        self, command: int, at: Fraction | float, *, permanent: bool, timed_out: bool, draw: float
    ) -> None:
        job = self.jobs[command]
        retry = self.configs[job.lane].retry
        error: Exception = WorkloadFailure(f"attempt {self.attempts[command]} failed")
        if permanent:
            error = Permanent(error)
            self.seen.add("permanent")
        if timed_out:
            self.seen.add("timeout")
        step = next_step(
            Ended.TIMED_OUT if timed_out else Ended.RAISED,
            attempt=self.attempts[command],
            retry=retry,
            error=error,
            draw=lambda: draw,
        )
        expected = self.model.fail(command, at, permanent=permanent, timed_out=timed_out, draw=draw)
        self._check_step(command, step.next, step.delay, expected.next, permanent)
        if step.next is Next.RETRY:
            low, high = expected.bounds
            assert low <= exact(step.delay) <= high and exact(step.delay) == expected.delay, (
                f"retry backoff: retry {self.attempts[command]} of command {command} (lane "
                f"{job.lane!r}, {retry}, jitter draw {draw}) waits {step.delay} s; the policy "
                f"asks for {float(expected.delay)} s (jitter bounds {float(low)}-{float(high)})"
            )
            self.seen.add("retry")
            self.policy.retry(job, self.now, self.now + step.delay)
        else:
            self.seen.add("dead letter")
            self.policy.finish(job)
            self._end(command, "dead letter")

    def _check_step(
        self, command: int, got: Next, delay: float, expected: str, permanent: bool
    ) -> None:
        if (got is Next.RETRY) == (expected == "retry"):
            return
        lane = self.jobs[command].lane
        retry = self.configs[lane].retry
        attempts = f"attempt {self.attempts[command]}, max_retries={retry.max_retries}"
        if permanent and got is Next.RETRY:
            rule = "a Permanent error is never retried"
        elif got is Next.RETRY:
            rule = "rule 4: attempts never exceed max_retries + 1"
        else:
            rule = "a failed attempt with retries left is retried"
        raise ModelViolation(
            f"{rule}: command {command} (lane {lane!r}, {attempts}) failed"
            f"{' with a Permanent error' if permanent else ''}; the outcome code chose "
            f"{got.value}{f' after {delay} s' if got is Next.RETRY else ''}, the rules say "
            f"{expected}\n{self._describe()}"
        )

    def _time_out(self, command: int, at: Fraction) -> None:
        """The attempt's deadline came: its scope cancels it and it counts as a failure."""
        if self.model.commands[command].preempting:
            self.exit_preempted(command)  # its scope was cancelled by the preemption first
            return
        self._failed(command, at, permanent=False, timed_out=True, draw=0.0)
        self._decide()

    @_action
    def exit_preempted(self, command: int, *, decide: bool = True) -> None:
        """A command the policy chose to preempt exits: its slot comes back, it is requeued
        at the head of its lane, and the attempt is not counted."""
        self.policy.requeue_front(self.jobs[command], self.now)
        self.model.requeue_front(command)
        self.attempts[command] -= 1
        self.requeued_at[command] = self.now
        self._then(decide)

    @_action
    def cancel(self, command: int, *, decide: bool = True) -> None:
        """``handle.cancel()``: a pending command is withdrawn (it must never start), a
        running one ends."""
        job = self.jobs[command]
        if job.state is JobState.ACTIVE:
            assert not self.policy.remove(job), "remove() withdrew a running command"
            self.policy.finish(job)  # its task saw the cancellation and exited
            self.model.finish(command, "cancelled")
            self._end(command, "cancelled")
        else:
            removed = self.policy.remove(job)
            assert removed == self.model.cancel(command), (
                f"remove({command}) returned {removed} for a "
                f"{self.model.commands[command].state} command"
            )
            if removed:
                self.seen.add("cancelled while pending")
                self._end(command, "cancelled")
        self._then(decide)

    @_action
    def reprioritize(self, command: int, priority: int, *, decide: bool = True) -> bool:
        """``handle.reprioritize(priority)``: a waiting command takes its new place in its
        lane (among its new equals, the one its queueing gave it); for a running or finished
        one the answer is False and nothing changes. The answer must be the model's.
        """
        job = self.jobs[command]
        state = self.model.commands[command].state
        got = self.policy.reprioritize(job, priority)
        expected = self.model.reprioritize(command, priority)
        assert got == expected, (
            f"reprioritize({command}, {priority}) of a {state} command answered {got}; "
            f"expected {expected} (only a waiting command takes a new priority)\n"
            f"{self._describe()}"
        )
        self.seen.add(f"reprioritized while {state}" if got else "reprioritize refused")
        self._then(decide)
        return got

    @_action
    def pause(self, lane: str, *, decide: bool = True) -> None:
        """``system.pause(lane)``."""
        self.policy.pause(lane)
        self.model.pause(lane)
        self._then(decide)

    @_action
    def resume(self, lane: str, *, decide: bool = True) -> None:
        """``system.resume(lane)``."""
        self.policy.resume(lane)
        self.model.resume(lane)
        self._then(decide)

    @_action
    def cancel_lane(self, lane: str, *, decide: bool = True) -> None:
        """``cancel_lane``'s pending part: every pending command of the lane is withdrawn."""
        removed = [self.index[job] for job in self.policy.remove_lane(lane)]
        expected = self.model.cancel_lane(lane)
        assert removed == expected, f"remove_lane({lane!r}) gave {removed}, expected {expected}"
        for command in removed:
            self._end(command, "cancelled")
        self._then(decide)

    @_action
    def decide(self) -> None:
        """A decision round now (what the shell runs after a batch of changes)."""
        self._decide()

    @_action
    def advance(self, seconds: float) -> None:
        """Time passes: the shell decides at once, then at each wake-up the policy asks for,
        and each attempt whose deadline comes times out exactly then."""
        end = self.now + seconds
        self._decide()
        for _ in range(_MAX_WAKEUPS):
            wake = self._next_wakeup()
            deadline = self.model.next_deadline()
            due = math.inf if deadline is None else float(deadline[0])
            until = min(math.inf if wake is None else wake, end, due)
            self._check_no_missed_wakeup(until)
            if deadline is not None and deadline[0] <= exact(end) and due <= (wake or math.inf):
                self.now = due
                self._time_out(cast(int, deadline[1]), deadline[0])
            elif wake is not None and wake <= end:
                self.now = wake
                self._decide()
            else:
                break
        else:
            raise AssertionError(f"next_wakeup keeps waking before t={end}")
        self.now = end
        self._decide()

    @_action
    def drain(self) -> None:
        """Resume every lane and run everything to the end; nothing may be lost.

        Nothing may wait for a wake-up the policy does not ask for; what can never start
        (say, a lane left no room by the reservations of others) is cancelled at the end.
        """
        for name in self.names:
            self.policy.resume(name)
            self.model.resume(name)
        for _ in range(_MAX_WAKEUPS):
            self._decide()
            while running := self._running():
                self.complete(running[0], decide=False)
            if not self._pending():
                break
            if self.model.next_start(self.now) is not None:
                continue
            wake = self._next_wakeup()
            self._check_no_missed_wakeup(math.inf if wake is None else wake)
            if wake is None:  # blocked for good (say, by reservations): cancel the rest
                for name in self.names:
                    self.cancel_lane(name, decide=False)
                break
            self.now = wake
        assert all(outcome is not None for outcome in self.outcome), "a command was lost"

    @_action
    def check(self) -> None:
        """Run every invariant now (a replay's way to check between actions)."""
        for name in dir(type(self)):
            method = getattr(type(self), name, None)
            if getattr(method, "hypothesis_stateful_invariant", None) is not None:
                getattr(self, name)()  # an @invariant() method

    # -- rules -----------------------------------------------------------------------------------
    # Each state change is followed by a decision round, as in the shell, unless ``decide``
    # is False: then the next rule's change joins the same batch.

    @precondition(lambda self: self.ready)
    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        """One step of the shell: one of the machine's rules that applies now (drawn
        uniformly), with its arguments.

        The rules are drawn here, not each registered with Hypothesis: Hypothesis switches
        registered rules off at random per run (swarm testing), and a run that lost, say,
        ``attempt_ends`` or ``time_passes`` never retries or times out. Over 60 runs the
        number that retried swung from 4 to 40 between seeds; drawn here, 17 to 38. (Your
        own ``@rule()`` methods are registered rules as usual.)
        """
        applicable = [name for name, (applies, _) in _RULES.items() if applies(self)]
        name = data.draw(st.sampled_from(applicable), label="rule")
        arguments = data.draw(st.fixed_dictionaries(_RULES[name][1]), label=name)
        getattr(self, name)(**arguments)

    def submit_commands(
        self,
        lane: int,
        delay: float,
        count: int,
        priorities: list[int],
        decide: bool,
        then: tuple[int, int, bool] | None,
    ) -> None:
        """Submit ``count`` commands to a lane, with ``delay=`` and the first ``count`` of
        ``priorities``; ``then`` (pick, priority, waiting) reprioritizes a command after
        (see :meth:`change_priority`).

        Reprioritizing rides on this rule rather than being one of its own: one rule more
        takes draws from all the others, and a separate one left the Permanent failures
        in as few as 4 of 60 runs (14-29 without it).
        """
        for i, priority in enumerate(priorities[:count]):
            last = i == count - 1 and then is None
            self.submit(self._lane(lane), delay=delay, priority=priority, decide=decide and last)
        if then is not None:
            self.change_priority(*then, decide=decide)

    def _preemption_fronts(self) -> list[str]:
        """Lanes whose next command could preempt: not paused, below their maximum, and
        more urgent than some preemptible, unpaused lane that can run above its reservation.
        """
        if self._cap is None or len(self.jobs) >= self.max_commands - 1:
            return []
        model = self.model
        victims = [
            c
            for c in self.configs.values()
            if c.preemptible
            and c.max_concurrency > c.min_concurrency
            and not model.lanes[c.name].paused
        ]
        return [
            name
            for name, c in self.configs.items()
            if not model.lanes[name].paused
            and model.lanes[name].active < c.max_concurrency
            and any(v.priority > c.priority for v in victims)
        ]

    def fill_the_cap_then_send_urgent_work(self, urgent: int) -> None:
        """The situation preemption is for: the lanes less urgent than a chosen lane
        (preemptible ones first, least urgent first) fill the global cap, one command at a
        time while each starts, then a command of the chosen lane arrives.

        The chosen lane is one that could preempt (see :meth:`_preemption_fronts`): not
        paused, below its maximum, with a preemptible lane behind it. Before the urgent
        command, one more joins the likeliest victim's lane: a preempted command must go
        back ahead of it (a policy that requeued victims at the tail survived 39 CPU s on
        some seeds without it).
        """
        front = _pick_name(self._preemption_fronts(), urgent)
        priority = self.configs[front].priority
        behind = [n for n in self.names if self.configs[n].priority > priority]
        behind.sort(key=lambda n: (not self.configs[n].preemptible, -self.configs[n].priority))
        cap = cast(int, self._cap)
        for name in behind:
            lane = self.model.lanes[name]
            while (
                len(self.jobs) < self.max_commands - 1
                and self.model.active_total < cap
                and not lane.paused
                and lane.active < lane.config.max_concurrency
            ):
                command = self.submit(name)
                if self.model.commands[command].state != "running":
                    break  # it waits (a rate limit, the reservations): try the next lane
        victims = [name for name in behind if self.configs[name].preemptible]
        if victims and len(self.jobs) < self.max_commands - 1:
            self.submit(victims[0])  # it waits behind the victim, which must requeue ahead
        self.submit(front)

    def attempt_ends(self, pick: int, how: str, draw: float, decide: bool) -> None:
        """A running attempt returns, raises (a Permanent error or not), or is cancelled.

        A command being preempted may end this way too, if it ended before the preemption
        reached it. (Timeouts happen as time passes, at each attempt's deadline.)
        """
        command = _pick(self._running(), pick)
        if how == "completed":
            self.complete(command, decide=decide)
        elif how == "cancelled":
            self.cancel(command, decide=decide)
        else:
            self.fail(command, permanent=how == "permanent", draw=draw, decide=decide)

    def change_priority(self, pick: int, priority: int, waiting: bool, decide: bool) -> None:
        """``handle.reprioritize()`` of a waiting command (with ``waiting``, when one
        waits), or of any command: one running or finished must be refused."""
        pending = self._pending()
        command = _pick(pending, pick) if waiting and pending else pick % len(self.jobs)
        self.reprioritize(command, priority, decide=decide)

    def preempted(self, pick: int, decide: bool) -> None:
        """A preempted attempt exits."""
        self.exit_preempted(_pick(self._preempting(), pick), decide=decide)

    def cancel_command(self, pick: int, decide: bool) -> None:
        """``handle.cancel()`` of any command (a no-op once it ended)."""
        command = pick % len(self.jobs)
        if self.outcome[command] is None:
            self.cancel(command, decide=decide)

    def lane_control(self, lane: int, action: str, decide: bool) -> None:
        """``pause(lane)`` (or ``resume`` when paused), or ``cancel_lane``'s pending part."""
        name = self._lane(lane)
        if action == "cancel":
            self.cancel_lane(name, decide=decide)
        elif self.model.lanes[name].paused:
            self.resume(name, decide=decide)
        else:
            self.pause(name, decide=decide)

    def time_passes(self, step: float) -> None:
        """Time passes (see :meth:`advance`)."""
        self.advance(step)

    def _boostable_lanes(self) -> list[str]:
        """Lanes a boost can make more urgent (a boost, base priority above 0) where a
        command waits or may be submitted."""
        room = len(self.jobs) < self.max_commands
        return [
            name
            for name, c in self.configs.items()
            if c.boost is not None and c.priority > 0 and (room or self.model.lanes[name].joined)
        ]

    def wait_past_a_boost_point(self, lane: int, points: int, hold: bool) -> None:
        """A command waits in a boosted lane until it passes its next boost points.

        Picks a lane a boost can make more urgent (see :meth:`_boostable_lanes`); with
        ``hold`` (or when nothing waits there) the lane is paused first, so its head surely
        waits, and a command is submitted if none is queued. Time then passes (see
        :meth:`advance`) to the ``points``-th next boost point of the lane's boost clock (its
        longest-waiting command; the last point when it has fewer left). Without this rule,
        runs rarely left a boosted command waiting past a point, and a policy that never
        boosted went unnoticed for over a minute.
        """
        name = _pick_name(self._boostable_lanes(), lane)
        state = self.model.lanes[name]
        if (hold or not state.joined) and not state.paused:
            self.pause(name)
        if not state.joined:
            self.submit(name)
        oldest = state.longest_waiting
        if oldest is None:  # it went to the delay heap: nothing waits in the queue yet
            return
        boost = self.configs[name].boost
        assert boost is not None
        age = exact(self.now) - oldest.pending_since
        ahead = [exact(p) for p in boost.at if exact(p) > age]
        if ahead:
            self.seen.add("aged past a boost point")
            self.advance(float(ahead[min(points, len(ahead)) - 1] - age))

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def policy_matches_the_model(self) -> None:
        """Counts, bounds, rate limits, states, attempts and priorities agree with the model."""
        self._counts_match_the_model()
        self._bounds_hold()
        self._rate_limits_hold()
        self._every_command_accounted_for()
        self._effective_priorities_match()

    def _counts_match_the_model(self) -> None:
        """Pending and active counts per lane and in total agree with the model, and each
        lane's queue holds the model's commands in the model's order (by command priority,
        FIFO among equals: a preempted command back first among its equals, a retry or a
        delayed command at the tail when due, a reprioritized one where its queueing put it
        among its new equals), and each one's ``position`` is its place there."""
        for name, lane in self.policy.lanes.items():
            assert lane.pending == self.model.pending(name), f"pending of {name}"
            assert lane.active == self.model.lanes[name].active, f"active of {name}"
            jobs = lane.queued()
            queued = [self.index[job] for job in jobs]
            expected = list(_ids(self.model.lanes[name].queue))
            assert queued == expected, (
                f"rule 2: lane {name!r} queues {queued} in this order, the model {expected} "
                f"(by command priority, FIFO among equals: a preempted command goes back "
                f"first among its equals, anything else to the tail)\n{self._describe()}"
            )
            positions = [self.policy.position(job) for job in jobs]
            assert positions == list(range(len(jobs))), (
                f"position: lane {name!r} queues {queued}, their positions are {positions}"
            )
        assert self.policy.active_total == self.model.active_total

    def _bounds_hold(self) -> None:
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

    def _rate_limits_hold(self) -> None:
        """Rule 1: every lane's starts fit its rate limit."""
        for name, lane in self.model.lanes.items():
            broken = rate_limit_violation(lane.config.rate_limit, [float(t) for t in lane.starts])
            assert broken is None, f"rule 1: lane {name} starts break its rate limit: {broken}"

    def _every_command_accounted_for(self) -> None:
        """Rule 4: each command is pending, running, or ended exactly once; none is lost."""
        for command, job in enumerate(self.jobs):
            state = _MODEL_STATE.get(job.state)
            cmd = self.model.commands[command]
            assert state == cmd.state, (
                f"command {command}: policy says {job.state.name}, model says {cmd.state}"
            )
            assert (state == "gone") == (self.outcome[command] is not None), (
                f"rule 4: command {command} is {state} with outcome {self.outcome[command]}"
            )
            assert self.outcome[command] == cmd.outcome, (
                f"command {command} ended {self.outcome[command]}, the model says {cmd.outcome}"
            )
            assert self.attempts[command] == cmd.attempts, (
                f"rule 4: command {command} counts {self.attempts[command]} attempts, the "
                f"model {cmd.attempts} (a start counts, a preemption does not)"
            )
            assert job.priority == cmd.priority, (
                f"command {command} has priority {job.priority}, the model {cmd.priority} "
                f"(only a waiting command takes a new priority; a retry keeps its own)"
            )

    def _effective_priorities_match(self) -> None:
        """Boosting: each lane's effective priority agrees with the model."""
        for name in self.names:
            self.model.fuzzy = False
            expected = self.model.effective_priority(name, self.now)
            got = self.policy.effective_priority(name, self.now)
            assert got == expected or self.model.fuzzy, (
                f"effective priority of {name}: policy {got}, model {expected}"
            )

    def teardown(self) -> None:
        """Drain (see :meth:`drain`), then count the paths this run took.

        After a failed step (or invariant, or check) the failure gets the report (the
        replay script and the last decisions) as a note instead.
        """
        if not self.ready:
            return
        failure = sys.exc_info()[1]
        if failure is not None:  # report that, not what draining would make of it
            failure.add_note(self.report())
            return
        if currently_in_test_context():
            # No target(): hill-climbing on the paths taken spends half the runs on copies
            # of one run, and a path it lacks then shows up in almost none (coverage counts
            # swung from 0 to 45 of 60 runs between seeds).
            for path in sorted(self.seen):
                event(f"took path: {path}")
        try:
            self.drain()
        except Exception as exc:
            exc.add_note(self.report())
            raise
        counts = self._coverage[type(self)]
        counts["runs"] += 1
        counts.update(self.seen)


def _ids(commands: Iterable[ModelCommand]) -> tuple[int, ...]:
    return tuple(cast(int, cmd.id) for cmd in commands)


def _with_priority(cmd: ModelCommand) -> str:
    return f"{cmd.id}" if cmd.priority == 0 else f"{cmd.id}(p={cmd.priority})"


def _pick_name(names: Sequence[str], index: int) -> str:
    return names[index % len(names)]


_RULES: dict[str, tuple[Callable[[PolicyStateMachine], bool], dict[str, st.SearchStrategy[Any]]]]
_RULES = {
    "submit_commands": (
        lambda m: len(m.jobs) < m.max_commands,
        {
            "lane": _lanes,
            "delay": _delays,
            "count": st.integers(1, 3),
            "priorities": st.lists(_priorities, min_size=3, max_size=3),
            "decide": _decides,
            "then": st.one_of(st.none(), st.tuples(_picks, _new_priorities, _waiting_first)),
        },
    ),
    "fill_the_cap_then_send_urgent_work": (
        lambda m: bool(m._preemption_fronts()),
        {"urgent": _lanes},
    ),
    "attempt_ends": (
        lambda m: bool(m._running()),
        {"pick": _picks, "how": _endings, "draw": _draws, "decide": _decides},
    ),
    "preempted": (lambda m: bool(m._preempting()), {"pick": _picks, "decide": _decides}),
    "cancel_command": (lambda m: bool(m.jobs), {"pick": _picks, "decide": _decides}),
    "lane_control": (
        lambda m: True,
        {
            "lane": _lanes,
            "action": st.sampled_from(["pause", "pause", "cancel"]),
            "decide": _decides,
        },
    ),
    "time_passes": (lambda m: True, {"step": _steps}),
    "wait_past_a_boost_point": (
        lambda m: bool(m._boostable_lanes()),
        {"lane": _lanes, "points": st.integers(1, 3), "hold": st.booleans()},
    ),
}
