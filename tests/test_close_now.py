"""Leaving a session: close_now() vs the drain vs an exception."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

import lanes
from lanes.storage import MemoryStorage

LANES = (lanes.LaneConfig("prompt", 5), lanes.LaneConfig("session", 3))


async def test_close_now_leaves_at_once(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(LANES, drain_timeout=30) as system:
        running = await system.submit("prompt", trio.sleep, 60)
        queued = await system.submit("prompt", trio.sleep, 60)
        delayed = await system.submit("session", trio.sleep, 1, delay=10)
        await trio.testing.wait_all_tasks_blocked()
        left = trio.current_time()
        system.close_now()
        assert (queued.status, delayed.status) == ("cancelled", "cancelled")  # at once
        with pytest.raises(lanes.ShutdownInProgress):
            await system.submit("prompt", trio.sleep, 1)
    assert trio.current_time() == left  # no drain wait
    assert running.status == "cancelled"
    with pytest.raises(lanes.CommandCancelled, match="shut down"):
        await running.result()


async def test_close_now_waits_only_for_running_cleanup(autojump_clock: trio.abc.Clock) -> None:
    async def saves_on_cancel() -> None:
        try:
            await trio.sleep(60)
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(0.5)  # e.g. closing the HTTP request

    async with lanes.open_lane_system(LANES) as system:
        await system.submit("prompt", saves_on_cancel)
        await trio.testing.wait_all_tasks_blocked()
        left = trio.current_time()
        system.close_now()
    assert trio.current_time() - left == 0.5


async def test_the_drain_finishes_the_turn(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(LANES, drain_timeout=30) as system:
        turn = await system.submit("prompt", trio.sleep, 5)
        left = trio.current_time()
    assert trio.current_time() - left == 5
    assert turn.status == "done"


async def test_an_exception_cancels_at_once_and_propagates(
    autojump_clock: trio.abc.Clock,
) -> None:
    class Disconnected(Exception):
        pass

    with pytest.raises(Disconnected):
        async with lanes.open_lane_system(LANES) as system:
            turn = await system.submit("prompt", trio.sleep, 60)
            left = trio.current_time()
            raise Disconnected
    assert trio.current_time() == left
    assert turn.status == "cancelled"


async def test_close_now_is_idempotent_and_a_no_op_once_closed(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(LANES) as system:
        system.close_now()
        system.close_now()
    system.close_now()


async def test_close_now_from_another_run_is_refused() -> None:
    async with lanes.open_lane_system(LANES) as system:
        errors: list[BaseException] = []

        def elsewhere() -> None:
            async def main() -> None:
                system.close_now()

            try:
                trio.run(main)
            except lanes.LaneUsageError as exc:
                errors.append(exc)

        await trio.to_thread.run_sync(elsewhere)
        assert len(errors) == 1
        assert system.statistics().accepting


@lanes.command
@attrs.define
class Turn:
    prompt: str

    async def execute(self) -> str:
        await trio.sleep(60)
        return self.prompt


async def test_close_now_keeps_durable_work_stored(autojump_clock: trio.abc.Clock) -> None:
    storage = MemoryStorage(clock=trio.current_time)
    async with lanes.open_lane_system(LANES, storage=storage, commands=[Turn]) as system:
        await system.submit("prompt", Turn("running"))
        await system.submit("prompt", Turn("queued"))
        await trio.testing.wait_all_tasks_blocked()
        system.close_now()
    async with lanes.open_lane_system(LANES, storage=storage, commands=[Turn]) as system:
        assert sorted([h.command.prompt for h in system.recovered]) == ["queued", "running"]
        system.close_now()
