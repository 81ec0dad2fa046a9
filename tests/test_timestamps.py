"""Event timestamps and ``DeadLetter.failed_at`` are wall time; durations stay on Trio's clock."""

from __future__ import annotations

import pathlib
import time

import attrs
import pytest
import trio

import lanes
from lanes import events as ev
from lanes.storage import SqliteStorage

WALL = 1_800_000_000.0  # a fixed "now" for the wall clock
LANES = (lanes.LaneConfig("work", 0, retry=lanes.RetryPolicy.fixed(1, 2.0)),)


class FakeWall:
    """A wall clock that starts at WALL and follows Trio's clock."""

    def __init__(self) -> None:
        self.origin = trio.current_time()

    def __call__(self) -> float:
        return WALL + (trio.current_time() - self.origin)


async def boom() -> None:
    await trio.sleep(1)
    raise ValueError("boom")


def drain(stream: trio.MemoryReceiveChannel[ev.Event]) -> list[ev.Event]:
    out = []
    while True:
        try:
            out.append(stream.receive_nowait())
        except trio.WouldBlock:
            return out


async def test_timestamps_are_the_systems_wall_clock(autojump_clock: trio.abc.Clock) -> None:
    await trio.sleep(100)  # Trio's clock is far from the wall clock's origin
    opening = lanes.open_lane_system(LANES, clock=FakeWall())
    async with opening as system, system.subscribe() as stream:
        await trio.sleep(3)
        handle = await system.submit("work", boom)
        with pytest.raises(lanes.CommandFailed):
            await handle.result()
        seen = drain(stream)
    stamps = [(type(e).__name__, e.timestamp - WALL) for e in seen]
    assert stamps == [
        ("Submitted", 3.0),
        ("Started", 3.0),
        ("Retrying", 4.0),
        ("Started", 6.0),
        ("Failed", 7.0),
        ("DeadLettered", 7.0),
    ]
    (retrying,) = [e for e in seen if isinstance(e, ev.Retrying)]
    assert retrying.delay == 2.0  # durations: Trio seconds
    (letter,) = system.dead_letters.list()
    assert letter.failed_at == WALL + 7.0


async def test_the_default_wall_clock_is_time_time() -> None:
    before = time.time()
    async with lanes.open_lane_system(LANES) as system, system.subscribe(ev.Completed) as stream:
        await system.run("work", trio.sleep, 0)
        (event,) = drain(stream)
    after = time.time()
    assert before - 0.01 <= event.timestamp <= after + 0.01


@lanes.command(name="ts-fail")
@attrs.define
class Fail:
    n: int

    async def execute(self) -> None:
        raise lanes.Permanent(ValueError(self.n))


async def test_failed_at_is_stored_and_recovered_unchanged(tmp_path: pathlib.Path) -> None:
    # The real clock: under autojump, a submit waiting for SQLite's thread lets time jump.
    path = tmp_path / "q.db"
    wall = FakeWall()
    configs = (lanes.LaneConfig("work", 0, max_concurrency=2),)
    storage = SqliteStorage(path, clock=wall)
    async with lanes.open_lane_system(configs, storage=storage, commands=[Fail]) as system:
        # submitted 1 then 2; 2 fails first
        first = await system.submit("work", Fail(1), delay=0.4)
        second = await system.submit("work", Fail(2), delay=0.2)
        for handle in (first, second):
            with pytest.raises(lanes.CommandFailed):
                await handle.result()
        live = [(letter.id, letter.failed_at) for letter in system.dead_letters.list()]
    assert [letter_id for letter_id, _ in live] == [second.id, first.id]  # as they failed
    assert WALL + 0.2 <= live[0][1] < WALL + 0.4 <= live[1][1] < WALL + 1
    await trio.sleep(0.1)
    storage = SqliteStorage(path, clock=wall)
    async with lanes.open_lane_system(configs, storage=storage, commands=[Fail]) as system:
        again = [(letter.id, letter.failed_at) for letter in system.dead_letters.list()]
    assert again == live  # same times, same order (the order they failed)


async def test_the_fixture_stamps_in_trio_time(lane_system, autojump_clock) -> None:  # type: ignore[no-untyped-def]
    async with lane_system(LANES) as system:
        await trio.sleep(2)
        await system.run("work", trio.sleep, 1)
    assert [e.timestamp for e in lane_system.log.events] == [
        trio.current_time() - 1,
        trio.current_time() - 1,
        trio.current_time(),
    ]
