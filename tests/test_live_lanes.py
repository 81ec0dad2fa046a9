"""Lanes added to and retired from a running system (``add_lane`` / ``retire_lane``)."""

from __future__ import annotations

import pathlib

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

import lanes
from lanes import LaneConfig
from lanes import events as ev
from lanes.storage import MemoryStorage, WriteBatch

from .helpers import sleeper

BASE = (LaneConfig("work", 1, max_concurrency=2),)


async def test_an_added_lane_accepts_commands_at_once(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(BASE) as system:
        async with system.subscribe(ev.Completed) as events:
            system.add_lane(LaneConfig("extra", 0, max_concurrency=1))
            assert [c.name for c in system.lanes] == ["work", "extra"]
            first = await system.submit("extra", sleeper, 1.0)
            second = system.submit_nowait("extra", sleeper, 2.0)
            assert await first.result() == 1.0
            assert await second.result() == 2.0
            assert trio.current_time() == pytest.approx(3.0)  # max_concurrency=1 holds
            event = await events.receive()
            assert (event.lane, event.command_id) == ("extra", first.id)
        stats = system.statistics().lanes["extra"]
        assert (stats.submitted, stats.completed, stats.max_concurrency) == (2, 2, 1)
        snapshot = system.metrics.snapshot()
        assert snapshot.counters["completed"]["extra"] == 2
        assert snapshot.histograms["run_seconds"]["extra"].count == 2


async def test_an_added_lane_is_exported_to_prometheus(autojump_clock: trio.abc.Clock) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from lanes.prometheus import LaneCollector

    async with lanes.open_lane_system(BASE) as system:
        registry = CollectorRegistry()
        collector = LaneCollector()
        collector.add(system)
        registry.register(collector)
        system.add_lane(LaneConfig("extra", 0))
        await system.run("extra", sleeper, 0.5)
        text = generate_latest(registry).decode()
        assert 'lane="extra"' in text
        assert await system.retire_lane("extra") == 0
        assert 'lane="extra"' not in generate_latest(registry).decode()


async def test_an_added_lane_takes_part_in_the_global_cap(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(BASE, max_concurrency=1) as system:
        running = await system.submit("work", sleeper, 10.0)
        waiting = await system.submit("work", sleeper, 1.0)
        await trio.sleep(1)
        system.add_lane(LaneConfig("urgent", 0))
        urgent = await system.submit("urgent", sleeper, 1.0)
        # The cap is full: "urgent" starts when the slot frees (at 10 s), as the more
        # urgent lane, ahead of the "work" command submitted before it.
        await urgent.result()
        assert trio.current_time() == pytest.approx(11.0)
        await waiting.result()
        assert trio.current_time() == pytest.approx(12.0)
        assert running.done()


async def test_bad_lanes_are_refused_and_nothing_changes() -> None:
    async with lanes.open_lane_system(BASE, max_concurrency=2) as system:
        with pytest.raises(lanes.LaneConfigError, match="'work' already exists"):
            system.add_lane(LaneConfig("work", 0))
        with pytest.raises(lanes.LaneConfigError, match=r"expected a lanes\.LaneConfig"):
            system.add_lane("extra")  # type: ignore[arg-type]
        with pytest.raises(lanes.LaneConfigError, match="reserve 3 slots"):
            system.add_lane(LaneConfig("big", 0, max_concurrency=3, min_concurrency=3))
        assert [c.name for c in system.lanes] == ["work"]
        assert list(system.statistics().lanes) == ["work"]
        with pytest.raises(lanes.UnknownLaneError, match="'nope'"):
            await system.retire_lane("nope")
        with pytest.raises(lanes.LaneConfigError, match="timeout=-1"):
            await system.retire_lane("work", timeout=-1)
        await system.shutdown()
        with pytest.raises(lanes.ShutdownInProgress):
            system.add_lane(LaneConfig("late", 0))
    with pytest.raises(lanes.ShutdownInProgress):
        system.add_lane(LaneConfig("later", 0))
    with pytest.raises(lanes.ShutdownInProgress):
        await system.retire_lane("work")


async def test_retiring_lets_queued_and_running_commands_finish(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(BASE) as system:
        system.add_lane(LaneConfig("old", 2, max_concurrency=1))
        running = await system.submit("old", sleeper, 2.0)
        queued = await system.submit("old", sleeper, 3.0)
        delayed = await system.submit("old", sleeper, 1.0, delay=4.0)
        retired = trio.Event()
        cancelled: list[int] = []

        async def retire() -> None:
            cancelled.append(await system.retire_lane("old"))
            retired.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(retire)
            await trio.sleep(0.5)
            with pytest.raises(lanes.UnknownLaneError, match="unknown lane 'old'"):
                await system.submit("old", sleeper, 1.0)
            with pytest.raises(lanes.UnknownLaneError, match="already being retired"):
                await system.retire_lane("old")
            with pytest.raises(lanes.LaneConfigError, match="'old' is being retired"):
                system.add_lane(LaneConfig("old", 0))
            assert [c.name for c in system.lanes] == ["work"]
            assert system.statistics().lanes["old"].pending == 2  # still there, emptying
        assert cancelled == [0]
        assert [await h.result() for h in (running, queued, delayed)] == [2.0, 3.0, 1.0]
        assert trio.current_time() == pytest.approx(6.0)  # 2 + 3, then the delayed one
        assert "old" not in system.statistics().lanes
        assert "old" not in system.metrics.snapshot().counters["submitted"]
        # The name is free again: a new lane of that name starts from zero.
        system.add_lane(LaneConfig("old", 0))
        assert system.statistics().lanes["old"].submitted == 0


async def test_retiring_an_idle_lane_is_immediate(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system((*BASE, LaneConfig("idle", 3))) as system:
        start = trio.current_time()
        assert await system.retire_lane("idle", timeout=0) == 0
        assert trio.current_time() == start
        assert [c.name for c in system.lanes] == ["work"]


async def test_retiring_with_a_timeout_cancels_what_is_left(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(BASE) as system:
        system.add_lane(LaneConfig("old", 2, max_concurrency=1))
        done = await system.submit("old", sleeper, 1.0)
        slow = await system.submit("old", sleeper, 100.0)
        queued = await system.submit("old", sleeper, 1.0)
        other = await system.submit("work", sleeper, 50.0)
        assert await system.retire_lane("old", timeout=5) == 2
        assert trio.current_time() == pytest.approx(5.0)
        assert await done.result() == 1.0
        for handle in (slow, queued):
            with pytest.raises(lanes.CommandCancelled):
                await handle.result()
        assert not other.done()  # other lanes are not touched
        assert "old" not in system.statistics().lanes
        await other.result()


async def test_a_submit_waiting_for_room_is_refused(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(BASE) as system:
        system.add_lane(LaneConfig("old", 2, max_concurrency=1, inbox_size=1))
        first = await system.submit("old", sleeper, 1.0)
        await trio.lowlevel.checkpoint()  # it runs: its place in the inbox is free again
        await system.submit("old", sleeper, 1.0)  # the inbox is full now
        errors: list[BaseException] = []

        async def waiting() -> None:
            try:
                await system.submit("old", sleeper, 1.0)
            except lanes.LaneError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiting)
            await trio.testing.wait_all_tasks_blocked()
            assert await system.retire_lane("old") == 0
        assert [type(e) for e in errors] == [lanes.ShutdownInProgress]
        assert "lane 'old' is being retired" in str(errors[0])
        assert first.done()


async def test_cancelling_the_retire_call_undoes_it(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(BASE) as system:
        system.add_lane(LaneConfig("old", 2, max_concurrency=1))
        running = await system.submit("old", sleeper, 10.0)
        with trio.move_on_after(2):
            await system.retire_lane("old")
        assert [c.name for c in system.lanes] == ["work", "old"]
        late = await system.submit("old", sleeper, 1.0)  # accepted again
        assert await running.result() == 10.0
        assert await late.result() == 1.0
        # Cancelled while cancelling at the timeout: those stay cancelled, the lane stays.
        slow = await system.submit("old", stubborn)
        queued = await system.submit("old", sleeper, 1.0)
        with trio.move_on_after(1.5):
            await system.retire_lane("old", timeout=1)
        assert trio.current_time() == pytest.approx(12.5)
        assert queued.done() and not slow.done()  # slow takes 5 s to exit its cancellation
        with pytest.raises(lanes.CommandCancelled):
            await queued.result()
        assert await system.run("old", sleeper, 1.0) == 1.0  # accepted again
        with pytest.raises(lanes.CommandCancelled):
            await slow.result()
        assert await system.retire_lane("old") == 0


async def stubborn() -> None:
    """Runs long, and takes 5 s to exit once cancelled."""
    try:
        await trio.sleep(100)
    finally:
        with trio.CancelScope(shield=True):
            await trio.sleep(5)


async def tick() -> None:
    await trio.lowlevel.checkpoint()


async def test_a_lane_with_a_schedule_is_not_retired(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(BASE) as system:
        system.add_lane(LaneConfig("cron", 2))
        schedule = await system.schedule("cron", tick, every=10, key="tick", durable=False)
        with pytest.raises(lanes.LaneUsageError, match="'tick' fire into lane 'cron'"):
            await system.retire_lane("cron")
        assert [c.name for c in system.lanes] == ["work", "cron"]
        schedule.cancel()
        assert await system.retire_lane("cron") == 0


async def test_an_alert_rule_on_a_retired_lane_reads_zero(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(BASE) as system:
        system.add_lane(LaneConfig("old", 2))
        rule = lanes.AlertRule.queue_depth("old", warning=1)
        async with lanes.open_alert_monitor(system, [rule]) as monitor:
            system.pause("old")
            await system.submit("old", sleeper, 1.0)
            await system.submit("old", sleeper, 1.0)
            monitor.check()
            assert monitor.levels == {("old", "queue_depth"): "warning"}
            system.resume("old")
            await system.retire_lane("old")
            monitor.check()
            assert monitor.levels == {("old", "queue_depth"): "ok"}


@lanes.command(name="live-lane-job")
@attrs.define
class Job:
    name: str

    async def execute(self) -> str:
        await trio.sleep(0.01)
        return self.name


async def test_an_added_lane_is_durable_and_recovered_when_configured_again(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "db"
    async with lanes.open_lane_system(
        BASE, storage=path, commands=[Job], drain_timeout=0
    ) as system:
        system.add_lane(LaneConfig("extra", 2))
        system.pause("extra")
        await system.submit("extra", Job("kept"))
        system.close_now()  # stored, not finished: recovered at the next start
    # The lane is configured again at the start: its command is recovered and runs.
    lanes_again = (*BASE, LaneConfig("extra", 2))
    async with lanes.open_lane_system(lanes_again, storage=path, commands=[Job]) as system:
        [handle] = system.recovered
        assert (handle.lane, await handle.result()) == ("extra", "kept")
        system.pause("extra")
        await system.submit("extra", Job("orphan"))
        system.close_now()
    # Without the lane, its stored command goes to the dead-letter queue (not dropped).
    async with lanes.open_lane_system(BASE, storage=path, commands=[Job]) as system:
        assert system.recovered == ()
        [letter] = system.dead_letters.list()
        assert letter.lane == "extra"
        assert "extra" in letter.error


class GatedStorage(MemoryStorage):
    """Memory storage whose writes wait for ``gate`` while it is set to an Event."""

    gate: trio.Event | None = None

    async def write(self, batch: WriteBatch) -> None:
        if self.gate is not None:
            await self.gate.wait()
        await super().write(batch)


async def test_a_durable_submit_racing_a_retire_is_not_run(
    autojump_clock: trio.abc.Clock,
) -> None:
    storage = GatedStorage(clock=trio.current_time)
    async with lanes.open_lane_system(BASE, storage=storage, commands=[Job]) as system:
        system.add_lane(LaneConfig("old", 2))
        errors: list[BaseException] = []

        async def submit() -> None:
            try:
                await system.submit("old", Job("late"))
            except lanes.ShutdownInProgress as exc:
                errors.append(exc)

        storage.gate = gate = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit)
            await trio.testing.wait_all_tasks_blocked()  # its row is being written
            assert await system.retire_lane("old") == 0  # not accepted yet: nothing to wait for
            assert "old" not in system.statistics().lanes
            gate.set()
        storage.gate = None
        [error] = errors
        assert "'old' was retired" in str(error)
        assert system.commands() == []
    async with lanes.open_lane_system(
        (*BASE, LaneConfig("old", 2)), storage=storage, commands=[Job]
    ) as system:
        assert system.recovered == ()  # its row was deleted: it never runs
        assert system.dead_letters.list() == []


async def test_an_added_lane_is_in_the_opentelemetry_metrics(
    autojump_clock: trio.abc.Clock,
) -> None:
    pytest.importorskip("opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from lanes.otel import instrument_metrics

    from .test_otel_metrics import points, value

    reader = InMemoryMetricReader()
    async with lanes.open_lane_system(BASE) as system:
        stop = instrument_metrics(system, meter_provider=MeterProvider(metric_readers=[reader]))
        system.add_lane(LaneConfig("extra", 0))
        await system.run("extra", sleeper, 2.0)
        found = points(reader)
        assert value(found, "lanes.commands", lane="extra", outcome="completed").value == 1
        assert value(found, "lanes.command.duration", lane="extra").sum == 2.0
        await system.retire_lane("extra")
        found = points(reader)
        gauges = [dict(p.attributes) for p in found["lanes.queue.depth"]]
        assert {"lanes.lane": "extra"} not in gauges
        stop()


async def test_an_undone_retire_keeps_the_lane_in_its_place(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system((LaneConfig("a", 0), *BASE, LaneConfig("z", 2))) as system:
        running = await system.submit("a", sleeper, 10.0)
        with trio.move_on_after(1):
            await system.retire_lane("a")
        assert [c.name for c in system.lanes] == ["a", "work", "z"]
        assert await running.result() == 10.0


async def test_an_added_lane_shares_a_limit_and_gives_it_back(
    autojump_clock: trio.abc.Clock,
) -> None:
    limit = lanes.SharedLimit(1, name="llm")
    async with lanes.open_lane_system([LaneConfig("chat", 1, shared_limit=limit)]) as system:
        system.add_lane(LaneConfig("batch", 0, shared_limit=limit))
        chat = await system.submit("chat", sleeper, 1.0)
        batch = await system.submit("batch", sleeper, 1.0)
        await chat.result()
        await batch.result()
        assert trio.current_time() == pytest.approx(2.0)  # one slot for both lanes
        held = await system.submit("batch", sleeper, 5.0)
        waiting = await system.submit("chat", sleeper, 1.0)
        assert await system.retire_lane("batch", timeout=1) == 1
        # The retired lane's slot went back to the limit: "chat" runs at once.
        assert held.done()
        await waiting.result()
        assert trio.current_time() == pytest.approx(4.0)


async def test_retiring_waits_for_a_retry(autojump_clock: trio.abc.Clock) -> None:
    attempts = 0

    async def flaky() -> int:
        nonlocal attempts
        attempts += 1
        await trio.sleep(1)
        if attempts == 1:
            raise OSError("down")
        return attempts

    async with lanes.open_lane_system(BASE) as system:
        system.add_lane(LaneConfig("old", 2, retry=lanes.RetryPolicy.fixed(2, 3)))
        handle = await system.submit("old", flaky)
        assert await system.retire_lane("old") == 0
        assert trio.current_time() == pytest.approx(5.0)  # 1 s, a 3 s backoff, 1 s
        assert await handle.result() == 2
