"""Context variables: a command runs in its submitter's context, whichever worker runs it."""

from __future__ import annotations

import contextvars

import attrs
import pytest
import trio
import trio.testing

import lanes
from actors import run_in_context
from lanes.storage import MemoryStorage

REQUEST = contextvars.ContextVar[str]("request", default="-")
ONE = (lanes.LaneConfig("work", 0, max_concurrency=1),)


async def request_id() -> str:
    return REQUEST.get()


async def request_id_after_a_sleep() -> str:
    await trio.sleep(1)
    return REQUEST.get()


async def test_each_command_sees_its_submitters_context_on_a_reused_worker(
    autojump_clock: trio.abc.Clock,
) -> None:
    workers: list[trio.lowlevel.Task] = []

    async def which_worker() -> str:
        workers.append(trio.lowlevel.current_task())
        return REQUEST.get()

    async with lanes.open_lane_system(ONE) as system:

        async def session(name: str, out: list[str]) -> None:
            REQUEST.set(name)
            for _ in range(3):
                out.append(await system.run("work", which_worker))

        seen: dict[str, list[str]] = {"a": [], "b": []}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session, "a", seen["a"])
            nursery.start_soon(session, "b", seen["b"])
    assert seen == {"a": ["a"] * 3, "b": ["b"] * 3}
    assert len(set(workers)) < len(workers)  # a worker ran several sessions' commands


async def test_workers_run_each_command_natively_in_its_own_context(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A new worker (spawned in a copy of the command's context, which the command adopts)
    and a parked worker handed a command run it in the command's context with no
    trampoline: the worker task's context is the command's for the command's steps, and
    its own again afterwards; what a command sets stays in its context."""
    seen: list[tuple[str, str, bool]] = []
    before: list[str] = []

    async def body(tag: str) -> None:
        before.append(REQUEST.get())
        REQUEST.set(f"set by {tag}")
        # Natively: the task's context is the one the body runs in (with the trampoline,
        # the worker task's own context would not see what the body set).
        native = trio.lowlevel.current_task().context.get(REQUEST) == f"set by {tag}"
        await trio.sleep(1)  # the steps after a suspension: still its own context
        seen.append((tag, REQUEST.get(), native))

    homes: list[contextvars.Context] = []
    async with lanes.open_lane_system(ONE) as system:
        for tag in ("a", "b", "c"):
            REQUEST.set(tag)
            await system.run("work", body, tag)
            assert REQUEST.get() == tag  # the caller's context is untouched
            parked = system._core.pools["work"]._parked
            assert len(parked) == 1  # one worker, parked between the commands
            homes.append(parked[0].context)
    assert seen == [
        ("a", "set by a", True),  # a new worker, spawned in (a copy of) its context
        ("b", "set by b", True),  # the parked worker, handed the next ones
        ("c", "set by c", True),
    ]
    assert before == ["a", "b", "c"]  # each saw its submitter's value
    assert homes[0] is homes[1] is homes[2]  # the worker's own context, given back each time
    assert REQUEST.get() == "c"


async def test_the_context_holds_across_the_commands_suspensions(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        REQUEST.set("first")
        first = await system.submit("work", request_id_after_a_sleep)
        REQUEST.set("second")
        second = await system.submit("work", request_id_after_a_sleep)
        assert [await first.result(), await second.result()] == ["first", "second"]


async def test_what_a_command_sets_stays_in_its_context(autojump_clock: trio.abc.Clock) -> None:
    async def set_it() -> None:
        REQUEST.set("inside")

    async with lanes.open_lane_system(ONE) as system:
        REQUEST.set("caller")
        await system.run("work", set_it)
        assert REQUEST.get() == "caller"
        REQUEST.set("next")
        assert await system.run("work", request_id) == "next"


async def test_retries_run_in_the_submitters_context(autojump_clock: trio.abc.Clock) -> None:
    seen: list[str] = []

    async def flaky() -> str:
        seen.append(REQUEST.get())
        if len(seen) < 3:
            raise OSError("flaky")
        return "ok"

    lane = lanes.LaneConfig("work", 0, retry=lanes.RetryPolicy.fixed(3, 0.5))
    async with lanes.open_lane_system((lane,)) as system:
        REQUEST.set("r1")
        assert await system.run("work", flaky) == "ok"
    assert seen == ["r1", "r1", "r1"]


async def test_timeouts_and_cancels_reach_a_command_in_its_context(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        REQUEST.set("t")
        with pytest.raises(lanes.CommandTimeout):
            await system.run("work", request_id_after_a_sleep, timeout=0.5)
        handle = await system.submit("work", request_id_after_a_sleep)
        await trio.testing.wait_all_tasks_blocked()
        handle.cancel()
        with pytest.raises(lanes.CommandCancelled):
            await handle.result()
        assert await system.run("work", request_id) == "t"  # the worker is fine afterwards


@lanes.command
@attrs.define
class WhoAmI:
    async def execute(self) -> str:
        return REQUEST.get()


async def test_a_recovered_command_sees_the_context_of_the_task_that_opened_the_system(
    autojump_clock: trio.abc.Clock,
) -> None:
    storage = MemoryStorage(clock=trio.current_time)
    with trio.move_on_after(1):  # a crash: the body is cancelled with the command stored
        async with lanes.open_lane_system(ONE, storage=storage, commands=[WhoAmI]) as system:
            system.pause("work")
            REQUEST.set("submitter")
            await system.submit("work", WhoAmI())
            await trio.sleep_forever()
    REQUEST.set("opener")
    async with lanes.open_lane_system(ONE, storage=storage, commands=[WhoAmI]) as system:
        (recovered,) = system.recovered
        assert await recovered.result() == "opener"


async def test_run_in_context_passes_values_errors_and_cancellation() -> None:
    context = contextvars.copy_context()
    context.run(REQUEST.set, "ctx")

    async def body() -> str:
        await trio.lowlevel.checkpoint()
        return REQUEST.get()

    assert await run_in_context(context, body()) == "ctx"
    assert REQUEST.get() == "-"

    async def fails() -> None:
        await trio.lowlevel.checkpoint()
        raise KeyError(REQUEST.get())

    with pytest.raises(KeyError, match="ctx"):
        await run_in_context(context, fails())

    cleaned: list[str] = []

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cleaned.append(REQUEST.get())

    with trio.move_on_after(0.01) as scope:
        await run_in_context(context, forever())
    assert scope.cancelled_caught
    assert cleaned == ["ctx"]  # the cancellation was delivered inside the context


async def test_a_command_retried_at_once_on_its_worker_runs_in_its_context_again(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A timed-out attempt retried without delay is handed back to the worker that just ran
    it, in the same step, with its context still entered: it runs on in it (entering it
    again would fail), and each attempt sees the submitter's value."""
    lane = lanes.LaneConfig(
        "work", 0, max_concurrency=1, timeout=1, retry=lanes.RetryPolicy.fixed(2, 0)
    )
    seen: list[str] = []

    async def slow_then_fast() -> str:
        seen.append(REQUEST.get())
        if len(seen) == 1:
            await trio.sleep(2)  # the first attempt times out
        return "done"

    async with lanes.open_lane_system([lane]) as system:
        await system.run("work", request_id)  # a worker, parked: the next one runs natively
        REQUEST.set("caller")
        handle = await system.submit("work", slow_then_fast)
        assert await handle.result() == "done"
        assert handle.attempts == 2
    assert seen == ["caller", "caller"]


async def test_an_attempt_sees_what_the_previous_attempts_set(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Attempts run in one context one after the other, like a task that tries again: what
    one sets, the next sees (on a new worker, which adopts its copy of the context, or a
    parked one), and the submitter never does."""
    seen: list[str] = []

    async def flaky() -> str:
        seen.append(REQUEST.get())
        REQUEST.set(f"attempt {len(seen)}")
        await trio.sleep(0.1)
        if len(seen) < 3:
            raise OSError("flaky")
        return REQUEST.get()

    for backoff in (0.5, 5.0):  # the retry finds the worker parked, then reaped (a new one)
        seen.clear()
        lane = lanes.LaneConfig("work", 0, retry=lanes.RetryPolicy.fixed(3, backoff))
        async with lanes.open_lane_system((lane,)) as system:
            REQUEST.set("submitter")
            assert await system.run("work", flaky) == "attempt 3"
            assert REQUEST.get() == "submitter"
        assert seen == ["submitter", "attempt 1", "attempt 2"]


async def test_cancels_at_each_phase_leave_the_worker_in_its_own_context(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A command handed to a parked worker (its context set for the command's steps) and
    cancelled before its body starts, while it runs, or by its timeout: no slot or task is
    left, the worker parks in its own context, and the next command sees its own values."""
    lane = lanes.LaneConfig("work", 0, max_concurrency=1, timeout=5)
    async with lanes.open_lane_system([lane]) as system:
        await system.run("work", request_id)  # a parked worker from now on
        pool = system._core.pools["work"]
        (worker,) = pool._parked
        home = worker.context

        REQUEST.set("before start")
        handle = await system.submit("work", request_id)  # granted to the parked worker...
        assert worker.context is not home
        handle.cancel()  # ...and cancelled before its body ran
        with pytest.raises(lanes.CommandCancelled):
            await handle.result()

        REQUEST.set("while running")
        handle = await system.submit("work", request_id_after_a_sleep)
        await trio.sleep(0.5)
        handle.cancel()
        with pytest.raises(lanes.CommandCancelled):
            await handle.result()

        REQUEST.set("timed out")
        handle = await system.submit("work", trio.sleep, 10)
        with pytest.raises(lanes.CommandTimeout):
            await handle.result()

        await trio.testing.wait_all_tasks_blocked()
        assert pool._parked == [worker] and worker.context is home
        assert system.statistics().lanes["work"].active == 0
        REQUEST.set("next")
        assert await system.run("work", request_id) == "next"
