"""Deduplication modes on Redis: ``submit(key=..., dedup=lanes.Dedup...)``, ``release_key``
and ``extend_key`` of a ``RemoteLaneSystem`` (a real redis-server, the real clock, two
submitters and worker tasks in this process)."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
import trio

import lanes
from lanes import Dedup
from lanes.distributed import RedisBackend, RemoteCommandError, unfinished_commands
from lanes.distributed._resp import open_connection
from tests.distributed_commands import STARTED, Hold, Step
from tests.test_distributed_control import started, system_on, worker_on


async def running(
    system: Any, key: str, seconds: float, dedup: Dedup | None = None, lane: str = "urgent"
) -> tuple[Any, str]:
    """Submit a ``Hold`` with ``key``; return its handle and tag once a worker runs it."""
    tag = f"{key}-{uuid.uuid4().hex[:8]}"
    STARTED[tag] = trio.Event()
    handle = await system.submit(lane, Hold(tag, seconds), key=key, dedup=dedup)
    with trio.fail_after(3):
        await STARTED[tag].wait()
    return handle, tag


async def redis(backend: RedisBackend, *command: Any) -> Any:
    connection = await open_connection(backend.url)
    try:
        [answer] = await connection.execute([list(command)])
        return answer
    finally:
        await connection.aclose()


async def until_redis(backend: RedisBackend, expected: Any, *command: Any) -> None:
    """Poll Redis until ``command`` answers ``expected`` (a key expiring, a delayed command
    moved to its stream: Redis tells nobody)."""
    with trio.fail_after(5):
        while True:
            if await redis(backend, *command) == expected:
                return
            await trio.sleep(0.01)


# -- bad input ------------------------------------------------------------------------------------


async def test_bad_input_is_refused_as_in_process(backend: RedisBackend, log: str) -> None:
    async with system_on(backend) as system:
        step = Step(log, "a")
        with pytest.raises(lanes.LaneConfigError, match=r"dedup='replace' is invalid"):
            await system.submit("urgent", step, key="k", dedup="replace")
        with pytest.raises(lanes.LaneConfigError, match=r"needs key="):
            await system.submit("urgent", step, dedup=Dedup.replace())
        with pytest.raises(lanes.LaneConfigError, match=r"key='  ' is invalid"):
            await system.submit("urgent", step, key="  ", dedup=Dedup.hold(ttl=1))
        with pytest.raises(lanes.UnknownLaneError):
            await system.submit("nope", step, key="k", dedup=Dedup.keep_last())
        with pytest.raises(lanes.LaneConfigError, match=r"key=3 is invalid"):
            await system.release_key(3)
        with pytest.raises(lanes.LaneConfigError, match=r"ttl=-2 is invalid"):
            await system.extend_key("k", -2)
        with pytest.raises(lanes.LaneConfigError, match=r"ttl=None is invalid"):
            await system.extend_key("k", None)
        assert (await system.statistics()).lanes["urgent"].submitted == 0
    with pytest.raises(lanes.ShutdownInProgress, match="release_key: the lane system is closed"):
        await system.release_key("k")


# -- a time to live --------------------------------------------------------------------------------


async def test_a_kept_key_returns_the_finished_result_to_every_submitter(
    backend: RedisBackend, log: str
) -> None:
    async with worker_on(backend), system_on(backend) as first, system_on(backend) as second:
        done = await first.submit("urgent", Step(log, "a"), key="k", dedup=Dedup.hold(ttl=30))
        assert await done.result() == "a"
        assert await first.submit("urgent", Step(log, "b"), key="k") is done  # its own handle
        other = await second.submit("bulk", Step(log, "c"), key="k", dedup=Dedup.replace())
        assert other.done() and other.id == done.id and other.lane == "urgent"
        assert await other.result() == "a"  # the stored reply
        failed = await first.submit(
            "urgent", Step(log, "f", fail=True), key="f", dedup=Dedup.keep_last(ttl=30)
        )
        with pytest.raises(lanes.CommandFailed):
            await failed.result()
        again = await second.submit("urgent", Step(log, "g"), key="f")
        with pytest.raises(lanes.CommandFailed, match="failed on purpose") as caught:
            await again.result()
        assert isinstance(caught.value.__cause__, RemoteCommandError)
        assert (await first.statistics()).lanes["urgent"].submitted == 2
    assert started(log) == ["a", "f"]


async def test_a_kept_key_expires_with_its_ttl(backend: RedisBackend, log: str) -> None:
    async with worker_on(backend), system_on(backend) as system:
        first = await system.submit("urgent", Step(log, "a"), key="k", dedup=Dedup.hold(ttl=0.2))
        await first.result()
        assert 0 < await redis(backend, "PTTL", backend.key("kept:k")) <= 200
        await until_redis(backend, 0, "EXISTS", backend.key("kept:k"))
        fresh = await system.submit("urgent", Step(log, "b"), key="k", dedup=Dedup.hold())
        assert fresh.id != first.id
        assert await fresh.result() == "b"
        await until_redis(backend, 0, "EXISTS", backend.key("key:k"))
        assert await redis(backend, "EXISTS", backend.key("kept:k")) == 0  # no ttl: not kept
    assert started(log) == ["a", "b"]


async def test_a_cancelled_holder_is_kept_too(backend: RedisBackend, log: str) -> None:
    async with system_on(backend) as system:  # no worker: it stays queued
        waiting = await system.submit("bulk", Step(log, "w"), key="c", dedup=Dedup.hold(ttl=30))
        waiting.cancel()
        with trio.fail_after(3), pytest.raises(lanes.CommandCancelled, match="while queued"):
            await waiting.result()
        assert await system.submit("bulk", Step(log, "x"), key="c") is waiting
    async with system_on(backend) as other:  # another submitter: the stored outcome
        kept = await other.submit("bulk", Step(log, "x"), key="c")
        assert kept.status is lanes.CommandStatus.CANCELLED
        with pytest.raises(lanes.CommandCancelled):
            await kept.result()


async def test_a_queued_keyed_command_cancelled_tells_its_other_submitters(
    backend: RedisBackend, log: str
) -> None:
    async with system_on(backend) as first, system_on(backend) as second:
        handle = await first.submit("bulk", Step(log, "q"), key="k")
        other = await second.submit("bulk", Step(log, "q"), key="k")  # waits on the same one
        assert other.id == handle.id
        handle.cancel()
        with trio.fail_after(3), pytest.raises(lanes.CommandCancelled, match="while queued"):
            await other.result()


async def test_an_infinite_ttl_keeps_the_key_until_released(
    backend: RedisBackend, log: str
) -> None:
    async with worker_on(backend), system_on(backend) as system:
        first = await system.run("urgent", Step(log, "a"), key="k", dedup=Dedup.hold(ttl=math.inf))
        assert first == "a"
        assert await redis(backend, "PTTL", backend.key("kept:k")) == -1  # no expiry
        assert await system.release_key("k")
        assert not await system.release_key("k")
        assert await system.run("urgent", Step(log, "b"), key="k") == "b"
    assert started(log) == ["a", "b"]


# -- extend and release by hand --------------------------------------------------------------------


async def test_extend_and_release_by_hand(backend: RedisBackend, log: str) -> None:
    async with worker_on(backend), system_on(backend) as system:
        assert not await system.extend_key("k", 5)  # nothing holds it
        assert not await system.release_key("k")
        live, _ = await running(system, "k", 0.2)  # no dedup=: live only
        assert await system.extend_key("k", 60)  # kept 60 s after it ends
        await live.result()
        kept = await system.submit("urgent", Step(log, "x"), key="k")
        assert kept is live
        assert 0 < await redis(backend, "PTTL", backend.key("kept:k")) <= 60_000
        assert await system.extend_key("k", math.inf)
        assert await redis(backend, "PTTL", backend.key("kept:k")) == -1
        assert await system.extend_key("k", 0.05)  # shorter too
        await until_redis(backend, 0, "EXISTS", backend.key("kept:k"))
        assert not await system.extend_key("k", 5)
        assert started(log) == []


async def test_release_a_live_key(backend: RedisBackend, log: str) -> None:
    async with worker_on(backend), system_on(backend) as system:
        first, tag = await running(system, "k", 0.3, Dedup.hold(ttl=60))
        assert await system.release_key("k")  # it keeps running, without the key
        second = await system.submit("urgent", Step(log, "b"), key="k")
        assert second.id != first.id
        assert await second.result() == "b"
        assert await first.result() == tag
        assert await redis(backend, "EXISTS", backend.key("kept:k")) == 0  # it keeps nothing


# -- replace ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [Dedup.replace(), Dedup.keep_last()])
async def test_replace_a_queued_command_of_another_submitter(
    backend: RedisBackend, log: str, mode: Dedup
) -> None:
    async with system_on(backend) as first, system_on(backend) as second:
        old = await first.submit("bulk", Step(log, "old"), key="k", dedup=mode)
        new = await second.submit("bulk", Step(log, "new"), key="k", dedup=mode)
        assert new.id != old.id
        with trio.fail_after(3), pytest.raises(lanes.CommandCancelled) as caught:
            await old.result()
        assert str(caught.value) == (
            f"command {old.id} (Step) in lane 'bulk' was replaced by command {new.id} "
            "(a newer submit with key 'k')"
        )
        assert old.status is lanes.CommandStatus.CANCELLED
        assert await first.backlog() == {"urgent": 0, "bulk": 1}
        stats = (await first.statistics()).lanes["bulk"]
        assert (stats.submitted, stats.cancelled) == (2, 1)
        async with worker_on(backend):
            assert await new.result() == "new"
    assert started(log) == ["new"]


async def test_replace_a_delayed_command_before_and_after_it_is_due(
    backend: RedisBackend, log: str
) -> None:
    async with system_on(backend) as system:
        old = await system.submit(
            "bulk", Step(log, "old"), key="k", delay=30, dedup=Dedup.replace()
        )
        new = await system.submit(
            "bulk", Step(log, "new"), key="k", delay=30, dedup=Dedup.replace()
        )
        with trio.fail_after(3), pytest.raises(lanes.CommandCancelled, match=new.id):
            await old.result()
        [row] = await unfinished_commands(backend.url, prefix=backend.prefix)
        assert (row["id"], row["key"], row["status"]) == (new.id, "k", "delayed")
        # A paused lane: a worker's fetch moves the due command to its stream, no one takes
        # it; the replacing submit finds it there.
        system.pause("bulk")
        due = await system.submit("bulk", Step(log, "due"), key="d", delay=0.05)
        async with worker_on(backend):
            await until_redis(backend, 1, "XLEN", backend.stream("bulk", 0))
            last = await system.submit("bulk", Step(log, "last"), key="d", dedup=Dedup.replace())
            with trio.fail_after(3), pytest.raises(lanes.CommandCancelled, match=last.id):
                await due.result()
            assert await system.backlog() == {"urgent": 0, "bulk": 1}
            system.resume("bulk")
            with trio.fail_after(5):
                assert await last.result() == "last"
        new.cancel()
    assert started(log) == ["last"]


async def test_replace_keeps_a_running_command(backend: RedisBackend, log: str) -> None:
    async with worker_on(backend), system_on(backend) as first, system_on(backend) as second:
        holder, tag = await running(first, "k", 0.3, Dedup.replace())
        assert await first.submit("urgent", Step(log, "b"), key="k", dedup=Dedup.replace()) is (
            holder
        )
        other = await second.submit("urgent", Step(log, "c"), key="k", dedup=Dedup.replace())
        assert other.id == holder.id
        assert await other.result() == tag
        assert (await first.statistics()).lanes["urgent"].submitted == 1
    assert started(log) == []


async def test_a_cancelled_replacing_submit_still_replaced(backend: RedisBackend, log: str) -> None:
    async with system_on(backend) as system:
        old = await system.submit("bulk", Step(log, "old"), key="k")
        with trio.CancelScope() as scope:
            scope.cancel()
            await system.submit("bulk", Step(log, "new"), key="k", dedup=Dedup.replace())
        # Redis had the call: the old command is replaced, the new one holds the key
        with trio.fail_after(3), pytest.raises(lanes.CommandCancelled, match="replaced"):
            await old.result()
        again = await system.submit("bulk", Step(log, "again"), key="k")
        assert again.id != old.id
        async with worker_on(backend):
            assert await again.result() == "new"
    assert started(log) == ["new"]


# -- keep the last --------------------------------------------------------------------------------


async def test_keep_last_runs_the_newest_after_the_running_one(
    backend: RedisBackend, log: str
) -> None:
    async with worker_on(backend), system_on(backend) as first, system_on(backend) as second:
        holder, _ = await running(first, "k", 0.3, Dedup.keep_last())
        two = await first.submit("urgent", Step(log, "2"), key="k", dedup=Dedup.keep_last())
        three = await second.submit("urgent", Step(log, "3"), key="k", dedup=Dedup.keep_last())
        with trio.fail_after(3), pytest.raises(lanes.CommandCancelled, match=three.id):
            await two.result()
        assert await first.submit("urgent", Step(log, "x"), key="k") is holder  # it holds
        assert await three.result() == "3"
        assert holder.done()  # the follower waited for it (2 slots free)
        assert started(log) == ["3"]
        stats = (await first.statistics()).lanes["urgent"]
        assert (stats.submitted, stats.completed, stats.cancelled) == (3, 2, 1)


async def test_keep_last_follower_cancelled_released_or_kept(
    backend: RedisBackend, log: str
) -> None:
    async with worker_on(backend), system_on(backend) as system:
        holder, _ = await running(system, "k", 0.3, Dedup.keep_last())
        follower = await system.submit("urgent", Step(log, "1"), key="k", dedup=Dedup.keep_last())
        follower.cancel()  # at once: its holder still runs
        with trio.fail_after(3), pytest.raises(lanes.CommandCancelled, match="while queued"):
            await follower.result()
        assert not holder.done()
        await holder.result()
        await until_redis(backend, 0, "EXISTS", backend.key("key:k"))  # nobody took it
        # release_key lets a waiting follower go at once, without the key
        other, _ = await running(system, "j", 0.3, Dedup.keep_last())
        waiting = await system.submit(
            "urgent", Step(log, "2"), key="j", dedup=Dedup.keep_last(ttl=30)
        )
        assert await system.release_key("j")
        assert await waiting.result() == "2"
        assert not other.done()
        await other.result()
        # keep_last with a ttl: the last one's key is kept
        third, _ = await running(system, "m", 0.2, Dedup.keep_last(ttl=30))
        last = await system.submit("urgent", Step(log, "3"), key="m", dedup=Dedup.keep_last(ttl=30))
        assert await last.result() == "3"
        assert third.done()
        assert await system.submit("urgent", Step(log, "x"), key="m") is last
    assert started(log) == ["2", "3"]


async def test_cancel_lane_cancels_a_waiting_follower(backend: RedisBackend, log: str) -> None:
    async with worker_on(backend), system_on(backend) as system:
        holder, tag = await running(system, "k", 0.3, Dedup.keep_last())
        follower = await system.submit("bulk", Step(log, "1"), key="k", dedup=Dedup.keep_last())
        assert await system.cancel_lane("bulk") == 1
        with trio.fail_after(3), pytest.raises(lanes.CommandCancelled):
            await follower.result()
        assert await holder.result() == tag
        await until_redis(backend, 0, "EXISTS", backend.key("key:k"))
        assert await redis(backend, "SCARD", backend.key("parked")) == 0
    assert started(log) == []


async def test_a_follower_with_a_delay_waits_for_it_then_can_be_replaced(
    backend: RedisBackend, log: str
) -> None:
    async with worker_on(backend), system_on(backend) as system:
        holder, _ = await running(system, "k", 0.2, Dedup.keep_last())
        follower = await system.submit(
            "urgent", Step(log, "f"), key="k", delay=30, dedup=Dedup.keep_last()
        )
        await holder.result()
        # the holder's end handed it the key; its delay counts from its submit
        assert await redis(backend, "GET", backend.key("key:k")) == follower.id
        assert await redis(backend, "ZCARD", backend.key("delayed")) == 1
        newest = await system.submit("urgent", Step(log, "n"), key="k", dedup=Dedup.replace())
        with trio.fail_after(3), pytest.raises(lanes.CommandCancelled, match=newest.id):
            await follower.result()
        assert await newest.result() == "n"
    assert started(log) == ["n"]


# -- what a worker has taken counts as running ----------------------------------------------------


async def test_a_preempted_holder_back_at_the_front_is_replaced(
    backend: RedisBackend, log: str
) -> None:
    stream = backend.stream("bulk", 0)
    async with system_on(backend) as system:
        old = await system.submit("bulk", Step(log, "old"), key="k")
        await redis(backend, "XGROUP", "CREATE", stream, "workers", "0")
        await redis(
            backend, "XREADGROUP", "GROUP", "workers", "ghost", "COUNT", 1, "STREAMS", stream, ">"
        )
        [[entry, *_]] = await redis(backend, "XPENDING", stream, "workers", "-", "+", 10)
        # a worker ("ghost") runs it: it is kept
        kept = await system.submit("bulk", Step(log, "new"), key="k", dedup=Dedup.replace())
        assert kept is old
        await redis(backend, "LPUSH", f"{stream}:front", f"{entry} ghost")  # preempted
        new = await system.submit("bulk", Step(log, "new"), key="k", dedup=Dedup.replace())
        with trio.fail_after(3), pytest.raises(lanes.CommandCancelled, match=new.id):
            await old.result()
        assert await redis(backend, "LLEN", f"{stream}:front") == 0
        assert await redis(backend, "XPENDING", stream, "workers", "-", "+", 10) == []
        async with worker_on(backend):
            assert await new.result() == "new"
    assert started(log) == ["new"]


async def test_a_holder_between_attempts_counts_as_running(backend: RedisBackend, log: str) -> None:
    async with worker_on(backend), system_on(backend) as system:
        holder = await system.submit("bulk", Step(log, "h", 0.3, fail=True), key="k")
        await until_started(log, "h", 2)  # its first attempt failed: its entry is gone
        again = await system.submit("bulk", Step(log, "r"), key="k", dedup=Dedup.replace())
        assert again is holder
        follower = await system.submit("bulk", Step(log, "f"), key="k", dedup=Dedup.keep_last())
        assert follower.id != holder.id
        assert await follower.result() == "f"
        assert holder.status is lanes.CommandStatus.FAILED  # it waited for the last attempt
    assert started(log) == ["h", "h", "h", "f"]


async def until_started(log: str, tag: str, times: int) -> None:
    """Poll the log until ``tag`` started ``times`` times (a worker's attempt: no event)."""
    with trio.fail_after(5):
        while True:
            if started(log).count(tag) >= times:
                return
            await trio.sleep(0.01)


async def test_a_follower_that_took_its_key_is_cancelled_while_queued(
    backend: RedisBackend, log: str
) -> None:
    async with worker_on(backend), system_on(backend) as system:
        system.pause("bulk")  # it stays queued once it has the key
        await until_redis(backend, 1, "SISMEMBER", backend.key("paused"), "bulk")
        holder, _ = await running(system, "k", 0.2, Dedup.keep_last())
        follower = await system.submit("bulk", Step(log, "f"), key="k", dedup=Dedup.keep_last())
        await holder.result()
        assert await system.backlog() == {"urgent": 0, "bulk": 1}
        follower.cancel()  # its entry id is in the key's hash: deleted, no worker needed
        with trio.fail_after(3), pytest.raises(lanes.CommandCancelled, match="while queued"):
            await follower.result()
        assert await system.backlog() == {"urgent": 0, "bulk": 0}
        assert await redis(backend, "EXISTS", backend.key("key:k")) == 0
    assert started(log) == []


async def test_extend_key_of_a_key_without_expiry_nor_hash(backend: RedisBackend, log: str) -> None:
    async with worker_on(backend), system_on(backend) as system:
        live, _ = await running(system, "k", 0.3)
        assert await redis(backend, "PTTL", backend.key("key:k")) == -1  # never expires
        await redis(backend, "DEL", backend.key("dedup:k"))  # and its hash is gone
        assert await system.extend_key("k", 60)
        assert await redis(backend, "PTTL", backend.key("dedup:k")) == -1  # as its key
        life = await redis(backend, "HGET", backend.key("dedup:k"), "life")
        assert life == str(int(backend.key_ttl * 1000))
        await live.result()
        assert await system.submit("urgent", Step(log, "x"), key="k") is live  # extended
        assert 0 < await redis(backend, "PTTL", backend.key("kept:k")) <= 60_000
    assert started(log) == []
