"""Review of the lane-record, attached-pool and class context manager changes (session 10)."""

from __future__ import annotations

import traceback

import trio
import trio.testing

import lanes
from lanes import LaneConfig, Retention

WORK = [LaneConfig("work", 0, max_concurrency=2)]


async def value(x: object) -> object:
    await trio.sleep(1)
    return x


async def test_retention_survives_an_idle_reap(autojump_clock: trio.abc.Clock) -> None:
    """Core.reap's fresh live dict must not replace the retention's LiveTable."""
    async with lanes.open_lane_system(WORK, retention=Retention(count=10)) as system:
        assert await system.run("work", value, 1) == 1
        await trio.sleep(5)  # idle past REAP_AFTER: the dispatcher reaps
        assert [info.result for info in system.commands(state="done")] == [1]
        assert await system.run("work", value, 2) == 2
        await trio.sleep(5)
        assert len(system.commands(state="done")) == 2
