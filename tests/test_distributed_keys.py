"""An idempotency key on Redis is held as long as its holder is queued, delayed or running,
however long that is beside the backend's ``key_ttl`` (a real redis-server, the real clock,
worker tasks in this process, and a worker process killed mid-run)."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

import lanes
from lanes import Dedup
from lanes.distributed import LocalRedis, RedisBackend, open_lane_worker
from tests.distributed_commands import LANES, Step
from tests.test_distributed import spawn_worker, wait_for_line
from tests.test_distributed_control import started
from tests.test_distributed_dedup import redis, until_redis, until_started
from tests.test_distributed_faults import wait_for_other_start

STARTED: dict[str, trio.Event] = {}
OPEN: dict[str, trio.Event] = {}


@lanes.command
@attrs.define
class Gate:
    """Sets ``STARTED[tag]``, then runs until the test sets ``OPEN[tag]``; returns its tag."""

    tag: str

    async def execute(self) -> str:
        STARTED[self.tag].set()
        await OPEN[self.tag].wait()
        return self.tag


@asynccontextmanager
async def system_on(backend: RedisBackend) -> AsyncIterator[Any]:
    async with lanes.open_lane_system(
        LANES, backend=backend, commands=[Step, Gate], drain_timeout=5
    ) as system:
        yield system


def worker_on(backend: RedisBackend, drain_timeout: float = 5) -> Any:
    return open_lane_worker(
        LANES, backend=backend, commands=[Step, Gate], drain_timeout=drain_timeout
    )


def gate(tag: str) -> Gate:
    STARTED[tag], OPEN[tag] = trio.Event(), trio.Event()
    return Gate(tag)


async def running(system: Any, key: str, mode: Dedup | None = None) -> tuple[Any, str]:
    """Submit a ``Gate`` with ``key``; return its handle and tag once a worker runs it."""
    tag = f"{key}-{uuid.uuid4().hex[:8]}"
    handle = await system.submit("urgent", gate(tag), key=key, dedup=mode)
    with trio.fail_after(3):
        await STARTED[tag].wait()
    return handle, tag


async def past_key_ttl(backend: RedisBackend) -> None:
    """Let the backend's ``key_ttl`` pass (real time: what is tested is that Redis does not
    expire the key meanwhile; there is nothing to wait on)."""
    await trio.sleep(backend.key_ttl * 1.5)


async def held_for_good(backend: RedisBackend, key: str, holder_id: str) -> None:
    """The key names its holder and has no expiry (nor has its hash)."""
    assert await redis(backend, "GET", backend.key(f"key:{key}")) == holder_id
    assert await redis(backend, "PTTL", backend.key(f"key:{key}")) == -1
    assert await redis(backend, "PTTL", backend.key(f"dedup:{key}")) == -1


@pytest.fixture
def short(redis_server: LocalRedis) -> RedisBackend:
    """A backend whose ``key_ttl`` is far shorter than its holders run."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return RedisBackend(redis_server.url, prefix=prefix, lease=0.6, key_ttl=0.2)


# -- a running holder ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [Dedup.hold(), Dedup.replace(), Dedup.keep_last()])
async def test_a_holder_running_longer_than_key_ttl_keeps_its_key(
    short: RedisBackend, log: str, mode: Dedup
) -> None:
    async with worker_on(short), system_on(short) as first, system_on(short) as second:
        holder, tag = await running(first, "k", mode)
        await past_key_ttl(short)
        await held_for_good(short, "k", holder.id)
        again = await second.submit("urgent", Step(log, "dup"), key="k", dedup=mode)
        if mode.mode == "keep_last":  # waits behind the running holder, in its hash
            assert again.id != holder.id
            assert await redis(short, "HGET", short.key("dedup:k"), "f_id") == again.id
        else:  # the running holder's handle (replace keeps a running holder)
            assert again.id == holder.id
        assert not holder.done() and not again.done()
        OPEN[tag].set()
        assert await holder.result() == tag
        with trio.fail_after(3):
            assert await again.result() == (tag if again.id == holder.id else "dup")
        await until_redis(short, 0, "EXISTS", short.key("key:k"))  # freed at the end
        fresh = await second.submit("urgent", Step(log, "fresh"), key="k", dedup=mode)
        assert fresh.id not in (holder.id, again.id)
        assert await fresh.result() == "fresh"
    assert started(log) == (["dup", "fresh"] if mode.mode == "keep_last" else ["fresh"])


async def test_a_key_kept_after_a_long_holder_counts_its_ttl_from_the_end(
    short: RedisBackend, log: str
) -> None:
    async with worker_on(short), system_on(short) as system:
        holder, tag = await running(system, "k", Dedup.hold(ttl=30))
        await past_key_ttl(short)
        OPEN[tag].set()
        assert await holder.result() == tag
        assert await redis(short, "EXISTS", short.key("key:k"), short.key("dedup:k")) == 0
        assert 29_000 < await redis(short, "PTTL", short.key("kept:k")) <= 30_000
        assert (await system.submit("urgent", Step(log, "x"), key="k")).id == holder.id
    assert started(log) == []


async def test_a_follower_behind_a_long_holder_takes_the_key_at_its_end(
    short: RedisBackend, log: str
) -> None:
    async with worker_on(short), system_on(short) as system:
        holder, tag = await running(system, "k", Dedup.keep_last())
        follower = await system.submit("urgent", Step(log, "f"), key="k", dedup=Dedup.keep_last())
        await past_key_ttl(short)
        await held_for_good(short, "k", holder.id)
        # cancelled while parked: the hash still lives as long as its key
        follower.cancel()
        with trio.fail_after(3), pytest.raises(lanes.CommandCancelled, match="while queued"):
            await follower.result()
        await held_for_good(short, "k", holder.id)
        last = await system.submit("urgent", Step(log, "l"), key="k", dedup=Dedup.keep_last())
        OPEN[tag].set()
        assert await holder.result() == tag
        with trio.fail_after(3):
            assert await last.result() == "l"  # it took the key when the holder ended
        assert await redis(short, "EXISTS", short.key("key:k"), short.key("dedup:k")) == 0
        assert await redis(short, "SCARD", short.key("parked")) == 0
    assert started(log) == ["l"]


# -- a waiting holder ------------------------------------------------------------------------------


async def test_a_holder_queued_or_delayed_longer_than_key_ttl_keeps_its_key(
    short: RedisBackend, log: str
) -> None:
    async with system_on(short) as system:  # no worker yet: they wait
        queued = await system.submit("bulk", Step(log, "q"), key="q")
        delayed = await system.submit("bulk", Step(log, "d"), key="d", delay=0.4)
        await past_key_ttl(short)
        await held_for_good(short, "q", queued.id)
        await held_for_good(short, "d", delayed.id)
        assert (await system.submit("bulk", Step(log, "x"), key="q")).id == queued.id
        assert (await system.submit("bulk", Step(log, "x"), key="d")).id == delayed.id
        async with worker_on(short):
            assert await queued.result() == "q"
            assert await delayed.result() == "d"
        assert await redis(short, "EXISTS", short.key("key:q"), short.key("key:d")) == 0
    assert sorted(started(log)) == ["d", "q"]


async def test_a_holder_between_attempts_keeps_its_key(short: RedisBackend, log: str) -> None:
    async with worker_on(short), system_on(short) as system:  # bulk retries after 50 ms
        holder = await system.submit("bulk", Step(log, "h", 0.15, fail=True), key="k")
        await until_started(log, "h", 2)  # queued again (delayed, then due): a new entry
        await past_key_ttl(short)
        await held_for_good(short, "k", holder.id)
        assert await redis(short, "HGET", short.key("dedup:k"), "moved") == "1"
        assert (await system.submit("bulk", Step(log, "x"), key="k")).id == holder.id
        with pytest.raises(lanes.CommandFailed):
            await holder.result()
        assert await redis(short, "EXISTS", short.key("key:k"), short.key("dedup:k")) == 0
    assert started(log) == ["h", "h", "h"]


async def test_a_holder_handed_back_by_a_stopping_worker_keeps_its_key(
    short: RedisBackend, log: str
) -> None:
    async with system_on(short) as system:
        async with worker_on(short, drain_timeout=0):
            holder, tag = await running(system, "k")
        # the worker stopped at once: the holder was handed back to its lane, a new entry
        stream = await redis(short, "HGET", short.key("dedup:k"), "stream")
        entry = await redis(short, "HGET", short.key("dedup:k"), "entry")
        assert await redis(short, "HGET", short.key("dedup:k"), "moved") == "1"
        assert len(await redis(short, "XRANGE", stream, entry, entry)) == 1
        await past_key_ttl(short)
        await held_for_good(short, "k", holder.id)
        assert (await system.submit("urgent", Step(log, "x"), key="k")).id == holder.id
        STARTED[tag] = trio.Event()
        async with worker_on(short):
            with trio.fail_after(3):
                await STARTED[tag].wait()  # it runs again, on another worker
            OPEN[tag].set()
            assert await holder.result() == tag
        assert await redis(short, "EXISTS", short.key("key:k"), short.key("dedup:k")) == 0
    assert started(log) == []


# -- a holder lost, or its worker dead -------------------------------------------------------------


async def test_a_holder_lost_for_good_frees_its_key_at_the_next_submit(
    backend: RedisBackend, log: str
) -> None:
    async with system_on(backend) as system:  # no worker: it stays queued
        lost = await system.submit("bulk", Step(log, "lost"), key="k")
        stream = await redis(backend, "HGET", backend.key("dedup:k"), "stream")
        entry = await redis(backend, "HGET", backend.key("dedup:k"), "entry")
        assert await redis(backend, "XDEL", stream, entry) == 1  # gone, never settled
        fresh = await system.submit("bulk", Step(log, "fresh"), key="k")
        assert fresh.id != lost.id
        assert await redis(backend, "GET", backend.key("key:k")) == fresh.id
        async with worker_on(backend):
            assert await fresh.result() == "fresh"
    assert started(log) == ["fresh"]


@pytest.mark.parametrize("mode", [Dedup.hold(), Dedup.keep_last()])
async def test_a_lost_running_holder_queues_its_parked_follower(
    backend: RedisBackend, log: str, mode: Dedup
) -> None:
    async with worker_on(backend), system_on(backend) as system:
        holder, tag = await running(system, "k", Dedup.keep_last())
        follower = await system.submit("urgent", Step(log, "f"), key="k", dedup=Dedup.keep_last())
        stream = await redis(backend, "HGET", backend.key("dedup:k"), "stream")
        entry = await redis(backend, "HGET", backend.key("dedup:k"), "entry")
        assert await redis(backend, "XACK", stream, "workers", entry) == 1
        assert await redis(backend, "XDEL", stream, entry) == 1  # lost while it runs
        newer = await system.submit("urgent", Step(log, "n"), key="k", dedup=mode)
        assert newer.id not in (holder.id, follower.id)  # the key was free: it took it
        with trio.fail_after(3):
            assert await follower.result() == "f"  # queued at once, without the key
            assert await newer.result() == "n"
        assert await redis(backend, "SCARD", backend.key("parked")) == 0
        OPEN[tag].set()  # its end is no longer settled (its entry is gone): nothing changes
        await until_redis(backend, 0, "EXISTS", backend.key("key:k"), backend.key("dedup:k"))
    assert sorted(started(log)) == ["f", "n"]


async def test_a_command_reclaimed_from_a_killed_worker_still_holds_its_key(
    redis_server: LocalRedis, log: str
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    backend = RedisBackend(redis_server.url, prefix=prefix, lease=0.6, key_ttl=0.2)
    victim = spawn_worker(redis_server.url, prefix, "victim")
    try:
        async with system_on(backend) as system:
            holder = await system.submit("urgent", Step(log, "h", seconds=1.0), key="k")
            _, _, pid = await wait_for_line(log, "start", "h")
            os.kill(int(pid), signal.SIGKILL)
            assert victim.wait(timeout=10) == -signal.SIGKILL
            again = await system.submit("urgent", Step(log, "dup"), key="k")
            assert again.id == holder.id  # its worker is dead: the key is still held
            async with worker_on(backend):  # reclaims it after the lease
                await wait_for_other_start(log, "h", pid)
                await held_for_good(backend, "k", holder.id)  # key_ttl passed long ago
                again = await system.submit("urgent", Step(log, "dup"), key="k")
                assert again.id == holder.id  # the reclaimed command holds it
                with trio.fail_after(5):
                    assert await holder.result() == "h"
                assert await redis(backend, "EXISTS", backend.key("key:k")) == 0
                fresh = await system.submit("urgent", Step(log, "fresh"), key="k")
                assert fresh.id != holder.id
                assert await fresh.result() == "fresh"
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(timeout=10)
    assert started(log) == ["h", "h", "fresh"]
