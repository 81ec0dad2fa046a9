"""The in-process API on Redis: ``statistics()`` and ``dead_letters`` of a whole deployment
(a real redis-server, the real clock, two submitters and worker tasks in this process)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import lanes
from lanes.distributed import (
    RedisBackend,
    RemoteDeadLetters,
    local_redis_server,
    open_lane_worker,
)
from tests.distributed_commands import LANES, STARTED, Hold, Step


@asynccontextmanager
async def system_on(backend: RedisBackend) -> AsyncIterator[Any]:
    async with lanes.open_lane_system(
        LANES, backend=backend, commands=[Step, Hold], drain_timeout=5
    ) as system:
        yield system


def worker_on(backend: RedisBackend, **options: Any) -> Any:
    return open_lane_worker(
        LANES, backend=backend, commands=[Step, Hold], drain_timeout=5, **options
    )


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 5) -> None:
    """Poll ``check`` (another system's copy follows Redis; nothing here to wait on)."""
    with trio.fail_after(timeout):
        while True:
            value = check()
            if not isinstance(value, bool):
                value = await value
            if value:
                return
            await trio.sleep(0.01)


def counts(stats: lanes.LaneStatistics) -> dict[str, int]:
    names = ("submitted", "completed", "failed", "timed_out", "retried", "dead_lettered")
    return {name: getattr(stats, name) for name in (*names, "cancelled", "preempted")}


# -- statistics ---------------------------------------------------------------------------------


async def test_statistics_of_a_fresh_deployment_without_workers(backend: RedisBackend) -> None:
    async with system_on(backend) as system:
        stats = await system.statistics()
        assert isinstance(stats, lanes.SystemStatistics)
        assert list(stats.lanes) == ["urgent", "bulk"]
        assert (stats.pending, stats.active, stats.max_concurrency) == (0, 0, 0)
        assert (stats.dead_letters, stats.dead_letters_evicted, stats.accepting) == (0, 0, True)
        urgent = stats.lanes["urgent"]
        assert isinstance(urgent, lanes.LaneStatistics)
        assert (urgent.priority, urgent.effective_priority, urgent.paused) == (0, 0, False)
        assert set(counts(urgent).values()) == {0}


async def test_statistics_sum_every_worker_and_submitter(backend: RedisBackend, log: str) -> None:
    async with (
        worker_on(backend),
        worker_on(backend),
        system_on(backend) as first,
        system_on(backend) as second,
    ):
        assert await first.run("urgent", Step(log, "a")) == "a"
        assert await second.run("urgent", Step(log, "b")) == "b"
        bad = await second.submit("bulk", Step(log, "bad", fail=True))
        with pytest.raises(lanes.CommandFailed):
            await bad.result()
        slow = await first.submit("urgent", Step(log, "slow", seconds=5), timeout=0.1)
        with pytest.raises(lanes.CommandTimeout):
            await slow.result()
        # a handle resolved: its outcome is counted (the same script settled both)
        stats = await first.statistics()
        assert counts(stats.lanes["urgent"]) == {
            "submitted": 3,
            "completed": 2,
            "failed": 1,
            "timed_out": 1,
            "retried": 0,
            "dead_lettered": 1,
            "cancelled": 0,
            "preempted": 0,
        }
        bulk = counts(stats.lanes["bulk"])
        assert (bulk["submitted"], bulk["retried"], bulk["failed"], bulk["dead_lettered"]) == (
            1,
            2,
            1,
            1,
        )
        assert stats.dead_letters == 2
        # the slots of the live workers: 2 workers x (2 + 2)
        assert stats.max_concurrency == 8
        assert stats.lanes["urgent"].max_concurrency == 4
        # gauges: a running command, a delayed one, a paused lane
        STARTED["held"] = trio.Event()
        held = await first.submit("urgent", Hold("held"))
        later = await first.submit("bulk", Step(log, "later"), delay=30)
        with trio.fail_after(5):
            await STARTED["held"].wait()
        first.pause("bulk")

        async def gauges() -> bool:
            now = await second.statistics()
            return (
                now.lanes["urgent"].active == 1
                and now.lanes["bulk"].pending == 1
                and now.lanes["bulk"].paused
            )

        await eventually(gauges)
        assert (await second.statistics()).active == 1
        held.cancel()
        assert await first.cancel_lane("bulk") == 1  # the delayed one
        with pytest.raises(lanes.CommandCancelled):
            await held.result()
        with pytest.raises(lanes.CommandCancelled):
            await later.result()
        stats = await second.statistics()
        assert stats.lanes["urgent"].cancelled == 1 and stats.lanes["bulk"].cancelled == 1
        assert (stats.active, stats.pending) == (0, 0)
        assert stats == await first.statistics()  # the same snapshot for every submitter
    async with system_on(backend) as system:  # the workers left: their slots are gone
        stats = await system.statistics()
        assert stats.max_concurrency == 0
        assert stats.lanes["urgent"].completed == 2  # counters outlive the processes


async def test_statistics_count_a_command_once_however_many_submit_it_by_key(
    backend: RedisBackend, log: str
) -> None:
    async with worker_on(backend), system_on(backend) as first, system_on(backend) as second:
        STARTED["k"] = trio.Event()
        a = await first.submit("urgent", Hold("k", 0.2), key="same")
        b = await second.submit("urgent", Hold("k", 0.2), key="same")
        assert a.id == b.id
        assert await a.result() == await b.result() == "k"
        stats = (await first.statistics()).lanes["urgent"]
        assert (stats.submitted, stats.completed) == (1, 1)


async def test_cancelling_statistics_leaves_nothing_behind(backend: RedisBackend) -> None:
    async with system_on(backend) as system:
        with trio.CancelScope() as scope:
            scope.cancel()
            await system.statistics()
        assert scope.cancelled_caught
        assert (await system.statistics()).pending == 0


async def test_statistics_while_redis_is_away_raise_storage_error(log: str) -> None:
    with local_redis_server() as server:
        backend = RedisBackend(server.url, prefix="gone", lease=0.6)
        async with system_on(backend) as system:
            server.stop()
            with pytest.raises(lanes.StorageError, match=r"Redis at redis://127\.0\.0\.1"):
                await system.statistics()
            with pytest.raises(lanes.StorageError):
                await system.dead_letters.pop()


# -- dead letters -------------------------------------------------------------------------------


async def fail(system: Any, log: str, tag: str) -> str:
    handle = await system.submit("urgent", Step(log, tag, fail=True))
    with pytest.raises(lanes.CommandFailed):
        await handle.result()
    return str(handle.id)


async def test_dead_letters_are_a_synchronous_snapshot_of_every_process(
    backend: RedisBackend, log: str
) -> None:
    async with worker_on(backend), system_on(backend) as first, system_on(backend) as second:
        letters = first.dead_letters
        assert isinstance(letters, RemoteDeadLetters)
        assert (letters.list(), len(letters)) == ([], 0)
        bad = await fail(first, log, "x")
        # no wait: the letter was read with the reply, before the handle resolved
        [letter] = letters.list()
        assert (letter.command_id, letter.lane, letter.command_type) == (bad, "urgent", "Step")
        assert letter.id in letters and len(letters) == 1
        assert "RuntimeError: x failed on purpose" in letter.error
        await eventually(lambda: len(second.dead_letters) == 1)  # another process's copy
        again = await second.dead_letters.requeue(letter.id)
        assert letter.id not in second.dead_letters
        await eventually(lambda: letter.id not in letters)  # the removal reached the first
        with pytest.raises(lanes.CommandFailed):
            await again.result()
        assert len(letters) == 1  # a new run, a new letter
        await fail(second, log, "y")
        await eventually(lambda: len(letters) == 2)
        oldest = await letters.pop()
        assert oldest is not None and oldest.command_id == again.id
        await eventually(lambda: len(second.dead_letters) == 1)
        assert await second.dead_letters.clear() == 1
        await eventually(lambda: len(letters) == 0)
        assert await letters.pop() is None
        assert await letters.clear() == 0


async def test_a_system_opened_later_loads_the_letters(backend: RedisBackend, log: str) -> None:
    async with worker_on(backend):
        async with system_on(backend) as first:
            await fail(first, log, "x")
            await fail(first, log, "y")
        async with system_on(backend) as later:
            assert [d.error.split()[1] for d in later.dead_letters.list()] == ["x", "y"]


async def test_evictions_at_the_limit_are_counted_and_leave_every_copy(
    backend: RedisBackend, log: str
) -> None:
    async with (
        worker_on(backend, dead_letter_limit=2),
        system_on(backend) as first,
        system_on(backend) as second,
    ):
        ids = [await fail(first, log, f"f{i}") for i in range(3)]
        assert [d.command_id for d in first.dead_letters.list()] == ids[1:]
        await eventually(lambda: [d.command_id for d in second.dead_letters.list()] == ids[1:])
        stats = await first.statistics()
        assert (stats.dead_letters, stats.dead_letters_evicted) == (2, 1)


async def test_requeue_rejects_unknown_ids(backend: RedisBackend, log: str) -> None:
    async with worker_on(backend), system_on(backend) as system:
        for bad in ("nope", "0-1", "", 42, None):
            with pytest.raises(lanes.DeadLetterNotFound, match="no dead letter has id"):
                await system.dead_letters.requeue(bad)
        await fail(system, log, "x")
        letter_id = system.dead_letters.list()[0].id
        await system.dead_letters.requeue(letter_id)
        with pytest.raises(KeyError):  # DeadLetterNotFound is a KeyError, as in process
            await system.dead_letters.requeue(letter_id)


async def test_a_cancelled_pop_leaves_the_copy_true_to_redis(
    backend: RedisBackend, log: str
) -> None:
    async with worker_on(backend), system_on(backend) as system:
        await fail(system, log, "x")
        with trio.CancelScope() as scope:
            scope.cancel()
            await system.dead_letters.pop()  # queued before the cancel: it still runs
        await eventually(lambda: len(system.dead_letters) == 0)
        assert (await system.statistics()).dead_letters == 0


async def test_the_old_dead_letter_calls_still_work_with_a_warning(
    backend: RedisBackend, log: str
) -> None:
    async with worker_on(backend), system_on(backend) as system:
        await fail(system, log, "x")
        with pytest.warns(DeprecationWarning, match=r"dead_letters\.list\(\)"):
            letters = await system.dead_letters()
        assert letters == system.dead_letters.list()
        with pytest.warns(DeprecationWarning), pytest.raises(lanes.LaneConfigError):
            await system.dead_letters(count=0)
        with pytest.warns(DeprecationWarning, match="dead_letters.requeue"):
            handle = await system.requeue(letters[0].id)
        with pytest.raises(lanes.CommandFailed):
            await handle.result()
        with (
            pytest.warns(DeprecationWarning),
            pytest.raises(lanes.LaneConfigError, match="no dead letter has id"),
        ):
            await system.requeue(letters[0].id)


# -- events -------------------------------------------------------------------------------------


async def events_length(backend: RedisBackend) -> int:
    from lanes.distributed._resp import open_connection

    connection = await open_connection(backend.url)
    try:
        [length] = await connection.execute([["XLEN", backend.key("events")]])
    finally:
        await connection.aclose()
    return int(length)


async def collect(events: Any, until: Callable[[list[Any]], bool]) -> list[Any]:
    seen: list[Any] = []
    with trio.fail_after(10):
        async for event in events:
            seen.append(event)
            if until(seen):
                return seen
    return seen  # pragma: no cover - the stream ended


async def test_events_of_every_process_reach_a_subscriber(backend: RedisBackend, log: str) -> None:
    from lanes import events as ev

    async with (
        system_on(backend) as watcher,
        system_on(backend) as other,
        watcher.subscribe() as events,
        worker_on(backend),  # started after: it finds the events on
    ):
        ok = await other.submit("urgent", Step(log, "ok"))
        bad = await other.submit("bulk", Step(log, "bad", fail=True))
        seen = await collect(
            events,
            lambda s: (
                {(type(e), e.command_id) for e in s}
                >= {(ev.Completed, ok.id), (ev.DeadLettered, bad.id)}
            ),
        )
        kinds = {cid: [type(e) for e in seen if e.command_id == cid] for cid in (ok.id, bad.id)}
        assert kinds[ok.id] == [ev.Submitted, ev.Started, ev.Completed]
        assert kinds[bad.id] == [
            ev.Submitted,
            ev.Started,
            ev.Retrying,
            ev.Started,
            ev.Retrying,
            ev.Started,
            ev.Failed,
            ev.DeadLettered,
        ]
        first = seen[0]
        assert (first.lane, first.command_type) == ("urgent", "Step") and first.timestamp > 0
        assert first.priority is None  # commands on Redis have no priority of their own
        done = next(e for e in seen if isinstance(e, ev.Completed))
        assert done.attempt == 1 and done.duration >= 0
        failed = next(e for e in seen if isinstance(e, ev.Failed))
        assert failed.attempts == 3 and "bad failed on purpose" in failed.error


async def test_a_running_worker_learns_of_a_subscription(backend: RedisBackend, log: str) -> None:
    from lanes import events as ev

    async with worker_on(backend) as worker, system_on(backend) as system:
        await system.run("urgent", Step(log, "before"))
        assert await events_length(backend) == 0  # nobody subscribed: nothing written
        async with system.subscribe(ev.Completed, ev.Cancelled) as events:
            await eventually(lambda: worker._events_until > trio.current_time())
            ok = await system.submit("urgent", Step(log, "ok"))
            dropped = await system.submit("bulk", Step(log, "x"), delay=30)
            assert await system.cancel_lane("bulk") == 1
            seen = await collect(events, lambda s: len(s) == 2)
        assert {(type(e), e.command_id) for e in seen} == {
            (ev.Completed, ok.id),
            (ev.Cancelled, dropped.id),
        }


async def test_a_slow_subscriber_drops_events_and_they_are_counted(
    backend: RedisBackend, log: str
) -> None:
    async with (
        worker_on(backend) as worker,
        system_on(backend) as system,
        system.subscribe(buffer=1) as events,
    ):
        await eventually(lambda: worker._events_until > trio.current_time())
        for i in range(3):
            await system.run("urgent", Step(log, f"s{i}"))
        await eventually(lambda: system._events_dropped >= 5)  # 9 events, 1 kept
        stats = await system.statistics()
        assert stats.events_dropped == system._events_dropped
        assert events.receive_nowait() is not None


async def test_subscribe_rejects_bad_input(backend: RedisBackend) -> None:
    async with system_on(backend) as system:
        with pytest.raises(lanes.LaneConfigError, match="is not an event type"):
            async with system.subscribe(int):  # type: ignore[arg-type]
                pass  # pragma: no cover
        with pytest.raises(lanes.LaneConfigError, match="buffer=0 is invalid"):
            async with system.subscribe(buffer=0):
                pass  # pragma: no cover
        assert await events_length(backend) == 0
    with pytest.raises(lanes.ShutdownInProgress, match="subscribe"):
        async with system.subscribe():
            pass  # pragma: no cover


# -- cancel_lane waits for the running commands ---------------------------------------------


async def test_cancel_lane_returns_once_the_running_commands_have_stopped(
    backend: RedisBackend,
) -> None:
    tags = [f"c{i}{backend.prefix}" for i in range(3)]
    for tag in tags:
        STARTED[tag] = trio.Event()
    async with (
        worker_on(backend),
        worker_on(backend),
        system_on(backend) as first,
        system_on(backend) as second,
    ):
        mine = [
            await first.submit("bulk", Hold(tags[0])),
            await first.submit("bulk", Hold(tags[1])),
        ]
        theirs = await second.submit("bulk", Hold(tags[2]))  # another submitter's command
        with trio.fail_after(5):
            for tag in tags:
                await STARTED[tag].wait()
        assert await first.cancel_lane("bulk") == 3
        assert all(handle.done() for handle in mine)  # no wait: they have stopped
        stats = (await first.statistics()).lanes["bulk"]
        assert (stats.active, stats.cancelled) == (0, 3)  # settled by their workers
        with trio.fail_after(5), pytest.raises(lanes.CommandCancelled):
            await theirs.result()
        assert first._handles == {}  # the wait for the other's command left nothing behind
        assert await first.cancel_lane("bulk") == 0


async def test_cancelling_a_cancel_lane_wait_leaves_the_request(backend: RedisBackend) -> None:
    tag = f"w{backend.prefix}"
    STARTED[tag] = trio.Event()
    async with worker_on(backend), system_on(backend) as first, system_on(backend) as second:
        theirs = await second.submit("bulk", Hold(tag))
        with trio.fail_after(5):
            await STARTED[tag].wait()
        with trio.CancelScope() as scope:
            scope.cancel()
            await first.cancel_lane("bulk")
        assert scope.cancelled_caught
        with trio.fail_after(5), pytest.raises(lanes.CommandCancelled):
            await theirs.result()  # the request was queued before the cancel: it ran
        assert first._handles == {}


async def test_after_close_the_deployment_calls_raise_shutdown_in_progress(
    backend: RedisBackend,
) -> None:
    async with system_on(backend) as system:
        pass
    calls: list[Callable[[], Awaitable[Any]]] = [
        system.statistics,
        system.dead_letters.pop,
        system.dead_letters.clear,
        lambda: system.dead_letters.requeue("0-1"),
        lambda: system.cancel_lane("urgent"),
    ]
    for call in calls:
        with trio.fail_after(2), pytest.raises(lanes.ShutdownInProgress, match="closed"):
            await call()
    assert system.dead_letters.list() == []  # the snapshot stays readable


async def test_dead_letters_keep_the_traceback_and_discard_removes_one(
    backend: RedisBackend, log: str
) -> None:
    async with worker_on(backend), system_on(backend) as first, system_on(backend) as second:
        await fail(first, log, "x")
        kept = await fail(first, log, "y")
        [letter, other] = first.dead_letters.list()
        trace = letter.traceback
        assert trace is not None and trace.startswith("Traceback (most recent call last)")
        assert "in execute" in trace
        assert trace.rstrip().endswith("RuntimeError: x failed on purpose")
        await eventually(lambda: len(second.dead_letters) == 2)
        assert second.dead_letters.list()[0].traceback == trace  # read back from Redis
        assert await second.dead_letters.discard(letter.id) is True
        assert letter.id not in second.dead_letters
        await eventually(lambda: letter.id not in first.dead_letters)  # the notice reached it
        assert await first.dead_letters.discard(letter.id) is False  # gone already
        assert [d.command_id for d in first.dead_letters.list()] == [kept]
        for unknown in ("nope", "0-1", ""):
            assert await first.dead_letters.discard(unknown) is False
        for bad in (42, None, other):
            with pytest.raises(lanes.LaneUsageError, match="expected a letter id string"):
                await first.dead_letters.discard(bad)  # type: ignore[arg-type]
        assert (await first.statistics()).dead_letters == 1
    with pytest.raises(lanes.ShutdownInProgress):
        await first.dead_letters.discard(other.id)


async def test_a_long_traceback_is_cut_to_its_end(backend: RedisBackend, log: str) -> None:
    async with worker_on(backend), system_on(backend) as system:
        await fail(system, log, "z" * 20_000)
        [letter] = system.dead_letters.list()
        assert letter.traceback is not None and len(letter.traceback) < 8_100
        assert letter.traceback.startswith("... (")
        assert letter.traceback.rstrip().endswith("z failed on purpose")
