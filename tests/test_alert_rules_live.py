"""Changing an alert monitor's rules while it runs: thresholds, new rules, removed rules."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import lanes
from lanes import AlertRule
from lanes import events as ev

from .test_alerts import CONFIGS, Depth, recorder
from .test_metrics import task_count


async def test_a_lower_threshold_raises_at_the_next_sample(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(CONFIGS, clock=trio.current_time) as system:
        t0 = trio.current_time()
        crossings, record = recorder(t0)
        depth = Depth(system, "prompt")
        await depth.set(6)
        rule = AlertRule.queue_depth("prompt", warning=10)
        async with lanes.open_alert_monitor(system, [rule], callbacks=[record]) as monitor:
            await trio.sleep_until(t0 + 2.5)
            assert monitor.levels == {("prompt", "queue_depth"): "ok"}
            assert monitor.set_rule(AlertRule.queue_depth("prompt", warning=5)) == []
            assert monitor.rules == (AlertRule.queue_depth("prompt", warning=5),)
            await trio.sleep_until(t0 + 3.5)
            assert monitor.levels == {("prompt", "queue_depth"): "warning"}
            # Raised a warning at 5: the new threshold 8 clears it below 8 * 0.8 = 6.4.
            monitor.set_rule(AlertRule.queue_depth("prompt", warning=8))
            await trio.sleep_until(t0 + 4.5)
            await depth.set(0)
        system.resume("prompt")
    assert crossings == [(3, "raised", "warning"), (4, "cleared", "warning")]


async def test_hysteresis_holds_under_the_new_threshold(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(CONFIGS) as system:
        depth = Depth(system, "prompt")
        await depth.set(6)
        monitor = lanes.AlertMonitor(system, [AlertRule.queue_depth("prompt", warning=5)])
        assert [type(e) for e in monitor.check()] == [ev.AlertRaised]
        monitor.set_rule(AlertRule.queue_depth("prompt", warning=7))  # clear below 5.6
        assert monitor.check() == []  # 6 is above the clear threshold: still raised
        await depth.set(5)
        (cleared,) = monitor.check()
        assert isinstance(cleared, ev.AlertCleared) and cleared.threshold == pytest.approx(5.6)
        await depth.set(0)
        system.resume("prompt")


async def test_a_level_the_new_rule_lacks_is_cleared_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    heard: list[ev.Event] = []
    async with lanes.open_lane_system(CONFIGS) as system, system.subscribe() as stream:
        depth = Depth(system, "prompt")
        await depth.set(12)
        rule = AlertRule.queue_depth("prompt", warning=5, critical=10)
        monitor = lanes.AlertMonitor(system, [rule], callbacks=[heard.append])
        assert [e.level for e in monitor.check()] == ["warning", "critical"]
        (cleared,) = monitor.set_rule(AlertRule.queue_depth("prompt", warning=5))
        assert (cleared.level, cleared.value, cleared.threshold) == ("critical", 12, 8)
        assert monitor.levels == {("prompt", "queue_depth"): "warning"}
        assert heard[-1] is cleared  # the callbacks heard it
        removed = monitor.remove_rule("prompt", "queue_depth")
        assert [(e.level, e.value) for e in removed] == [("warning", 12)]
        assert monitor.rules == () and monitor.levels == {} and monitor.raised == []
        assert monitor.check() == []
        keys = []
        while True:
            try:
                keys.append(stream.receive_nowait().key)
            except trio.WouldBlock:
                break
        alerts = [k for k in keys if k.startswith("lane.alert")]
        assert alerts == ["lane.alert.raised"] * 2 + ["lane.alert.cleared"] * 2
        await depth.set(0)
        system.resume("prompt")


async def test_a_new_latency_rule_judges_attempts_from_then_on(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(CONFIGS) as system:
        monitor = lanes.AlertMonitor(system, [AlertRule.queue_depth("prompt", warning=5)])
        await system.run("work", trio.sleep, 4)  # before the rule: not in its window
        monitor.set_rule(AlertRule.latency("work", of="run", warning=1.0))
        assert monitor.check() == []
        await system.run("work", trio.sleep, 2)
        (raised,) = monitor.check()
        assert raised.metric == "run_p99" and raised.value >= 2


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda m: m.set_rule("queue_depth"), lanes.LaneConfigError, "expected AlertRule"),
        (
            lambda m: m.set_rule(AlertRule.queue_depth("nope", warning=1)),
            lanes.UnknownLaneError,
            "unknown lane 'nope'",
        ),
        (
            lambda m: m.remove_rule("prompt", "run_p99"),
            lanes.LaneConfigError,
            r"no rule for lane 'prompt' and metric 'run_p99'; rules: \('prompt', 'queue_depth'\)",
        ),
    ],
)
async def test_bad_changes_change_nothing(
    autojump_clock: trio.abc.Clock, call: object, error: type[Exception], words: str
) -> None:
    async with lanes.open_lane_system(CONFIGS) as system:
        rule = AlertRule.queue_depth("prompt", warning=5)
        monitor = lanes.AlertMonitor(system, [rule])
        with pytest.raises(error, match=words):
            call(monitor)  # type: ignore[operator]
        assert monitor.rules == (rule,)


async def test_changing_rules_of_a_cancelled_monitor_leaves_no_task(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(CONFIGS) as system:
        depth = Depth(system, "prompt")
        await depth.set(6)
        before = task_count()
        with trio.move_on_after(2.5):
            async with lanes.open_alert_monitor(
                system, [AlertRule.queue_depth("prompt", warning=10)]
            ) as monitor:
                monitor.set_rule(AlertRule.queue_depth("prompt", warning=5))
                await trio.sleep_forever()
        await trio.testing.wait_all_tasks_blocked()
        assert task_count() == before
        assert monitor.levels == {("prompt", "queue_depth"): "warning"}  # kept, as documented
        monitor.remove_rule("prompt", "queue_depth")  # still usable: clears at once
        assert monitor.raised == []
        await depth.set(0)
        system.resume("prompt")
