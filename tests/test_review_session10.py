"""Review of the lane-record, attached-pool and class context manager changes (session 10)."""

from __future__ import annotations

import gc
import traceback
import weakref

import pytest
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


async def slow() -> None:
    await trio.sleep(100)


def _frames(error: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(error.__traceback__)]


async def test_an_outer_cancellation_propagates_the_bodys_own_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    """As with the old generator: not a worker's Cancelled (its frames, its command's)."""
    for _ in range(5):  # trio's scheduling order varies: a worker's could come first
        mine: BaseException | None = None
        escaped: BaseException | None = None
        with trio.move_on_after(5) as outer:
            try:
                async with lanes.open_lane_system(WORK) as system:
                    for _ in range(2):
                        await system.submit("work", slow)
                    try:
                        await trio.sleep(100)
                    except trio.Cancelled as cancelled:
                        mine = cancelled
                        raise
            except trio.Cancelled as cancelled:
                escaped = cancelled
                raise
        assert outer.cancelled_caught
        assert mine is not None and escaped is mine
        assert "run_attempt" not in _frames(escaped)


async def test_a_drain_cut_by_an_outer_cancellation_propagates_the_drains_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    for _ in range(5):
        escaped: BaseException | None = None
        with trio.move_on_after(5) as outer:
            try:
                async with lanes.open_lane_system(WORK) as system:
                    handles = [await system.submit("work", slow) for _ in range(2)]
            except trio.Cancelled as cancelled:
                escaped = cancelled
                raise
        assert outer.cancelled_caught
        assert escaped is not None
        frames = _frames(escaped)
        assert "_close_gracefully" in frames and "run_attempt" not in frames
        assert [h.status for h in handles] == ["cancelled", "cancelled"]


async def test_the_shared_empty_user_metrics_cannot_be_registered_into() -> None:
    """A system without metrics of its own reads one shared empty registry: registering
    into it would give the metric to every such system."""
    async with lanes.open_lane_system(WORK) as first, lanes.open_lane_system(WORK) as second:
        with pytest.raises(lanes.LaneUsageError, match=r"system\.metrics\.counter\(name"):
            first.metrics.user.register("counter", "leaked_total", "", ())
        assert second.metrics.snapshot().user == {}
        first.metrics.counter("mine_total").inc()
        assert list(first.metrics.snapshot().user) == ["mine_total"]
        assert second.metrics.snapshot().user == {}


async def test_a_context_kept_after_its_block_does_not_keep_the_system(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The old generator context was finished (its frame gone) once left."""
    context = lanes.open_lane_system(WORK)
    async with context as system:
        await system.run("work", value, 1)
    ref = weakref.ref(system)
    del system
    gc.collect()
    assert ref() is None
    assert context is not None


class _BodyError(Exception):
    pass


async def test_the_bodys_error_comes_out_as_itself(autojump_clock: trio.abc.Clock) -> None:
    """Same object, traceback of the body alone, its cause kept, no group in its display."""
    cause = KeyError("why")
    marker = _BodyError("body")
    with pytest.raises(_BodyError) as info:
        async with lanes.open_lane_system(WORK) as system:
            await system.submit("work", slow)
            await trio.sleep(1)
            raise marker from cause
    error = info.value
    assert error is marker and error.__cause__ is cause
    assert _frames(error) == ["test_the_bodys_error_comes_out_as_itself"]
    shown = "".join(traceback.format_exception(error))
    assert "ExceptionGroup" not in shown and "KeyError" in shown
