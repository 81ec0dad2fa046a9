"""Model check of the pure scheduling policy and the outcome rules: the real ``Policy`` and
``next_step`` against ``ReferenceModel``.

The state machine found four policy bugs, all fixed; their minimal sequences are below as
regression tests.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from lanes import LaneConfig, PriorityBoost, RateLimit
from lanes._policy import Job, Policy
from lanes.testing import PolicyStateMachine, ReferenceModel

# Of 60 runs, at least this many must take each path: a strategy or rule that stops building
# these situations is a weakened test. Measured over 13 seeds (random, like every run here):
# preemption 8-28, retry 27-45, timeout 12-38, permanent 13-49, dead letter 32-56, cancelled
# while pending 37-56. Before the fill rule chose a lane that can preempt, before runs began
# contended and before the rules were drawn by one rule (not switched off at random by
# Hypothesis's swarm testing), preemption came in 0-6 runs on most seeds. With the rule that
# ages a waiting command past its boost points (4 seeds): aged past a boost point 39-47,
# boosted start 42-50; without it a policy that never boosted survived over 80 CPU s.
# Command priorities (14 seeds): overtook by priority 38-54, reprioritized while queued
# 32-49, while delayed 22-44, reprioritize refused 6-32.
MIN_COVERAGE = {
    "aged past a boost point": 20,
    "boosted": 20,
    "overtook by priority": 20,
    "reprioritized while queued": 16,
    "reprioritized while delayed": 10,
    "reprioritize refused": 3,
    "preemption": 6,
    "retry": 15,
    "timeout": 8,
    "permanent": 8,
    "dead letter": 20,
    "cancelled while pending": 20,
}


@pytest.mark.property
def test_policy_machine() -> None:
    machine_settings = settings(PolicyStateMachine.TestCase.settings, stateful_step_count=40)
    scale = machine_settings.max_examples / 60
    minimum = {path: int(n * min(scale, 1.0)) for path, n in MIN_COVERAGE.items()}
    counts = PolicyStateMachine.run(machine_settings, min_coverage=minimum)
    assert counts["runs"] >= machine_settings.max_examples


def test_token_arrival_that_enables_a_preemption_wakes_the_shell() -> None:
    """Rule 3 when only time makes it apply: a rate-limited head blocked by the cap.

    ``next_wakeup`` used to skip token arrivals of lanes the cap blocks, but with a token such
    a head is "blocked only by the global cap" and must preempt: nothing woke the shell at
    t=1, and the preemptible command kept the slot until something else happened.
    """
    configs = (
        LaneConfig("urgent", 0, rate_limit=RateLimit.per_second(1)),
        LaneConfig("background", 5, preemptible=True),
    )
    policy = Policy(configs, max_concurrency=1)
    first, background, second = Job("urgent"), Job("background"), Job("urgent")
    policy.add(first, 0.0)
    assert policy.schedule(0.0).start == [first]  # takes the only token until t=1
    policy.finish(first)
    policy.add(background, 0.0)
    policy.add(second, 0.0)
    assert policy.schedule(0.0).start == [background]  # `second` has no token yet
    wake = policy.next_wakeup(0.0)
    assert policy.schedule(1.0).preempt == [background]  # at t=1 rule 3 applies
    assert wake is not None and wake <= 1.0


def test_no_preemption_that_only_refills_the_victims_reservation() -> None:
    """Two waiters, one preemptible lane with a reservation: only one victim helps.

    ``_victim`` used to check ``active > min_concurrency`` without counting the commands
    already being preempted, so both running commands of ``batch`` (min 1) were taken: the
    second one restarted at once in ``batch``'s reserved slot and ``b`` still waited.
    """
    configs = (
        LaneConfig("a", 0),
        LaneConfig("b", 1),
        LaneConfig("batch", 5, max_concurrency=2, min_concurrency=1, preemptible=True),
    )
    policy = Policy(configs, max_concurrency=2)
    model = ReferenceModel(configs, 2)
    x, y, a, b = Job("batch"), Job("batch"), Job("a"), Job("b")
    for i, job in enumerate([x, y]):
        policy.add(job, 0.0)
        model.submit(i, "batch", 0.0)
    for i in (0, 1):
        model.start(i, 0.0)
    assert policy.schedule(0.0).start == [x, y]
    for i, job in enumerate([a, b], start=2):
        policy.add(job, 1.0)
        model.submit(i, job.lane, 1.0)
    assert model.preemptions(1.0) == [1]  # y only
    assert policy.schedule(1.0).preempt == [y]


def test_boost_wakeup_is_in_the_future() -> None:
    """A boost wake-up lies in the future even when float rounding says otherwise.

    ``next_wakeup`` used to return ``pending_since + point``; at that time
    ``now - pending_since`` can round below ``point``, so the same time came back and the
    supervisor woke at one instant forever (a hang under ``MockClock``).
    """
    configs = (
        LaneConfig("urgent", 0),
        LaneConfig("boosted", 3, boost=PriorityBoost.custom(1.0, [0.75])),
        LaneConfig("background", 5, preemptible=True),
    )
    policy = Policy(configs, max_concurrency=1)
    policy.add(Job("background"), 0.0)
    policy.schedule(0.0)
    since = 1.3436424411240122  # (since + 0.75) - since == 0.7499999999999998
    policy.add(Job("boosted"), since)
    policy.schedule(since)
    wake = policy.next_wakeup(since)
    assert wake is not None
    policy.schedule(wake)
    again = policy.next_wakeup(wake)
    assert again is None or again > wake


def test_a_preempted_command_does_not_restart_before_its_waiter() -> None:
    """A victim must be less urgent than its waiter by its own boosted priority.

    A requeued command keeps its boost clock (``pending_since``), so the 10 s ``v`` ran
    count as waiting: back at the head of its lane it is boosted to priority 1, more urgent
    than ``w`` (2). Victims used to be chosen by their lane's base priority (5 > 2), so the
    freed slot went straight back to ``v``, which was a victim again: preempted, requeued,
    restarted, forever at one instant (under ``MockClock`` the system hung). Now ``v`` is no
    victim: it keeps running and ``w`` waits.
    """
    boost = PriorityBoost.custom(4, [1, 2, 3, 4])
    configs = (LaneConfig("w", 2), LaneConfig("v", 5, preemptible=True, boost=boost))
    policy = Policy(configs, max_concurrency=1)
    v, w = Job("v"), Job("w")
    policy.add(v, 0.0)
    assert policy.schedule(0.0).start == [v]
    policy.add(w, 10.0)
    assert policy.schedule(10.0).preempt == []
    policy.finish(v)
    assert policy.schedule(10.0).start == [w]


def test_without_a_cap_a_fast_path_start_may_come_before_another_lanes_round() -> None:
    """Without a global cap lanes never compete for a slot, so the order of two starts in
    different lanes at one instant is no rule-2 matter.

    Command 0 waits for the round its (rate-limited, so not local) lane asked for; command 1,
    submitted to a local lane before that round, starts at once on the fast path. It takes
    nothing command 0 needs, and the round that follows at the same instant starts command 0.
    The machine once expected command 0 to start first ("the policy started command 1 (lane
    'lane0') but the model expects 0", seen in a 2000-example run): a model bug, not a policy
    bug; within a lane, FIFO is still checked.
    """
    m = PolicyStateMachine.replay(
        [
            LaneConfig("lane0", 0),
            LaneConfig("lane2", 0, rate_limit=RateLimit.token_bucket(0.25, 1)),
        ],
        max_concurrency=None,
    )
    m.submit("lane2", decide=False)
    m.submit("lane0")
    assert [m.view().commands[i].state for i in (0, 1)] == ["running", "running"]
    assert [entry.kind for entry in m.trace] == ["fast path", "round"]
    m.drain()


def test_reprioritize_keeps_the_place_its_queueing_gave_it() -> None:
    """Command priority within a lane, FIFO among equals, and what ``reprioritize`` answers.

    Every action below checks the real policy against the model (queue order, positions,
    the answer of ``reprioritize``), so this fails if either departs from the documented
    rule: the head is the smallest command priority, the earliest queued among equals, and a
    reprioritized command keeps its queueing time among its new equals.
    """
    m = PolicyStateMachine.replay([LaneConfig("work", 0, max_concurrency=1)])
    m.pause("work")
    a = m.submit("work")
    b = m.submit("work", priority=1)
    c = m.submit("work", priority=1)
    d = m.submit("work")
    assert m.view().lanes["work"].queued == (a, d, b, c)
    assert m.reprioritize(d, 1)  # queued after b and c: it stays behind them
    assert m.reprioritize(a, 1)  # queued first: it goes first among the 1s
    assert m.view().lanes["work"].queued == (a, b, c, d)
    assert m.reprioritize(c, -1)
    assert m.view().lanes["work"].queued == (c, a, b, d)
    m.resume("work")
    assert m.view().commands[c].state == "running"
    assert not m.reprioritize(c, 5)  # running: refused, and nothing changes
    assert m.view().commands[c].priority == -1
    m.complete(c)
    assert not m.reprioritize(c, 5)  # finished: refused too
    later = m.submit("work", delay=1.0, priority=2)
    assert m.reprioritize(later, -3)  # delayed: it takes the priority when it is due
    m.advance(1.0)
    assert m.view().lanes["work"].queued == (later, b, d)
    m.drain()


def test_a_preempted_command_goes_back_first_among_its_equals() -> None:
    """A preempted command keeps its priority and goes back ahead of its equals only."""
    m = PolicyStateMachine.replay(
        [LaneConfig("urgent", 0), LaneConfig("batch", 5, max_concurrency=3, preemptible=True)],
        max_concurrency=1,
    )
    victim = m.submit("batch", priority=1)
    equal = m.submit("batch", priority=1)
    better = m.submit("batch")
    m.submit("urgent")
    assert m.view().lanes["batch"].preempting == (victim,)
    m.exit_preempted(victim)
    assert m.view().lanes["batch"].queued == (better, victim, equal)
    m.drain()


def test_a_lane_boosted_by_an_older_command_keeps_its_running_one() -> None:
    """A fresh command runs in a lane that an older queued command boosts: requeued, it
    would win the slot straight back (a livelock at one instant), so it is no victim."""
    m = PolicyStateMachine.replay(
        [
            LaneConfig("urgent", 0),
            LaneConfig("batch", 1, preemptible=True, boost=PriorityBoost.custom(4, at=[1, 2, 3])),
        ],
        max_concurrency=1,
    )
    m.pause("batch")
    old = m.submit("batch")
    m.advance(1.0)  # old waited 1 s: batch is at 0
    fresh = m.submit("batch", priority=-1)  # the head, with a fresh clock
    m.resume("batch")
    assert m.view().lanes["batch"].running == (fresh,)
    m.submit("urgent")  # 0, like batch: no lane here is less urgent than it
    assert m.view().lanes["batch"].preempting == ()
    assert m.view().lanes["batch"].queued == (old,)
    m.drain()


def test_the_model_refuses_what_is_not_waiting() -> None:
    model = ReferenceModel([LaneConfig("work", 0)], None)
    model.submit("x", "work", 0.0, priority=3)
    assert model.position("x") == 0
    model.start("x", 0.0)
    assert not model.reprioritize("x", 1)
    assert model.commands["x"].priority == 3
    assert model.position("x") is None
