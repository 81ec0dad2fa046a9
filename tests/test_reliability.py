"""Retries with backoff, Permanent failures, timeouts as failed attempts, dead letters."""

from __future__ import annotations

import itertools

import pytest
import trio

import lanes
from lanes import LaneConfig, RetryPolicy
from lanes import events as ev

from .helpers import boom, noop, sleeper


def failing(times: int, stamps: list[float]):  # type: ignore[no-untyped-def]
    """An async function that fails ``times`` times, then returns "ok"."""

    async def run() -> str:
        stamps.append(trio.current_time())
        if len(stamps) <= times:
            raise RuntimeError(f"failure {len(stamps)}")
        return "ok"

    return run


@pytest.mark.parametrize(
    ("policy", "gaps"),
    [
        (RetryPolicy.fixed(3, 2.0), [2.0, 2.0, 2.0]),
        (RetryPolicy.exponential(4), [0.1, 0.2, 0.4, 0.8]),
        (RetryPolicy.exponential(4, initial_delay=1, multiplier=3, max_delay=5), [1, 3, 5, 5]),
    ],
)
async def test_retry_delays_are_exact(
    autojump_clock: trio.abc.Clock, policy: RetryPolicy, gaps: list[float]
) -> None:
    stamps: list[float] = []
    config = LaneConfig("work", 0, retry=policy)
    async with lanes.open_lane_system([config]) as system:
        handle = await system.submit("work", failing(len(gaps), stamps))
        assert await handle.result() == "ok"
        assert handle.attempts == len(gaps) + 1
        stats = system.statistics().lanes["work"]
        assert (stats.retried, stats.completed, stats.failed) == (len(gaps), 1, 0)
    assert [b - a for a, b in itertools.pairwise(stamps)] == pytest.approx(gaps)


async def test_exhausted_retries_dead_letter_once(autojump_clock: trio.abc.Clock) -> None:
    stamps: list[float] = []
    config = LaneConfig("work", 0, retry=RetryPolicy.fixed(2, 1.0))
    async with lanes.open_lane_system([config]) as system:
        async with system.subscribe(ev.Retrying, ev.Failed, ev.DeadLettered) as stream:
            handle = await system.submit("work", failing(10, stamps))
            with pytest.raises(lanes.CommandFailed, match="after 3 attempt") as info:
                await handle.result()
            seen = [stream.receive_nowait() for _ in range(4)]
        assert isinstance(info.value.__cause__, RuntimeError)
        assert str(info.value.__cause__) == "failure 3"
        assert len(stamps) == 3
        assert handle.status == "failed"
        assert [type(e) for e in seen] == [ev.Retrying, ev.Retrying, ev.Failed, ev.DeadLettered]
        assert [e.delay for e in seen[:2]] == [1.0, 1.0]  # type: ignore[attr-defined]
        stats = system.statistics().lanes["work"]
        assert (stats.retried, stats.failed, stats.dead_lettered) == (2, 1, 1)
        letters = system.dead_letters.list()
        assert len(system.dead_letters) == 1
        letter = letters[0]
        assert (letter.id, letter.lane, letter.attempts) == (handle.id, "work", 3)
        assert letter.command_type.endswith("run")
        assert "failure 3" in letter.error


async def test_permanent_skips_retries(autojump_clock: trio.abc.Clock) -> None:
    calls = 0

    async def bad_request() -> None:
        nonlocal calls
        calls += 1
        raise lanes.Permanent(ValueError("bad request"))

    config = LaneConfig("work", 0, retry=RetryPolicy.fixed(5, 1))
    async with lanes.open_lane_system([config]) as system:
        with pytest.raises(lanes.CommandFailed) as info:
            await system.run("work", bad_request)
        assert calls == 1
        assert isinstance(info.value.__cause__, ValueError)
        assert system.statistics().lanes["work"].retried == 0
        assert len(system.dead_letters) == 1


async def test_timeout_is_a_failed_attempt_that_is_retried(
    autojump_clock: trio.abc.Clock,
) -> None:
    durations = iter([10, 10, 1])

    async def sometimes_slow() -> str:
        await trio.sleep(next(durations))
        return "finally"

    config = LaneConfig("work", 0, timeout=2, retry=RetryPolicy.fixed(2, 0.5))
    async with lanes.open_lane_system([config]) as system:
        assert await system.run("work", sometimes_slow) == "finally"
        assert trio.current_time() == pytest.approx(2 + 0.5 + 2 + 0.5 + 1)
        stats = system.statistics().lanes["work"]
        assert (stats.timed_out, stats.retried, stats.completed, stats.failed) == (2, 2, 1, 0)


async def test_last_attempt_timing_out_dead_letters_with_command_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    config = LaneConfig("work", 0, timeout=1, retry=RetryPolicy.fixed(1, 0))
    async with lanes.open_lane_system([config]) as system:
        with pytest.raises(lanes.CommandTimeout, match="attempt 2"):
            await system.run("work", sleeper, 10)
        stats = system.statistics().lanes["work"]
        assert (stats.timed_out, stats.failed, stats.dead_lettered) == (2, 1, 1)
        assert "TooSlowError" in system.dead_letters.list()[0].error


async def test_success_is_never_retried(autojump_clock: trio.abc.Clock) -> None:
    config = LaneConfig("work", 0, retry=RetryPolicy.fixed(5, 1))
    async with lanes.open_lane_system([config]) as system:
        handle = await system.submit("work", noop)
        assert await handle.result() == 1
        assert handle.attempts == 1
        assert system.statistics().lanes["work"].retried == 0


async def test_jitter_shortens_delays_within_bounds(autojump_clock: trio.abc.Clock) -> None:
    stamps: list[float] = []
    policy = RetryPolicy.exponential(5, initial_delay=1, multiplier=2, max_delay=8, jitter=0.5)
    async with lanes.open_lane_system([LaneConfig("work", 0, retry=policy)]) as system:
        await system.run("work", failing(5, stamps))
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    for gap, nominal in zip(gaps, [1, 2, 4, 8, 8], strict=True):
        assert nominal * 0.5 <= gap + 1e-9 <= nominal


async def test_dead_letter_queue_is_bounded_and_counts_evictions(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(dead_letter_limit=3) as system:
        handles = [await system.submit("query", boom, f"e{i}") for i in range(5)]
        for handle in handles:
            with pytest.raises(lanes.CommandFailed):
                await handle.result()
        letters = system.dead_letters.list()
        assert [letter.id for letter in letters] == [h.id for h in handles[2:]]
        stats = system.statistics()
        assert (stats.dead_letters, stats.dead_letters_evicted) == (3, 2)


async def test_dead_letter_pop_requeue_clear(autojump_clock: trio.abc.Clock) -> None:
    calls = 0

    async def fails_first_run() -> str:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("not yet")
        return "recovered"

    config = LaneConfig("work", 0, retry=RetryPolicy.fixed(1, 1))
    async with lanes.open_lane_system([config]) as system:
        first = await system.submit("work", fails_first_run)
        with pytest.raises(lanes.CommandFailed):
            await first.result()
        with pytest.raises(lanes.DeadLetterNotFound, match="no dead letter with id 'nope'"):
            await system.dead_letters.requeue("nope")
        again = await system.dead_letters.requeue(first.id)
        assert len(system.dead_letters) == 0
        assert await again.result() == "recovered"
        assert again.attempts == 1  # a fresh attempt count

        for i in range(3):
            with pytest.raises(lanes.CommandFailed):
                await system.run("work", boom, str(i))
        popped = await system.dead_letters.pop()
        assert popped is not None
        assert "'0'" in popped.error
        assert await system.dead_letters.clear() == 2
        assert await system.dead_letters.pop() is None
        assert len(system.dead_letters) == 0


async def test_requeue_keeps_the_letter_when_the_submit_fails(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system() as system:
        with pytest.raises(lanes.CommandFailed):
            await system.run("query", boom)
        letter = system.dead_letters.list()[0]
        await system.shutdown()
        with pytest.raises(lanes.ShutdownInProgress):
            await system.dead_letters.requeue(letter.id)
        assert letter.id in system.dead_letters
