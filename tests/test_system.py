"""The lane system end to end: submit, priority, bounds, FIFO, timeouts, pause, drain."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import lanes
from lanes import LaneConfig

from .helpers import Recorder, noop, sleeper


async def test_submit_and_result(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system() as system:
        handle = await system.submit("query", sleeper, 2.0)
        assert handle.lane == "query"
        assert handle.status in ("pending", "running")
        assert await handle.result() == 2.0
        assert handle.status == "done"
        assert handle.done()
        assert await handle.result() == 2.0  # result() may be awaited again
        assert await system.run("system", noop) == 1
        assert repr(handle).startswith("<CommandHandle ")


async def test_ids_are_unique(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system() as system:
        handles = [await system.submit("query", noop) for _ in range(50)]
        assert len({h.id for h in handles}) == 50


async def test_control_beats_saturated_prompt(autojump_clock: trio.abc.Clock) -> None:
    rec = Recorder()
    async with lanes.open_lane_system() as system:
        for i in range(6):
            await system.submit("prompt", rec.job(f"prompt{i}", 30))
        await trio.testing.wait_all_tasks_blocked()
        # Both started at once; their tasks may enter the bodies in either order.
        assert sorted(rec.started) == ["prompt0", "prompt1"]
        control = await system.submit("control", rec.job("control", 0.1))
        await control.result()
        assert rec.started[2:] == ["control"]
        assert trio.current_time() < 1  # it never waited behind the 30 s prompt calls
        system.pause("prompt")
        await system.cancel_lane("prompt")


async def test_urgent_command_gets_the_next_free_slot_under_a_cap(
    autojump_clock: trio.abc.Clock,
) -> None:
    rec = Recorder()
    async with lanes.open_lane_system(max_concurrency=2) as system:
        for i in range(5):
            await system.submit("prompt", rec.job(f"p{i}", 10 + 10 * i))
        await trio.testing.wait_all_tasks_blocked()
        await system.submit("control", rec.job("c", 1))
        await system.submit("query", rec.job("q", 1))
        await system.drain()
    assert rec.started == ["p0", "p1", "c", "q", "p2", "p3", "p4"]


async def test_command_pending_when_submit_returns_competes_for_a_slot_freed_right_after(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Rule 2: a slot that frees an instant after submit returns goes to the most urgent
    # command that is pending by then, not to one that merely was known earlier.
    rec = Recorder()
    release = trio.Event()

    async def blocker() -> None:
        rec.started.append("blocker")
        await release.wait()

    async with lanes.open_lane_system(max_concurrency=1) as system:
        await system.submit("prompt", blocker)
        await trio.testing.wait_all_tasks_blocked()
        await system.submit("prompt", rec.job("prompt-next", 1))
        await system.submit("control", rec.job("control", 1))
        release.set()  # the slot frees right after both submits returned
        await system.drain()
    assert rec.started == ["blocker", "control", "prompt-next"]


async def test_max_concurrency_per_lane_and_fifo(autojump_clock: trio.abc.Clock) -> None:
    rec = Recorder()
    config = LaneConfig("work", 0, max_concurrency=3)
    async with (
        lanes.open_lane_system([config]) as system,
        system.subscribe(lanes.events.Started) as started,
    ):
        handles = [await system.submit("work", rec.job(i, 1 + i % 3)) for i in range(20)]
        for handle in handles:
            await handle.result()
        order = [started.receive_nowait().command_id for _ in handles]
    assert rec.peak == 3
    # Commands start (Started events, attempts) in FIFO order. Bodies made runnable at the
    # same instant may begin in any order: Trio randomises its run queue.
    assert order == [h.id for h in handles]
    assert sorted(rec.started) == list(range(20))


async def test_global_cap_and_reservations(autojump_clock: trio.abc.Clock) -> None:
    rec = Recorder()
    configs = [
        LaneConfig("hi", 0, max_concurrency=4),
        LaneConfig("lo", 1, max_concurrency=4, min_concurrency=1),
    ]
    async with lanes.open_lane_system(configs, max_concurrency=4) as system:
        system.pause("hi")
        system.pause("lo")
        for i in range(12):
            await system.submit("hi", rec.job(("hi", i), 1, group="hi"))
            await system.submit("lo", rec.job(("lo", i), 1, group="lo"))
        system.resume("hi")  # decisions are immediate: "hi" takes what it may first
        system.resume("lo")
        await trio.testing.wait_all_tasks_blocked()
        # "hi" is more urgent, but one slot stays reserved for "lo".
        assert rec.peak_by_group == {"hi": 3, "lo": 1}
        await system.drain()
    assert rec.peak <= 4
    assert rec.peak_by_group["hi"] == 3


async def test_timeout_cancels_the_attempt_and_frees_the_slot(
    autojump_clock: trio.abc.Clock,
) -> None:
    after_await: list[str] = []

    async def slow() -> None:
        await trio.sleep(10)
        after_await.append("ran")  # must never run

    config = LaneConfig("work", 0, max_concurrency=1, timeout=2.0)
    async with lanes.open_lane_system([config]) as system:
        handle = await system.submit("work", slow)
        with pytest.raises(lanes.CommandTimeout, match=r"timed out after 2\.0 s") as info:
            await handle.result()
        assert isinstance(info.value.__cause__, trio.TooSlowError)
        assert trio.current_time() == pytest.approx(2.0)
        assert handle.status == "failed"
        # The slot is free: the next command runs at once.
        assert await system.run("work", noop) == 1
        # A per-submit timeout overrides the lane's.
        with pytest.raises(lanes.CommandTimeout):
            await system.run("work", sleeper, 5, timeout=0.5)
        assert await system.run("work", sleeper, 1.0, timeout=1.5) == 1.0
        stats = system.statistics().lanes["work"]
        assert (stats.timed_out, stats.failed, stats.completed, stats.active) == (2, 2, 2, 0)
    assert after_await == []


async def test_pause_and_resume(autojump_clock: trio.abc.Clock) -> None:
    rec = Recorder()
    async with lanes.open_lane_system() as system:
        system.pause("query")
        handle = await system.submit("query", rec.job("q", 1))
        await trio.sleep(5)
        assert rec.started == []
        assert handle.status == "pending"
        assert system.statistics().lanes["query"].paused
        system.resume("query")
        assert await handle.result() == "q"


async def test_pause_lets_running_work_finish(autojump_clock: trio.abc.Clock) -> None:
    rec = Recorder()
    async with lanes.open_lane_system() as system:
        first = await system.submit("prompt", rec.job("a", 2))
        await trio.testing.wait_all_tasks_blocked()
        system.pause("prompt")
        second = await system.submit("prompt", rec.job("b", 2))
        assert await first.result() == "a"
        await trio.sleep(10)
        assert second.status == "pending"
        system.resume("prompt")
        assert await second.result() == "b"


async def test_submit_nowait_raises_lane_full_and_submit_waits(
    autojump_clock: trio.abc.Clock,
) -> None:
    config = LaneConfig("small", 0, max_concurrency=1, inbox_size=2)
    async with lanes.open_lane_system([config]) as system:
        system.pause("small")
        a = system.submit_nowait("small", noop)
        b = system.submit_nowait("small", noop)
        with pytest.raises(lanes.LaneFull, match="inbox_size"):
            system.submit_nowait("small", noop)
        assert system.statistics().lanes["small"].pending == 2

        accepted: list[lanes.CommandHandle[int]] = []

        async def submitter() -> None:
            accepted.append(await system.submit("small", noop))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submitter)
            await trio.testing.wait_all_tasks_blocked()
            assert accepted == []  # backpressure: it waits for room
            system.resume("small")
        assert [await h.result() for h in (a, b, *accepted)] == [1, 1, 1]


async def test_lane_full_is_a_trio_would_block() -> None:
    """Like the errors of Trio's own ``*_nowait`` methods: ``except trio.WouldBlock`` works."""
    assert issubclass(lanes.LaneFull, trio.WouldBlock)
    assert issubclass(lanes.LaneFull, lanes.LaneError)
    config = LaneConfig("small", 0, inbox_size=1)
    async with lanes.open_lane_system([config]) as system:
        system.pause("small")
        kept = system.submit_nowait("small", noop)
        with pytest.raises(trio.WouldBlock, match="inbox_size") as caught:
            system.submit_nowait("small", noop)
        assert isinstance(caught.value, lanes.LaneFull)
        assert system.statistics().lanes["small"].pending == 1  # the refused one left nothing
        system.resume("small")
        assert await kept.result() == 1


async def test_idempotency_key_returns_the_existing_handle(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system() as system:
        first = await system.submit("query", sleeper, 3, key="k")
        second = await system.submit("query", sleeper, 5, key="k")
        assert second is first
        assert system.submit_nowait("query", sleeper, 5, key="k") is first
        assert await first.result() == 3
        third = await system.submit("query", sleeper, 1, key="k")  # finished: a new run
        assert third is not first
        assert await third.result() == 1
        assert system.statistics().lanes["query"].submitted == 2


async def test_delay(autojump_clock: trio.abc.Clock) -> None:
    starts: list[float] = []

    async def mark() -> None:
        starts.append(trio.current_time())

    async with lanes.open_lane_system() as system:
        t0 = trio.current_time()
        late = await system.submit("query", mark, delay=5)
        soon = await system.submit("query", mark, delay=0)
        assert late.status == "pending"
        await late.result()
        await soon.result()
    assert [s - t0 for s in starts] == pytest.approx([0, 5])


async def test_command_objects(autojump_clock: trio.abc.Clock) -> None:
    import attrs

    @lanes.command(name="greet")
    @attrs.define
    class Greet:
        who: str

        async def execute(self) -> str:
            await trio.sleep(1)
            return f"hello {self.who}"

    async with lanes.open_lane_system() as system:
        assert await system.run("session", Greet("ada")) == "hello ada"
        with pytest.raises(lanes.LaneUsageError, match="takes no extra arguments"):
            await system.submit("session", Greet("ada"), 1)
        async with system.subscribe(lanes.events.Submitted) as events:
            await system.submit("session", Greet("bob"))
            event = events.receive_nowait()
        assert isinstance(event, lanes.events.Submitted)
        assert event.command_type == "greet"


def test_command_decorator_rejects_bad_classes() -> None:
    import attrs

    with pytest.raises(lanes.LaneConfigError, match="attrs class"):

        @lanes.command
        class Plain:
            async def execute(self) -> None: ...

    with pytest.raises(lanes.LaneConfigError, match="async def execute"):

        @lanes.command
        @attrs.define
        class NoExecute:
            x: int

    with pytest.raises(lanes.LaneConfigError, match="name="):

        @lanes.command(name="")
        @attrs.define
        class Empty:
            async def execute(self) -> None: ...


async def test_bad_input_is_rejected_and_the_system_keeps_working(
    autojump_clock: trio.abc.Clock,
) -> None:
    def sync_fn() -> int:
        return 1

    async with lanes.open_lane_system() as system:
        with pytest.raises(lanes.UnknownLaneError, match="known lanes: system, control") as info:
            await system.submit("nope", noop)
        assert isinstance(info.value, KeyError)
        assert "unknown lane 'nope'" in str(info.value)
        with pytest.raises(lanes.UnknownLaneError):
            system.submit_nowait(3, noop)  # type: ignore[arg-type]
        with pytest.raises(lanes.LaneUsageError, match="not an async callable"):
            await system.submit("query", 42)
        with pytest.raises(lanes.LaneUsageError, match="synchronous function"):
            await system.submit("query", sync_fn)
        with pytest.raises(lanes.LaneConfigError, match="delay=-1"):
            await system.submit("query", noop, delay=-1)
        with pytest.raises(lanes.LaneConfigError, match="timeout=0"):
            await system.submit("query", noop, timeout=0)
        with pytest.raises(lanes.LaneConfigError, match="key=5"):
            await system.submit("query", noop, key=5)  # type: ignore[arg-type]
        with pytest.raises(lanes.UnknownLaneError):
            system.pause("nope")
        with pytest.raises(lanes.UnknownLaneError):
            system.resume("nope")
        with pytest.raises(lanes.UnknownLaneError):
            await system.cancel_lane("nope")
        with pytest.raises(lanes.LaneConfigError, match="drain: timeout"):
            await system.drain(-5)
        with pytest.raises(lanes.LaneConfigError, match="not an event type"):
            async with system.subscribe(int):  # type: ignore[arg-type]
                pass
        with pytest.raises(lanes.LaneConfigError, match="buffer=0"):
            async with system.subscribe(buffer=0):
                pass
        stats = system.statistics()
        assert stats.pending == stats.active == 0
        assert sum(lane.submitted for lane in stats.lanes.values()) == 0
        assert await system.run("query", noop) == 1


async def test_statistics_snapshot_is_frozen(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(max_concurrency=8) as system:
        await system.submit("prompt", sleeper, 5)
        await system.submit("prompt", sleeper, 5)
        await system.submit("prompt", sleeper, 5)
        await trio.testing.wait_all_tasks_blocked()
        stats = system.statistics()
        with pytest.raises(AttributeError):
            stats.active = 3  # type: ignore[misc]
        prompt = stats.lanes["prompt"]
        assert (prompt.active, prompt.pending, prompt.submitted) == (2, 1, 3)
        assert (stats.active, stats.pending, stats.max_concurrency) == (2, 1, 8)
        assert stats.accepting
        assert prompt.effective_priority == 5


async def test_lanes_property_lists_configs() -> None:
    async with lanes.open_lane_system() as system:
        assert system.lanes == lanes.DEFAULT_LANES


async def test_commands_that_never_checkpoint_do_not_starve_other_tasks() -> None:
    # Real clock: lane workers run granted commands back to back, but yield every
    # YIELD_EVERY seconds, so a queue of 20,000 instant commands cannot hold the event loop.
    config = LaneConfig("work", 0, max_concurrency=4, inbox_size=100_000)
    ticks = 0
    async with lanes.open_lane_system([config]) as system:
        system.pause("work")
        handles = [system.submit_nowait("work", noop) for _ in range(20_000)]

        async def watcher() -> None:
            nonlocal ticks
            while True:
                await trio.lowlevel.checkpoint()
                ticks += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher)
            system.resume("work")
            ticks = 0
            await handles[-1].result()
            nursery.cancel_scope.cancel()
    assert ticks >= 2
