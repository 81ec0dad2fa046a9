"""Events of a program's own, emitted with ``system.emit`` and delivered like the system's."""

from __future__ import annotations

from typing import ClassVar

import attrs
import pytest
import trio
import trio.testing

import lanes
from lanes import events as ev

from .helpers import noop


@attrs.frozen
class OrderShipped(ev.Event):
    key: ClassVar[str] = "shop.order.shipped"
    order: str = ""


@attrs.frozen
class Express(OrderShipped):
    key: ClassVar[str] = "shop.order.shipped.express"


@attrs.frozen
class NoKey(ev.Event):
    pass


@attrs.frozen
class Squatter(ev.Event):
    key: ClassVar[str] = "lane.command.completed"


async def test_a_user_event_reaches_subscribers_and_listeners(
    autojump_clock: trio.abc.Clock,
) -> None:
    heard: list[ev.Event] = []
    async with lanes.open_lane_system() as system:
        system.listen(heard.append)
        async with (
            system.subscribe(OrderShipped) as shipped,
            system.subscribe() as everything,
            system.subscribe(ev.Completed) as completed,
        ):
            await trio.sleep(5)
            event = OrderShipped("query", "", system.wall_time(), order="A-1")
            system.emit(event)
            system.emit(Express("", "", system.wall_time(), order="B-2"))  # a subclass too
            await system.run("query", noop)
            assert [shipped.receive_nowait(), shipped.receive_nowait()][0] is event
            kinds = [type(everything.receive_nowait()) for _ in range(5)]
            assert kinds == [OrderShipped, Express, ev.Submitted, ev.Started, ev.Completed]
            assert isinstance(completed.receive_nowait(), ev.Completed)
            with pytest.raises(trio.WouldBlock):
                completed.receive_nowait()  # no user event among the completions
        assert heard[:2] == [event, Express("", "", event.timestamp, order="B-2")]
        assert event.timestamp == pytest.approx(heard[-1].timestamp)  # the same clock


async def test_a_full_subscriber_drops_user_events_and_counts_them(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system() as system, system.subscribe(buffer=1) as stream:
        for n in range(3):
            system.emit(OrderShipped("", "", system.wall_time(), order=str(n)))  # never blocks
        assert system.statistics().events_dropped == 2
        first = stream.receive_nowait()
        assert isinstance(first, OrderShipped) and first.order == "0"


@pytest.mark.parametrize(
    ("event", "error", "words"),
    [
        (OrderShipped, lanes.LaneConfigError, "OrderShipped is a class; pass an instance"),
        ("shipped", lanes.LaneConfigError, "'shipped' is not an event; define a subclass"),
        (ev.Completed("query", "x", 0.0), lanes.LaneConfigError, "emitted by the lane system"),
        (NoKey("", "", 0.0), lanes.LaneConfigError, "NoKey.key='lane.event' is invalid"),
        (Squatter("", "", 0.0), lanes.LaneConfigError, "keys under 'lane.' are the system's"),
        (OrderShipped("nope", "", 0.0), lanes.UnknownLaneError, "unknown lane 'nope'"),
    ],
)
async def test_bad_events_are_refused(
    autojump_clock: trio.abc.Clock, event: object, error: type[Exception], words: str
) -> None:
    async with lanes.open_lane_system() as system, system.subscribe() as stream:
        with pytest.raises(error, match=words):
            system.emit(event)  # type: ignore[arg-type]
        with pytest.raises(trio.WouldBlock):
            stream.receive_nowait()  # nothing was delivered


async def test_emit_from_another_run_is_refused() -> None:
    async with lanes.open_lane_system() as system:
        outside = system

    def elsewhere() -> None:
        with pytest.raises(lanes.LaneUsageError):
            outside.emit(OrderShipped("", "", 0.0))

    await trio.to_thread.run_sync(elsewhere)


async def test_a_cancelled_subscriber_leaves_the_others_served(
    autojump_clock: trio.abc.Clock,
) -> None:
    got: list[ev.Event] = []
    async with lanes.open_lane_system() as system:

        async def reader() -> None:
            async with system.subscribe(OrderShipped) as stream:
                async for event in stream:
                    got.append(event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            cancelled = trio.CancelScope()

            async def doomed() -> None:
                with cancelled:
                    async with system.subscribe(OrderShipped) as stream:
                        await stream.receive()

            nursery.start_soon(doomed)
            await trio.testing.wait_all_tasks_blocked()
            cancelled.cancel()
            await trio.testing.wait_all_tasks_blocked()
            system.emit(OrderShipped("", "", system.wall_time(), order="C-3"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert [e.order for e in got if isinstance(e, OrderShipped)] == ["C-3"]
