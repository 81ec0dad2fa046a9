"""No silent failures: a failure nobody retrieves is logged (or passed to a callback), once."""

from __future__ import annotations

import gc
import logging

import pytest
import trio
import trio.testing

import lanes

ONE = (lanes.LaneConfig("work", 0),)


async def boom() -> None:
    await trio.sleep(1)
    raise ValueError("the model returned garbage")


def reports(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "lanes" and "nobody retrieved" in r.message]


async def test_a_dropped_handle_failure_is_logged_at_the_failure_with_its_traceback(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        await system.submit("work", boom)  # the handle is dropped at once
        await trio.sleep(0.5)
        assert reports(caplog) == []
        await trio.sleep(1)
        (record,) = reports(caplog)
    assert record.levelno == logging.ERROR
    assert "boom" in record.getMessage()
    assert record.exc_info is not None
    error = record.exc_info[1]
    assert isinstance(error, lanes.CommandFailed)
    assert isinstance(error.__cause__, ValueError)
    assert "the model returned garbage" in caplog.text  # the traceback of the cause
    assert "in boom" in caplog.text


async def test_a_held_handle_is_reported_when_it_is_dropped_unretrieved(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit("work", boom)
        await trio.sleep(2)
        assert handle.status == "failed"
        assert reports(caplog) == []  # result() may still come
        del handle
        assert len(reports(caplog)) == 1  # at once (refcounting), not at some gc


async def test_nothing_is_logged_for_a_waiting_result_caller(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        with pytest.raises(lanes.CommandFailed):
            await system.run("work", boom)
        handle = await system.submit("work", boom)
        await trio.sleep(2)
        with pytest.raises(lanes.CommandFailed):
            await handle.result()  # retrieved later, while still held
        del handle
    gc.collect()
    assert reports(caplog) == []


async def test_a_result_caller_cancelled_before_the_failure_does_not_count(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit("work", boom)
        with trio.move_on_after(0.5):
            await handle.result()
        await trio.sleep(1)
        del handle
        assert len(reports(caplog)) == 1


async def test_reported_once_even_with_a_new_handle_by_key(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        first = await system.submit("work", boom, key="k")
        again = system.handle_for("k")
        assert again is first  # the same handle while it is held
        del first, again
        gc.collect()
        await trio.sleep(2)
        assert len(reports(caplog)) == 1


async def test_successes_and_cancellations_are_not_reported(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        await system.submit("work", trio.sleep, 1)
        handle = await system.submit("work", boom)
        handle.cancel()
        del handle
        await trio.sleep(2)
    assert reports(caplog) == []


async def test_failures_go_to_the_callback_instead(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[lanes.UnobservedFailure] = []
    async with lanes.open_lane_system(ONE, on_unobserved_failure=seen.append) as system:
        await system.submit("work", boom)
        await trio.sleep(2)
    assert reports(caplog) == []
    (failure,) = seen
    assert failure.lane == "work"
    assert failure.command_type == "boom"
    assert failure.attempts == 1
    assert isinstance(failure.error, lanes.CommandFailed)
    assert isinstance(failure.error.__cause__, ValueError)


async def test_a_timeout_is_a_failure_too(autojump_clock: trio.abc.Clock) -> None:
    seen: list[lanes.UnobservedFailure] = []
    async with lanes.open_lane_system(ONE, on_unobserved_failure=seen.append) as system:
        await system.submit("work", trio.sleep, 10, timeout=1)
        await trio.sleep(2)
    assert [type(f.error) for f in seen] == [lanes.CommandTimeout]


async def test_a_callback_that_raises_is_logged_not_raised(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(failure: lanes.UnobservedFailure) -> None:
        raise RuntimeError("callback bug")

    async with lanes.open_lane_system(ONE, on_unobserved_failure=broken) as system:
        await system.submit("work", boom)
        await trio.sleep(2)
        assert system.statistics().lanes["work"].failed == 1
    assert "on_unobserved_failure callback" in caplog.text
    assert "callback bug" in caplog.text


async def test_the_handle_is_not_kept_alive_by_its_command() -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle = await system.submit("work", trio.sleep, 1)
        cmd = handle._command
        del handle
        assert not cmd.handle_alive()  # no Command <-> handle cycle
        assert cmd.handle is cmd.handle  # a new one, the same while held
        cmd.handle.cancel()


def test_a_bad_callback_is_refused() -> None:
    with pytest.raises(lanes.LaneConfigError, match="on_unobserved_failure"):
        lanes.open_lane_system(ONE, on_unobserved_failure="log")  # type: ignore[arg-type]
