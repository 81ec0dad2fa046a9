"""Lanes on Redis under faults: lost replies, bad entries, dead workers and servers, hostile input.

Each scenario counts what it submitted, what was acknowledged (accepted by Redis), completed,
lost and duplicated, and bounds the time to recover. Real redis-server, real clock, short
leases (0.6 s) so the whole module stays within a few tens of seconds.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Iterator

import coredis
import pytest
import trio

import lanes
from lanes.distributed import LocalRedis, RedisBackend, local_redis_server
from tests.distributed_commands import Step
from tests.test_distributed import (
    lines,
    needs_redis,
    system_on,
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
