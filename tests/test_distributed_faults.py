"""Lanes on Redis under faults: lost replies, bad entries, dead workers and servers, hostile input.

Each scenario counts what it submitted, what was acknowledged (accepted by Redis), completed,
lost and duplicated, and bounds the time to recover. Real redis-server, real clock, short
leases (0.6 s) so the whole module stays within a few tens of seconds.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import uuid
from collections import Counter
from collections.abc import Iterator

import coredis
import pytest
import trio

import lanes
from lanes.distributed import LocalRedis, RedisBackend, local_redis_server, open_lane_worker
from tests.distributed_commands import LANES, Echo, Step
from tests.test_distributed import (
    lines,
    needs_redis,
    spawn_worker,
    system_on,
    wait_for_line,
    worker_on,
)

pytestmark = needs_redis


@pytest.fixture(scope="module")
def redis_server() -> Iterator[LocalRedis]:
    with local_redis_server() as server:
        yield server


@pytest.fixture
def backend(redis_server: LocalRedis) -> RedisBackend:
    return RedisBackend(redis_server.url, prefix=f"f{uuid.uuid4().hex[:8]}", lease=0.6)


@pytest.fixture
def log(tmp_path: object) -> str:
    return str(tmp_path) + "/log.txt"


def done_count(log: str) -> Counter[str]:
    """How often each tag completed (a count above 1 is a duplicate run)."""
    return Counter(tag for word, tag, _ in lines(log) if word == "done")


def stall_until_delivered(system: lanes.distributed.RemoteLaneSystem) -> list[str]:
    """Make every submit wait, after Redis ran its script and before the submit goes on,
    until a reply has been read: the submitter's loop "busy" exactly in the gap where a
    reply used to be dropped."""
    delivered = trio.Event()
    seen: list[str] = []
    deliver, call = system._deliver, system._batcher.call

    def spy(reply: lanes.distributed._wire.Reply) -> None:
        seen.append(reply.id)
        deliver(reply)
        delivered.set()

    async def stalled(*args: object) -> object:
        answer = await call(*args)  # type: ignore[arg-type]
        with trio.fail_after(5):
            await delivered.wait()
        return answer

    system._deliver = spy  # type: ignore[method-assign]
    system._batcher.call = stalled  # type: ignore[method-assign]
    return seen


# -- 5a: a reply that arrives before its handle is registered ----------------------------------


async def test_a_reply_read_before_submit_returns_resolves_the_handle(
    backend: RedisBackend, log: str
) -> None:
    async with worker_on(backend), system_on(backend) as system:  # type: ignore[attr-defined]
        seen = stall_until_delivered(system)
        handle = await system.submit("urgent", Step(log, "early"))
        assert seen == [handle.id]  # the reply was read before submit returned
        with trio.fail_after(5):
            assert await handle.result() == "early"


async def test_an_early_reply_for_a_key_held_elsewhere_is_kept(
    backend: RedisBackend, log: str
) -> None:
    async with system_on(backend) as first, system_on(backend) as second:
        holder = await first.submit("urgent", Step(log, "held", seconds=0.3), key="k")
        seen = stall_until_delivered(second)
        async with worker_on(backend):  # type: ignore[attr-defined]
            waiter = await second.submit("urgent", Step(log, "other"), key="k")
            assert waiter.id == holder.id and seen == [holder.id]
            with trio.fail_after(5):
                assert await waiter.result() == await holder.result() == "held"
    assert done_count(log) == Counter({"held": 1})


# -- 5b, 5c: entries that hold no command ----------------------------------------------------


async def _inject(backend: RedisBackend, lane: str, fields: dict[str, str]) -> str:
    async with coredis.Redis.from_url(backend.url, decode_responses=True) as client:
        return str(await client.xadd(backend.stream(lane, 0), fields))  # type: ignore[arg-type]


async def _pending_and_length(backend: RedisBackend, lane: str) -> tuple[int, int]:
    stream = backend.stream(lane, 0)
    async with coredis.Redis.from_url(backend.url, decode_responses=True) as client:
        pending = await client.xpending(stream, "workers")
        return int(pending.pending), int(await client.xlen(stream))


def _bad_attempt(system: lanes.distributed.RemoteLaneSystem, command_id: str) -> dict[str, str]:
    body = {
        "id": command_id,
        "lane": "urgent",
        "type": "Step",
        "payload": "{}",
        "reply": system.reply_stream,
        "key": None,
        "attempt": "x",
        "timeout": None,
        "submitted": 0.0,
    }
    return {"c": json.dumps(body)}


@pytest.mark.parametrize("kind", ["malformed field", "missing fields"])
async def test_an_undecodable_entry_is_dead_lettered_once_and_blocks_nothing(
    backend: RedisBackend, log: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="lanes.distributed")
    async with system_on(backend) as system:
        async with worker_on(backend, max_concurrency=1) as worker:  # type: ignore[attr-defined]
            before = await system.submit("urgent", Step(log, "before"))
            assert await before.result() == "before"
            bad_id = uuid.uuid4().hex
            if kind == "malformed field":
                bad = system._register(bad_id, "urgent", "Step")  # as submit would have
                await _inject(backend, "urgent", _bad_attempt(system, bad_id))
            else:
                await _inject(backend, "urgent", {"hello": "1"})
            after = [await system.submit("urgent", Step(log, f"a{i}")) for i in range(3)]
            with trio.fail_after(5):
                assert [await h.result() for h in after] == ["a0", "a1", "a2"]
            if kind == "malformed field":
                with pytest.raises(lanes.CommandFailed, match="MalformedEntry"):
                    await bad.result()
            stopping = trio.current_time()
        assert trio.current_time() - stopping < 1.0  # the worker exits promptly
        letters = await system.dead_letters()
    stats = worker.statistics().lanes["urgent"]
    assert (stats.malformed, stats.dead_lettered, stats.completed) == (1, 1, 4)
    assert len(letters) == 1 and letters[0].error.startswith("MalformedEntry: ")
    expected = "expected int @ $.attempt" if kind == "malformed field" else "lacks its 'c' field"
    assert expected in letters[0].error
    assert letters[0].command_id == (bad_id if kind == "malformed field" else "")
    assert await _pending_and_length(backend, "urgent") == (0, 0)  # acknowledged, deleted
    logged = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(logged) == 1 and expected in logged[0].getMessage()


# -- hostile payloads -------------------------------------------------------------------------


async def _keys(backend: RedisBackend) -> list[str]:
    async with coredis.Redis.from_url(backend.url, decode_responses=True) as client:
        found = [str(k) async for k in client.scan_iter(match=f"{backend.prefix}:*")]
    return sorted(k for k in found if ":reply:" not in k)


async def test_hostile_payloads_are_refused_at_submit_and_nothing_is_written(
    backend: RedisBackend,
) -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    hostile: list[tuple[dict[str, object], type[Exception], str]] = [
        ({"command": Echo(deep)}, lanes.NotDurableError, "cannot be sent as JSON"),  # type: ignore[arg-type]
        ({"command": Echo([], "x" * (16 << 20))}, lanes.LaneConfigError, "max_payload=16,777,216"),
        ({"command": Echo(["x"])}, lanes.NotDurableError, "does not survive its trip"),  # type: ignore[list-item]
        ({"command": Echo([1], object())}, lanes.NotDurableError, "cannot be sent as JSON"),  # type: ignore[arg-type]
        ({"command": Echo([]), "key": "\ud800"}, lanes.LaneConfigError, "cannot be stored"),
        ({"command": Echo([]), "key": 7}, lanes.LaneConfigError, "key=7 is invalid"),
        ({"command": Echo([]), "delay": "1"}, lanes.LaneConfigError, "delay='1' is invalid"),
        ({"command": Echo([]), "timeout": -1}, lanes.LaneConfigError, "timeout=-1 is invalid"),
        ({"command": Echo}, lanes.LaneUsageError, r"not a @lanes\.command object"),
        ({"command": Step("log", "unlisted")}, lanes.NotDurableError, "not listed"),
    ]
    async with lanes.open_lane_system(LANES, backend=backend, commands=[Echo]) as system:
        for options, error, match in hostile:
            command = options.pop("command")
            with pytest.raises(error, match=match):
                await system.submit("urgent", command, **options)  # type: ignore[arg-type]
        with pytest.raises(lanes.UnknownLaneError, match="unknown lane 3"):
            await system.submit(3, Echo([]))  # type: ignore[arg-type]
        assert await _keys(backend) == []  # nothing half-written
        odd = "\u0000\u2028\U0001f600\ud7ff"  # odd but valid: accepted and kept exactly
        async with open_lane_worker(LANES, backend=backend, commands=[Echo]):
            handle = await system.submit("urgent", Echo([1, 2], odd), key=odd)
            assert await handle.result() == [1, 2]


# -- processes and servers that die or freeze ------------------------------------------------


def tally(log: str, accepted: list[str], completed: int) -> dict[str, int]:
    """acknowledged / completed / lost / duplicated, from the submitter's handles and the log
    of every run (``done`` lines: a tag done twice ran twice)."""
    done = done_count(log)
    return {
        "acknowledged": len(accepted),
        "completed": completed,
        "lost": sum(1 for tag in accepted if done[tag] == 0),
        "duplicated": sum(count - 1 for tag, count in done.items() if tag in accepted),
    }


async def wait_for_other_start(log: str, tag: str, pid: str, timeout: float = 10.0) -> None:
    """Poll the shared log until ``tag`` starts in a process other than ``pid``."""
    with trio.fail_after(timeout):
        while True:
            if any(line[:2] == ["start", tag] and line[2] != pid for line in lines(log)):
                return
            await trio.sleep(0.01)  # another process's log: there is no event to wait on


async def test_worker_kill_9_orphans_are_reclaimed_within_about_a_lease(
    redis_server: LocalRedis, log: str
) -> None:
    prefix = f"f{uuid.uuid4().hex[:8]}"
    backend = RedisBackend(redis_server.url, prefix=prefix, lease=0.6)
    workers = [spawn_worker(redis_server.url, prefix, f"w{i}") for i in range(2)]
    try:
        async with system_on(backend) as system:
            victim = await system.submit("urgent", Step(log, "victim", seconds=0.5))
            _, _, pid = await wait_for_line(log, "start", "victim")
            handles = [await system.submit("bulk", Step(log, f"n{i}")) for i in range(20)]
            killed = trio.current_time()
            os.kill(int(pid), signal.SIGKILL)
            await wait_for_other_start(log, "victim", pid)
            reclaimed = trio.current_time() - killed
            with trio.fail_after(10):
                results = [await h.result() for h in [victim, *handles]]
    finally:
        for process in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in workers:
            process.wait(timeout=10)
    tags = ["victim"] + [f"n{i}" for i in range(20)]
    assert results == tags
    counts = tally(log, tags, len(results))
    print(f"worker kill -9: {counts}, orphan restarted {reclaimed:.2f} s after the kill")
    assert counts["lost"] == 0 and counts["completed"] == counts["acknowledged"] == 21
    assert counts["duplicated"] <= 4  # at most the commands running at a late heartbeat
    assert reclaimed < 4.0  # about a lease (0.6 s) when idle; a loaded 2-core CI takes longer
    assert sorted(p.returncode for p in workers) == [-signal.SIGKILL, 0]


async def test_redis_kill_9_and_restart_with_appendonly_loses_nothing(log: str) -> None:
    with local_redis_server(persistent=True) as server:
        backend = RedisBackend(server.url, prefix="restart", lease=0.6)
        async with worker_on(backend) as worker, system_on(backend) as system:  # type: ignore[attr-defined]
            handles = [
                await system.submit("bulk", Step(log, f"r{i}", seconds=0.05)) for i in range(20)
            ]
            await wait_for_line(log, "start", "r0")
            server.stop(signal.SIGKILL)  # a crash: only what was fsynced survives
            down = trio.current_time()
            for _ in range(5):
                with pytest.raises(lanes.StorageError, match=f"Redis at {server.url}"):
                    await system.submit("bulk", Step(log, "refused"))
            refusal = (trio.current_time() - down) / 5
            await trio.sleep(0.5)  # the outage: workers and reply readers hit it
            server.start()
            restarted = trio.current_time()
            with trio.fail_after(20):
                results = [await handle.result() for handle in handles]
            recovered = trio.current_time() - restarted
            errors = worker.statistics().connection_errors
    tags = [f"r{i}" for i in range(20)]
    assert results == tags
    counts = tally(log, tags, len(results))
    print(
        f"redis kill -9: {counts}, a refused submit took {refusal * 1000:.1f} ms, all "
        f"results {recovered:.2f} s after the restart, {errors} connection errors"
    )
    assert counts["lost"] == 0 and counts["completed"] == 20
    assert counts["duplicated"] <= 2  # the bulk commands running at the crash, at most
    assert refusal < 0.25 and errors > 0 and recovered < 10
    assert "refused" not in done_count(log)


async def test_redis_frozen_with_sigstop_and_thawed_loses_nothing(log: str) -> None:
    with local_redis_server() as server:
        backend = RedisBackend(server.url, prefix="frozen", lease=0.6)
        assert server.process is not None
        pid = server.process.pid
        async with worker_on(backend), system_on(backend) as system:  # type: ignore[attr-defined]
            handles = [
                await system.submit("bulk", Step(log, f"s{i}", seconds=0.05)) for i in range(20)
            ]
            await wait_for_line(log, "start", "s0")
            os.kill(pid, signal.SIGSTOP)
            try:
                await trio.sleep(3.0)  # the fault itself: a server frozen for 3 s (5 leases)
            finally:
                os.kill(pid, signal.SIGCONT)
            thawed = trio.current_time()
            with trio.fail_after(20):
                results = [await handle.result() for handle in handles]
            recovered = trio.current_time() - thawed
    tags = [f"s{i}" for i in range(20)]
    assert results == tags
    counts = tally(log, tags, len(results))
    print(f"redis SIGSTOP 3 s: {counts}, all results {recovered:.2f} s after the thaw")
    assert counts["lost"] == 0 and counts["completed"] == 20
    assert counts["duplicated"] <= 2  # a lease expired during the freeze: re-run at most
    assert recovered < 10


async def test_a_poison_command_is_dead_lettered_after_max_deliveries(
    backend: RedisBackend, log: str
) -> None:
    async with system_on(backend) as system:
        async with worker_on(backend, max_concurrency=1):  # type: ignore[attr-defined]
            pass  # creates the consumer group
        poison = await system.submit("urgent", Step(log, "poison"))
        stream = backend.stream("urgent", 0)
        async with coredis.Redis.from_url(backend.url, decode_responses=True) as ghost:
            read = await ghost.xreadgroup("workers", "ghost-1", {stream: ">"}, count=1)
            assert read is not None  # two "workers" take it and die without a trace
            [entry] = read[stream]
            await ghost.xclaim(stream, "workers", "ghost-2", 0, [entry.identifier])
        others = [await system.submit("urgent", Step(log, f"o{i}")) for i in range(5)]
        async with worker_on(backend, max_deliveries=2) as worker:  # type: ignore[attr-defined]
            with trio.fail_after(10):
                assert [await h.result() for h in others] == [f"o{i}" for i in range(5)]
                with pytest.raises(lanes.CommandFailed, match="LeaseExpired: delivered 3 times"):
                    await poison.result()
        letters = await system.dead_letters()
    stats = worker.statistics().lanes["urgent"]
    assert (stats.reclaimed, stats.dead_lettered, stats.completed) == (1, 1, 5)
    assert [letter.command_id for letter in letters] == [poison.id]
    assert "poison" not in done_count(log)  # never ran
    assert await _pending_and_length(backend, "urgent") == (0, 0)
