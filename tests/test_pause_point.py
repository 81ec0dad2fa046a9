"""lanes.pause_point(): a running command's cooperative pause."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import lanes

ONE = (lanes.LaneConfig("llm", 0, max_concurrency=2),)


def streamer(log: list[tuple[int, float]], n: int = 5):  # type: ignore[no-untyped-def]
    async def run() -> int:
        for i in range(n):
            await lanes.pause_point()
            log.append((i, trio.current_time()))
            await trio.sleep(1)
        return n

    return run


async def test_a_paused_lane_stops_its_running_commands_at_the_pause_point(
    autojump_clock: trio.abc.Clock,
) -> None:
    log: list[tuple[int, float]] = []
    async with lanes.open_lane_system(ONE) as system:
        start = trio.current_time()
        handle = await system.submit("llm", streamer(log))
        await trio.sleep(1.5)
        system.pause("llm")
        await trio.sleep(10)
        assert [i for i, _ in log] == [0, 1]  # stopped before token 2
        assert handle.status == "running"  # it keeps its slot
        system.resume("llm")
        assert await handle.result() == 5
    assert [t - start for _, t in log] == [0, 1, 11.5, 12.5, 13.5]  # resumed at 11.5


async def test_pause_point_returns_at_once_when_not_paused(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        start = trio.current_time()
        log: list[tuple[int, float]] = []
        await system.run("llm", streamer(log, 3))
        assert trio.current_time() - start == 3


async def test_pause_point_is_a_checkpoint() -> None:
    spinning = trio.Event()
    others_ran = 0

    async def spin() -> None:
        spinning.set()
        while True:
            await lanes.pause_point()  # nothing else awaits: still cancellable

    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit("llm", spin)
        await spinning.wait()
        for _ in range(3):
            await trio.lowlevel.checkpoint()  # the spinning command lets this task run
            others_ran += 1
        handle.cancel()
        with pytest.raises(lanes.CommandCancelled):
            await handle.result()
    assert others_ran == 3


async def test_cancel_and_timeout_interrupt_a_paused_command(
    autojump_clock: trio.abc.Clock,
) -> None:
    log: list[tuple[int, float]] = []
    async with lanes.open_lane_system(ONE) as system:
        system.pause("llm")
        system.resume("llm")  # no waiter yet: nothing to wake
        first = await system.submit("llm", streamer(log))
        timed = await system.submit("llm", streamer(log), timeout=5)
        await trio.sleep(0.5)
        system.pause("llm")
        await trio.sleep(1)
        first.cancel()
        with pytest.raises(lanes.CommandCancelled):
            await first.result()
        with pytest.raises(lanes.CommandTimeout):
            await timed.result()
        stats = system.statistics().lanes["llm"]
        assert stats.active == 0
        system.resume("llm")


async def test_close_now_ends_a_paused_command(autojump_clock: trio.abc.Clock) -> None:
    log: list[tuple[int, float]] = []
    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit("llm", streamer(log))
        await trio.sleep(0.5)
        system.pause("llm")
        await trio.sleep(1)
        start = trio.current_time()
        system.close_now()
    assert trio.current_time() == start
    assert handle.status == "cancelled"


async def test_pause_point_outside_a_command_raises() -> None:
    with pytest.raises(lanes.LaneUsageError, match="outside a command"):
        await lanes.pause_point()


async def test_pause_point_from_a_task_that_outlived_its_command(
    autojump_clock: trio.abc.Clock,
) -> None:
    errors: list[BaseException] = []
    async with trio.open_nursery() as outer:

        async def leaks() -> None:
            async def later() -> None:
                await trio.sleep(1)
                try:
                    await lanes.pause_point()
                except lanes.LaneUsageError as exc:
                    errors.append(exc)

            outer.start_soon(later)

        async with lanes.open_lane_system(ONE) as system:
            await system.run("llm", leaks)
    assert len(errors) == 1
    assert "not running" in str(errors[0])
