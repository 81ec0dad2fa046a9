"""SharedLimit: app-wide limits across many lane systems, fair between them, leak-free."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest
import trio
import trio.testing

import lanes
from lanes import LaneConfig, LaneConfigError, RateLimit, SharedLimit
from lanes._shared import SharedMember as Member

from .helpers import Recorder
from .test_idle import steps_while_sleeping


def session_lanes(limit: SharedLimit, *, max_concurrency: int = 4) -> list[LaneConfig]:
    return [
        LaneConfig("control", 0, max_concurrency=2),
        LaneConfig("prompt", 5, max_concurrency=max_concurrency, shared_limit=limit),
    ]


@contextlib.asynccontextmanager
async def sessions(
    count: int, configs: Sequence[LaneConfig]
) -> AsyncIterator[list[lanes.LaneSystem]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(lanes.open_lane_system(configs)) for _ in range(count)
        ]


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, True, 2.5, "3"])
def test_bad_max_concurrency_is_named(value: object) -> None:
    with pytest.raises(LaneConfigError, match=rf"max_concurrency.*{value!r}"):
        SharedLimit(value)  # type: ignore[arg-type]


def test_a_limit_must_limit_something() -> None:
    with pytest.raises(LaneConfigError, match="max_concurrency, rate_limit, or both"):
        SharedLimit()


def test_bad_rate_limit_and_name() -> None:
    with pytest.raises(LaneConfigError, match=r"rate_limit.*'5/s'"):
        SharedLimit(rate_limit="5/s")  # type: ignore[arg-type]
    with pytest.raises(LaneConfigError, match="name"):
        SharedLimit(3, name="")


def test_lane_config_checks_the_type() -> None:
    with pytest.raises(LaneConfigError, match=r"shared_limit.*20.*SharedLimit"):
        LaneConfig("prompt", 5, shared_limit=20)  # type: ignore[arg-type]


# -- the mechanics, on bare members ------------------------------------------------------


def members(limit: SharedLimit, *names: str, priority: int = 5) -> tuple[list[str], list[Member]]:
    woken: list[str] = []
    made = []
    for name in names:
        member = limit.attach(name, priority)
        member.wake = lambda name=name: woken.append(name)  # type: ignore[misc]
        made.append(member)
    return woken, made


def test_a_freed_slot_is_granted_to_the_fairest_waiter_and_can_be_given_back() -> None:
    limit = SharedLimit(1)
    woken, (a, b, c) = members(limit, "a", "b", "c")
    assert limit.available(a, 0.0)
    limit.take(a, 0.0)
    for member in (b, c):
        assert not limit.available(member, 0.0)
        limit.wait(member)
    limit.release(a)  # the slot is free: the fairest waiter (b, the first) is woken
    assert woken == ["b"]
    assert not limit.available(c, 0.0)  # c's check grants the slot to b, not to c
    assert (b.tickets, b.held, woken) == (1, 1, ["b", "b"])
    limit.give_back(b, 0.0)  # b's command went away before it started: c is next
    assert (b.tickets, b.held, c.tickets, woken[-1]) == (0, 0, 1, "c")
    assert limit.available(c, 0.0)
    limit.take(c, 0.0)
    assert limit.statistics() == lanes.SharedLimitStatistics("shared", 1, 1, 0, 3, 2)


def test_a_detached_member_gives_back_what_it_held() -> None:
    limit = SharedLimit(2)
    woken, (a, b) = members(limit, "a", "b")
    for _ in range(2):
        assert limit.available(a, 0.0)
        limit.take(a, 0.0)
    assert not limit.available(b, 0.0)
    limit.wait(b)
    limit.detach(a)
    assert woken == ["b"]
    assert limit.statistics().in_use == 0
    assert limit.available(b, 0.0)


def test_only_the_fairest_waiter_keeps_the_token_timer() -> None:
    limit = SharedLimit(rate_limit=RateLimit.per_second(1))
    _, (a, b, c) = members(limit, "a", "b", "c")
    limit.take(a, 0.0)  # the only token
    for member in (b, c):
        assert not limit.available(member, 0.0)
        limit.wait(member)
    assert limit.next_wakeup(b, 0.0) == pytest.approx(1.0)
    assert limit.next_wakeup(c, 0.0) is None
    assert limit.next_wakeup(a, 0.0) is None
    limit.withdraw(b)
    assert limit.next_wakeup(c, 0.0) == pytest.approx(1.0)


# -- the bound -----------------------------------------------------------------------------


async def test_the_limit_holds_across_systems(autojump_clock: trio.abc.Clock) -> None:
    llm = SharedLimit(3, name="llm")
    recorder = Recorder()
    async with sessions(5, session_lanes(llm)) as systems:
        handles = [
            await system.submit("prompt", recorder.job((s, i)))
            for s, system in enumerate(systems)
            for i in range(4)
        ]
        assert llm.statistics().in_use == 3
        for handle in handles:
            await handle.result()
    assert recorder.peak == 3
    assert trio.current_time() == pytest.approx(7.0)  # 20 one-second calls, 3 at a time
    assert llm.statistics() == lanes.SharedLimitStatistics("llm", 3, 0, 0, 0, 17)


async def test_other_lanes_are_not_held_back(autojump_clock: trio.abc.Clock) -> None:
    """A lane waiting for the shared limit does not block the other lanes of its system."""
    llm = SharedLimit(1)
    recorder = Recorder()
    async with sessions(2, session_lanes(llm)) as (first, second):
        busy = await first.submit("prompt", recorder.job("llm", 10))
        waiting = await second.submit("prompt", recorder.job("waits"))
        assert await second.run("control", recorder.job("stop", 0.1)) == "stop"
        assert trio.current_time() == pytest.approx(0.1)
        assert waiting.status is lanes.CommandStatus.PENDING
        await busy.result()
        await waiting.result()
    assert recorder.started == ["llm", "stop", "waits"]


# -- fairness --------------------------------------------------------------------------


async def test_equal_priority_sessions_take_turns(autojump_clock: trio.abc.Clock) -> None:
    """One session queued five calls first; the others still get every other turn."""
    llm = SharedLimit(1)
    recorder = Recorder()
    async with sessions(3, session_lanes(llm)) as systems:
        handles = [await systems[0].submit("prompt", recorder.job(("a", i))) for i in range(5)]
        for name, system in zip("bc", systems[1:], strict=True):
            handles += [await system.submit("prompt", recorder.job((name, i))) for i in range(3)]
        for handle in handles:
            await handle.result()
    order = "".join(name for name, _ in recorder.started)
    assert order == "abcabcabcaa"


async def test_slots_go_to_whoever_holds_fewest(autojump_clock: trio.abc.Clock) -> None:
    """A busy session holding every slot gets none back until the newcomer has its share."""
    llm = SharedLimit(4)
    recorder = Recorder()
    async with sessions(2, session_lanes(llm)) as (busy, newcomer):
        # busy's first four calls end at t=1, 2, 3, 4 and free one slot each.
        handles = [await busy.submit("prompt", recorder.job(("busy", i), 1 + i)) for i in range(8)]
        await trio.sleep(0.5)
        handles += [await newcomer.submit("prompt", recorder.job(("new", i), 10)) for i in range(4)]
        grants = []
        for _ in range(4):
            await trio.sleep(1)
            grants.append(recorder.started[-1][0])
        # holdings (busy, new): 3-1, 2-2, then each slot goes back to the one that freed it
        assert grants == ["new", "new", "busy", "busy"]
        for handle in handles:
            await handle.result()


async def test_priority_decides_between_lanes(autojump_clock: trio.abc.Clock) -> None:
    llm = SharedLimit(1)
    recorder = Recorder()
    urgent = [LaneConfig("tool", 2, max_concurrency=4, shared_limit=llm)]
    async with (
        lanes.open_lane_system(session_lanes(llm)) as relaxed,
        lanes.open_lane_system(urgent) as hurried,
    ):
        first = await relaxed.submit("prompt", recorder.job("first"))
        later = [await relaxed.submit("prompt", recorder.job(("prompt", i))) for i in range(2)]
        tools = [await hurried.submit("tool", recorder.job(("tool", i))) for i in range(2)]
        for handle in [first, *later, *tools]:
            await handle.result()
    assert recorder.started == ["first", ("tool", 0), ("tool", 1), ("prompt", 0), ("prompt", 1)]


# -- rate limits -----------------------------------------------------------------------


async def test_a_shared_rate_limit(autojump_clock: trio.abc.Clock) -> None:
    provider = SharedLimit(rate_limit=RateLimit.per_second(2))
    starts: list[tuple[float, int]] = []

    async def call(session: int) -> None:
        starts.append((trio.current_time(), session))

    async with sessions(3, session_lanes(provider)) as systems:
        handles = [
            await system.submit("prompt", call, s)
            for s, system in enumerate(systems)
            for _ in range(2)
        ]
        for handle in handles:
            await handle.result()
    times = [round(t, 6) for t, _ in starts]
    assert times == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0]  # a burst of 2, then one per half second
    assert [s for _, s in starts] == [0, 0, 1, 2, 1, 2]  # and round-robin for the tokens
    stats = provider.statistics()
    assert (stats.in_use, stats.waiting) == (0, 0)


async def test_only_one_system_waits_for_each_token(autojump_clock: trio.abc.Clock) -> None:
    """Twenty systems wait for a 1-per-10 s token: one timer, not twenty wake-ups a token."""
    provider = SharedLimit(rate_limit=RateLimit.per_minute(6))  # burst 6, then one per 10 s
    async with sessions(20, session_lanes(provider)) as systems:
        for system in systems:
            system.submit_nowait("prompt", trio.sleep, 0)
        await trio.sleep(1)
        assert provider.statistics().waiting == 14
        steps = await steps_while_sleeping(9.5)  # ends at t=10.5: one token came at t=10
        assert provider.statistics().waiting == 13
        assert steps < 40  # one supervisor, one worker, its command: a few steps each
        await trio.sleep(200)


async def test_idle_systems_with_a_shared_limit_never_wake(autojump_clock: trio.abc.Clock) -> None:
    provider = SharedLimit(2, rate_limit=RateLimit.per_second(1))
    async with sessions(100, session_lanes(provider)) as systems:
        for system in systems[:10]:
            await system.run("prompt", trio.sleep, 0.1)
        await trio.sleep(5)
        assert await steps_while_sleeping(10) == 0


# -- isolation and cancellation ----------------------------------------------------------


async def test_a_cancelled_waiter_leaks_no_slot(autojump_clock: trio.abc.Clock) -> None:
    llm = SharedLimit(1)
    recorder = Recorder()
    async with sessions(3, session_lanes(llm)) as (a, b, c):
        running = await a.submit("prompt", recorder.job("a", 2))
        cancelled = await b.submit("prompt", recorder.job("b"))
        waiting = await c.submit("prompt", recorder.job("c"))
        await trio.sleep(1)
        cancelled.cancel()
        assert cancelled.status is lanes.CommandStatus.CANCELLED
        assert llm.statistics().waiting == 1
        await running.result()
        assert await waiting.result() == "c"
        assert trio.current_time() == pytest.approx(3.0)
    assert recorder.started == ["a", "c"]
    assert llm.statistics().in_use == 0


async def test_a_session_that_fails_or_is_cancelled_leaves_nothing_behind(
    autojump_clock: trio.abc.Clock,
) -> None:
    llm = SharedLimit(2)
    recorder = Recorder()

    async def crashing_session(task_status: trio.TaskStatus[None]) -> None:
        async with lanes.open_lane_system(session_lanes(llm)) as system:
            for i in range(3):
                await system.submit("prompt", recorder.job(("crash", i), 5))
            task_status.started()
            await trio.sleep(1)
            raise RuntimeError("the session's own bug")

    async def cancelled_session(task_status: trio.TaskStatus[None]) -> None:
        async with lanes.open_lane_system(session_lanes(llm)) as system:
            for i in range(3):
                await system.submit("prompt", recorder.job(("cancel", i), 5))
            task_status.started()
            await trio.sleep_forever()

    async with lanes.open_lane_system(session_lanes(llm)) as survivor:
        with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="own bug")):
            async with trio.open_nursery() as nursery:
                await nursery.start(crashing_session)
                await nursery.start(cancelled_session)
                kept = [
                    await survivor.submit("prompt", recorder.job(("kept", i))) for i in range(3)
                ]
                assert llm.statistics().in_use == 2
                assert llm.statistics().members == 3
        # Both sessions are gone (one by its error, one cancelled with the nursery): their
        # slots and waits went with them, and the survivor finishes its calls.
        assert llm.statistics().members == 1
        for handle in kept:
            assert (await handle.result())[0] == "kept"
        assert trio.current_time() == pytest.approx(3.0)
    stats = llm.statistics()
    assert (stats.in_use, stats.waiting, stats.members) == (0, 0, 0)


async def test_failures_and_timeouts_stay_in_their_session(autojump_clock: trio.abc.Clock) -> None:
    llm = SharedLimit(2)
    strict = [
        LaneConfig("prompt", 5, max_concurrency=2, timeout=0.5, shared_limit=llm),
    ]

    async def fail() -> None:
        raise ValueError("bad prompt")

    async with (
        lanes.open_lane_system(strict) as flaky,
        lanes.open_lane_system(session_lanes(llm)) as healthy,
    ):
        doomed = [
            await flaky.submit("prompt", trio.sleep, 10),
            await flaky.submit("prompt", fail),
        ]
        fine = [await healthy.submit("prompt", trio.sleep, 1) for _ in range(3)]
        with pytest.raises(lanes.CommandTimeout):
            await doomed[0].result()
        with pytest.raises(lanes.CommandFailed):
            await doomed[1].result()
        for handle in fine:
            await handle.result()
        assert healthy.statistics().lanes["prompt"].completed == 3
    assert llm.statistics().in_use == 0


async def test_pausing_a_lane_gives_its_grant_away(autojump_clock: trio.abc.Clock) -> None:
    llm = SharedLimit(1)
    recorder = Recorder()
    async with sessions(3, session_lanes(llm)) as (a, b, c):
        running = await a.submit("prompt", recorder.job("a"))
        paused = await b.submit("prompt", recorder.job("b"))
        waiting = await c.submit("prompt", recorder.job("c"))
        b.pause("prompt")
        await running.result()
        await waiting.result()
        assert paused.status is lanes.CommandStatus.PENDING
        b.resume("prompt")
        await paused.result()
    assert recorder.started == ["a", "c", "b"]
