"""Process lanes: sync commands in trio-parallel worker processes, lane semantics intact.

These tests use the real clock (worker processes run in real time); workers are reused
between tests, so only the tests that kill a worker pay for spawning a new one.
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio_parallel

import lanes
from lanes import LaneConfig, RetryPolicy
from lanes.storage import MemoryStorage

from . import process_work as work
from .helpers import noop, sleeper

LIMIT = 30  # seconds: far above what any step needs, even on a loaded machine


def cpu(max_concurrency: int = 1, **options: object) -> LaneConfig:
    return LaneConfig("cpu", 1, max_concurrency=max_concurrency, executor="process", **options)  # type: ignore[arg-type]


@pytest.fixture
async def listener() -> AsyncIterator[trio.SocketListener]:
    (server,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with server:
        yield server


@pytest.fixture
async def warm_workers() -> None:
    """At least two idle workers in trio-parallel's cache, so the next two commands (a
    first attempt and its retry after a kill) spend no time spawning inside their timeout.

    (pytest-trio runs an async fixture only when a test takes it as an argument.)
    """
    async with lanes.open_lane_system([cpu(2)]) as system:
        handles = [await system.submit("cpu", work.interval, 0.05) for _ in "ab"]
        for handle in handles:
            await handle.result()


def port_of(server: trio.SocketListener) -> int:
    port: int = server.socket.getsockname()[1]
    return port


async def running_pid(server: trio.SocketListener, *handles: lanes.CommandHandle[Any]) -> int:
    """Wait until a worker announces itself (its command's body runs); return its pid.

    If one of ``handles`` resolves first, its error (or an AssertionError) is raised.
    """

    async def watch(handle: lanes.CommandHandle[Any]) -> None:
        await handle.result()
        raise AssertionError(f"{handle} finished before its worker announced itself")

    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            for handle in handles:
                nursery.start_soon(watch, handle)
            stream = await server.accept()
            async with stream:
                data = b""
                while chunk := await stream.receive_some():
                    data += chunk
            nursery.cancel_scope.cancel()
    return int(data)


def is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_results_come_from_worker_processes() -> None:
    async with lanes.open_lane_system([cpu(2)]) as system:
        handles = [await system.submit("cpu", work.square, n) for n in range(4)]
        results = [await h.result() for h in handles]
    assert [value for value, _ in results] == [0, 1, 4, 9]
    assert os.getpid() not in {pid for _, pid in results}
    assert system.statistics().lanes["cpu"].completed == 4


async def test_worker_exception_is_the_failure_cause() -> None:
    lane = cpu(retry=RetryPolicy.fixed(3, 0.0))
    async with lanes.open_lane_system([lane]) as system:
        with pytest.raises(lanes.CommandFailed, match="bad input") as info:
            await system.run("cpu", work.fail, "bad input")
        assert isinstance(info.value.__cause__, ValueError)
        assert str(info.value.__cause__) == "bad input"
        stats = system.statistics().lanes["cpu"]
        assert (stats.retried, stats.failed, stats.dead_lettered) == (3, 1, 1)
        letter = system.dead_letters.list()[0]
        assert letter.attempts == 4
        again = await system.dead_letters.requeue(letter.id)  # submitted again, same function
        with pytest.raises(lanes.CommandFailed, match="bad input"):
            await again.result()
        assert system.statistics().lanes["cpu"].retried == 6


async def test_retry_after_a_worker_failure(tmp_path: pathlib.Path) -> None:
    lane = cpu(retry=RetryPolicy.fixed(1, 0.0))
    async with lanes.open_lane_system([lane]) as system:
        handle = await system.submit("cpu", work.fail_once, str(tmp_path / "marker"))
        assert await handle.result() == "ok"
        assert handle.attempts == 2
        assert system.statistics().lanes["cpu"].retried == 1


async def test_timeout_kills_the_busy_worker_and_frees_the_slot(
    warm_workers: None,
    listener: trio.SocketListener,
) -> None:
    async with lanes.open_lane_system([cpu(1, timeout=0.5)]) as system:
        handle = await system.submit("cpu", work.spin_forever, port_of(listener))
        pid = await running_pid(listener, handle)
        with pytest.raises(lanes.CommandTimeout, match=r"timed out after 0\.5 s"):
            await handle.result()
        assert is_gone(pid)
        stats = system.statistics().lanes["cpu"]
        assert (stats.timed_out, stats.active) == (1, 0)
        assert (await system.run("cpu", work.square, 3))[0] == 9  # the slot is back


async def test_a_timed_out_attempt_is_retried(
    warm_workers: None, listener: trio.SocketListener, tmp_path: pathlib.Path
) -> None:
    lane = cpu(1, timeout=0.5, retry=RetryPolicy.fixed(1, 0.0))
    async with lanes.open_lane_system([lane]) as system:
        handle = await system.submit("cpu", work.spin_once, port_of(listener), str(tmp_path / "m"))
        pid = await running_pid(listener, handle)
        assert await handle.result() == "done"
        assert is_gone(pid)
        stats = system.statistics().lanes["cpu"]
        assert (stats.timed_out, stats.retried, stats.completed) == (1, 1, 1)


async def test_cancel_running_and_queued_commands(listener: trio.SocketListener) -> None:
    async with lanes.open_lane_system([cpu(1)]) as system:
        running = await system.submit("cpu", work.spin_forever, port_of(listener))
        queued = await system.submit("cpu", work.square, 2)
        pid = await running_pid(listener, running)
        queued.cancel()
        assert queued.status == "cancelled"  # resolved at once: it never reached a worker
        running.cancel()
        with pytest.raises(lanes.CommandCancelled):
            await running.result()
        assert is_gone(pid)
        assert system.statistics().lanes["cpu"].cancelled == 2
        assert (await system.run("cpu", work.square, 4))[0] == 16


async def test_cancel_lane_kills_its_workers(listener: trio.SocketListener) -> None:
    async with lanes.open_lane_system([cpu(2)]) as system:
        handles = [await system.submit("cpu", work.spin_forever, port_of(listener)) for _ in "ab"]
        pids = {await running_pid(listener, *handles), await running_pid(listener, *handles)}
        assert await system.cancel_lane("cpu") == 2
        assert all(h.status == "cancelled" for h in handles)
        assert all(is_gone(pid) for pid in pids)


async def test_preemption_kills_the_worker_and_requeues(
    listener: trio.SocketListener, tmp_path: pathlib.Path
) -> None:
    configs = [LaneConfig("urgent", 0), cpu(1, preemptible=True)]
    async with lanes.open_lane_system(configs, max_concurrency=1) as system:
        victim = await system.submit("cpu", work.spin_once, port_of(listener), str(tmp_path / "m"))
        pid = await running_pid(listener, victim)
        assert await system.run("urgent", noop) == 1
        assert await victim.result() == "done"  # ran again after the urgent command
        assert is_gone(pid)
        assert victim.attempts == 1  # a preemption is not an attempt
        assert system.statistics().lanes["cpu"].preempted == 1


async def test_drain_timeout_at_exit_kills_running_workers(listener: trio.SocketListener) -> None:
    async with lanes.open_lane_system([cpu(1)], drain_timeout=0.2) as system:
        handle = await system.submit("cpu", work.spin_forever, port_of(listener))
        pid = await running_pid(listener, handle)
    assert handle.status == "cancelled"
    assert is_gone(pid)


async def test_an_enclosing_cache_scope_provides_the_workers() -> None:
    scope = trio_parallel.cache_scope(init=work.mark_scoped)
    async with scope, lanes.open_lane_system([cpu()]) as system:
        label, pid = await system.run("cpu", work.scope_label)
    assert label == "scoped"
    assert is_gone(pid)  # the scope shut its workers down when it exited


async def test_concurrency_bound_holds() -> None:
    async with lanes.open_lane_system([cpu(2)]) as system:
        handles = [await system.submit("cpu", work.interval, 0.2) for _ in range(5)]
        intervals = [await h.result() for h in handles]
    for start, _ in intervals:  # at each start, at most 2 run (the one starting included)
        assert sum(1 for s, e in intervals if s <= start < e) <= 2


# -- bad input (no worker processes needed) ---------------------------------------------------


@pytest.mark.parametrize("value", ["thread", "", None, 3])
def test_bad_executor_is_named(value: object) -> None:
    with pytest.raises(lanes.LaneConfigError, match=r"executor=.*'async' or 'process'"):
        LaneConfig("x", 0, executor=value)  # type: ignore[arg-type]


@lanes.command
@attrs.frozen
class Job:
    n: int

    async def execute(self) -> int:
        return self.n


async def test_wrong_kinds_of_callables_are_refused_at_submit() -> None:
    configs = [LaneConfig("io", 0), cpu()]
    async with lanes.open_lane_system(configs) as system:
        with pytest.raises(lanes.LaneUsageError, match=r"async callable.*executor='async'"):
            await system.submit("cpu", sleeper, 1.0)
        with pytest.raises(lanes.LaneUsageError, match=r"synchronous function.*'process'"):
            await system.submit("io", work.square, 1)
        with pytest.raises(lanes.LaneUsageError, match="numbers is a generator function"):
            await system.submit("cpu", work.numbers, 3)
        with pytest.raises(lanes.LaneUsageError, match="cannot be sent to a worker process"):
            await system.submit("cpu", lambda: 1)
        with pytest.raises(lanes.LaneUsageError, match=r"@lanes.command object .*Job"):
            await system.submit("cpu", Job(1))
        with pytest.raises(lanes.LaneUsageError, match="not a synchronous function"):
            system.submit_nowait("cpu", 42)  # type: ignore[call-overload]
        assert system.statistics().lanes["cpu"].submitted == 0


def test_missing_trio_parallel_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trio_parallel", None)  # makes the import fail
    with pytest.raises(lanes.LaneConfigError, match=r"pip install .*\[process\]"):
        lanes.open_lane_system([cpu()])


async def test_a_stored_command_recovered_into_a_process_lane_fails_clearly(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStorage(clock=trio.current_time)
    with pytest.raises(KeyError):
        async with lanes.open_lane_system(
            [LaneConfig("cpu", 0)], storage=store, commands=[Job]
        ) as system:
            await system.submit("cpu", Job(1), delay=10)
            raise KeyError("crash")  # the command stays stored
    lane = cpu(retry=RetryPolicy.fixed(2, 0.0))
    async with lanes.open_lane_system([lane], storage=store, commands=[Job]) as system:
        (handle,) = system.recovered
        with pytest.raises(lanes.CommandFailed) as info:
            await handle.result()
        assert handle.attempts == 1  # Permanent: no retries
        assert isinstance(info.value.__cause__, lanes.LaneUsageError)
        assert "now a process lane" in str(info.value.__cause__)
        assert len(system.dead_letters) == 1
