"""cancel_lane(lane, running=, queued=) and cancel_all(): one call per granularity."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import lanes
from lanes._policy import Job, Policy

LANES = (lanes.LaneConfig("prompt", 5), lanes.LaneConfig("skill", 4, max_concurrency=2))


async def submit_turns(system: lanes.LaneSystem, n: int) -> list[lanes.CommandHandle[None]]:
    return [await system.submit("prompt", trio.sleep, 10) for _ in range(n)]


async def test_stop_this_turn_keeps_the_queue(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(LANES) as system:
        running, *queued = await submit_turns(system, 3)
        await trio.testing.wait_all_tasks_blocked()
        assert await system.cancel_lane("prompt", queued=False) == 1
        assert running.status == "cancelled"
        assert [h.status for h in queued] == ["running", "pending"]  # the next turn started
        system.close_now()


async def test_drop_the_queue_keeps_the_running_one(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(LANES) as system:
        running, *queued = await submit_turns(system, 3)
        delayed = await system.submit("prompt", trio.sleep, 1, delay=5)
        await trio.testing.wait_all_tasks_blocked()
        assert await system.cancel_lane("prompt", running=False) == 3
        assert running.status == "running"
        assert [h.status for h in (*queued, delayed)] == ["cancelled"] * 3
        assert system.statistics().lanes["prompt"].pending == 0
        await running.result()


async def test_both_is_the_default(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(LANES) as system:
        handles = await submit_turns(system, 3)
        other = await system.submit("skill", trio.sleep, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert await system.cancel_lane("prompt") == 3
        assert {h.status for h in handles} == {"cancelled"}
        assert other.status == "running"


async def test_cancel_all_every_lane(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(LANES) as system:
        prompts = await submit_turns(system, 2)
        skills = [await system.submit("skill", trio.sleep, 10) for _ in range(3)]
        await trio.testing.wait_all_tasks_blocked()
        assert await system.cancel_all(queued=False) == 3  # 1 prompt + 2 skills running
        assert [h.status for h in skills] == ["cancelled", "cancelled", "running"]
        assert await system.cancel_all() == 2
        assert {h.status for h in (*prompts, *skills)} == {"cancelled"}
        handle = await system.submit("prompt", trio.sleep, 1)  # still accepting
        await handle.result()


async def test_cancel_all_returns_once_the_running_exited(
    autojump_clock: trio.abc.Clock,
) -> None:
    exited = []

    async def stubborn() -> None:
        try:
            await trio.sleep(10)
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(1)  # cleanup that takes a while
            exited.append(trio.current_time())

    async with lanes.open_lane_system(LANES) as system:
        await system.submit("prompt", stubborn)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        await system.cancel_all()
        assert exited == [start + 1]
        assert system.statistics().lanes["prompt"].active == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"running": False, "queued": False}, "cancel nothing"),
        ({"running": 1}, "running=1"),
        ({"queued": None}, "queued=None"),
    ],
)
async def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    async with lanes.open_lane_system(LANES) as system:
        handle = await system.submit("prompt", trio.sleep, 0)
        with pytest.raises(lanes.LaneConfigError, match=match):
            await system.cancel_lane("prompt", **kwargs)  # type: ignore[arg-type]
        with pytest.raises(lanes.LaneConfigError, match=match):
            await system.cancel_all(**kwargs)  # type: ignore[arg-type]
        await handle.result()  # nothing was cancelled
        with pytest.raises(lanes.UnknownLaneError):
            await system.cancel_lane("nope", queued=False)


async def test_cancelling_the_call_leaves_the_commands_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def slow_exit() -> None:
        try:
            await trio.sleep(10)
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(1)

    async with lanes.open_lane_system(LANES) as system:
        handle = await system.submit("prompt", slow_exit)
        queued = await system.submit("prompt", trio.sleep, 1)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.5):
            await system.cancel_lane("prompt", queued=False)
        await trio.sleep(1)
        assert handle.status == "cancelled"
        await queued.result()  # the queue was kept: it ran next


async def test_a_closed_system_refuses() -> None:
    async with lanes.open_lane_system(LANES) as system:
        pass
    with pytest.raises(lanes.ShutdownInProgress):
        await system.cancel_all()
    with pytest.raises(lanes.ShutdownInProgress):
        await system.cancel_lane("prompt", running=False)


async def test_stopping_the_turn_does_not_touch_the_queue(autojump_clock: trio.abc.Clock) -> None:
    """The running part's cost is independent of the queue: not one queued job is visited."""
    async with lanes.open_lane_system(LANES) as system:
        await submit_turns(system, 1)
        queued = await submit_turns(system, 500)
        await trio.testing.wait_all_tasks_blocked()
        state = system._core.policy.lanes["prompt"]

        class Untouchable:  # the FIFO's front: reading any of its fields is a scan
            def __getattribute__(self, name: str) -> object:
                raise AssertionError(f"the queue was scanned (.{name})")

        saved = state.first
        state.first = Untouchable()  # type: ignore[assignment]
        try:
            system._core.cancel_lane("prompt", lanes._command.Reason.CANCEL, queued=False)
        finally:
            state.first = saved
        await trio.testing.wait_all_tasks_blocked()
        assert queued[0].status == "running"
        system.close_now()


class Unscannable(list):  # type: ignore[type-arg]
    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("scanned")


def test_remove_lane_sorts_only_its_own_delayed_jobs() -> None:
    configs = (lanes.LaneConfig("a", 0), lanes.LaneConfig("b", 1))
    policy = Policy(configs, None)
    jobs = [Job("b") for _ in range(1000)]
    for i, job in enumerate(jobs):
        policy.add(job, 0.0, ready_at=1000.0 - i)
    mine = [Job("a"), Job("a")]
    policy.add(mine[0], 0.0, ready_at=5.0)
    policy.add(mine[1], 0.0, ready_at=3.0)
    assert policy.remove_lane("a") == [mine[1], mine[0]]  # by ready time
    assert policy.lanes["a"].delayed == 0
    assert policy.lanes["b"].delayed == 1000
    heap = policy._delayed
    policy._delayed = Unscannable(heap)
    assert policy.remove_lane("a") == []  # no delayed job left: the heap is not scanned
    policy._delayed = heap
    assert policy.remove_lane("b") == sorted(jobs, key=lambda j: j.ready_at)


class _Steps(trio.abc.Instrument):
    """Counts the steps of one task."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


@pytest.mark.parametrize("call", ["cancel_lane", "cancel_all"])
async def test_a_cancel_is_acknowledged_as_soon_as_the_turn_has_exited(
    autojump_clock: trio.abc.Clock, call: str
) -> None:
    # The caller resumes once, when the cancelled command has exited: no extra round of
    # the run queue (with thousands of sessions, a round is milliseconds of cancel latency).
    async with lanes.open_lane_system(LANES) as system:
        await submit_turns(system, 2)
        await trio.testing.wait_all_tasks_blocked()
        steps = _Steps(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(steps)
        try:
            if call == "cancel_lane":
                assert await system.cancel_lane("prompt", queued=False) == 1
            else:
                assert await system.cancel_all(queued=False) == 1
        finally:
            trio.lowlevel.remove_instrument(steps)
        assert steps.steps == 1
        system.close_now()


async def test_a_cancel_with_nothing_running_is_still_a_checkpoint() -> None:
    async with lanes.open_lane_system(LANES) as system:
        with trio.CancelScope() as scope:
            scope.cancel()
            await system.cancel_lane("skill")
            pytest.fail("cancel_lane did not checkpoint")  # pragma: no cover
        assert scope.cancelled_caught
