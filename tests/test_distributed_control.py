"""Control of remote commands: ``handle.cancel()`` of queued, delayed and running commands
(a real redis-server, the real clock, worker tasks in this process)."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import lanes
from lanes.distributed import RedisBackend, open_lane_worker
from tests.distributed_commands import LANES, STARTED, Hold, Step


def started(log: str) -> list[str]:
    path = pathlib.Path(log)
    text = path.read_text() if path.exists() else ""
    return [line.split()[1] for line in text.splitlines() if line.startswith("start ")]


@asynccontextmanager
async def system_on(backend: RedisBackend) -> AsyncIterator[Any]:
    async with lanes.open_lane_system(
        LANES, backend=backend, commands=[Step, Hold], drain_timeout=5
    ) as system:
        yield system


def worker_on(backend: RedisBackend) -> Any:
    return open_lane_worker(LANES, backend=backend, commands=[Step, Hold], drain_timeout=5)


async def marked_cancelled(backend: RedisBackend, command_id: str) -> None:
    """Wait until Redis holds the cancel mark (polled: no worker runs to tell us)."""
    from lanes.distributed._resp import open_connection

    connection = await open_connection(backend.url)
    try:
        with trio.fail_after(3):
            while True:
                [score] = await connection.execute(
                    [["ZSCORE", backend.key("cancelled"), command_id]]
                )
                if score is not None:
                    return
                await trio.sleep(0.01)
    finally:
        await connection.aclose()


def hold(tag: str, seconds: float = 30.0) -> tuple[Hold, trio.Event]:
    STARTED[tag] = trio.Event()
    return Hold(tag, seconds), STARTED[tag]


async def test_cancel_of_a_queued_command_deletes_it_before_any_worker_sees_it(
    backend: RedisBackend, log: str
) -> None:
    async with system_on(backend) as system:
        handle = await system.submit("bulk", Step(log, "q"), key="only-once")
        handle.cancel()
        handle.cancel()  # a second request is a no-op
        with trio.fail_after(2), pytest.raises(lanes.CommandCancelled, match="while queued"):
            await handle.result()
        assert handle.status is lanes.CommandStatus.CANCELLED
        assert await system.backlog() == {"urgent": 0, "bulk": 0}
        again = await system.submit("bulk", Step(log, "q2"), key="only-once")  # key released
        assert again.id != handle.id
        async with worker_on(backend) as worker:
            assert await again.result() == "q2"
        assert started(log) == ["q2"]
        assert worker.statistics().lanes["bulk"].cancelled == 0


async def test_cancel_of_a_running_command_stops_it_on_its_worker(
    backend: RedisBackend, log: str
) -> None:
    command, running = hold(f"r{backend.prefix}")
    async with worker_on(backend) as worker, system_on(backend) as system:
        handle = await system.submit("bulk", command)
        other = await system.submit("bulk", Step(log, "o", seconds=0.05))
        with trio.fail_after(3):
            await running.wait()
        before = trio.current_time()
        handle.cancel()
        with trio.fail_after(3), pytest.raises(lanes.CommandCancelled, match="on attempt 1"):
            await handle.result()
        assert trio.current_time() - before < 2.0
        assert await other.result() == "o"
        assert system.dead_letters.list() == []
        handle.cancel()  # after the outcome: a no-op
        assert handle.status is lanes.CommandStatus.CANCELLED
        assert await system.backlog() == {"urgent": 0, "bulk": 0}
    stats = worker.statistics().lanes["bulk"]  # counted once Redis took it: after the drain
    assert (stats.cancelled, stats.failed, stats.retried, stats.completed) == (1, 0, 0, 1)


async def test_a_delayed_command_cancelled_before_a_worker_started_never_runs(
    backend: RedisBackend, log: str
) -> None:
    async with system_on(backend) as system:
        handle = await system.submit("urgent", Step(log, "d"), delay=0.2)
        handle.cancel()
        await marked_cancelled(backend, handle.id)
        assert not handle.done()
        # the worker starts after the cancel: it learns it from Redis, not the control stream
        async with worker_on(backend) as worker:
            with trio.fail_after(3), pytest.raises(lanes.CommandCancelled, match="while queued"):
                await handle.result()
        assert worker.statistics().lanes["urgent"].cancelled == 1  # counted once Redis took it
        assert started(log) == []


async def test_cancel_after_the_outcome_or_after_close(backend: RedisBackend, log: str) -> None:
    async with (
        worker_on(backend),
        lanes.open_lane_system(LANES, backend=backend, commands=[Step], drain_timeout=0) as system,
    ):
        handle = await system.submit("urgent", Step(log, "f"))
        assert await handle.result() == "f"
        handle.cancel()
        assert handle.status is lanes.CommandStatus.DONE
        pending = await system.submit("bulk", Step(log, "late"), delay=60)
    pending.cancel()  # closed: the handle was resolved at close, the command stays
    with pytest.raises(lanes.ShutdownInProgress):
        await pending.result()


async def test_cancelling_the_wait_for_a_cancel_leaves_the_request(
    backend: RedisBackend, log: str
) -> None:
    command, running = hold(f"w{backend.prefix}")
    async with worker_on(backend), system_on(backend) as system:
        handle = await system.submit("bulk", command)
        with trio.fail_after(3):
            await running.wait()
        handle.cancel()
        with trio.CancelScope() as wait:  # the wait is cancelled before any answer came
            wait.cancel()
            await handle.result()
        assert wait.cancelled_caught
        with trio.fail_after(3), pytest.raises(lanes.CommandCancelled):
            await handle.result()


async def paused_in_redis(backend: RedisBackend, lane: str, paused: bool = True) -> None:
    """Wait until Redis holds the pause (polled: pause() is synchronous)."""
    from lanes.distributed._resp import open_connection

    connection = await open_connection(backend.url)
    try:
        with trio.fail_after(3):
            while True:
                [member] = await connection.execute([["SISMEMBER", backend.key("paused"), lane]])
                if member == int(paused):
                    return
                await trio.sleep(0.01)
    finally:
        await connection.aclose()


async def test_pause_and_resume_hold_for_every_worker(backend: RedisBackend, log: str) -> None:
    async with worker_on(backend) as first, system_on(backend) as system:
        system.pause("bulk")
        await paused_in_redis(backend, "bulk")
        held = [await system.submit("bulk", Step(log, f"b{i}")) for i in range(3)]
        async with worker_on(backend) as second:  # started after the pause: it loads it
            assert await system.run("urgent", Step(log, "u", seconds=0.3)) == "u"
            assert started(log) == ["u"]  # 0.3 s with free bulk slots on two workers
            assert await system.backlog() == {"urgent": 0, "bulk": 3}
            system.resume("bulk")
            with trio.fail_after(5):
                assert [await h.result() for h in held] == ["b0", "b1", "b2"]
    done = [w.statistics().lanes["bulk"].completed for w in (first, second)]
    assert sum(done) == 3


async def test_pause_resume_and_cancel_lane_reject_bad_input(
    backend: RedisBackend, log: str
) -> None:
    async with system_on(backend) as system:
        with pytest.raises(lanes.UnknownLaneError, match="pause: unknown lane 'nope'"):
            system.pause("nope")
        with pytest.raises(lanes.UnknownLaneError, match="resume: unknown lane"):
            system.resume(3)
        with pytest.raises(lanes.UnknownLaneError, match="cancel_lane: unknown lane"):
            await system.cancel_lane("nope")
        with pytest.raises(lanes.LaneConfigError, match="running='yes' is invalid"):
            await system.cancel_lane("bulk", running="yes")
        with pytest.raises(lanes.LaneConfigError, match="cancel nothing"):
            await system.cancel_lane("bulk", running=False, queued=False)
    for call in (lambda: system.pause("bulk"), lambda: system.resume("bulk")):
        with pytest.raises(lanes.ShutdownInProgress, match="closed"):
            call()
    with pytest.raises(lanes.ShutdownInProgress, match="closed"):
        await system.cancel_lane("bulk")


async def test_cancel_lane_stops_running_and_drops_queued_commands(
    backend: RedisBackend, log: str
) -> None:
    one, one_started = hold(f"1{backend.prefix}")
    two, two_started = hold(f"2{backend.prefix}")
    async with worker_on(backend) as worker, system_on(backend) as system:
        running = [await system.submit("bulk", one), await system.submit("bulk", two)]
        with trio.fail_after(3):
            await one_started.wait()
            await two_started.wait()
        queued = [await system.submit("bulk", Step(log, f"q{i}")) for i in range(3)]
        queued.append(await system.submit("bulk", Step(log, "d"), delay=30))
        kept = await system.submit("urgent", Step(log, "u"))
        assert await system.cancel_lane("bulk", running=False) == 4  # the queue only
        for handle in queued:
            with trio.fail_after(3), pytest.raises(lanes.CommandCancelled, match="queued"):
                await handle.result()
        assert not any(h.done() for h in running)
        assert await system.cancel_lane("bulk") == 2  # now the running ones
        for handle in running:
            with trio.fail_after(3), pytest.raises(lanes.CommandCancelled, match="attempt 1"):
                await handle.result()
        assert await kept.result() == "u"
        assert await system.backlog() == {"urgent": 0, "bulk": 0}
        assert system.dead_letters.list() == []
    assert started(log) == ["u"]
    assert worker.statistics().lanes["bulk"].cancelled == 2
