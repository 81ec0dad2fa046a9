"""Streaming partial results: submit_streaming, send_partial, handle.partials()."""

from __future__ import annotations

import gc

import pytest
import trio
import trio.lowlevel
import trio.testing

import lanes

ONE = (lanes.LaneConfig("llm", 0, max_concurrency=1),)


async def tokens(n: int, gap: float = 0.1) -> str:
    for i in range(n):
        await trio.sleep(gap)
        await lanes.send_partial(f"t{i}")
    return "done"


async def test_partials_arrive_as_sent_then_the_result(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit_streaming("llm", tokens, 3)
        seen = []
        async for token in handle:
            seen.append((token, trio.current_time()))
        assert [t for t, _ in seen] == ["t0", "t1", "t2"]
        assert seen[1][1] - seen[0][1] == pytest.approx(0.1)  # as they come, not at the end
        assert await handle.result() == "done"


async def test_a_slow_reader_slows_the_command(autojump_clock: trio.abc.Clock) -> None:
    sent: list[int] = []

    async def fast() -> None:
        for i in range(10):
            await lanes.send_partial(i)
            sent.append(i)

    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit_streaming("llm", fast, buffer=2)
        parts = handle.partials()
        await trio.testing.wait_all_tasks_blocked()
        assert sent == [0, 1]  # the buffer is full: the third send waits
        got = []
        async for item in parts:
            got.append(item)
            await trio.sleep(1)
            assert len(sent) - len(got) <= 2  # never more than the buffer unread
        assert got == list(range(10))


async def test_without_streaming_send_partial_is_a_no_op() -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit("llm", tokens, 100, 0)
        assert await handle.result() == "done"
        with pytest.raises(lanes.LaneUsageError, match="submit_streaming"):
            handle.partials()


async def test_awaiting_only_the_result_never_blocks_the_command() -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit_streaming("llm", tokens, 50, 0, buffer=1)
        assert await handle.result() == "done"
        with pytest.raises(lanes.LaneUsageError, match="dropped"):
            handle.partials()


async def test_a_reader_that_stops_does_not_block_the_command(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit_streaming("llm", tokens, 20, buffer=1)
        async for token in handle:
            assert token == "t0"
            break  # the iterator is dropped unfinished: the stream stops
        with trio.fail_after(5):
            assert await handle.result() == "done"


async def test_aclose_stops_the_stream(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit_streaming("llm", tokens, 20, buffer=1)
        parts = handle.partials()
        assert await parts.__anext__() == "t0"
        await parts.aclose()
        with trio.fail_after(5):
            assert await handle.result() == "done"
        with pytest.raises(StopAsyncIteration):
            await parts.__anext__()


async def test_one_iterator_read_in_several_loops(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit_streaming("llm", tokens, 4)
        parts = handle.partials()
        first = []
        async for token in parts:
            first.append(token)
            if len(first) == 2:
                break
        with pytest.raises(lanes.LaneUsageError, match="already being read"):
            handle.partials()  # one reader at a time: `parts` is still open
        rest = [token async for token in parts]
        assert first + rest == ["t0", "t1", "t2", "t3"]


async def test_dropping_the_handle_stops_the_stream(autojump_clock: trio.abc.Clock) -> None:
    finished = trio.Event()

    async def chatty() -> None:
        for i in range(10):
            await lanes.send_partial(i)
        finished.set()

    async with lanes.open_lane_system(ONE) as system:
        await system.submit_streaming("llm", chatty, buffer=1)  # handle dropped at once
        gc.collect()
        with trio.fail_after(5):
            await finished.wait()


async def test_a_cancel_ends_the_stream_after_what_was_sent(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit_streaming("llm", tokens, 10)
        got = []
        async for token in handle:
            got.append(token)
            if len(got) == 2:
                handle.cancel()
        assert got == ["t0", "t1"]
        with pytest.raises(lanes.CommandCancelled):
            await handle.result()


async def test_cancel_while_the_command_waits_for_the_reader(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit_streaming("llm", tokens, 10, 0, buffer=1)
        parts = handle.partials()
        await trio.testing.wait_all_tasks_blocked()  # blocked sending t1
        handle.cancel()
        assert [t async for t in parts] == ["t0"]  # what was buffered, then the end
        with pytest.raises(lanes.CommandCancelled):
            await handle.result()
        assert system.statistics().lanes["llm"].active == 0


async def test_cancelling_the_reader_loses_nothing(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit_streaming("llm", tokens, 3, 1.0)
        parts = handle.partials()
        with trio.move_on_after(0.5):
            await parts.__anext__()  # nothing sent yet: cancelled while waiting
        assert [t async for t in parts] == ["t0", "t1", "t2"]


async def test_a_timeout_ends_the_stream_and_result_raises(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit_streaming("llm", tokens, 10, 1.0, timeout=2.5)
        assert [t async for t in handle] == ["t0", "t1"]
        with pytest.raises(lanes.CommandTimeout):
            await handle.result()


RETRYING = (lanes.LaneConfig("llm", 0, retry=lanes.RetryPolicy.fixed(1, 1.0)),)


async def test_a_retry_of_a_half_read_stream_raises_stream_restarted(
    autojump_clock: trio.abc.Clock,
) -> None:
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        await lanes.send_partial(f"a{attempts}-0")
        await lanes.send_partial(f"a{attempts}-1")
        await trio.sleep(0.1)
        if attempts == 1:
            raise RuntimeError("connection reset")
        return "ok"

    async with lanes.open_lane_system(RETRYING) as system:
        handle = await system.submit_streaming("llm", flaky)
        got = []
        with pytest.raises(lanes.StreamRestarted, match="attempt 2"):
            async for token in handle:
                got.append(token)
        assert got == ["a1-0", "a1-1"]
        assert [t async for t in handle] == ["a2-0", "a2-1"]  # the new attempt, from its start
        assert await handle.result() == "ok"


async def test_a_retry_before_anything_was_read_restarts_silently(
    autojump_clock: trio.abc.Clock,
) -> None:
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        await lanes.send_partial(f"a{attempts}")
        if attempts == 1:
            raise RuntimeError("boom")
        return "ok"

    async with lanes.open_lane_system(RETRYING) as system:
        handle = await system.submit_streaming("llm", flaky)
        parts = handle.partials()
        await trio.sleep(0.5)  # attempt 1 sent a1 and failed; nobody read it
        assert [t async for t in parts] == ["a2"]  # the failed attempt's partial is gone
        assert await handle.result() == "ok"


async def test_send_partial_outside_a_command_raises() -> None:
    with pytest.raises(lanes.LaneUsageError, match="outside a command"):
        await lanes.send_partial("x")


async def test_send_partial_from_a_task_the_command_started(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def fan_out() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lanes.send_partial, "child")

    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit_streaming("llm", fan_out)
        assert [t async for t in handle] == ["child"]


@pytest.mark.parametrize("buffer", [0, -1, 1.5, True, "2"])
async def test_bad_buffer_is_refused_before_anything_is_accepted(buffer: object) -> None:
    async with lanes.open_lane_system(ONE) as system:
        with pytest.raises(lanes.LaneConfigError, match="buffer="):
            await system.submit_streaming("llm", tokens, 1, buffer=buffer)  # type: ignore[arg-type]
        assert system.statistics().lanes["llm"].submitted == 0


async def test_a_shared_key_returns_the_streaming_handle(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE) as system:
        first = await system.submit_streaming("llm", tokens, 2, key="turn-1")
        second = await system.submit_streaming("llm", tokens, 2, key="turn-1")
        assert first is second
        assert [t async for t in first] == ["t0", "t1"]


async def test_preemption_restarts_the_stream(autojump_clock: trio.abc.Clock) -> None:
    configs = (
        lanes.LaneConfig("control", 0),
        lanes.LaneConfig("llm", 5, preemptible=True),
    )

    async def stop() -> None:
        await trio.lowlevel.checkpoint()

    async with lanes.open_lane_system(configs, max_concurrency=1) as system:
        handle = await system.submit_streaming("llm", tokens, 3, 1.0)
        parts = handle.partials()
        assert await parts.__anext__() == "t0"
        await system.run("control", stop)  # takes the slot: the model call starts over
        with pytest.raises(lanes.StreamRestarted):
            await parts.__anext__()
        assert [t async for t in handle] == ["t0", "t1", "t2"]
        assert await handle.result() == "done"
