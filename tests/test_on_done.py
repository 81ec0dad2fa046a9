"""``submit(..., on_done=callback)``: a callback once the command has ended (lanes/_on_done.py)."""

from __future__ import annotations

import contextvars
import functools
import logging
from typing import Any

import pytest
import trio
import trio.testing

import lanes

WORK = lanes.LaneConfig("work", 0, max_concurrency=1, timeout=10)
REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("REQUEST", default="unset")


async def value(x: int, delay: float = 1) -> int:
    await trio.sleep(delay)
    return x


async def boom() -> None:
    await trio.sleep(1)
    raise ValueError("boom")


class Seen:
    """A callback that records what it saw of its handle, and when."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, float]] = []

    async def __call__(self, tag: str, handle: lanes.CommandHandle[Any]) -> None:
        try:
            outcome: Any = await handle.result()
        except lanes.LaneError as exc:
            outcome = type(exc).__name__
        self.calls.append((tag, handle.status.value, outcome, trio.current_time()))

    def cb(self, tag: str) -> Any:
        return functools.partial(self, tag)


async def test_it_runs_once_after_the_command_with_its_result(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen = Seen()
    async with lanes.open_lane_system([WORK]) as system:
        handle = await system.submit("work", value, 7, on_done=seen.cb("a"))
        assert await handle.result() == 7
        await trio.testing.wait_all_tasks_blocked()
        assert seen.calls == [("a", "done", 7, 1.0)]
    assert seen.calls == [("a", "done", 7, 1.0)]  # once


async def test_it_runs_outside_the_commands_slot_and_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The lane runs one command at a time: the next one runs while the first's callback
    waits; and a callback longer than the lane's timeout is not cut short."""
    release = trio.Event()
    order: list[str] = []

    async def slow_report(handle: lanes.CommandHandle[int]) -> None:
        order.append(f"report {await handle.result()} starts")
        await release.wait()
        await trio.sleep(15)  # longer than the lane's timeout (10 s)
        order.append("report ends")

    async with lanes.open_lane_system([WORK]) as system:
        await system.submit("work", value, 1, on_done=slow_report)
        second = await system.submit("work", value, 2)
        assert await second.result() == 2
        order.append("second done")
        release.set()
    assert order == ["report 1 starts", "second done", "report ends"]


async def test_failures_retries_and_dead_letters(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        await trio.sleep(1)
        if attempts < 3:
            raise ValueError(f"attempt {attempts}")
        return "ok"

    retrying = lanes.LaneConfig("retry", 1, retry=lanes.RetryPolicy.fixed(3, 1))
    seen = Seen()
    with caplog.at_level(logging.ERROR, logger="lanes"):
        async with lanes.open_lane_system([WORK, retrying]) as system:
            handle = await system.submit("retry", flaky, on_done=seen.cb("flaky"))
            await system.submit("work", boom, on_done=seen.cb("boom"))
            await system.drain()
            assert handle.attempts == 3
            assert len(system.dead_letters) == 1
    assert [(tag, status, outcome) for tag, status, outcome, _ in seen.calls] == [
        ("boom", "failed", "CommandFailed"),
        ("flaky", "done", "ok"),
    ]
    assert "never retrieved" not in caplog.text  # the callbacks retrieved both


async def test_a_failure_the_callback_ignores_is_reported_as_unobserved(
    autojump_clock: trio.abc.Clock,
) -> None:
    reported: list[str] = []
    called: list[str] = []

    async def ignore(handle: lanes.CommandHandle[Any]) -> None:
        called.append(handle.status.value)

    async with lanes.open_lane_system(
        [WORK], on_unobserved_failure=lambda failure: reported.append(failure.command_id)
    ) as system:
        await system.submit("work", boom, on_done=ignore)
        await system.drain()
    assert called == ["failed"]
    assert len(reported) == 1  # once, when the handle went


async def test_cancelled_queued_and_running_commands(autojump_clock: trio.abc.Clock) -> None:
    seen = Seen()
    async with lanes.open_lane_system([WORK]) as system:
        running = await system.submit("work", value, 1, 100, on_done=seen.cb("running"))
        queued = await system.submit("work", value, 2, on_done=seen.cb("queued"))
        await trio.testing.wait_all_tasks_blocked()
        queued.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert [c[:3] for c in seen.calls] == [("queued", "cancelled", "CommandCancelled")]
        assert await system.cancel_lane("work") == 1
        await trio.testing.wait_all_tasks_blocked()
        assert running.status == "cancelled"
    assert [c[0] for c in seen.calls] == ["queued", "running"]


async def test_a_key_adds_callbacks_to_the_command_holding_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen = Seen()
    async with lanes.open_lane_system([WORK]) as system:
        first = await system.submit("work", value, 1, key="k", on_done=seen.cb("first"))
        second = await system.submit("work", value, 2, key="k", on_done=seen.cb("second"))
        assert second is first
        await first.result()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(c[:3] for c in seen.calls) == [("first", "done", 1), ("second", "done", 1)]
        # A finished command kept by its key: a later callback starts at once.
        kept = await system.submit(
            "work", value, 3, key="h", dedup=lanes.Dedup.hold(ttl=60), on_done=seen.cb("h1")
        )
        await kept.result()
        again = await system.submit(
            "work", value, 4, key="h", dedup=lanes.Dedup.hold(ttl=60), on_done=seen.cb("h2")
        )
        assert again is kept
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(c[:3] for c in seen.calls[2:]) == [("h1", "done", 3), ("h2", "done", 3)]


@pytest.mark.parametrize(
    ("callback", "says"),
    [
        (print, "is not an async function"),
        (lambda handle: None, "is not an async function"),
        (42, "must be an async function"),
        (boom, "one argument"),  # takes no argument
        (functools.partial(Seen(), "a", "b"), "one argument"),
    ],
)
async def test_bad_callbacks_are_refused_and_nothing_is_accepted(
    autojump_clock: trio.abc.Clock, callback: Any, says: str
) -> None:
    async with lanes.open_lane_system([WORK]) as system:
        for submit in (system.submit, system.submit_streaming):
            with pytest.raises(lanes.LaneUsageError, match=says):
                await submit("work", value, 1, on_done=callback)
        with pytest.raises(lanes.LaneUsageError, match=says):
            system.submit_nowait("work", value, 1, on_done=callback)
        assert system.statistics().lanes["work"].submitted == 0
        assert system._core.callbacks is None


async def test_close_now_cancels_running_callbacks_and_later_ones_start_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    events: list[str] = []

    async def forever(handle: lanes.CommandHandle[Any]) -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            events.append(f"cancelled after {handle.status.value}")
            raise

    async with lanes.open_lane_system([WORK]) as system:
        done = await system.submit("work", value, 1, on_done=forever)
        await done.result()
        await system.submit("work", value, 2, 100, on_done=forever)  # running, then cancelled
        await trio.testing.wait_all_tasks_blocked()
        system.close_now()
        await trio.testing.wait_all_tasks_blocked()  # still in the block: close_now did it
        assert sorted(events) == ["cancelled after cancelled", "cancelled after done"]
    assert trio.current_time() < 2  # nothing waited for the callbacks


async def test_an_error_in_the_body_cancels_running_callbacks(
    autojump_clock: trio.abc.Clock,
) -> None:
    cancelled = trio.Event()

    async def forever(handle: lanes.CommandHandle[Any]) -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    with pytest.raises(KeyError):
        async with lanes.open_lane_system([WORK]) as system:
            await (await system.submit("work", value, 1, on_done=forever)).result()
            await trio.testing.wait_all_tasks_blocked()
            raise KeyError("body")
    assert cancelled.is_set()


async def test_a_normal_exit_waits_for_callbacks(autojump_clock: trio.abc.Clock) -> None:
    ended: list[float] = []

    async def slow(handle: lanes.CommandHandle[Any]) -> None:
        await trio.sleep(5)
        ended.append(trio.current_time())

    async with lanes.open_lane_system([WORK]) as system:
        await system.submit("work", value, 1, on_done=slow)
    assert ended == [6.0]
    assert trio.current_time() == 6.0


async def test_a_drain_deadline_cancels_callbacks_and_later_ones_run(
    autojump_clock: trio.abc.Clock,
) -> None:
    seen = Seen()
    stopped: list[float] = []

    async def slow(handle: lanes.CommandHandle[Any]) -> None:
        try:
            await trio.sleep(100)
        finally:
            stopped.append(trio.current_time())

    async with lanes.open_lane_system([WORK]) as system:
        await system.submit("work", value, 1, on_done=slow)
        with pytest.raises(lanes.DrainTimeout, match=r"1 running on_done callback"):
            await system.drain(timeout=3)
        assert stopped == [3.0]
        handle = await system.submit("work", value, 2, on_done=seen.cb("after"))
        await handle.result()
        await trio.testing.wait_all_tasks_blocked()
        assert [c[:3] for c in seen.calls] == [("after", "done", 2)]  # not started cancelled


async def test_the_exit_drain_deadline_cancels_callbacks(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async def slow(handle: lanes.CommandHandle[Any]) -> None:
        await trio.sleep(100)

    with caplog.at_level(logging.WARNING, logger="lanes"):
        async with lanes.open_lane_system([WORK], drain_timeout=2) as system:
            await system.submit("work", value, 1, on_done=slow)
    assert trio.current_time() == 2.0
    assert "on_done callback" in caplog.text


async def test_an_exception_in_a_callback_propagates_out_of_the_block(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def broken(handle: lanes.CommandHandle[Any]) -> None:
        raise RuntimeError("report failed")

    with pytest.raises(RuntimeError, match="report failed"):
        async with lanes.open_lane_system([WORK]) as system:
            await system.submit("work", value, 1, on_done=broken)
            await trio.sleep_forever()  # cancelled by the callback's error


async def test_a_callback_runs_in_its_submitters_context(autojump_clock: trio.abc.Clock) -> None:
    saw: list[str] = []

    async def sets() -> None:
        REQUEST.set("set by the command")
        await trio.sleep(1)

    async def report(handle: lanes.CommandHandle[Any]) -> None:
        saw.append(REQUEST.get())

    async with lanes.open_lane_system([WORK]) as system:
        REQUEST.set("the submitter's")
        await system.submit("work", sets, on_done=report)
        REQUEST.set("changed after submit")
    assert saw == ["the submitter's"]


async def test_streaming_and_nowait_submits_take_it(autojump_clock: trio.abc.Clock) -> None:
    seen = Seen()

    async def stream() -> int:
        for i in range(3):
            await lanes.send_partial(i)
        return 3

    async with lanes.open_lane_system([WORK]) as system:
        handle = await system.submit_streaming("work", stream, on_done=seen.cb("stream"))
        assert [item async for item in handle] == [0, 1, 2]
        system.submit_nowait("work", value, 5, on_done=seen.cb("nowait"))
    assert [c[:3] for c in seen.calls] == [("stream", "done", 3), ("nowait", "done", 5)]


async def test_an_idle_system_keeps_no_callback_task_or_scope(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system([WORK]) as system:
        handle = await system.submit("work", value, 1, on_done=Seen().cb("a"))
        await handle.result()
        await trio.sleep(5)  # idle: workers reaped too
        callbacks = system._core.callbacks
        assert callbacks is not None
        assert callbacks.running == 0
        assert callbacks._scope is None
        nursery = system._lane_nursery
        assert nursery is not None
        assert nursery.child_tasks == set()
