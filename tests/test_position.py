"""handle.position and the lanes' recent wait figures ("3 requests ahead of you")."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import lanes

ONE = (lanes.LaneConfig("llm", 0, max_concurrency=1), lanes.LaneConfig("other", 1))


async def test_position_counts_the_commands_ahead(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE) as system:
        handles = [await system.submit("llm", trio.sleep, 1) for _ in range(5)]
        assert [h.position for h in handles] == [None, 0, 1, 2, 3]
        handles[2].cancel()
        assert [h.position for h in handles] == [None, 0, None, 1, 2]
        await handles[0].result()
        assert [h.position for h in handles] == [None, None, None, 0, 1]
        await handles[4].result()
        assert [h.position for h in handles] == [None] * 5


async def test_position_of_delayed_and_retrying_commands(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE) as system:
        running = await system.submit("llm", trio.sleep, 10)
        delayed = await system.submit("llm", trio.sleep, 1, delay=2)
        queued = await system.submit("llm", trio.sleep, 1)
        assert (delayed.position, queued.position) == (None, 0)
        await trio.sleep(3)
        assert (delayed.position, queued.position) == (1, 0)  # due: behind the earlier one
        assert running.position is None
        system.close_now()


async def test_position_in_a_paused_lane_and_after_a_preemption(
    autojump_clock: trio.abc.Clock,
) -> None:
    configs = (lanes.LaneConfig("control", 0), lanes.LaneConfig("llm", 5, preemptible=True))
    async with lanes.open_lane_system(configs, max_concurrency=1) as system:
        first = await system.submit("llm", trio.sleep, 10)
        second = await system.submit("llm", trio.sleep, 10)
        await trio.testing.wait_all_tasks_blocked()
        await system.run("control", trio.sleep, 0)  # preempts `first`: back at the head
        assert (first.position, second.position) in {(None, 0), (0, 1)}
        system.pause("llm")
        waiting = [h for h in (first, second) if h.position is not None]
        assert [h.position for h in waiting] == list(range(len(waiting)))
        system.close_now()


async def test_recent_wait_figures(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE) as system:
        before = system.statistics().lanes["llm"]
        assert (before.recent_wait_p50, before.recent_wait_p99) == (None, None)
        handles = [await system.submit("llm", trio.sleep, 1) for _ in range(5)]
        await handles[-1].result()
        stats = system.statistics().lanes["llm"]
        assert stats.recent_wait_p50 == pytest.approx(2.0)  # waits 0, 1, 2, 3, 4
        assert stats.recent_wait_p99 == pytest.approx(4.0)
        assert system.statistics().lanes["other"].recent_wait_p50 is None


async def test_recent_waits_cover_only_the_latest_starts(autojump_clock: trio.abc.Clock) -> None:
    from lanes._metrics import RECENT_STARTS

    async with lanes.open_lane_system(ONE) as system:
        handles = [await system.submit("llm", trio.sleep, 1) for _ in range(10)]
        await handles[-1].result()
        for _ in range(RECENT_STARTS):
            await system.run("llm", trio.sleep, 0)  # no wait at all
        stats = system.statistics().lanes["llm"]
        assert stats.recent_wait_p99 == 0.0
