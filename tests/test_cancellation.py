"""Cancellation at every phase leaks no slot, no task and no unresolved handle."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

import lanes
from lanes import LaneConfig

from .helpers import Recorder, noop, sleeper

ONE = [LaneConfig("work", 0, max_concurrency=1)]


async def assert_lane_works(system: lanes.LaneSystem, lane: str = "work") -> None:
    """The lane has its slot back: a new command runs to completion."""
    assert await system.run(lane, noop) == 1
    assert system.statistics().lanes[lane].active == 0


async def test_cancel_queued_command(autojump_clock: trio.abc.Clock) -> None:
    rec = Recorder()
    async with lanes.open_lane_system(ONE) as system:
        running = await system.submit("work", rec.job("a", 5))
        queued = await system.submit("work", rec.job("b", 5))
        await trio.testing.wait_all_tasks_blocked()
        queued.cancel()
        assert queued.status == "cancelled"  # resolved synchronously
        with pytest.raises(lanes.CommandCancelled, match="was cancelled"):
            await queued.result()
        assert await running.result() == "a"
        queued.cancel()  # no-op once terminal
        await assert_lane_works(system)
    assert rec.started == ["a"]


async def test_cancel_running_command(autojump_clock: trio.abc.Clock) -> None:
    after: list[str] = []

    async def slow() -> None:
        await trio.sleep(100)
        after.append("never")

    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit("work", slow)
        await trio.sleep(1)
        assert handle.status == "running"
        handle.cancel()
        with pytest.raises(lanes.CommandCancelled):
            await handle.result()
        assert trio.current_time() < 2
        assert system.statistics().lanes["work"].cancelled == 1
        await assert_lane_works(system)
    assert after == []


async def test_cancel_between_grant_and_start(autojump_clock: trio.abc.Clock) -> None:
    rec = Recorder()
    async with lanes.open_lane_system(ONE) as system:
        handle = system.submit_nowait("work", rec.job("x", 1))
        # The fast path granted it at submit (a local lane with room): it is handed to the
        # lane's worker, which has not started it yet.
        assert system.statistics().lanes["work"].active == 1
        assert handle.status == "running"  # started: granted in policy order
        handle.cancel()
        with pytest.raises(lanes.CommandCancelled):
            await handle.result()
        await trio.testing.wait_all_tasks_blocked()
        assert rec.started == []
        await assert_lane_works(system)


async def test_cancel_delayed_and_retrying_commands(autojump_clock: trio.abc.Clock) -> None:
    attempts: list[float] = []

    async def flaky() -> None:
        attempts.append(trio.current_time())
        raise RuntimeError("flaky")

    config = LaneConfig("work", 0, retry=lanes.RetryPolicy.fixed(5, 10))
    async with lanes.open_lane_system([config]) as system:
        delayed = await system.submit("work", noop, delay=50)
        retrying = await system.submit("work", flaky)
        await trio.sleep(1)
        assert retrying.status == "retrying"
        delayed.cancel()
        retrying.cancel()
        for handle in (delayed, retrying):
            with pytest.raises(lanes.CommandCancelled):
                await handle.result()
        await trio.sleep(100)
        assert len(attempts) == 1
        await assert_lane_works(system)


async def test_cancel_lane(autojump_clock: trio.abc.Clock) -> None:
    rec = Recorder()
    async with lanes.open_lane_system() as system:
        prompts = [await system.submit("prompt", rec.job(i, 30)) for i in range(5)]
        query = await system.submit("query", rec.job("q", 1))
        await trio.testing.wait_all_tasks_blocked()
        assert await system.cancel_lane("prompt") == 5
        assert [h.status for h in prompts] == ["cancelled"] * 5
        stats = system.statistics().lanes["prompt"]
        assert (stats.active, stats.pending, stats.cancelled) == (0, 0, 5)
        assert await query.result() == "q"
        await assert_lane_works(system, "prompt")


async def test_result_wait_cancelled_leaves_command_running(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system() as system:
        handle = await system.submit("query", sleeper, 5)
        with trio.move_on_after(1):
            await handle.result()
        assert handle.status == "running"
        assert await handle.result() == 5


async def test_run_cancelled_cancels_its_command(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE) as system:
        with trio.move_on_after(1):
            await system.run("work", sleeper, 100)
        await trio.testing.wait_all_tasks_blocked()
        stats = system.statistics().lanes["work"]
        assert (stats.active, stats.cancelled) == (0, 1)
        await assert_lane_works(system)


async def test_cancelled_while_waiting_for_room_accepts_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    config = LaneConfig("work", 0, inbox_size=1)
    async with lanes.open_lane_system([config]) as system:
        system.pause("work")
        await system.submit("work", noop)
        with trio.move_on_after(1):
            await system.submit("work", noop)
        assert system.statistics().lanes["work"].submitted == 1
        system.resume("work")
        await system.drain()
        await assert_lane_works(system)


async def test_drain_waits_for_everything(autojump_clock: trio.abc.Clock) -> None:
    rec = Recorder()
    config = LaneConfig("work", 0, max_concurrency=2, retry=lanes.RetryPolicy.fixed(1, 3))
    calls = 0

    async def fails_once() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("first")
        return "ok"

    async with lanes.open_lane_system([config]) as system:
        handles = [await system.submit("work", rec.job(i, 2)) for i in range(4)]
        flaky = await system.submit("work", fails_once)
        late = await system.submit("work", noop, delay=20)
        await system.drain()
        assert trio.current_time() == pytest.approx(20)
        assert all(h.status == "done" for h in [*handles, flaky, late])


async def test_drain_timeout_cancels_the_rest(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE) as system:
        quick = await system.submit("work", sleeper, 1)
        slow = await system.submit("work", sleeper, 100)
        queued = await system.submit("work", sleeper, 1)
        with pytest.raises(lanes.DrainTimeout, match="cancelled 2 unfinished"):
            await system.drain(5)
        assert trio.current_time() == pytest.approx(5)
        assert quick.status == "done"
        assert slow.status == queued.status == "cancelled"
        with pytest.raises(lanes.CommandCancelled, match="shut down"):
            await slow.result()
        await assert_lane_works(system)


async def test_shutdown_stops_accepting(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system() as system:
        handle = await system.submit("query", sleeper, 2)
        await system.shutdown()
        with pytest.raises(lanes.ShutdownInProgress):
            await system.submit("query", noop)
        with pytest.raises(lanes.ShutdownInProgress):
            system.submit_nowait("query", noop)
        assert not system.statistics().accepting
        assert await handle.result() == 2


async def test_shutdown_wakes_submitters_waiting_for_room(
    autojump_clock: trio.abc.Clock,
) -> None:
    config = LaneConfig("work", 0, inbox_size=1)
    errors: list[BaseException] = []
    async with lanes.open_lane_system([config]) as system:
        system.pause("work")
        await system.submit("work", noop)

        async def waiter() -> None:
            try:
                await system.submit("work", noop)
            except lanes.ShutdownInProgress as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            await system.shutdown()
        system.resume("work")
    assert len(errors) == 1


async def test_normal_exit_drains(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system() as system:
        handles = [await system.submit("prompt", sleeper, 5) for _ in range(4)]
    assert [h.status for h in handles] == ["done"] * 4
    assert trio.current_time() == pytest.approx(10)
    with pytest.raises(lanes.ShutdownInProgress):
        await system.submit("query", noop)


async def test_normal_exit_cancels_what_is_left_after_drain_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE, drain_timeout=3) as system:
        done = await system.submit("work", sleeper, 1)
        left = await system.submit("work", sleeper, 100)
    assert done.status == "done"
    assert left.status == "cancelled"
    assert trio.current_time() == pytest.approx(3)


async def test_exit_by_exception_cancels_at_once_and_raises_it_as_itself(
    autojump_clock: trio.abc.Clock,
) -> None:
    handles: list[lanes.CommandHandle[float]] = []
    with pytest.raises(KeyError, match="user error"):
        async with lanes.open_lane_system() as system:
            handles.append(await system.submit("prompt", sleeper, 100))
            handles.append(await system.submit("prompt", sleeper, 100))
            handles.append(await system.submit("prompt", sleeper, 100))
            await trio.sleep(1)
            raise KeyError("user error")
    assert trio.current_time() == pytest.approx(1)
    assert [h.status for h in handles] == ["cancelled"] * 3
    for handle in handles:
        with pytest.raises(lanes.CommandCancelled):
            await handle.result()


async def test_outer_cancellation_of_the_system(autojump_clock: trio.abc.Clock) -> None:
    handles: list[lanes.CommandHandle[float]] = []
    with trio.move_on_after(2) as scope:
        async with lanes.open_lane_system() as system:
            handles.append(await system.submit("prompt", sleeper, 100))
            handles.append(await system.submit("query", sleeper, 1))
            handles.append(await system.submit("query", sleeper, 100, delay=1))
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert [h.status for h in handles] == ["cancelled", "done", "cancelled"]


async def test_with_instead_of_async_with_is_a_clear_error() -> None:
    with (
        pytest.raises(lanes.LaneUsageError, match="use `async with open_lane_system"),
        lanes.open_lane_system(),
    ):
        pass


async def test_context_cannot_be_entered_twice() -> None:
    context = lanes.open_lane_system()
    async with context:
        with pytest.raises(lanes.LaneUsageError, match="already in use"):
            async with context:
                pass


async def test_many_cancellations_leave_no_slot_leak(autojump_clock: trio.abc.Clock) -> None:
    config = LaneConfig("work", 0, max_concurrency=3, timeout=4)
    async with lanes.open_lane_system([config], max_concurrency=3) as system:
        handles = [await system.submit("work", sleeper, i % 7) for i in range(60)]
        for i, handle in enumerate(handles):
            if i % 3 == 0:
                handle.cancel()
            if i % 5 == 0:
                await trio.sleep(0.5)
        await system.drain()
        stats = system.statistics()
        assert stats.active == stats.pending == 0
        lane = stats.lanes["work"]
        assert lane.completed + lane.cancelled + lane.failed == 60
        # All three slots are usable again.
        rec = Recorder()
        for i in range(6):
            await system.submit("work", rec.job(i, 1))
        await system.drain()
        assert rec.peak == 3


async def test_cancelled_before_a_lane_pool_started(autojump_clock: trio.abc.Clock) -> None:
    """A lane's pool starts with its first command; cancelling the system in that same step
    (the command granted, its pool not running yet) still resolves it, exactly once: as
    cancelled at its first checkpoint, as in any Trio task started in a cancelled scope."""
    ran: list[str] = []

    async def body() -> None:
        ran.append("entered")
        await trio.lowlevel.checkpoint()
        ran.append("past a checkpoint")

    handles: list[lanes.CommandHandle[None]] = []
    with trio.CancelScope() as scope:
        async with lanes.open_lane_system() as system:
            handles.append(system.submit_nowait("query", body))
            scope.cancel()  # no checkpoint between: the pool's task has not run
            await trio.sleep(1)
    assert ran in ([], ["entered"])
    assert handles[0].status is lanes.CommandStatus.CANCELLED
