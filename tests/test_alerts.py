"""Alerts: thresholds per lane, once per level crossing, hysteresis, sampling, bad input."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

import lanes
from lanes import AlertRule, LaneConfig
from lanes import events as ev

from .helpers import noop, sleeper
from .test_metrics import task_count

CONFIGS = [LaneConfig("work", 0, max_concurrency=10), LaneConfig("prompt", 5)]
Crossing = tuple[float, str, str]  # (time, "raised" or "cleared", level)


class Depth:
    """Holds the pending count of a paused lane at a chosen value."""

    def __init__(self, system: lanes.LaneSystem, lane: str) -> None:
        self.system, self.lane = system, lane
        self.handles: list[lanes.CommandHandle[int]] = []
        system.pause(lane)

    async def set(self, n: int) -> None:
        while len(self.handles) < n:
            self.handles.append(await self.system.submit(self.lane, noop))
        while len(self.handles) > n:
            self.handles.pop().cancel()


def recorder(t0: float) -> tuple[list[Crossing], lanes.AlertCallback]:
    crossings: list[Crossing] = []

    def record(event: ev.AlertRaised | ev.AlertCleared) -> None:
        kind = "raised" if isinstance(event, ev.AlertRaised) else "cleared"
        crossings.append((round(event.timestamp - t0, 6), kind, event.level))

    return crossings, record


async def test_queue_depth_alerts_fire_once_per_level_crossing(
    autojump_clock: trio.abc.Clock,
) -> None:
    rule = AlertRule.queue_depth("prompt", warning=5, critical=10)  # clear below 4 / 8
    # clock=trio.current_time: the events' wall-time timestamps are then Trio times
    async with lanes.open_lane_system(CONFIGS, clock=trio.current_time) as system:
        t0 = trio.current_time()
        crossings, record = recorder(t0)
        depth = Depth(system, "prompt")
        async with lanes.open_alert_monitor(system, [rule], callbacks=[record]) as monitor:
            # Depth set at k + 0.5 is sampled at k + 1.
            for k, n in enumerate([5, 6, 10, 9, 8, 10, 7, 4, 3, 20]):
                await trio.sleep_until(t0 + k + 0.5)
                await depth.set(n)
            await trio.sleep_until(t0 + 10.5)
            assert monitor.levels == {("prompt", "queue_depth"): "critical"}
            assert [(a.level, a.value, a.threshold) for a in monitor.raised] == [
                ("warning", 20, 5),
                ("critical", 20, 10),
            ]
            await depth.set(0)
        system.resume("prompt")
    assert crossings == [
        (1, "raised", "warning"),
        (3, "raised", "critical"),
        (7, "cleared", "critical"),
        (9, "cleared", "warning"),
        (10, "raised", "warning"),
        (10, "raised", "critical"),
    ]
    assert monitor.samples == 11  # at 0, 1, ..., 10: once per interval


@pytest.mark.parametrize(("clear_ratio", "flaps"), [(0.8, False), (1.0, True)])
async def test_hysteresis_keeps_a_level_from_flapping(
    autojump_clock: trio.abc.Clock, clear_ratio: float, flaps: bool
) -> None:
    rule = AlertRule.queue_depth("prompt", warning=5, clear_ratio=clear_ratio)
    async with lanes.open_lane_system(CONFIGS) as system:
        crossings, record = recorder(trio.current_time())
        depth = Depth(system, "prompt")
        monitor = lanes.AlertMonitor(system, [rule], callbacks=[record])
        for n in [5, 4, 5, 4, 5, 4]:  # hovering around the threshold
            await depth.set(n)
            monitor.check()
        await depth.set(0)
        system.resume("prompt")
    kinds = [kind for _, kind, _ in crossings]
    assert kinds == (["raised", "cleared"] * 3 if flaps else ["raised"])


async def test_latency_alerts_judge_a_sliding_window(autojump_clock: trio.abc.Clock) -> None:
    rule = AlertRule.latency("work", of="run", warning=1.0, critical=3.0)
    # clock=trio.current_time: the events' wall-time timestamps are then Trio times
    async with lanes.open_lane_system(CONFIGS, clock=trio.current_time) as system:
        t0 = trio.current_time()
        crossings, record = recorder(t0)
        async with lanes.open_alert_monitor(
            system, [rule], interval=1.0, window=2.0, callbacks=[record]
        ) as monitor:
            await trio.sleep_until(t0 + 0.5)
            await system.submit("work", sleeper, 2.0)  # ends at 2.5
            await trio.sleep_until(t0 + 3.5)
            assert monitor.raised[0].value == pytest.approx(2.0, rel=0.016)
            await trio.sleep_until(t0 + 5.5)
            await system.submit("work", sleeper, 4.0)  # ends at 9.5
            await trio.sleep_until(t0 + 10.5)
    assert crossings == [
        (3, "raised", "warning"),  # the window (1, 3] holds the 2 s attempt
        (5, "cleared", "warning"),  # the window (3, 5] is empty
        (10, "raised", "warning"),
        (10, "raised", "critical"),
    ]


async def test_wait_latency_alert(autojump_clock: trio.abc.Clock) -> None:
    rule = AlertRule.latency("prompt", of="wait", percentile=50, critical=2.0)
    async with lanes.open_lane_system(CONFIGS) as system:
        monitor = lanes.AlertMonitor(system, [rule], window=10)
        system.pause("prompt")
        handle = await system.submit("prompt", noop)
        await trio.sleep(3)
        system.resume("prompt")
        await handle.result()
        [raised] = monitor.check()
    assert isinstance(raised, ev.AlertRaised)
    assert (raised.lane, raised.metric, raised.level) == ("prompt", "wait_p50", "critical")
    assert raised.value == pytest.approx(3, rel=0.016)


async def test_alerts_are_events_for_subscribers_and_listeners(
    autojump_clock: trio.abc.Clock,
) -> None:
    rule = AlertRule.queue_depth("prompt", warning=1)
    heard: list[ev.Event] = []
    async with lanes.open_lane_system(CONFIGS) as system:
        system.listen(heard.append)
        async with system.subscribe(ev.AlertRaised, ev.AlertCleared) as stream:
            depth = Depth(system, "prompt")
            monitor = lanes.AlertMonitor(system, [rule])
            await depth.set(1)
            monitor.check()
            await depth.set(0)
            monitor.check()
            raised, cleared = stream.receive_nowait(), stream.receive_nowait()
        system.resume("prompt")
    assert isinstance(raised, ev.AlertRaised)
    assert raised.key == "lane.alert.raised"
    assert (raised.lane, raised.command_id, raised.metric) == ("prompt", "", "queue_depth")
    assert (raised.value, raised.threshold) == (1, 1)
    assert isinstance(cleared, ev.AlertCleared)
    assert cleared.key == "lane.alert.cleared"
    assert (cleared.value, cleared.threshold) == (0, 0.8)
    assert [e for e in heard if isinstance(e, ev.AlertRaised | ev.AlertCleared)] == [
        raised,
        cleared,
    ]


async def test_an_idle_monitor_wakes_once_per_interval(autojump_clock: trio.abc.Clock) -> None:
    rules = [AlertRule.queue_depth("work", warning=1), AlertRule.latency("work", warning=1)]
    async with lanes.open_lane_system(CONFIGS) as system:
        async with lanes.open_alert_monitor(system, rules, interval=2.5) as monitor:
            assert monitor.samples == 1  # the first sample precedes the block
            await trio.sleep(101)
        assert monitor.samples == 41  # at 0, 2.5, ..., 100
        assert monitor.levels == {("work", "queue_depth"): "ok", ("work", "run_p99"): "ok"}


async def test_cancelling_the_monitor_leaves_no_task_and_keeps_levels(
    autojump_clock: trio.abc.Clock,
) -> None:
    rule = AlertRule.queue_depth("prompt", critical=2)
    async with lanes.open_lane_system(CONFIGS) as system:
        before = task_count()
        monitor = lanes.AlertMonitor(system, [rule])
        depth = Depth(system, "prompt")
        await depth.set(3)
        async with trio.open_nursery() as nursery:
            await nursery.start(monitor.run)
            with pytest.raises(lanes.LaneUsageError, match="already running"):
                await nursery.start(monitor.run)
            await trio.sleep(5)
            nursery.cancel_scope.cancel()
        assert task_count() == before
        assert monitor.levels == {("prompt", "queue_depth"): "critical"}
        samples = monitor.samples
        await trio.sleep(5)
        assert monitor.samples == samples  # nothing samples any more
        async with trio.open_nursery() as nursery:  # it may run again
            await nursery.start(monitor.run)
            nursery.cancel_scope.cancel()
        await depth.set(0)
        system.resume("prompt")


async def test_an_error_in_the_block_surfaces_as_itself(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(CONFIGS) as system:
        before = task_count()
        rules = [AlertRule.queue_depth("work", warning=1)]
        with pytest.raises(KeyError, match="oops"):
            async with lanes.open_alert_monitor(system, rules):
                raise KeyError("oops")
        assert task_count() == before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"warning": -1}, "warning=-1 is invalid"),
        ({"warning": 0}, "warning=0 is invalid"),
        ({"critical": math.nan}, "critical=nan is invalid"),
        ({"critical": math.inf}, "critical=inf is invalid"),
        ({"warning": True}, "warning=True is invalid"),
        ({"warning": "5"}, "warning='5' is invalid"),
        ({}, "give a warning or a critical threshold"),
        ({"warning": 10, "critical": 5}, r"warning=10 is invalid; expected <= critical=5"),
        ({"warning": 1, "clear_ratio": 0}, "clear_ratio=0 is invalid"),
        ({"warning": 1, "clear_ratio": 1.5}, "clear_ratio=1.5 is invalid"),
    ],
)
def test_invalid_thresholds_are_config_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(lanes.LaneConfigError, match=match):
        AlertRule("work", "queue_depth", **kwargs)  # type: ignore[arg-type]


def test_invalid_metrics_are_config_errors() -> None:
    with pytest.raises(lanes.LaneConfigError, match="metric='depth' is invalid; expected one of"):
        AlertRule("work", "depth", warning=1)
    with pytest.raises(lanes.LaneConfigError, match="metric='run_p98'"):
        AlertRule.latency("work", percentile=98, warning=1)
    with pytest.raises(lanes.LaneConfigError, match="lane=''"):
        AlertRule("", "queue_depth", warning=1)


async def test_invalid_monitors_are_rejected() -> None:
    rule = AlertRule.queue_depth("work", warning=1)
    async with lanes.open_lane_system(CONFIGS) as system:
        with pytest.raises(lanes.UnknownLaneError, match="unknown lane 'nope'"):
            lanes.AlertMonitor(system, [AlertRule.queue_depth("nope", warning=1)])
        with pytest.raises(lanes.LaneConfigError, match="one rule per lane and metric"):
            lanes.AlertMonitor(system, [rule, rule])
        with pytest.raises(lanes.LaneConfigError, match="expected AlertRule objects"):
            lanes.AlertMonitor(system, ["work"])  # type: ignore[list-item]
        for bad in (0, -1.0, math.inf):
            with pytest.raises(lanes.LaneConfigError, match=f"interval={bad!r}"):
                lanes.AlertMonitor(system, [rule], interval=bad)
            with pytest.raises(lanes.LaneConfigError, match=f"window={bad!r}"):
                lanes.AlertMonitor(system, [rule], window=bad)
        with pytest.raises(lanes.LaneConfigError, match="interval=0"):
            async with lanes.open_alert_monitor(system, [rule], interval=0):
                pass  # pragma: no cover
