"""Schedules and delayed commands on Redis fire once however many replicas run (a real
redis-server, the real clock: two submitting systems and worker tasks in this process)."""

from __future__ import annotations

import pathlib
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import lanes
from lanes.distributed import (
    RedisBackend,
    RemoteSchedule,
    local_redis_server,
    open_lane_worker,
)
from tests.distributed_commands import LANES, Step


@asynccontextmanager
async def system_on(backend: RedisBackend) -> AsyncIterator[Any]:
    async with lanes.open_lane_system(
        LANES, backend=backend, commands=[Step], drain_timeout=5
    ) as system:
        yield system


def worker_on(backend: RedisBackend) -> Any:
    return open_lane_worker(LANES, backend=backend, commands=[Step], drain_timeout=5)


def runs(log: str) -> Counter[str]:
    path = pathlib.Path(log)
    text = path.read_text() if path.exists() else ""
    return Counter(line.split()[1] for line in text.splitlines() if line.startswith("start "))


async def stored(backend: RedisBackend, key: str) -> dict[str, str]:
    from lanes.distributed._resp import open_connection

    connection = await open_connection(backend.url)
    try:
        [flat] = await connection.execute([["HGETALL", backend.key(f"schedule:{key}")]])
    finally:
        await connection.aclose()
    return dict(zip(flat[::2], flat[1::2], strict=True))


async def until(check: Any, timeout: float = 5.0) -> None:
    """Poll (the schedules follow the wall clock in other tasks and Redis)."""
    with trio.fail_after(timeout):
        while True:
            if check():
                return
            await trio.sleep(0.01)


async def test_schedule_rejects_bad_input(backend: RedisBackend, log: str) -> None:
    tick = Step(log, "t")
    async with system_on(backend) as system:
        cases: list[tuple[dict[str, Any], type[Exception], str]] = [
            ({"every": 1}, lanes.LaneConfigError, "key=... is required on Redis"),
            ({"every": 1, "key": "  "}, lanes.LaneConfigError, "key="),
            ({"key": "k"}, lanes.LaneConfigError, "exactly one of every"),
            ({"every": 1, "cron": "* * * * *", "key": "k"}, lanes.LaneConfigError, "exactly"),
            ({"every": 0, "key": "k"}, lanes.LaneConfigError, "every=0 is invalid"),
            ({"cron": "nope", "key": "k"}, lanes.LaneConfigError, "cron=.nope. has 1 fields"),
            ({"every": 1, "key": "k", "jitter": -1}, lanes.LaneConfigError, "jitter=-1"),
            ({"every": 1, "key": "k", "misfire": "x"}, lanes.LaneConfigError, "misfire='x'"),
            ({"every": 1, "key": "k", "misfire_limit": 0}, lanes.LaneConfigError, "limit=0"),
            ({"every": 1, "key": "k", "overlap": "queue"}, lanes.LaneConfigError, "not offered"),
        ]
        for options, error, text in cases:
            with pytest.raises(error, match=text):
                await system.schedule("urgent", tick, **options)
        with pytest.raises(lanes.UnknownLaneError, match="known lanes"):
            await system.schedule("nope", tick, every=1, key="k")
        with pytest.raises(lanes.LaneUsageError, match=r"not a @lanes\.command"):
            await system.schedule("urgent", print, every=1, key="k")
        assert dict(system.schedules) == {}
        assert await stored(backend, "k") == {}  # nothing was defined
    with pytest.raises(lanes.ShutdownInProgress):
        await system.schedule("urgent", tick, every=1, key="k")


async def test_two_replicas_fire_each_slot_once(backend: RedisBackend, log: str) -> None:
    async with worker_on(backend), system_on(backend) as first, system_on(backend) as second:
        one = await first.schedule("urgent", Step(log, "tick"), every=0.1, key="tick")
        two = await second.schedule("urgent", Step(log, "tick"), every=0.1, key="tick")
        assert isinstance(one, RemoteSchedule) and second.schedules["tick"] is two
        assert one.next_run == two.next_run  # the first definition's slots, for both
        await trio.sleep(1.5)
        one.cancel()
        assert two.cancelled is False  # learnt at its next slot
        await until(lambda: two.cancelled)
        assert "tick" not in second.schedules and "tick" not in first.schedules
        fired = one.fired + two.fired
        await until(lambda: runs(log)["tick"] == fired)
    assert 5 <= fired <= 16  # 15 slots in 1.5 s (fewer late ones on a loaded machine); twice
    # as many if both replicas fired
    assert await stored(backend, "tick") == {}  # cancelled: gone for every replica


async def test_pause_and_resume_hold_for_every_replica(backend: RedisBackend, log: str) -> None:
    async with worker_on(backend), system_on(backend) as first, system_on(backend) as second:
        one = await first.schedule("urgent", Step(log, "p"), every=0.1, key="p")
        two = await second.schedule("urgent", Step(log, "p"), every=0.1, key="p")
        one.pause()
        assert one.paused and one.next_run is None
        await until(lambda: two.paused)  # learnt at its next slot
        before = runs(log)["p"]
        await trio.sleep(0.5)
        assert runs(log)["p"] <= before + 1  # a firing queued just before the pause
        assert one.skipped + two.skipped >= 3  # by whichever replica came first
        one.resume()
        await until(lambda: runs(log)["p"] >= before + 3)
        assert not two.paused
        two.cancel()


async def test_overlap_skip_waits_for_the_previous_firing(backend: RedisBackend, log: str) -> None:
    async with worker_on(backend), system_on(backend) as first, system_on(backend) as second:
        slow = Step(log, "slow", seconds=0.45)
        one = await first.schedule("urgent", slow, every=0.1, key="slow")
        two = await second.schedule("urgent", slow, every=0.1, key="slow")
        await trio.sleep(1.5)
        one.cancel()
        await until(lambda: two.cancelled)
        fired = one.fired + two.fired
    assert 2 <= fired <= 4  # one firing per ~0.5 s; overlap="allow" would fire ~15
    assert one.skipped + two.skipped >= 8


async def test_a_replica_started_after_an_outage_applies_the_misfire_policy(
    backend: RedisBackend, log: str
) -> None:
    async with system_on(backend) as first:
        await first.schedule("urgent", Step(log, "m"), every=0.2, key="m")
        await trio.sleep(0.3)
    assert runs(log)["m"] == 0  # no worker yet: queued only
    await trio.sleep(1.6)  # every replica is down: the slots pass unfired (later than GRACE)
    async with worker_on(backend), system_on(backend) as later:
        schedule = await later.schedule("urgent", Step(log, "m"), every=0.2, key="m")
        await until(lambda: schedule.fired == 1)  # "run_once": one firing for the missed
        assert schedule.skipped >= 6
        schedule.cancel()
        await until(lambda: runs(log)["m"] == 2)  # the one queued before the outage, too


async def test_a_redefinition_elsewhere_stops_the_old_definition(
    backend: RedisBackend, log: str
) -> None:
    async with worker_on(backend), system_on(backend) as first, system_on(backend) as second:
        old = await first.schedule("urgent", Step(log, "old"), every=0.1, key="r")
        same = await first.schedule("urgent", Step(log, "old"), every=0.1, key="r")
        assert same is old  # the same definition: the same schedule
        new = await second.schedule("urgent", Step(log, "new"), every=0.1, key="r")
        await until(lambda: old.problem is not None)
        assert "redefined" in str(old.problem) and old.next_run is None
        await until(lambda: runs(log)["new"] >= 2)
        new.cancel()


async def test_delayed_commands_run_once_with_two_workers_and_two_submitters(
    backend: RedisBackend, log: str
) -> None:
    async with (
        worker_on(backend),
        worker_on(backend),
        system_on(backend) as first,
        system_on(backend) as second,
    ):
        handles = [
            await system.submit("bulk", Step(log, f"d{i}"), delay=0.2 + i * 0.01)
            for i, system in enumerate([first, second] * 10)
        ]
        with trio.fail_after(10):
            assert [await h.result() for h in handles] == [f"d{i}" for i in range(20)]
    assert set(runs(log).values()) == {1}


async def test_schedules_and_delays_survive_a_redis_restart_with_appendonly(log: str) -> None:
    with local_redis_server(persistent=True) as server:
        backend = RedisBackend(server.url, prefix="sched", lease=0.6)
        async with (
            worker_on(backend),
            system_on(backend) as first,
            system_on(backend) as second,
        ):
            one = await first.schedule("urgent", Step(log, "s"), every=0.2, key="s")
            two = await second.schedule("urgent", Step(log, "s"), every=0.2, key="s")
            began = trio.current_time()
            later = await first.submit("bulk", Step(log, "later"), delay=1.0)
            await until(lambda: runs(log)["s"] >= 2)
            server.stop(signal.SIGKILL)  # a crash: what was fsynced survives
            await trio.sleep(0.5)
            server.start()
            restarted = runs(log)["s"]
            await until(lambda: runs(log)["s"] >= restarted + 3, timeout=10)
            with trio.fail_after(10):
                assert await later.result() == "later"
            one.cancel()
            slots = (trio.current_time() - began) / 0.2
            await until(lambda: two.cancelled, timeout=10)
            fired = one.fired + two.fired
            await until(lambda: runs(log)["s"] >= fired)
        counts = runs(log)
    assert counts["later"] == 1
    assert counts["s"] == fired  # every firing ran once
    assert fired <= slots + 1  # at most one per slot: the two replicas never both fired
