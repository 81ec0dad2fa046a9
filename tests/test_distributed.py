"""Lanes on Redis: a real redis-server, the real clock, worker tasks and worker processes."""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio

import lanes
from lanes import Partitioning
from lanes.distributed import (
    LocalRedis,
    RedisBackend,
    RemoteCommandError,
    local_redis_server,
    open_lane_worker,
    unfinished_commands,
)
from tests.distributed_commands import LANES, Grouped, Step

ROOT = pathlib.Path(__file__).resolve().parent.parent

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None and not os.environ.get("CI"),
    reason="redis-server is not installed (apt-get install -y redis-server); CI must have it",
)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[LocalRedis]:
    """One throwaway server (no persistence) for the module; each test uses its own prefix."""
    with local_redis_server() as server:
        yield server


@pytest.fixture
def backend(redis_server: LocalRedis) -> RedisBackend:
    return RedisBackend(redis_server.url, prefix=f"t{uuid.uuid4().hex[:8]}", lease=0.6)


@pytest.fixture
def log(tmp_path: pathlib.Path) -> str:
    return str(tmp_path / "log.txt")


def lines(log: str) -> list[list[str]]:
    path = pathlib.Path(log)
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


async def wait_for_line(log: str, word: str, tag: str, timeout: float = 10.0) -> list[str]:
    """Poll another process's log (cross-process: there is no event to wait on)."""
    with trio.fail_after(timeout):
        while True:
            for line in lines(log):
                if line[:2] == [word, tag]:
                    return line
            await trio.sleep(0.02)


@asynccontextmanager
async def system_on(
    backend: RedisBackend, drain_timeout: float = 10
) -> AsyncIterator[lanes.distributed.RemoteLaneSystem]:
    async with lanes.open_lane_system(
        LANES, backend=backend, commands=[Step], drain_timeout=drain_timeout
    ) as system:
        yield system


def worker_on(backend: RedisBackend, **options: object) -> object:
    return open_lane_worker(LANES, backend=backend, commands=[Step], **options)  # type: ignore[arg-type]


# -- partitioning and bad input (no server needed) ---------------------------------------------


def test_partitioning() -> None:
    rr = Partitioning.round_robin(3)
    assert [rr.partition() for _ in range(5)] == [0, 1, 2, 0, 1]
    by_key = Partitioning.hash(4)
    assert by_key.ordered and not rr.ordered
    assert by_key.partition("user-1") == Partitioning.hash(4).partition("user-1")
    assert len({by_key.partition(f"user-{i}") for i in range(50)}) == 4
    assert Partitioning.auto().count == (os.cpu_count() or 1)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(lanes.LaneConfigError, match=r"n=.* is invalid"):
            Partitioning.round_robin(bad)  # type: ignore[arg-type]
    with pytest.raises(lanes.LaneConfigError, match="partition_key"):
        by_key.partition(None)


def test_backend_rejects_bad_settings() -> None:
    with pytest.raises(lanes.LaneConfigError, match=r"url='localhost:6379' is invalid"):
        RedisBackend("localhost:6379")
    with pytest.raises(lanes.LaneConfigError, match="lease=0 is invalid"):
        RedisBackend("redis://127.0.0.1:1", lease=0)
    with pytest.raises(lanes.LaneConfigError, match="prefix=''"):
        RedisBackend("redis://127.0.0.1:1", prefix="")
    with pytest.raises(lanes.LaneConfigError, match="partitions="):
        RedisBackend("redis://127.0.0.1:1", partitions={"bulk": 3})  # type: ignore[dict-item]
    url = "redis://user:secret@127.0.0.1:1/0"
    assert "secret" not in RedisBackend(url).safe_url


async def test_open_lane_system_rejects_local_options_with_a_backend() -> None:
    backend = RedisBackend("redis://127.0.0.1:1")
    with pytest.raises(lanes.LaneConfigError, match=r"storage=.* cannot be combined"):
        lanes.open_lane_system(LANES, backend=backend, storage=":memory:")  # type: ignore[call-overload]
    with pytest.raises(lanes.LaneConfigError, match="max_concurrency=2 cannot be combined"):
        lanes.open_lane_system(LANES, backend=backend, max_concurrency=2)  # type: ignore[call-overload]


async def test_worker_rejects_bad_options() -> None:
    backend = RedisBackend("redis://127.0.0.1:1")
    with pytest.raises(lanes.LaneConfigError, match="unknown lane 'nope'"):
        async with worker_on(backend, cluster_concurrency={"nope": 1}):  # type: ignore[attr-defined]
            pass
    sliding = (lanes.LaneConfig("a", 0, rate_limit=lanes.RateLimit.sliding_window(1, 1.0)),)
    with pytest.raises(lanes.LaneConfigError, match="token buckets only"):
        async with open_lane_worker(sliding, backend=backend):
            pass


# -- a real server -------------------------------------------------------------------------------


def _unused_url() -> str:
    from lanes.distributed._local import _free_port

    return f"redis://127.0.0.1:{_free_port()}/0"


async def test_unreachable_redis_at_start_names_the_url() -> None:
    url = _unused_url()
    with pytest.raises(lanes.StorageError, match=f"cannot connect: Redis at {url} failed"):
        async with lanes.open_lane_system(LANES, backend=RedisBackend(url), commands=[Step]):
            pytest.fail("must not start")  # pragma: no cover
    with pytest.raises(lanes.StorageError, match=f"Redis at {url}"):
        async with worker_on(RedisBackend(url)):  # type: ignore[attr-defined]
            pytest.fail("must not start")  # pragma: no cover


@needs_redis
async def test_results_failures_dead_letters_and_requeue(backend: RedisBackend, log: str) -> None:
    async with worker_on(backend) as worker, system_on(backend) as system:  # type: ignore[attr-defined]
        assert await system.run("urgent", Step(log, "a")) == "a"
        with pytest.raises(lanes.UnknownLaneError, match="known lanes: urgent, bulk"):
            await system.submit("nope", Step(log, "x"))
        with pytest.raises(lanes.LaneUsageError, match=r"not a @lanes\.command"):
            await system.submit("urgent", print)
        handle = await system.submit("bulk", Step(log, "bad", fail=True))
        with pytest.raises(lanes.CommandFailed, match="failed after 3 attempt") as info:
            await handle.result()
        assert isinstance(info.value.__cause__, RemoteCommandError)
        assert "RuntimeError: bad failed on purpose" in str(info.value.__cause__)
        assert handle.status == "failed"
        letters = await system.dead_letters()
        assert [(d.lane, d.command_type, d.attempts) for d in letters] == [("bulk", "Step", 3)]
        again = await system.requeue(letters[0].id)
        with pytest.raises(lanes.CommandFailed):
            await again.result()
        assert len(await system.dead_letters()) == 1  # a new run, a new letter
        with pytest.raises(lanes.LaneConfigError, match="no dead letter has id"):
            await system.requeue(letters[0].id)
        slow = await system.submit("urgent", Step(log, "slow", seconds=5), timeout=0.1)
        with pytest.raises(lanes.CommandTimeout, match="timed out on attempt 1"):
            await slow.result()
    # counted once Redis took each outcome, before the worker closed (two runs of "bad")
    bulk, urgent = worker.statistics().lanes["bulk"], worker.statistics().lanes["urgent"]
    assert (bulk.retried, bulk.failed, bulk.dead_lettered, bulk.completed) == (4, 2, 2, 0)
    assert (urgent.completed, urgent.failed, urgent.timed_out) == (1, 1, 1)


@needs_redis
async def test_permanent_inside_an_exception_group_is_dead_lettered_at_once(
    backend: RedisBackend, log: str
) -> None:
    # the same rule as in process (lanes._outcome): Permanent as every leaf of a group is
    # permanent; a group that also holds another error is retried like any failure
    async with (
        open_lane_worker(LANES, backend=backend, commands=[Grouped]) as worker,
        lanes.open_lane_system(LANES, backend=backend, commands=[Grouped]) as system,
    ):
        handle = await system.submit("bulk", Grouped(log, "alone"))
        with pytest.raises(lanes.CommandFailed, match="failed after 1 attempt") as info:
            await handle.result()
        assert str(info.value.__cause__) == "ValueError: alone is wrong for good"
        mixed = await system.submit("bulk", Grouped(log, "mixed", mixed=True))
        with pytest.raises(lanes.CommandFailed, match="failed after 3 attempt"):
            await mixed.result()
        letters = await system.dead_letters()
    assert sorted(d.attempts for d in letters) == [1, 3]
    starts = [line[1] for line in lines(log) if line[0] == "start"]
    assert (starts.count("alone"), starts.count("mixed")) == (1, 3)
    bulk = worker.statistics().lanes["bulk"]
    assert (bulk.retried, bulk.failed, bulk.dead_lettered) == (2, 2, 2)


@needs_redis
async def test_keys_are_checked_by_the_in_process_rule(backend: RedisBackend, log: str) -> None:
    bad: list[object] = ["", "   ", "\t\n", 7, b"key", "ok\ud800"]
    async with (
        system_on(backend) as remote,
        lanes.open_lane_system(LANES) as local,
    ):
        for key in bad:
            with pytest.raises(lanes.LaneConfigError) as here:
                await local.submit("urgent", Step(log, "x"), key=key)  # type: ignore[arg-type]
            with pytest.raises(lanes.LaneConfigError) as there:
                await remote.submit("urgent", Step(log, "x"), key=key)  # type: ignore[arg-type]
            assert str(there.value) == str(here.value)
    assert await unfinished_commands(backend.url, prefix=backend.prefix) == []  # none written


@needs_redis
async def test_idempotency_key_and_delay(backend: RedisBackend, log: str) -> None:
    async with system_on(backend) as first, system_on(backend) as second:
        one = await first.submit("urgent", Step(log, "k", seconds=0.2), key="same")
        two = await first.submit("urgent", Step(log, "k", seconds=0.2), key="same")
        other = await second.submit("urgent", Step(log, "k", seconds=0.2), key="same")
        assert one is two and other.id == one.id
        start = trio.current_time()
        later = await first.submit("urgent", Step(log, "later"), delay=0.3)
        async with worker_on(backend):  # type: ignore[attr-defined]
            assert await one.result() == await other.result() == "k"
            assert await later.result() == "later"
            assert trio.current_time() - start >= 0.3
    assert [line[1] for line in lines(log) if line[0] == "done"].count("k") == 1


@needs_redis
async def test_priority_order_holds_per_fetch(backend: RedisBackend, log: str) -> None:
    async with system_on(backend) as system:
        handles = [await system.submit("bulk", Step(log, f"b{i}")) for i in range(3)]
        handles += [await system.submit("urgent", Step(log, f"u{i}")) for i in range(3)]
        async with worker_on(backend, max_concurrency=1):  # type: ignore[attr-defined]
            for handle in handles:
                await handle.result()
    started = [line[1] for line in lines(log) if line[0] == "start"]
    assert started == ["u0", "u1", "u2", "b0", "b1", "b2"]


async def blocked_reads(url: str, count: int, timeout: float = 10.0) -> list[str]:
    """The commands of the clients blocked in Redis, once there are ``count`` of them
    (polled: the workers' reads are another connection's state)."""
    from lanes.distributed._resp import open_connection

    connection = await open_connection(url)
    try:
        with trio.fail_after(timeout):
            while True:
                [listing] = await connection.execute([["CLIENT", "LIST"]])
                fields = [
                    dict(f.split("=", 1) for f in line.split()) for line in listing.splitlines()
                ]
                blocked = sorted(f["cmd"] for f in fields if "b" in f["flags"])
                if len(blocked) == count:
                    return blocked
                await trio.sleep(0.02)
    finally:
        await connection.aclose()


@needs_redis
async def test_an_idle_worker_takes_new_commands_alone_unless_a_lane_is_limited(
    redis_server: LocalRedis, log: str
) -> None:
    # XREADGROUP hands a new entry to one idle worker (XREAD would wake them all);
    # a rate limit, or slots too few for one entry per stream, keep XREAD (as does the
    # submitter's reply reader)
    backend = RedisBackend(redis_server.url, prefix=f"t{uuid.uuid4().hex[:8]}", lease=2.0)
    limited = (LANES[0], attrs.evolve(LANES[1], rate_limit=lanes.RateLimit.per_second(1000)))
    async with (
        worker_on(backend) as free,  # type: ignore[attr-defined]
        worker_on(backend, max_concurrency=1) as narrow,  # type: ignore[attr-defined]
        open_lane_worker(limited, backend=backend, commands=[Step]) as rated,
        system_on(backend) as system,
    ):
        # (and each worker's control-stream XREAD)
        assert await blocked_reads(backend.url, 7) == [*["xread"] * 6, "xreadgroup"]
        handles = [await system.submit(LANES[i % 2].name, Step(log, f"c{i}")) for i in range(20)]
        handles.append(await system.submit("urgent", Step(log, "later"), delay=0.2))
        assert [await h.result() for h in handles] == [f"c{i}" for i in range(20)] + ["later"]
        assert await blocked_reads(backend.url, 7) == [*["xread"] * 6, "xreadgroup"]
    done = [
        w.statistics().lanes[lane].completed
        for w in (free, narrow, rated)
        for lane in ("urgent", "bulk")
    ]
    assert sum(done) == 21


@needs_redis
async def test_cluster_wide_rate_limit_and_concurrency(redis_server: LocalRedis, log: str) -> None:
    limited = (
        lanes.LaneConfig(
            "api", 0, max_concurrency=5, rate_limit=lanes.RateLimit.token_bucket(10, 2)
        ),
    )
    backend = RedisBackend(redis_server.url, prefix=f"t{uuid.uuid4().hex[:8]}", lease=0.6)
    options = {"backend": backend, "commands": [Step], "cluster_concurrency": {"api": 2}}
    async with (
        open_lane_worker(limited, **options) as one,  # type: ignore[arg-type]
        open_lane_worker(limited, **options) as two,  # type: ignore[arg-type]
        lanes.open_lane_system(limited, backend=backend, commands=[Step]) as system,
    ):
        start = trio.current_time()
        handles = [await system.submit("api", Step(log, f"c{i}", seconds=0.05)) for i in range(6)]
        for handle in handles:
            await handle.result()
        elapsed = trio.current_time() - start
    # a full bucket of 2, then 10 per second across both workers: 4 more need >= 0.4 s
    assert elapsed >= 0.38
    done = one.statistics().lanes["api"].completed + two.statistics().lanes["api"].completed
    assert done == 6
    running = 0
    peak = 0
    for word, *_ in lines(log):
        running += 1 if word == "start" else -1
        peak = max(peak, running)
    assert peak <= 2


@needs_redis
async def test_hash_partitions_keep_order_per_key(redis_server: LocalRedis, log: str) -> None:
    backend = RedisBackend(
        redis_server.url,
        prefix=f"t{uuid.uuid4().hex[:8]}",
        lease=3.0,  # no reclaim expected: a late heartbeat on a busy machine must not reorder
        partitions={"bulk": Partitioning.hash(3)},
    )
    async with worker_on(backend) as _, worker_on(backend) as _, system_on(backend) as system:  # type: ignore[attr-defined]
        handles = []
        for i in range(4):
            for user in ("ann", "bob"):
                step = Step(log, f"{user}-{i}", seconds=0.02)
                handles.append(await system.submit("bulk", step, partition_key=user))
        for handle in handles:
            await handle.result()
        with pytest.raises(lanes.LaneConfigError, match="partition_key"):
            await system.submit("bulk", Step(log, "x"))
    for user in ("ann", "bob"):
        events = [(w, tag) for w, tag, _ in lines(log) if tag.startswith(user)]
        expected = [(w, f"{user}-{i}") for i in range(4) for w in ("start", "done")]
        assert events == expected  # one at a time, in order


@needs_redis
async def test_long_command_keeps_its_lease_and_shutdown_hands_back(
    backend: RedisBackend, log: str
) -> None:
    async with system_on(backend) as system:
        long = await system.submit("urgent", Step(log, "long", seconds=1.5))  # 2.5 leases
        async with worker_on(backend) as worker:  # type: ignore[attr-defined]
            assert await long.result() == "long"
        assert worker.statistics().lanes["urgent"].reclaimed == 0
        stuck = await system.submit("urgent", Step(log, "stuck", seconds=1.0))
        async with worker_on(backend, drain_timeout=0):  # type: ignore[attr-defined]
            await wait_for_line(log, "start", "stuck")
        assert stuck.status == "pending"
        async with worker_on(backend) as rescuer:  # type: ignore[attr-defined]
            assert await stuck.result() == "stuck"
        # handed back at shutdown, so not reclaimed after a lease: delivered afresh
        assert rescuer.statistics().lanes["urgent"].reclaimed == 0
        assert rescuer.statistics().lanes["urgent"].completed == 1


@needs_redis
async def test_cancelling_a_result_wait_leaves_the_command(backend: RedisBackend, log: str) -> None:
    async with worker_on(backend), system_on(backend) as system:  # type: ignore[attr-defined]
        handle = await system.submit("urgent", Step(log, "c", seconds=0.2))
        with trio.move_on_after(0.01):
            await handle.result()
        assert await handle.result() == "c"


def spawn_worker(url: str, prefix: str, name: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "lanes", "worker", "--redis", url, "--prefix", prefix]
    command += ["--commands", "tests.distributed_commands:Step"]
    command += ["--lanes", "tests.distributed_commands:LANES", "--lease", "0.6", "--name", name]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_cli_worker_reports_bad_commands(capsys: pytest.CaptureFixture[str]) -> None:
    from lanes import __main__ as cli

    status = cli.main(["worker", "--redis", "redis://127.0.0.1:1", "--commands", "nope"])
    assert status == 1
    assert "expected MODULE:NAME" in capsys.readouterr().err
    started = time.monotonic()
    status = cli.main(
        ["worker", "--redis", _unused_url(), "--commands", "tests.distributed_commands:Step"]
    )
    assert status == 1 and time.monotonic() - started < 10
    assert "cannot connect" in capsys.readouterr().err


@needs_redis
async def test_errors_of_the_body_surface_as_themselves(backend: RedisBackend, log: str) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with worker_on(backend):  # type: ignore[attr-defined]
            raise KeyError("mine")
    with pytest.raises(KeyError, match="mine"):
        async with system_on(backend):
            raise KeyError("mine")
    async with system_on(backend, drain_timeout=0.1) as system:
        pending = await system.submit("urgent", Step(log, "orphan"))
    with pytest.raises(lanes.ShutdownInProgress, match="accepts no new commands"):
        await system.submit("urgent", Step(log, "late"))
    with pytest.raises(lanes.ShutdownInProgress, match="stays queued in Redis"):
        await pending.result()


@needs_redis
async def test_a_worker_that_lost_its_lease_stops_its_attempt(
    backend: RedisBackend, log: str
) -> None:
    import coredis

    async with worker_on(backend) as worker, system_on(backend) as system:  # type: ignore[attr-defined]
        handle = await system.submit("urgent", Step(log, "taken", seconds=1.0))
        await wait_for_line(log, "start", "taken")
        stream = backend.stream("urgent", 0)
        ghost = coredis.Redis.from_url(backend.url, decode_responses=True)
        async with ghost:  # another worker takes it over (as if our lease had expired)
            [entry] = await ghost.xrange(stream)
            await ghost.xclaim(stream, "workers", "ghost", 0, [entry.identifier])
        # our heartbeat notices and cancels the attempt; the ghost never finishes, so after
        # the lease the command is reclaimed and completed
        assert await handle.result() == "taken"
    stats = worker.statistics().lanes["urgent"]  # settled before the worker closed
    assert (stats.lost, stats.reclaimed, stats.completed) == (1, 1, 1)
    assert [word for word, tag, _ in lines(log) if tag == "taken"] == ["start", "start", "done"]


@needs_redis
async def test_unfinished_commands_lists_each_state(backend: RedisBackend, log: str) -> None:
    from lanes.distributed import unfinished_commands

    slow_retry = (
        lanes.LaneConfig("urgent", 0, max_concurrency=1),
        lanes.LaneConfig("bulk", 1, retry=lanes.RetryPolicy.fixed(2, 30.0)),
    )
    url, prefix = backend.url, backend.prefix
    assert await unfinished_commands(url, prefix=prefix) == []
    worker = open_lane_worker(slow_retry, backend=backend, commands=[Step], drain_timeout=0)
    async with worker, system_on(backend, drain_timeout=0.1) as system:
        failing = await system.submit("bulk", Step(log, "fail", fail=True))
        running = await system.submit("urgent", Step(log, "run", seconds=5))
        await wait_for_line(log, "start", "run")
        queued = await system.submit("urgent", Step(log, "queued"), key="k1")
        later = await system.submit("urgent", Step(log, "later"), delay=30)
        with trio.fail_after(5):
            while True:
                rows = {row["id"]: row for row in await unfinished_commands(url, prefix=prefix)}
                if rows.get(failing.id, {}).get("status") == "retrying":
                    break
                await trio.sleep(0.02)  # another process's progress: nothing to wait on
        now = time.time()
        assert set(rows) == {failing.id, running.id, queued.id, later.id}
        assert {k: v for k, v in rows[running.id].items() if k != "id"} == {
            "type": "Step",
            "key": None,
            "lane": "urgent",
            "status": "running",
            "attempts": 1,
            "next_due": None,
        }
        assert (rows[queued.id]["status"], rows[queued.id]["key"]) == ("pending", "k1")
        assert rows[queued.id]["attempts"] == 0 and rows[queued.id]["next_due"] is None
        assert rows[later.id]["status"] == "delayed" and rows[later.id]["attempts"] == 0
        assert now + 29 < rows[later.id]["next_due"] < now + 31
        assert rows[failing.id]["lane"] == "bulk" and rows[failing.id]["attempts"] == 1
        assert now + 28 < rows[failing.id]["next_due"] < now + 31
    with pytest.raises(lanes.LaneConfigError, match="url='nope' is invalid"):
        await unfinished_commands("nope")
    with pytest.raises(lanes.StorageError, match="cannot connect"):
        await unfinished_commands(_unused_url())


# -- the RESP client of the hot path -------------------------------------------------------------


def test_resp_encoding_and_parsing() -> None:
    from lanes.distributed._resp import ReplyError, _Incomplete, _parse, encode

    assert encode([["SET", "k", 1, 0.5, b"\x00"]]) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n$3\r\n0.5\r\n$1\r\n\x00\r\n"
    )
    assert encode([["é"]]) == b"*1\r\n$2\r\n\xc3\xa9\r\n"  # length in bytes
    with pytest.raises(TypeError, match="not None"):
        encode([["SET", None]])
    reply = b"*4\r\n+OK\r\n:-3\r\n$-1\r\n*2\r\n$2\r\nab\r\n-ERR bad\r\n"
    value, end = _parse(bytearray(reply), 0)
    assert value[:3] == ["OK", -3, None] and value[3][0] == "ab" and end == len(reply)
    assert isinstance(value[3][1], ReplyError) and str(value[3][1]) == "ERR bad"
    for cut in range(len(reply)):  # any prefix of a reply asks for more bytes
        with pytest.raises(_Incomplete):
            _parse(bytearray(reply[:cut]), 0)
    with pytest.raises(ReplyError, match="unexpected RESP reply type"):
        _parse(bytearray(b"!x\r\n"), 0)


@needs_redis
async def test_resp_connection_selects_its_database_and_reloads_scripts(
    redis_server: LocalRedis,
) -> None:
    import coredis

    from lanes.distributed._redis import Batcher, Lua
    from lanes.distributed._resp import ReplyError, open_connection

    connection = await open_connection(redis_server.url.replace("/0", "/3"))
    key = f"t{uuid.uuid4().hex[:8]}"
    ok, error = await connection.execute([["SET", key, "v"], ["INCR", key]])
    assert ok == "OK"
    assert isinstance(error, ReplyError)  # a reply, not raised: the pipeline's others stand
    assert await connection.execute([["GET", key]]) == ["v"]
    async with coredis.Redis.from_url(redis_server.url.replace("/0", "/3")) as other:
        assert await other.get(key) == b"v"
        await other.script_flush()
    with trio.move_on_after(0.05):  # a read cancelled midway leaves the connection broken
        await connection.execute([["BLPOP", key + "x", 1]])
    assert connection.broken
    await connection.aclose()
    backend = RedisBackend(redis_server.url, prefix=key)
    batcher = Batcher(backend)
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        script = Lua("return {KEYS[1], ARGV[1], 7}")
        assert await batcher.call(script, ["a"], ["b"]) == ["a", "b", 7]  # NOSCRIPT, then EVAL
        assert await batcher.call(script, ["c"], [1]) == ["c", "1", 7]  # now by its SHA1
        with pytest.raises(lanes.StorageError, match=f"Redis at {backend.url} failed"):
            await batcher.command("NOSUCHCOMMAND")
        nursery.cancel_scope.cancel()
    down = Batcher(RedisBackend(_unused_url()))
    async with trio.open_nursery() as nursery:
        await nursery.start(down.run)
        with pytest.raises(lanes.StorageError, match="failed: OSError"):
            await down.command("PING")
        nursery.cancel_scope.cancel()


@pytest.fixture
def password_server(tmp_path: pathlib.Path) -> Iterator[int]:
    """A redis-server that wants the password ``s3cret``; yields its port."""
    from lanes.distributed._local import _free_port

    port = _free_port()
    command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    command += ["--appendonly", "no", "--dir", str(tmp_path), "--requirepass", "s3cret"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.01)  # a process starting: there is nothing to wait on
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


@needs_redis
async def test_resp_connection_authenticates_as_the_url_says(password_server: int) -> None:
    from lanes.distributed._resp import ReplyError, open_connection

    connection = await open_connection(f"redis://:s3cret@127.0.0.1:{password_server}/1")
    assert await connection.execute([["PING"]]) == ["PONG"]
    await connection.aclose()
    with pytest.raises(ReplyError, match="WRONGPASS"):
        await open_connection(f"redis://default:wrong@127.0.0.1:{password_server}/0")
