"""``lanes.testing``: the checker finds hand-made violations, the strategies draw valid
configurations, the model answers plainly, the fixture and the example work."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from collections.abc import Sequence
from types import ModuleType

import pytest
import trio
import trio.testing
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import lanes
from lanes import LaneConfig, PriorityBoost, RateLimit, RetryPolicy
from lanes import events as ev
from lanes.testing import (
    InvariantViolation,
    LaneSystemFactory,
    ModelViolation,
    PolicyStateMachine,
    ReferenceModel,
    SchedulerView,
    TraceEntry,
    WorkItem,
    WorkloadHang,
    check_invariants,
    check_results,
    lane_configs,
    lane_systems,
    priority_boosts,
    rate_limits,
    retry_policies,
    run_workload,
    workloads,
)

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
TWO = (LaneConfig("fast", 0, max_concurrency=1), LaneConfig("slow", 5, max_concurrency=2))


def sub(cid: str, t: float, lane: str = "fast") -> ev.Event:
    return ev.Submitted(lane, cid, t)


def start(
    cid: str, t: float, lane: str = "fast", attempt: int = 1, waited: float = 0.0
) -> ev.Event:
    return ev.Started(lane, cid, t, attempt, waited)


def done(cid: str, t: float, lane: str = "fast", attempt: int = 1) -> ev.Event:
    return ev.Completed(lane, cid, t, attempt)


def violation(
    events: list[ev.Event], configs: tuple[LaneConfig, ...] = TWO, **kwargs: object
) -> InvariantViolation:
    with pytest.raises(InvariantViolation) as info:
        check_invariants(events, configs, **kwargs)  # type: ignore[arg-type]
    return info.value


# -- check_invariants ----------------------------------------------------------------------


def test_a_valid_log_passes() -> None:
    check_invariants(
        [
            sub("a", 0),
            start("a", 0),
            sub("b", 0.5, "slow"),
            start("b", 1, "slow", waited=0.5),
            done("a", 2),
            ev.Preempted("slow", "b", 2, 1),
            start("b", 3, "slow", waited=2.5),
            ev.Retrying("slow", "b", 4, 1, 0.5),
            start("b", 4.5, "slow", 2),
            ev.TimedOut("slow", "b", 5, 2, 0.5),
            ev.Failed("slow", "b", 5, 2),
            ev.DeadLettered("slow", "b", 5, 2),
            sub("c", 6),
            ev.Cancelled("fast", "c", 6.5),
            ev.AlertRaised("fast", "", 7),
        ],
        (TWO[0], LaneConfig("slow", 5, preemptible=True, retry=RetryPolicy.fixed(1, 0.5))),
        max_concurrency=2,
    )


def test_lane_max_exceeded() -> None:
    found = violation([sub("a", 0), sub("b", 0), start("a", 1), start("b", 1)])
    assert found.rule == "rule 1: lane max_concurrency"
    assert [e.command_id for e in found.events] == ["a", "b"]
    assert "lane 'fast' runs 2 commands" in str(found)


def test_global_cap_exceeded() -> None:
    events = [sub("a", 0), sub("b", 0, "slow"), start("a", 0), start("b", 0, "slow")]
    assert violation(events, max_concurrency=1).rule == "rule 1: global max_concurrency"


def test_reservation_taken() -> None:
    configs = (LaneConfig("fast", 0, min_concurrency=1), LaneConfig("slow", 5, max_concurrency=2))
    events = [
        sub("a", 0, "slow"),
        sub("b", 0, "slow"),
        start("a", 0, "slow"),
        start("b", 0, "slow"),
    ]
    assert violation(events, configs, max_concurrency=2).rule == (
        "rule 1: min_concurrency reservations"
    )


@pytest.mark.parametrize(
    ("limit", "second_start"),
    [(RateLimit.per_second(1), 0.5), (RateLimit.sliding_window(1, 2.0), 1.5)],
)
def test_rate_limit_broken(limit: RateLimit, second_start: float) -> None:
    configs = (LaneConfig("fast", 0, rate_limit=limit), TWO[1])
    events = [sub("a", 0), start("a", 0), done("a", 0.1), sub("b", 0.1)]
    events += [start("b", second_start, waited=second_start - 0.1)]
    assert violation(events, configs, complete=False).rule == "rule 1: rate limit"
    ok = [*events[:-1], start("b", 2.0, waited=1.9), done("b", 2.5)]
    check_invariants(ok, configs)


def test_fifo_broken() -> None:
    events = [sub("a", 0), sub("b", 1), start("b", 2, waited=1), done("b", 3)]
    events += [start("a", 3, waited=3), done("a", 4)]
    found = violation(events)
    assert found.rule == "rule 2: FIFO within a lane"
    assert "a was ahead of b" in found.detail


def test_a_preempted_command_goes_first() -> None:
    configs = (TWO[0], LaneConfig("slow", 5, preemptible=True))
    base = [sub("x", 0, "slow"), start("x", 0, "slow"), sub("y", 0.5, "slow")]
    base += [ev.Preempted("slow", "x", 1, 1)]
    ok = [*base, start("x", 2, "slow", waited=2), done("x", 3, "slow")]
    ok += [start("y", 3, "slow", waited=2.5), done("y", 4, "slow")]
    check_invariants(ok, configs, max_concurrency=1)
    bad = [*base, start("y", 2, "slow", waited=1.5)]
    assert violation(bad, configs, max_concurrency=1, complete=False).rule == (
        "rule 2: FIFO within a lane"
    )


def test_priority_inversion() -> None:
    events = [sub("low", 0, "slow"), sub("high", 0), start("low", 1, "slow", waited=1)]
    events += [start("high", 2, waited=2)]
    found = violation(events, complete=False)
    assert found.rule == "rule 2: priority"
    assert "high waited in lane 'fast'" in found.detail


def test_priority_not_judged_when_unsure() -> None:
    # the urgent lane was paused (pauses are not events), or full, or out of tokens
    events = [sub("low", 0, "slow"), sub("high", 0), start("low", 1, "slow", waited=1)]
    events += [start("high", 2, waited=2)]
    check_invariants(events, TWO, paused=["fast"], complete=False)
    full = [sub("busy", 0), start("busy", 0), *events[:3]]
    check_invariants(full, TWO, complete=False)
    limited = (LaneConfig("fast", 0, rate_limit=RateLimit.per_second(1)), TWO[1])
    used = [sub("t", 0), start("t", 0.5), done("t", 0.5), *events[:3]]
    check_invariants(used, limited, complete=False)


def test_boosted_command_may_go_before_a_more_urgent_lane() -> None:
    configs = (TWO[0], LaneConfig("slow", 2, boost=PriorityBoost.custom(4, [1, 2, 3])))
    events = [sub("low", 0, "slow"), sub("high", 2.5), start("low", 3, "slow", waited=3)]
    check_invariants(events, configs, complete=False)  # boosted 3 levels: priority 0


def test_a_preemption_counted_as_an_attempt() -> None:
    configs = (TWO[0], LaneConfig("slow", 5, preemptible=True))
    events = [sub("x", 0, "slow"), start("x", 0, "slow"), ev.Preempted("slow", "x", 1, 2)]
    found = violation(events, configs, max_concurrency=1, complete=False)
    assert found.rule == "rule 4: attempts (a preemption is not an attempt)"
    restarted = [*events[:2], ev.Preempted("slow", "x", 1, 1), start("x", 2, "slow", 2)]
    found = violation(restarted, configs, max_concurrency=1, complete=False)
    assert "attempt 2 started, expected attempt 1" in found.detail


def test_retried_past_max_retries() -> None:
    events = [sub("a", 0), start("a", 0), ev.Retrying("fast", "a", 1, 1, 0.0)]
    assert violation(events, complete=False).rule == (
        "rule 4: attempts never exceed max_retries + 1"
    )


def test_a_success_retried() -> None:
    events = [sub("a", 0), start("a", 0), done("a", 1), start("a", 2, attempt=2)]
    assert violation(events).rule == "rule 4: a success is never retried"


def test_two_terminal_states() -> None:
    events = [sub("a", 0), start("a", 0), done("a", 1), ev.Cancelled("fast", "a", 2)]
    assert violation(events).rule == "rule 4: exactly one terminal state"


def test_every_command_ends() -> None:
    events = [sub("a", 0), start("a", 0)]
    assert violation(events).rule == "rule 4: every accepted command ends"
    check_invariants(events, TWO, complete=False)


def test_failure_needs_its_dead_letter() -> None:
    events = [sub("a", 0), start("a", 0), ev.Failed("fast", "a", 1, 1)]
    assert violation(events).rule == "rule 4: failed commands are dead-lettered"


def test_timeout_then_success_is_not_allowed() -> None:
    events = [sub("a", 0), start("a", 0), ev.TimedOut("fast", "a", 1, 1, 1.0), done("a", 1)]
    assert violation(events).rule == "rule 4: a timeout is a failed attempt"


def test_only_preemptible_lanes_are_preempted() -> None:
    events = [sub("x", 0, "slow"), start("x", 0, "slow"), ev.Preempted("slow", "x", 1, 1)]
    found = violation(events, max_concurrency=1, complete=False)
    assert found.rule == "rule 3: only preemptible lanes are preempted"


def test_the_first_violation_is_reported() -> None:
    events = [sub("a", 0), sub("b", 0), start("a", 0), start("b", 0), done("a", 1)]
    events += [start("a", 2, attempt=2)]
    assert violation(events).rule == "rule 1: lane max_concurrency"


def test_events_of_an_unknown_lane() -> None:
    assert violation([sub("a", 0, "nope")]).rule == "config"


# -- strategies ----------------------------------------------------------------------------


@given(lane_systems())
def test_lane_systems_are_valid(system: tuple[tuple[LaneConfig, ...], int | None]) -> None:
    configs, cap = system
    lanes.open_lane_system(configs, max_concurrency=cap)  # validates at once
    assert len({c.name for c in configs}) == len(configs)
    if cap is not None:
        assert cap > sum(c.min_concurrency for c in configs) or all(
            c.min_concurrency for c in configs
        )


@given(retry_policies(), rate_limits(), priority_boosts())
def test_parts_are_exact_binary_fractions(
    retry: RetryPolicy, limit: RateLimit, boost: PriorityBoost
) -> None:
    for seconds in (retry.delay(1), retry.delay(2), limit.window, boost.deadline, *boost.at):
        assert (seconds * 2**10).is_integer()
    assert limit.rate in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@given(lane_configs(1, 3).flatmap(lambda cs: st.tuples(st.just(cs), workloads(cs))))
def test_workloads_use_the_lanes_in_time_order(
    drawn: tuple[tuple[LaneConfig, ...], list[lanes.testing.WorkItem]],
) -> None:
    configs, work = drawn
    assert {item.lane for item in work} <= {c.name for c in configs}
    assert [item.at for item in work] == sorted(item.at for item in work)


# -- the model -------------------------------------------------------------------------------


def test_model_picks_by_priority_then_submission() -> None:
    configs = (LaneConfig("a", 3), LaneConfig("b", 1), LaneConfig("c", 1))
    model = ReferenceModel(configs, None)
    for i, lane in enumerate(["a", "c", "b"]):
        model.submit(i, lane, 0.0)
    assert model.next_start(0.0) == 1  # c and b tie on priority; c was submitted first
    model.start(1, 0.0)
    assert model.next_start(0.0) == 2
    model.start(2, 0.0)
    assert model.next_start(0.0) == 0


def test_model_rate_limit_and_wakeups() -> None:
    model = ReferenceModel(
        (LaneConfig("a", 0, max_concurrency=3, rate_limit=RateLimit.per_second(1)),), None
    )
    for i in range(2):
        model.submit(i, "a", 0.0)
    model.start(0, 0.0)
    assert model.next_start(0.5) is None
    assert model.next_change(0.5) == 1
    assert model.next_start(1.0) == 1


def test_model_preempts_the_most_recent_start() -> None:
    configs = (LaneConfig("u", 0), LaneConfig("p", 5, max_concurrency=2, preemptible=True))
    model = ReferenceModel(configs, 2)
    for i in range(2):
        model.submit(i, "p", 0.0)
        model.start(i, float(i))
    model.submit(2, "u", 2.0)
    assert model.blocked_by_cap(2.0) == ["u"]
    assert model.preemptions(2.0) == [1]


# -- the fixture and the example -------------------------------------------------------------


async def test_lane_system_fixture_checks_on_exit(
    lane_system: LaneSystemFactory, autojump_clock: trio.testing.MockClock
) -> None:
    async with lane_system(TWO, max_concurrency=2) as system:
        await system.submit("slow", trio.sleep, 1)
        await system.run("fast", trio.sleep, 0.5)
    kinds = [type(event).__name__ for event in lane_system.log.events]
    assert kinds.count("Started") == 2 and kinds.count("Completed") == 2


async def test_lane_system_fixture_needs_the_autojump_clock(lane_system: LaneSystemFactory) -> None:
    with pytest.raises(lanes.LaneUsageError, match="autojump_clock"):
        async with lane_system(TWO):
            pass


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_property_testing_example(capsys: pytest.CaptureFixture[str]) -> None:
    example = load_example("property_testing")
    example.main()
    out = capsys.readouterr().out
    assert "agree with the model" in out
    assert "kept every scheduling rule" in out
    assert "['timed_out', 'completed']" in out
    assert "control starts by command priority: ['page', 'bulk', 'report']" in out


async def test_property_testing_example_fixture_test(
    lane_system: LaneSystemFactory, autojump_clock: trio.testing.MockClock
) -> None:
    example = load_example("property_testing")
    await example.test_with_the_fixture(lane_system, autojump_clock)


@pytest.fixture
def never_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scheduling policy that never starts anything (each submit pauses its lane first):
    the bug that once made the shipped example hang instead of failing."""
    from lanes._policy import Job, Policy

    add = Policy.add

    def pausing_add(self: Policy, job: Job, now: float, *, ready_at: float | None = None) -> bool:
        self.pause(job.lane)
        return add(self, job, now, ready_at=ready_at)

    monkeypatch.setattr(Policy, "add", pausing_add)


async def test_the_fixture_fails_a_hang_with_what_is_unresolved(
    never_start: None, lane_system: LaneSystemFactory, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(WorkloadHang, match=r"within its time_limit of 3600\.0 s") as info:
        async with lane_system([LaneConfig("a", 0)]) as system:
            handle = await system.submit("a", trio.sleep, 1.0)
            await handle.result()  # (system.run would cancel its command when cancelled)
    assert "Unresolved:\n  " in str(info.value)
    assert "(lane 'a', waiting, 0 attempts)" in str(info.value)
    assert trio.current_time() == pytest.approx(3600.0)  # virtual time: no real wait


async def test_the_fixture_fails_a_livelock(
    lane_system: LaneSystemFactory, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(WorkloadHang, match="livelock: 500 task steps at t=0"):
        async with lane_system([LaneConfig("a", 0)], step_budget=500):
            while True:
                await trio.lowlevel.checkpoint()


async def test_the_fixture_rejects_bad_liveness_limits(
    lane_system: LaneSystemFactory, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(lanes.LaneConfigError, match=r"time_limit=0\.0\): expected seconds > 0"):
        lane_system(time_limit=0.0)
    with pytest.raises(lanes.LaneConfigError, match=r"step_budget=0\): expected a step count"):
        lane_system(step_budget=0)


async def test_a_block_within_its_limits_is_drained_and_checked(
    lane_system: LaneSystemFactory, autojump_clock: trio.testing.MockClock
) -> None:
    async with lane_system([LaneConfig("a", 0)], time_limit=10.0) as system:
        await system.submit("a", trio.sleep, 5.0)
    assert trio.current_time() == pytest.approx(5.0)
    assert lane_system.log.events


async def test_the_example_fails_fast_when_nothing_ever_starts(
    never_start: None, lane_system: LaneSystemFactory, autojump_clock: trio.testing.MockClock
) -> None:
    example = load_example("property_testing")
    with pytest.raises(WorkloadHang, match="did not finish within its time_limit"):
        await example.run_and_check([WorkItem("llm", 0.0, "success")])
    with pytest.raises(WorkloadHang, match=r"Unresolved:\n  .*lane 'llm', waiting"):
        await example.test_with_the_fixture(lane_system, autojump_clock)


def test_the_docs_show_the_example_as_it_is() -> None:
    page = (EXAMPLES.parent / "docs" / "testing.md").read_text(encoding="utf-8")
    blocks = [
        part.split("\n```\n", 1)[0] + "\n"
        for part in page.split("<!-- runnable -->\n```python\n")[1:]
    ]
    assert (EXAMPLES / "property_testing.py").read_text(encoding="utf-8") in blocks


# -- retries, timeouts and dead letters: the model and the checker ----------------------------


def test_model_never_retries_a_permanent_error() -> None:
    configs = (LaneConfig("a", 0, retry=RetryPolicy.fixed(3, 0.5)),)
    model = ReferenceModel(configs, None)
    model.submit(0, "a", 0.0)
    model.start(0, 0.0)
    assert model.fail(0, 1.0, permanent=True).next == "dead letter"
    assert model.dead_letters == [0]
    assert model.commands[0].outcome == "dead letter"


def test_model_retries_after_the_backoff_then_dead_letters() -> None:
    retry = RetryPolicy.exponential(2, initial_delay=0.5, max_delay=4.0, jitter=0.5)
    model = ReferenceModel((LaneConfig("a", 0, retry=retry),), None)
    model.submit(0, "a", 0.0)
    model.start(0, 0.0)
    step = model.fail(0, 1.0, draw=0.5)  # 0.5 s shortened by 0.5 * 0.5 of itself
    assert (step.next, step.delay, step.bounds) == ("retry", 0.375, (0.25, 0.5))
    assert model.next_start(1.25) is None and model.next_change(1.0) == 1.375
    model.advance(1.375)
    model.start(0, 1.375)
    assert model.fail(0, 2.0, draw=0.0).delay == 1.0  # the second retry doubles
    model.advance(3.0)
    model.start(0, 3.0)
    assert model.fail(0, 3.5).next == "dead letter"  # max_retries=2: three attempts
    assert model.dead_letters == [0]


def test_model_times_out_only_at_the_deadline() -> None:
    model = ReferenceModel((LaneConfig("a", 0, timeout=1.0),), None)
    model.submit(0, "a", 0.0)
    model.start(0, 0.25)
    assert model.next_deadline() == (1.25, 0)
    with pytest.raises(ModelViolation, match=r"timed out at t=1\.0, its deadline is t=1\.25"):
        model.fail(0, 1.0, timed_out=True)
    with pytest.raises(ModelViolation, match="past its deadline"):
        model.finish(0, now=1.5)
    assert model.fail(0, 1.25, timed_out=True).next == "dead letter"


def test_model_refuses_a_cancelled_start_and_extra_attempts() -> None:
    model = ReferenceModel((LaneConfig("a", 0),), None)
    model.submit(0, "a", 0.0)
    assert model.cancel(0)
    with pytest.raises(ModelViolation, match="a cancelled command never starts"):
        model.start(0, 0.0)
    model.submit(1, "a", 0.0)
    model.start(1, 0.0)
    model.retry(1, 0.0, 0.0)  # the shell retried although max_retries is 0
    with pytest.raises(ModelViolation, match="attempt 2 of at most 1"):
        model.start(1, 0.0)


def retrying(cid: str, t: float, delay: float, attempt: int = 1) -> ev.Event:
    return ev.Retrying("fast", cid, t, attempt, delay)


RETRYING = (LaneConfig("fast", 0, retry=RetryPolicy.fixed(2, 0.5)),)


def test_retry_delay_must_be_the_policys() -> None:
    found = violation([sub("a", 0), start("a", 0), retrying("a", 1, 0.0)], RETRYING)
    assert found.rule == "retry backoff: the delay the lane's retry policy gives"
    assert "waits 0.0 s" in found.detail


def test_retry_must_not_start_before_its_backoff() -> None:
    events = [sub("a", 0), start("a", 0), retrying("a", 1, 0.5), start("a", 1.25, attempt=2)]
    found = violation(events, RETRYING, complete=False)
    assert found.rule == "retry backoff: a retry starts no earlier than its delay"


def test_timed_out_attempt_ends_at_its_deadline() -> None:
    configs = (LaneConfig("fast", 0, timeout=1.0),)
    events = [sub("a", 0), start("a", 0), ev.TimedOut("fast", "a", 1.5, 1, 1.0)]
    found = violation(events, configs, complete=False)
    assert found.rule == "a timed-out attempt ends at its deadline"


# -- the state machine: hooks, the failure report, coverage ---------------------------------------

HOOKED = (LaneConfig("urgent", 0), LaneConfig("batch", 5, max_concurrency=2))


class NoPreemptionMachine(PolicyStateMachine):
    """A user's (wrong) expectation: urgent work never waits behind batch work."""

    lane_configs = st.just(HOOKED)

    @classmethod
    def max_concurrency(cls, configs: Sequence[LaneConfig]) -> st.SearchStrategy[int | None]:
        return st.just(2)

    def check_decision(self, view: SchedulerView, entry: TraceEntry) -> None:
        urgent = view.lanes["urgent"]
        assert not (urgent.queued and view.lanes["batch"].running), (
            f"urgent {list(urgent.queued)} waits behind batch {list(view.lanes['batch'].running)}"
        )


def test_a_failing_run_prints_a_replayable_schedule() -> None:
    fast = settings(NoPreemptionMachine.TestCase.settings, max_examples=200, database=None)
    with pytest.raises(AssertionError, match="waits behind batch") as info:
        NoPreemptionMachine.run(fast)
    report = "\n".join(getattr(info.value, "__notes__", []))
    assert "m = NoPreemptionMachine.replay(" in report
    assert "m.submit('batch'" in report and "m.submit('urgent'" in report
    assert "data(" not in report.split("Failing test case")[0]
    assert "started [" in report and "queues urgent=" in report
    script = report.split("(paste it into a test):\n\n", 1)[1].split("\n\nThe last decisions", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(script, "<replay>", "exec"), namespace)  # the replay fails the same way
    with pytest.raises(AssertionError, match="waits behind batch"):
        namespace["test_replay"]()  # type: ignore[operator]


def test_replay_drives_the_machine_by_hand() -> None:
    m = PolicyStateMachine.replay(
        [LaneConfig("a", 0, timeout=1.0, retry=RetryPolicy.fixed(1, 0.5))], max_concurrency=1
    )
    first = m.submit("a")
    m.advance(1.0)  # times out at its deadline, retried 0.5 s later
    view = m.view()
    assert view.commands[first].attempts == 1 and view.lanes["a"].delayed == (first,)
    m.advance(0.5)
    m.fail(first, permanent=True)
    assert m.view().dead_letters == (first,)
    m.check()
    m.drain()
    assert "m.advance(1.0)  # t=0" in m.replay_script()


def test_coverage_minimum_fails_a_run_that_misses_a_path() -> None:
    quick = settings(PolicyStateMachine.TestCase.settings, max_examples=3, database=None)
    with pytest.raises(AssertionError, match=r"'preemption' in .* \(minimum 1000\)"):
        PolicyStateMachine.run(quick, min_coverage={"preemption": 1000})


def test_the_machine_skips_the_explain_phase() -> None:
    assert Phase.explain not in PolicyStateMachine.TestCase.settings.phases
    assert Phase.shrink in PolicyStateMachine.TestCase.settings.phases


# -- the workload runner: permanent errors, results, liveness --------------------------------------


async def test_results_follow_the_retry_rules(autojump_clock: trio.testing.MockClock) -> None:
    configs = (LaneConfig("a", 0, timeout=1.0, retry=RetryPolicy.fixed(2, 0.25)),)
    work = [
        WorkItem("a", 0.0, "permanent"),
        WorkItem("a", 0.0, "fail"),
        WorkItem("a", 0.0, "slow"),
        WorkItem("a", 0.0, "flaky", failures=1),
    ]
    async with lanes.open_lane_system(configs) as system:
        results = await run_workload(system, work)
        letters = [letter.id for letter in system.dead_letters.list()]
    assert [(r.outcome, r.handle.attempts) for r in results] == [
        ("failed", 1),
        ("failed", 3),
        ("timed_out", 3),
        ("completed", 2),
    ]
    check_results(results, configs, dead_letters=letters)
    fewer = (LaneConfig("a", 0, timeout=1.0, retry=RetryPolicy.fixed(1, 0.25)),)
    with pytest.raises(AssertionError, match="after 3 attempts, the rules say 2"):
        check_results(results, fewer)
    with pytest.raises(AssertionError, match="failed but not dead-lettered"):
        check_results(results, configs, dead_letters=letters[1:])


async def test_a_hung_workload_fails_with_what_is_unresolved(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with lanes.open_lane_system([LaneConfig("a", 0)]) as system:
        with pytest.raises(WorkloadHang, match=r"within its time_limit of 2\.0 s") as info:
            await run_workload(system, [WorkItem("a", 0.0, "slow")], time_limit=2.0)
        assert "(lane 'a', running): WorkItem(lane='a'" in str(info.value)
        await system.cancel_lane("a")


async def test_a_livelock_fails_instead_of_hanging(autojump_clock: trio.testing.MockClock) -> None:
    async def spin() -> None:
        while True:
            await trio.lowlevel.checkpoint()

    async with lanes.open_lane_system([LaneConfig("a", 0)]) as system, trio.open_nursery() as n:
        n.start_soon(spin)
        with pytest.raises(WorkloadHang, match="livelock: 1000 task steps at t="):
            await run_workload(
                system, [WorkItem("a", 0.0, "success", duration=1.0)], step_budget=1000
            )
        n.cancel_scope.cancel()
