"""``system.commands()`` lists live commands; ``lanes.report_progress()`` feeds it."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import lanes
from lanes import LaneConfig
from lanes._listing import LOG_LINES

LANES = [LaneConfig("work", 0, max_concurrency=1), LaneConfig("other", 1, max_concurrency=2)]


async def crawl(pages: int) -> int:
    for page in range(pages):
        lanes.report_progress(page, pages, message=f"page {page}")
        await trio.sleep(1)
    lanes.report_progress(pages, pages, message="done")
    return pages


async def test_lists_live_commands_with_state_age_and_progress(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(LANES) as system:
        running = await system.submit("work", crawl, 10, key="crawl")
        waiting = await system.submit("work", crawl, 2, priority=3)
        delayed = await system.submit("other", crawl, 1, delay=60)
        await trio.sleep(3.5)
        listing = system.commands()
        assert [(c.id, c.lane, c.state) for c in listing] == [
            (running.id, "work", "running"),
            (waiting.id, "work", "waiting"),
            (delayed.id, "other", "delayed"),
        ]
        first = listing[0]
        assert first.type == "crawl"
        assert first.key == "crawl"
        assert first.attempts == 1
        assert first.age == 3.5
        assert first.running_for == 3.5
        assert first.progress is not None
        assert (first.progress.done, first.progress.total, first.progress.fraction) == (
            3.0,
            10,
            0.3,
        )
        assert first.log == ("page 0", "page 1", "page 2", "page 3")
        assert running.progress == first.progress
        second = listing[1]
        assert (second.priority, second.running_for, second.progress, second.log) == (
            3,
            None,
            None,
            (),
        )
        # filters and pages
        assert [c.id for c in system.commands("other")] == [delayed.id]
        assert [c.id for c in system.commands(state="waiting")] == [waiting.id]
        assert [c.id for c in system.commands(state=["delayed", "running"])] == [
            running.id,
            delayed.id,
        ]
        assert [c.id for c in system.commands(offset=1, limit=1)] == [waiting.id]
        assert system.commands(offset=3) == []
        running.cancel()
        await trio.testing.wait_all_tasks_blocked()
        # a finished command leaves the listing; the next one runs
        assert [(c.id, c.state) for c in system.commands("work")] == [(waiting.id, "running")]
        system.close_now()


async def test_only_the_latest_log_lines_are_kept(autojump_clock: trio.abc.Clock) -> None:
    async def chatty() -> None:
        for n in range(LOG_LINES + 5):
            lanes.report_progress(message=f"line {n}")
        lanes.report_progress(7)  # done without a total
        await trio.sleep(10)

    async with lanes.open_lane_system(LANES) as system:
        handle = await system.submit("work", chatty)
        await trio.sleep(1)
        (info,) = system.commands()
        assert info.log == tuple(f"line {n}" for n in range(5, LOG_LINES + 5))
        assert info.progress is not None
        assert (info.progress.done, info.progress.total, info.progress.fraction) == (7, None, None)
        assert info.progress.at == trio.current_time() - 1
        handle.cancel()


async def test_report_progress_checks_its_arguments(autojump_clock: trio.abc.Clock) -> None:
    errors: list[str] = []

    async def body() -> None:
        for kwargs in (
            {"done": -1},
            {"done": float("nan")},
            {"done": True},
            {"done": "1"},
            {"done": 1, "total": -2},
            {"total": 5},
            {"message": 42},
        ):
            try:
                lanes.report_progress(**kwargs)  # type: ignore[arg-type]
            except lanes.LaneConfigError as exc:
                errors.append(str(exc))
        await trio.lowlevel.checkpoint()

    async with lanes.open_lane_system(LANES) as system:
        await system.run("work", body)
    assert len(errors) == 7
    assert "done=-1 is invalid" in errors[0]
    assert "total= given without done=" in errors[5]
    assert "message=42 is invalid" in errors[6]


def test_report_progress_outside_a_command_is_a_usage_error() -> None:
    with pytest.raises(lanes.LaneUsageError, match=r"report_progress\(\) called outside"):
        lanes.report_progress(1)


async def test_commands_checks_its_arguments() -> None:
    async with lanes.open_lane_system(LANES) as system:
        with pytest.raises(lanes.UnknownLaneError, match="nope"):
            system.commands("nope")
        with pytest.raises(lanes.LaneConfigError, match="state='done' is invalid"):
            system.commands(state="done")
        with pytest.raises(lanes.LaneConfigError, match=r"state=\[\] is invalid"):
            system.commands(state=[])
        with pytest.raises(lanes.LaneConfigError, match="offset"):
            system.commands(offset=-1)
        with pytest.raises(lanes.LaneConfigError, match="limit"):
            system.commands(limit=0)
        with pytest.raises(lanes.LaneUsageError, match="commands"):
            await trio.to_thread.run_sync(system.commands)
        assert system.commands() == []


async def test_a_retry_keeps_its_last_report_and_shows_delayed(
    autojump_clock: trio.abc.Clock,
) -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        lanes.report_progress(calls, 3, message=f"attempt {calls}")
        await trio.sleep(1)
        if calls < 3:
            raise ValueError("again")

    retry = lanes.RetryPolicy.fixed(2, delay=10)
    config = [LaneConfig("work", 0, retry=retry)]
    async with lanes.open_lane_system(config) as system:
        handle = await system.submit("work", flaky)
        await trio.sleep(5)  # the first attempt failed at t=1; the retry is due at 11
        (info,) = system.commands()
        assert (info.state, info.attempts, info.log) == ("delayed", 1, ("attempt 1",))
        await handle.result()
        assert handle.progress is not None and handle.progress.done == 3


async def test_waiting_commands_carry_their_position_in_start_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(LANES) as system:
        running = await system.submit("work", crawl, 10)
        first = await system.submit("work", crawl, 1)
        urgent = await system.submit("work", crawl, 1, priority=-1)
        delayed = await system.submit("work", crawl, 1, delay=60)
        later = await system.submit("work", crawl, 1, priority=2)
        other = await system.submit("other", crawl, 1)  # runs at once: no position
        await trio.testing.wait_all_tasks_blocked()
        listing = {c.id: c.position for c in system.commands()}
        assert listing == {
            running.id: None,
            first.id: 1,
            urgent.id: 0,
            delayed.id: None,
            later.id: 2,
            other.id: None,
        }
        handles = (first, urgent, later)
        assert [listing[h.id] for h in handles] == [h.position for h in handles]
        # a page far into the listing still gets the places of the whole lane
        (page,) = system.commands("work", state="waiting", offset=2, limit=1)
        assert (page.id, page.position) == (later.id, 2)
        urgent.cancel()
        waiting = system.commands("work", state="waiting")
        assert [(c.id, c.position) for c in waiting] == [(first.id, 0), (later.id, 1)]
        system.close_now()


async def test_positions_in_a_fifo_lane_skip_cancelled_and_follow_requeues(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(LANES) as system:
        await system.submit("work", crawl, 100)  # runs: the others wait
        late = await system.submit("work", crawl, 1, delay=5)
        handles = [await system.submit("work", crawl, 1) for _ in range(4)]
        handles[1].cancel()
        await trio.sleep(6)  # ``late`` is due: it queues behind the others
        listing = system.commands("work", state="waiting")
        assert [c.id for c in listing] == [late.id, handles[0].id, handles[2].id, handles[3].id]
        assert [c.position for c in listing] == [3, 0, 1, 2]
        assert [c.position for c in listing] == [
            h.position for h in (late, handles[0], handles[2], handles[3])
        ]
        (first,) = system.commands("work", state="waiting", offset=1, limit=1)
        assert (first.id, first.position) == (handles[0].id, 0)
        system.close_now()
