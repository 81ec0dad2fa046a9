"""Command priorities in the events: ``Submitted.priority`` and ``Reprioritized``."""

from __future__ import annotations

import functools
import json

import pytest
import trio
import trio.testing

import lanes
from lanes import LaneConfig
from lanes import events as ev
from lanes.distributed import _events as remote_events

ONE = [LaneConfig("work", 0, max_concurrency=1)]


def drained(stream: trio.MemoryReceiveChannel[ev.Event]) -> list[ev.Event]:
    found = []
    while True:
        try:
            found.append(stream.receive_nowait())
        except trio.WouldBlock:
            return found


async def test_submitted_carries_the_command_priority(autojump_clock: trio.abc.Clock) -> None:
    async with (
        lanes.open_lane_system(ONE) as system,
        system.subscribe(ev.Submitted) as stream,
    ):
        plain = await system.submit("work", trio.sleep, 1)
        urgent = await system.submit("work", trio.sleep, 1, priority=-2)
        nap = functools.partial(trio.sleep, 1)
        many = await system.submit_many("work", [nap, nap], priority=4)
        await system.drain()
        seen = drained(stream)
    by_id = {e.command_id: e for e in seen if isinstance(e, ev.Submitted)}
    assert by_id[plain.id].priority == 0  # the default priority is a priority
    assert by_id[urgent.id].priority == -2
    assert [by_id[h.id].priority for h in many] == [4, 4]
    assert ev.Submitted("work", "x", 0.0).priority is None  # old constructors still work


async def test_reprioritize_of_a_waiting_command_is_an_event(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE) as system, system.subscribe() as stream:
        await system.submit("work", trio.sleep, 1)  # runs from 0 to 1
        queued = await system.submit("work", trio.sleep, 1, priority=2)
        delayed = await system.submit("work", trio.sleep, 1, delay=5)
        await trio.sleep(0.5)
        drained(stream)
        assert queued.reprioritize(-1)
        assert delayed.reprioritize(3)  # delayed: waiting too
        at = system.wall_time()
        first, second = drained(stream)
        await system.drain()
    assert first == ev.Reprioritized("work", queued.id, at, priority=-1, previous=2)
    assert second == ev.Reprioritized("work", delayed.id, at, priority=3, previous=0)
    assert first.key == "lane.command.reprioritized"
    assert "Reprioritized" in ev.__all__


async def test_a_reprioritize_that_changes_nothing_emits_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with (
        lanes.open_lane_system(ONE) as system,
        system.subscribe(ev.Reprioritized) as stream,
    ):
        running = await system.submit("work", trio.sleep, 1)
        queued = await system.submit("work", trio.sleep, 1, priority=1)
        await trio.testing.wait_all_tasks_blocked()
        assert not running.reprioritize(5)  # running: refused
        assert queued.reprioritize(1)  # the priority it has: True, but no change
        with pytest.raises(lanes.LaneConfigError):
            queued.reprioritize(1.5)  # type: ignore[arg-type]
        await system.drain()
        assert not queued.reprioritize(-1)  # finished: refused
        assert drained(stream) == []


async def test_reprioritized_events_reach_listeners_in_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen: list[ev.Event] = []
    async with lanes.open_lane_system(ONE) as system:
        unlisten = system.listen(seen.append)
        await system.submit("work", trio.sleep, 1)
        handle = await system.submit("work", trio.sleep, 1)
        assert handle.reprioritize(2)
        assert handle.reprioritize(0)  # and back: two events
        await system.drain()
        unlisten()
    mine = [e for e in seen if e.command_id == handle.id]
    assert [type(e) for e in mine] == [
        ev.Submitted,
        ev.Reprioritized,
        ev.Reprioritized,
        ev.Started,
        ev.Completed,
    ]
    changes = [(e.previous, e.priority) for e in mine if isinstance(e, ev.Reprioritized)]
    assert changes == [(0, 2), (2, 0)]


def test_the_new_event_and_field_export_as_json() -> None:
    moved = ev.Reprioritized("work", "c-7", 12.5, priority=-3, previous=1)
    text = lanes.to_json(moved)
    assert json.loads(text) == {
        "event": "lane.command.reprioritized",
        "lane": "work",
        "command_id": "c-7",
        "timestamp": 12.5,
        "priority": -3,
        "previous": 1,
    }
    assert lanes.from_json(text, ev.Event) == moved
    submitted = ev.Submitted("work", "c-7", 10.0, "fetch", priority=1)
    assert json.loads(lanes.to_json(submitted))["priority"] == 1
    assert lanes.from_json(lanes.to_json([submitted, moved]), list[ev.Event]) == [
        submitted,
        moved,
    ]
    older = '{"event": "lane.command.submitted", "lane": "work", "command_id": "c-7", '
    older += '"timestamp": 10.0, "command_type": "fetch"}'  # written before the field
    assert lanes.from_json(older, ev.Event) == ev.Submitted("work", "c-7", 10.0, "fetch")


def test_a_submitted_event_from_redis_has_no_priority() -> None:
    # What the submit scripts write (see lanes/distributed/_scripts.py): no priority, as
    # commands on Redis have none of their own.
    text = json.dumps(
        {
            "key": "lane.command.submitted",
            "lane": "bulk",
            "command_id": "abc",
            "timestamp": 1.5,
            "command_type": "Step",
        }
    )
    assert remote_events.decode(text) == ev.Submitted("bulk", "abc", 1.5, "Step", None)
    local = ev.Submitted("bulk", "abc", 1.5, "Step", 2)
    assert remote_events.decode(remote_events.encode(local)) == local
