"""A shared limit in Redis: slots shared by every process, leases, fairness between sessions
(a real redis-server, the real clock, a second process for the kill)."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import trio

import lanes
from lanes.distributed import (
    LocalRedis,
    RedisBackend,
    RedisSharedLimit,
    local_redis_server,
    open_shared_limit,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent

HOLDER = """
import sys, trio
from lanes.distributed import RedisBackend, open_shared_limit

async def main():
    backend = RedisBackend(sys.argv[1], prefix=sys.argv[2], lease=0.6)
    async with open_shared_limit(backend, "llm", 2) as limit:
        async with limit.slot(session="dead"), limit.slot(session="dead"):
            print("held", flush=True)
            await trio.sleep_forever()

trio.run(main)
"""


def spawn_holder(backend: RedisBackend) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, backend.url, backend.prefix],
        stdout=subprocess.PIPE,
        env=env,
    )


async def until(check: Any) -> None:
    """Poll ``check`` (sync or async): the other handles' state is in Redis."""
    with trio.fail_after(5):
        while True:
            value = check()
            if not isinstance(value, bool):
                value = await value
            if value:
                return
            await trio.sleep(0.01)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[LocalRedis]:
    with local_redis_server() as server:
        yield server


@pytest.fixture
def backend(redis_server: LocalRedis) -> RedisBackend:
    return RedisBackend(redis_server.url, prefix=f"t{uuid.uuid4().hex[:8]}", lease=0.6)


async def test_open_shared_limit_rejects_bad_input(backend: RedisBackend) -> None:
    cases: list[tuple[Any, Any, Any, Any, str]] = [
        ("not a backend", "llm", 2, None, "backend="),
        (backend, "", 2, None, "name=''"),
        (backend, "two words", 2, None, "name='two words'"),
        (backend, "llm", 0, None, "max_concurrency=0"),
        (backend, "llm", True, None, "max_concurrency=True"),
        (backend, "llm", 2, 0, "lease=0"),
        (backend, "llm", 2, float("nan"), "lease=nan"),
    ]
    for target, name, cap, lease, text in cases:
        with pytest.raises(lanes.LaneConfigError, match=text):
            async with open_shared_limit(target, name, cap, lease=lease):
                pass  # pragma: no cover
    async with open_shared_limit(backend, "llm", 2) as limit:
        with pytest.raises(lanes.LaneConfigError, match="session=5"):
            async with limit.slot(session=5):  # type: ignore[arg-type]
                pass  # pragma: no cover


async def test_unreachable_redis_raises_storage_error() -> None:
    backend = RedisBackend("redis://127.0.0.1:1/0")
    with pytest.raises(lanes.StorageError, match=r"Redis at redis://127\.0\.0\.1:1/0"):
        async with open_shared_limit(backend, "llm", 2):
            pass  # pragma: no cover


async def test_slots_are_shared_by_every_handle(backend: RedisBackend) -> None:
    async with (
        open_shared_limit(backend, "llm", 2) as one,
        open_shared_limit(backend, "llm", 2) as two,
    ):
        assert isinstance(one, RedisSharedLimit) and (one.name, one.max_concurrency) == ("llm", 2)
        inside: list[str] = []
        release = trio.Event()

        async def hold(limit: RedisSharedLimit, tag: str) -> None:
            async with limit.slot(session=tag):
                inside.append(tag)
                await release.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold, one, "a")
            nursery.start_soon(hold, two, "b")
            nursery.start_soon(hold, two, "c")
            await until(lambda: len(inside) == 2)
            await until(lambda: _waiting(one, 1))
            stats = await one.statistics()
            assert (stats.in_use, stats.waiting, len(inside)) == (2, 1, 2)
            assert stats == await two.statistics()
            release.set()
        assert sorted(inside) == ["a", "b", "c"]
        stats = await one.statistics()
        assert (stats.in_use, stats.waiting, stats.granted) == (0, 0, 1)


async def test_free_slots_go_to_the_session_holding_fewest(backend: RedisBackend) -> None:
    order: list[str] = []
    async with (
        open_shared_limit(backend, "llm", 2) as busy,
        open_shared_limit(backend, "llm", 2) as quiet,
        trio.open_nursery() as nursery,
    ):
        gates = {tag: trio.Event() for tag in ("b1", "b2", "w1", "w2", "w3", "q1")}

        async def job(limit: RedisSharedLimit, session: str, tag: str) -> None:
            async with limit.slot(session=session):
                order.append(tag)
                await gates[tag].wait()

        for tag in ("b1", "b2"):
            nursery.start_soon(job, busy, "busy", tag)
        await until(lambda: len(order) == 2)
        for count, tag in enumerate(("w1", "w2", "w3"), start=1):
            nursery.start_soon(job, busy, "busy", tag)
            await until(lambda count=count: _waiting(busy, count))
        nursery.start_soon(job, quiet, "quiet", "q1")  # arrives last
        await until(lambda: _waiting(busy, 4))
        gates["b1"].set()  # busy holds 1, quiet 0: quiet's waiter goes first
        await until(lambda: len(order) == 3)
        gates["b2"].set()  # busy holds 0, quiet 1: busy's first waiter
        await until(lambda: len(order) == 4)
        gates["w1"].set()  # one slot frees: busy's next waiter (w2)
        await until(lambda: len(order) == 5)
        for tag in ("q1", "w2", "w3"):  # (w2 and w3 granted at once would race to append)
            gates[tag].set()
    # quiet held nothing while busy held 1: it went first; then arrival order
    assert sorted(order[:2]) == ["b1", "b2"] and order[2:] == ["q1", "w1", "w2", "w3"]


async def test_a_cancelled_wait_is_withdrawn(backend: RedisBackend) -> None:
    async with open_shared_limit(backend, "llm", 1) as limit:
        async with limit.slot(session="a"):
            with trio.move_on_after(0.2) as scope:
                async with limit.slot(session="b"):
                    pytest.fail("no slot is free")  # pragma: no cover
            assert scope.cancelled_caught
            stats = await limit.statistics()
            assert (stats.in_use, stats.waiting) == (1, 0)
        async with limit.slot(session="c"):  # the freed slot was not given to the gone wait
            assert (await limit.statistics()).in_use == 1


async def test_a_killed_holders_slots_come_back_within_a_lease(backend: RedisBackend) -> None:
    child = spawn_holder(backend)
    try:
        assert child.stdout is not None
        line = await trio.to_thread.run_sync(child.stdout.readline)
        assert line.strip() == b"held"
        async with open_shared_limit(backend, "llm", 2) as limit:
            assert (await limit.statistics()).in_use == 2
            killed = trio.current_time()
            os.kill(child.pid, signal.SIGKILL)
            with trio.fail_after(5):
                async with limit.slot(session="alive"), limit.slot(session="alive"):
                    recovered = trio.current_time() - killed
        print(f"a killed holder's 2 slots came back {recovered:.2f} s after the kill")
        assert recovered < 3.0  # one lease (0.6 s) when idle; a loaded machine takes longer
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL


async def _waiting(limit: RedisSharedLimit, count: int) -> bool:
    return (await limit.statistics()).waiting == count
