"""Rate limits, priority boosting and preemption, under the mock clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import lanes
from lanes import LaneConfig, PriorityBoost, RateLimit
from lanes import events as ev

from .helpers import Recorder


def stamp_into(stamps: list[float]):  # type: ignore[no-untyped-def]
    async def run() -> None:
        stamps.append(trio.current_time())

    return run


@pytest.mark.parametrize("rate", [1, 5, 20])
async def test_rate_limit_holds_over_a_simulated_minute(
    autojump_clock: trio.abc.Clock, rate: int
) -> None:
    stamps: list[float] = []
    config = LaneConfig("api", 0, max_concurrency=1000, rate_limit=RateLimit.per_second(rate))
    async with lanes.open_lane_system([config]) as system:
        t0 = trio.current_time()
        for _ in range(rate * 70 + 10):
            system.submit_nowait("api", stamp_into(stamps))
        await trio.sleep(60)
        started = sum(1 for s in stamps if s - t0 <= 60)
        bound = rate + rate * 60  # a full bucket, then `rate` per second
        assert bound - 1 <= started <= bound
        await system.cancel_lane("api")


async def test_sliding_window_limit(autojump_clock: trio.abc.Clock) -> None:
    stamps: list[float] = []
    config = LaneConfig("api", 0, max_concurrency=100, rate_limit=RateLimit.sliding_window(3, 2))
    async with lanes.open_lane_system([config]) as system:
        for _ in range(12):
            system.submit_nowait("api", stamp_into(stamps))
        await system.drain()
    for i, start in enumerate(stamps):
        in_window = [s for s in stamps[i:] if s < start + 2]
        assert len(in_window) <= 3
    assert stamps[-1] - stamps[0] == pytest.approx(6)


async def test_rate_limited_lane_does_not_block_other_lanes(
    autojump_clock: trio.abc.Clock,
) -> None:
    stamps: list[float] = []
    configs = [
        LaneConfig("slow", 0, max_concurrency=10, rate_limit=RateLimit.per_minute(1)),
        LaneConfig("free", 1, max_concurrency=10),
    ]
    async with lanes.open_lane_system(configs, max_concurrency=2) as system:
        for _ in range(3):
            await system.submit("slow", stamp_into([]))
        t0 = trio.current_time()
        for _ in range(5):
            await system.run("free", stamp_into(stamps))
        assert stamps[-1] - t0 < 1  # the starved lane never held a slot or the decision
        await system.cancel_lane("slow")


@pytest.mark.parametrize(("release_at", "first"), [(3.9, "hi"), (4.0, "lo"), (6.5, "lo")])
async def test_boosted_command_overtakes_exactly_at_its_boost_point(
    autojump_clock: trio.abc.Clock, release_at: float, first: str
) -> None:
    rec = Recorder()
    release = trio.Event()

    async def blocker() -> None:
        await release.wait()

    configs = [
        LaneConfig("block", 0),
        LaneConfig("hi", 1),
        LaneConfig("lo", 3, boost=PriorityBoost.custom(10, [2, 4, 6])),
    ]
    async with lanes.open_lane_system(configs, max_concurrency=1) as system:
        t0 = trio.current_time()
        await system.submit("block", blocker)
        await system.submit("lo", rec.job("lo", 1))  # pending from t0
        await trio.sleep(1)
        await system.submit("hi", rec.job("hi", 1))  # newer, more urgent lane
        await trio.sleep_until(t0 + release_at)
        expected = {3.9: 2, 4.0: 1, 6.5: 0}[release_at]
        assert system.statistics().lanes["lo"].effective_priority == expected
        release.set()
        await system.drain()
    assert rec.started[0] == first


async def test_boosting_ends_starvation_under_a_flood(autojump_clock: trio.abc.Clock) -> None:
    async def run_flood(boost: PriorityBoost | None) -> float:
        rec = Recorder()
        starts: list[float] = []
        configs = [LaneConfig("hi", 1), LaneConfig("lo", 2, boost=boost)]
        async with lanes.open_lane_system(configs, max_concurrency=1) as system:
            t0 = trio.current_time()
            for i in range(100):
                await system.submit("hi", rec.job(i, 1))
            await system.submit("lo", stamp_into(starts))
            await system.drain()
        return starts[0] - t0

    assert await run_flood(None) == pytest.approx(100)
    assert await run_flood(PriorityBoost.custom(10, [5, 10])) == pytest.approx(10)


async def test_fifo_is_kept_within_a_boosted_lane(autojump_clock: trio.abc.Clock) -> None:
    rec = Recorder()
    configs = [LaneConfig("hi", 0), LaneConfig("lo", 2, boost=PriorityBoost.standard(4))]
    async with lanes.open_lane_system(configs, max_concurrency=1) as system:
        for i in range(10):
            await system.submit("lo", rec.job(("lo", i), 1))
            await system.submit("hi", rec.job(("hi", i), 1))
        await system.drain()
    lo_order = [tag[1] for tag in rec.started if tag[0] == "lo"]
    assert lo_order == list(range(10))


async def test_preemption_frees_a_slot_and_the_preempted_command_completes(
    autojump_clock: trio.abc.Clock,
) -> None:
    rec = Recorder()
    configs = [
        LaneConfig("control", 1),
        LaneConfig("prompt", 5, max_concurrency=2, preemptible=True),
    ]
    async with lanes.open_lane_system(configs, max_concurrency=2) as system:
        async with system.subscribe(ev.Preempted) as preempted:
            first = await system.submit("prompt", rec.job("p0", 10))
            await trio.sleep(1)
            second = await system.submit("prompt", rec.job("p1", 10))
            third = await system.submit("prompt", rec.job("p2", 10))
            await trio.sleep(1)
            control = await system.submit("control", rec.job("control", 1))
            await control.result()
            assert trio.current_time() == pytest.approx(3)
            event = preempted.receive_nowait()
        assert event.command_id == second.id  # the most recently started one
        assert await first.result() == "p0"
        assert await second.result() == "p1"
        assert second.attempts == 1  # the preempted attempt is not counted
        await third.result()
        stats = system.statistics().lanes["prompt"]
        assert (stats.preempted, stats.completed, stats.retried) == (1, 3, 0)
    # p1 was requeued at the head of its lane: it restarts before p2.
    assert rec.started == ["p0", "p1", "control", "p1", "p2"]


async def test_no_preemption_of_non_preemptible_or_more_urgent_lanes(
    autojump_clock: trio.abc.Clock,
) -> None:
    rec = Recorder()
    configs = [
        LaneConfig("urgent", 0, preemptible=True),
        LaneConfig("mid", 1),
        LaneConfig("prompt", 5),
    ]
    async with lanes.open_lane_system(configs, max_concurrency=2) as system:
        await system.submit("urgent", rec.job("u", 5))
        await system.submit("prompt", rec.job("p", 5))
        await trio.sleep(1)
        await system.submit("mid", rec.job("m", 1))
        await system.drain()
        assert system.statistics().lanes["urgent"].preempted == 0
        assert system.statistics().lanes["prompt"].preempted == 0
    assert rec.started[-1] == "m"


async def test_preemption_without_a_cap_never_happens(autojump_clock: trio.abc.Clock) -> None:
    configs = [LaneConfig("a", 0), LaneConfig("b", 1, preemptible=True)]
    rec = Recorder()
    async with lanes.open_lane_system(configs) as system:
        await system.submit("b", rec.job("b", 5))
        await system.submit("a", rec.job("a", 5))
        await system.drain()
        assert system.statistics().lanes["b"].preempted == 0
    assert rec.peak == 2
