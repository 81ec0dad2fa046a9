"""Tests of actors.open_supervisor: restart strategies, restart intensity, shutdown."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from actors import Actor, ActorRef, RestartIntensityExceeded, Supervisor, open_supervisor


class Crash(Exception):
    """What a Worker raises for a ``("crash", label)`` message."""


class Worker(Actor[Any]):
    """Logs ``(generation, message)``; ``("crash", x)`` raises, ``("wait", ev)`` blocks."""

    def __init__(self, generation: int, log: list[tuple[int, Any]]) -> None:
        self.generation = generation
        self.log = log

    async def handle(self, message: Any) -> Any:
        match message:
            case ("crash", label):
                raise Crash(label)
            case ("wait", trio.Event() as gate):
                await gate.wait()
            case ("sleep", seconds):
                await trio.sleep(seconds)
        self.log.append((self.generation, message))
        return self.generation


class Factory:
    """Makes Workers, numbering their generations and sharing one log."""

    def __init__(self, name: str = "worker") -> None:
        self.__name__ = name
        self.made: list[Worker] = []
        self.log: list[tuple[int, Any]] = []

    def __call__(self) -> Worker:
        worker = Worker(len(self.made), self.log)
        self.made.append(worker)
        return worker

    @property
    def handled(self) -> list[Any]:
        return [message for _, message in self.log]


async def crash(ref: ActorRef[Any], label: str = "boom") -> None:
    """Crash ``ref``'s actor with a tell and let the supervisor react."""
    await ref.tell(("crash", label))
    await trio.testing.wait_all_tasks_blocked()


async def assert_stopped(ref: ActorRef[Any]) -> None:
    """Sending to a stopped child fails at once instead of waiting for a reply forever."""
    with trio.fail_after(5):
        with pytest.raises(trio.ClosedResourceError):
            await ref.ask("late")
        with pytest.raises(trio.ClosedResourceError):
            await ref.tell("late")
        with pytest.raises(trio.ClosedResourceError):
            ref.tell_nowait("late")


async def spawn_all(supervisor: Supervisor, *factories: Factory) -> list[ActorRef[Any]]:
    return [await supervisor.spawn(factory) for factory in factories]


# --- argument validation -------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["one_for_none", "ONE_FOR_ONE", "", None, 1])
async def test_unknown_strategy_raises_value_error(strategy: Any) -> None:
    with pytest.raises(ValueError, match="strategy"):
        async with open_supervisor(strategy=strategy):
            pytest.fail("the block must not run")  # pragma: no cover


@pytest.mark.parametrize("max_restarts", [-1, 1.5, 2.0, True, "3", None])
async def test_invalid_max_restarts_raises_value_error(max_restarts: Any) -> None:
    with pytest.raises(ValueError, match="max_restarts"):
        async with open_supervisor(max_restarts=max_restarts):
            pytest.fail("the block must not run")  # pragma: no cover


@pytest.mark.parametrize("within", [0, -1, -0.5, math.nan, "5", None, True])
async def test_invalid_within_raises_value_error(within: Any) -> None:
    with pytest.raises(ValueError, match="within"):
        async with open_supervisor(within=within):
            pytest.fail("the block must not run")  # pragma: no cover


async def test_invalid_inbox_size_raises_value_error_from_spawn() -> None:
    factory = Factory()
    async with open_supervisor() as supervisor:
        with pytest.raises(ValueError, match="size"):
            await supervisor.spawn(factory, inbox_size=0)
    assert factory.made == []


async def test_valid_arguments_are_kept() -> None:
    async with open_supervisor(strategy="rest_for_one", max_restarts=0, within=0.5) as sup:
        assert (sup.strategy, sup.max_restarts, sup.within) == ("rest_for_one", 0, 0.5)
        assert sup.restart_count == 0


# --- one_for_one ---------------------------------------------------------------------------


async def test_a_crashed_child_is_restarted_fresh_and_its_ref_keeps_working() -> None:
    factory = Factory()
    async with open_supervisor() as supervisor:
        ref = await supervisor.spawn(factory)
        assert await ref.ask("before") == 0
        await crash(ref)
        assert len(factory.made) == 2
        assert await ref.ask("after") == 1
        assert supervisor.restart_count == 1
    assert factory.log == [(0, "before"), (1, "after")]


async def test_messages_queued_behind_the_crash_are_kept() -> None:
    factory = Factory()
    async with open_supervisor() as supervisor:
        ref = await supervisor.spawn(factory)
        gate = trio.Event()
        await ref.tell(("wait", gate))
        await ref.tell(("crash", "boom"))
        await ref.tell("queued-1")
        await ref.tell("queued-2")
        results: list[int] = []

        async def ask_queued() -> None:
            results.append(await ref.ask("queued-ask"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_queued)
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
        assert results == [1]
    assert factory.log[1:] == [(1, "queued-1"), (1, "queued-2"), (1, "queued-ask")]
    assert supervisor.restart_count == 1


async def test_one_for_one_leaves_siblings_alone() -> None:
    first, second, third = Factory("first"), Factory("second"), Factory("third")
    async with open_supervisor(strategy="one_for_one") as supervisor:
        refs = await spawn_all(supervisor, first, second, third)
        await crash(refs[1])
        assert [len(f.made) for f in (first, second, third)] == [1, 2, 1]
        assert [await ref.ask("ping") for ref in refs] == [0, 1, 0]


async def test_an_ask_whose_handler_raises_is_not_a_crash() -> None:
    factory = Factory()
    async with open_supervisor(max_restarts=0) as supervisor:
        ref = await supervisor.spawn(factory)
        for _ in range(3):
            with pytest.raises(Crash, match="asked"):
                await ref.ask(("crash", "asked"))
        assert await ref.ask("still here") == 0
    assert len(factory.made) == 1
    assert supervisor.restart_count == 0


# --- one_for_all / rest_for_one ------------------------------------------------------------


async def test_one_for_all_restarts_every_sibling() -> None:
    factories = [Factory("a"), Factory("b"), Factory("c")]
    async with open_supervisor(strategy="one_for_all") as supervisor:
        refs = await spawn_all(supervisor, *factories)
        await crash(refs[1])
        assert [len(f.made) for f in factories] == [2, 2, 2]
        assert [await ref.ask("ping") for ref in refs] == [1, 1, 1]
        await crash(refs[0])
        assert [len(f.made) for f in factories] == [3, 3, 3]
        assert supervisor.restart_count == 2


async def test_rest_for_one_restarts_the_later_siblings_only() -> None:
    factories = [Factory("a"), Factory("b"), Factory("c"), Factory("d")]
    async with open_supervisor(strategy="rest_for_one") as supervisor:
        refs = await spawn_all(supervisor, *factories)
        await crash(refs[1])
        assert [len(f.made) for f in factories] == [1, 2, 2, 2]
        await crash(refs[3])
        assert [len(f.made) for f in factories] == [1, 2, 2, 3]
        await crash(refs[0])
        assert [len(f.made) for f in factories] == [2, 3, 3, 4]
        assert [await ref.ask("ping") for ref in refs] == [1, 2, 2, 3]


async def test_a_sibling_restart_keeps_its_queued_messages_and_fails_its_current_ask() -> None:
    crasher, busy = Factory("crasher"), Factory("busy")
    async with open_supervisor(strategy="one_for_all") as supervisor:
        crash_ref, busy_ref = await spawn_all(supervisor, crasher, busy)
        outcomes: list[Any] = []

        async def ask(message: Any) -> None:
            try:
                outcomes.append(await busy_ref.ask(message))
            except trio.BrokenResourceError as exc:
                outcomes.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, ("wait", trio.Event()))  # never answered by generation 0
            await trio.testing.wait_all_tasks_blocked()
            await busy_ref.tell("queued")
            await crash(crash_ref)
        assert len(outcomes) == 1
        assert isinstance(outcomes[0], trio.BrokenResourceError)
        assert await busy_ref.ask("ping") == 1
    assert busy.log == [(1, "queued"), (1, "ping")]


# --- restart intensity ---------------------------------------------------------------------


async def test_too_many_restarts_raise_restart_intensity_exceeded_as_itself() -> None:
    factory = Factory()
    with pytest.raises(RestartIntensityExceeded, match="more than 2 restarts") as info:
        async with open_supervisor(max_restarts=2, within=5) as supervisor:
            ref = await supervisor.spawn(factory)
            for i in range(3):
                await ref.tell(("crash", f"crash-{i}"))
            await trio.sleep_forever()
    assert type(info.value) is RestartIntensityExceeded
    assert isinstance(info.value.__cause__, Crash)
    assert str(info.value.__cause__) == "crash-2"
    assert len(factory.made) == 3
    assert supervisor.restart_count == 2


async def test_max_restarts_zero_escalates_the_first_crash() -> None:
    factory = Factory()
    with pytest.raises(RestartIntensityExceeded) as info:
        async with open_supervisor(max_restarts=0) as supervisor:
            ref = await supervisor.spawn(factory)
            await crash(ref, "only")
            await trio.sleep_forever()
    assert str(info.value.__cause__) == "only"
    assert len(factory.made) == 1


async def test_crashes_spread_beyond_the_window_do_not_escalate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    factory = Factory()
    async with open_supervisor(max_restarts=2, within=10) as supervisor:
        ref = await supervisor.spawn(factory)
        for _ in range(6):
            await crash(ref)
            await trio.sleep(6)  # at most two crashes in any 10 s window
        assert await ref.ask("alive") == 6
    assert supervisor.restart_count == 6


async def test_crashes_within_the_window_escalate(autojump_clock: trio.testing.MockClock) -> None:
    factory = Factory()
    with pytest.raises(RestartIntensityExceeded):
        async with open_supervisor(max_restarts=2, within=10) as supervisor:
            ref = await supervisor.spawn(factory)
            for _ in range(3):
                await crash(ref)
                await trio.sleep(4)  # the third crash comes 8 s after the first
            pytest.fail("the supervisor must give up")  # pragma: no cover
    assert supervisor.restart_count == 2


async def test_escalation_answers_pending_asks_and_closes_the_mailboxes() -> None:
    factory, other = Factory(), Factory("other")
    errors: list[BaseException] = []

    async def ask_late(ref: ActorRef[Any]) -> None:
        try:
            await ref.ask("late")
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            errors.append(exc)

    async with trio.open_nursery() as outside:
        with pytest.raises(RestartIntensityExceeded):
            async with open_supervisor(max_restarts=0) as supervisor:
                ref, other_ref = await spawn_all(supervisor, factory, other)
                gate = trio.Event()
                await other_ref.tell(("wait", trio.Event()))  # busy until cancelled
                await ref.tell(("wait", gate))
                await ref.tell(("crash", "boom"))
                outside.start_soon(ask_late, ref)
                outside.start_soon(ask_late, other_ref)
                await trio.testing.wait_all_tasks_blocked()
                gate.set()
                await trio.sleep_forever()
    assert len(errors) == 2
    await assert_stopped(ref)
    await assert_stopped(other_ref)


# --- starting and stopping -----------------------------------------------------------------


async def test_a_first_start_failure_propagates_from_spawn() -> None:
    calls: list[int] = []

    def broken() -> Worker:
        calls.append(1)
        raise OSError("cannot start")

    healthy = Factory()
    async with open_supervisor() as supervisor:
        ref = await supervisor.spawn(healthy)
        with pytest.raises(OSError, match="cannot start"):
            await supervisor.spawn(broken)
        assert await ref.ask("fine") == 0
    assert calls == [1]
    assert supervisor.restart_count == 0


async def test_a_running_failure_on_first_start_propagates_from_spawn() -> None:
    class BadStart(Actor[Any]):
        @asynccontextmanager
        async def running(self) -> AsyncIterator[None]:
            raise ConnectionError("no backend")
            yield  # pragma: no cover

    made: list[BadStart] = []

    def factory() -> BadStart:
        made.append(BadStart())
        return made[-1]

    async with open_supervisor() as supervisor:
        with pytest.raises(ConnectionError, match="no backend"):
            await supervisor.spawn(factory)
    assert len(made) == 1


async def test_a_failing_restart_counts_as_another_crash() -> None:
    made: list[int] = []
    log: list[tuple[int, Any]] = []

    def flaky() -> Worker:
        made.append(1)
        if len(made) in (2, 3):
            raise OSError(f"restart {len(made)} failed")
        return Worker(len(made) - 1, log)

    async with open_supervisor(max_restarts=3) as supervisor:
        ref = await supervisor.spawn(flaky)
        await crash(ref)
        assert await ref.ask("ping") == 3
        assert supervisor.restart_count == 3


async def test_leaving_the_block_closes_mailboxes_and_children_finish_queued_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = Factory("first"), Factory("second")
    async with open_supervisor() as supervisor:
        refs = await spawn_all(supervisor, first, second)
        for ref in refs:
            await ref.tell(("sleep", 1))
            for i in range(3):
                ref.tell_nowait(i)
    assert first.handled == [("sleep", 1), 0, 1, 2]
    assert second.handled == [("sleep", 1), 0, 1, 2]
    for ref in refs:
        await assert_stopped(ref)


async def test_a_crash_while_finishing_still_restarts_and_drains() -> None:
    factory = Factory()
    async with open_supervisor() as supervisor:
        ref = await supervisor.spawn(factory)
        ref.tell_nowait(("crash", "late"))
        ref.tell_nowait("after-crash")
    assert factory.log == [(1, "after-crash")]


async def test_an_exception_in_the_block_cancels_children_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    factory = Factory()
    with pytest.raises(KeyError, match="body"):
        async with open_supervisor() as supervisor:
            ref = await supervisor.spawn(factory)
            await ref.tell(("sleep", 100))
            ref.tell_nowait("never")
            raise KeyError("body")
    assert factory.log == []
    assert trio.current_time() < 100
    await assert_stopped(ref)


async def test_cancelling_around_the_supervisor_stops_children(
    autojump_clock: trio.testing.MockClock,
) -> None:
    factory = Factory()
    with trio.move_on_after(1) as scope:
        async with open_supervisor() as supervisor:
            ref = await supervisor.spawn(factory)
            await ref.tell(("sleep", 100))
    assert scope.cancelled_caught
    assert factory.log == []
    assert trio.current_time() < 100
    await assert_stopped(ref)


async def test_child_names_come_from_the_name_or_the_factory() -> None:
    async with open_supervisor() as supervisor:
        by_factory = await supervisor.spawn(Factory("custom"))
        explicit = await supervisor.spawn(Factory("ignored"), name="explicit")
        assert (by_factory.name, explicit.name) == ("custom", "explicit")
