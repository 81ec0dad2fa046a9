"""Typed events: keys, filtering, and a slow subscriber never blocks scheduling."""

from __future__ import annotations

import pytest
import trio

import lanes
from lanes import LaneConfig
from lanes import events as ev

from .helpers import boom, noop, sleeper


async def test_life_cycle_events(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system() as system:
        async with system.subscribe() as stream:
            handle = await system.submit("query", sleeper, 2)
            await handle.result()
            seen = [stream.receive_nowait() for _ in range(3)]
        assert [type(e) for e in seen] == [ev.Submitted, ev.Started, ev.Completed]
        assert [e.key for e in seen] == [
            "lane.command.submitted",
            "lane.command.started",
            "lane.command.completed",
        ]
        assert all(e.lane == "query" and e.command_id == handle.id for e in seen)
        completed = seen[2]
        assert isinstance(completed, ev.Completed)
        assert completed.duration == pytest.approx(2)
        assert completed.timestamp - seen[0].timestamp == pytest.approx(2)
        with pytest.raises(AttributeError):
            completed.lane = "x"  # type: ignore[misc]


async def test_filtering_by_type(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system() as system:
        async with system.subscribe(ev.Failed, ev.Cancelled) as stream:
            await system.run("query", noop)
            with pytest.raises(lanes.CommandFailed):
                await system.run("query", boom)
            handle = await system.submit("prompt", sleeper, 10)
            handle.cancel()
            failed, cancelled = stream.receive_nowait(), stream.receive_nowait()
            with pytest.raises(trio.WouldBlock):
                stream.receive_nowait()
        assert isinstance(failed, ev.Failed)
        assert "boom" in failed.error
        assert isinstance(cancelled, ev.Cancelled)


async def test_handle_resolves_after_its_events(autojump_clock: trio.abc.Clock) -> None:
    config = LaneConfig("work", 0, retry=lanes.RetryPolicy.fixed(1, 1))
    async with (
        lanes.open_lane_system([config]) as system,
        system.subscribe(ev.DeadLettered) as stream,
    ):
        with pytest.raises(lanes.CommandFailed):
            await system.run("work", boom)
        # No settling: the event is already there, and so are stats and the DLQ.
        assert isinstance(stream.receive_nowait(), ev.DeadLettered)
        assert system.statistics().lanes["work"].dead_lettered == 1
        assert len(system.dead_letters) == 1


async def test_slow_subscriber_never_blocks_and_drops_are_counted(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with (
        lanes.open_lane_system() as system,
        system.subscribe(ev.Completed, buffer=5) as stream,
    ):
        for _ in range(20):
            await system.run("query", noop)
        assert system.statistics().events_dropped == 15
        received = [stream.receive_nowait() for _ in range(5)]
        assert len(received) == 5


async def test_leaving_subscribe_unsubscribes(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system() as system:
        async with system.subscribe(buffer=1):
            pass
        for _ in range(5):
            await system.run("query", noop)
        assert system.statistics().events_dropped == 0


async def test_stream_ends_when_the_system_closes(autojump_clock: trio.abc.Clock) -> None:
    seen: list[ev.Event] = []
    async with trio.open_nursery() as nursery, lanes.open_lane_system() as system:

        async def listen(task_status: trio.TaskStatus[None]) -> None:
            async with system.subscribe(ev.Completed) as stream:
                task_status.started()
                async for event in stream:
                    seen.append(event)

        await nursery.start(listen)
        await system.run("query", noop)
    assert len(seen) == 1  # and the listener finished by itself


async def test_a_listener_that_unlistens_during_an_event_leaves_the_others_theirs(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Every listener registered when an event is emitted gets it, whatever one of them
    does to the registrations meanwhile (with a list, the next listener was skipped)."""
    seen: list[tuple[str, str]] = []
    async with lanes.open_lane_system() as system:

        def once(event: lanes.events.Event) -> None:
            seen.append(("once", type(event).__name__))
            unlisten_once()

        def always(event: lanes.events.Event) -> None:
            seen.append(("always", type(event).__name__))

        unlisten_once = system.listen(once)
        unlisten_always = system.listen(always)
        await system.run("query", noop)
        unlisten_once()  # a second call does nothing
        unlisten_always()
        await system.run("query", noop)
    assert seen[:2] == [("once", "Submitted"), ("always", "Submitted")]
    assert [who for who, _ in seen] == ["once", "always", "always", "always"]
