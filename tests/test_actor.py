"""Tests of actors.Actor, ActorRef and spawn."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from actors import Actor, ActorRef, Mailbox, run_actor, spawn


class Recorder(Actor[Any]):
    """Records every message; ``("fail", x)`` raises, ``("wait", event)`` blocks on it."""

    def __init__(self) -> None:
        self.handled: list[Any] = []
        self.active = 0
        self.max_active = 0
        self.events: list[str] = []

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self.events.append("enter")
        try:
            yield
        finally:
            self.events.append("exit")

    async def handle(self, message: Any) -> Any:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            match message:
                case ("fail", value):
                    raise RuntimeError(value)
                case ("wait", trio.Event() as gate):
                    await gate.wait()
                case ("sleep", seconds):
                    await trio.sleep(seconds)
            self.handled.append(message)
            return ("done", message)
        finally:
            self.active -= 1


async def blocked_on(ref: ActorRef[Any]) -> trio.Event:
    """Make ``ref``'s actor busy until the returned event is set."""
    gate = trio.Event()
    await ref.tell(("wait", gate))
    await trio.testing.wait_all_tasks_blocked()
    return gate


async def test_spawn_returns_once_the_actor_is_running(nursery: trio.Nursery) -> None:
    actor = Recorder()
    ref = await spawn(nursery, actor)
    assert actor.events == ["enter"]
    assert isinstance(ref, ActorRef)
    ref.close()


async def test_tells_are_handled_in_fifo_order() -> None:
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, actor)
        for i in range(20):
            await ref.tell(i)
        ref.tell_nowait(20)
        ref.close()
    assert actor.handled == list(range(21))
    assert actor.events == ["enter", "exit"]


async def test_messages_are_handled_one_at_a_time(autojump_clock: trio.testing.MockClock) -> None:
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, actor)
        for i in range(5):
            nursery.start_soon(ref.ask, ("sleep", i))
        await trio.testing.wait_all_tasks_blocked()
        ref.close()
    assert actor.max_active == 1
    assert len(actor.handled) == 5


async def test_ask_returns_the_handlers_result(nursery: trio.Nursery) -> None:
    ref = await spawn(nursery, Recorder())
    assert await ref.ask("hello") == ("done", "hello")
    assert await ref.ask(42) == ("done", 42)


async def test_ask_and_tell_share_one_fifo_order(nursery: trio.Nursery) -> None:
    actor = Recorder()
    ref = await spawn(nursery, actor)
    await ref.tell("a")
    await ref.tell("b")
    await ref.ask("c")
    assert actor.handled == ["a", "b", "c"]


async def test_ask_reraises_the_handler_exception_and_the_actor_carries_on(
    nursery: trio.Nursery,
) -> None:
    actor = Recorder()
    ref = await spawn(nursery, actor)
    with pytest.raises(RuntimeError, match=r"^bad$"):
        await ref.ask(("fail", "bad"))
    assert await ref.ask("after") == ("done", "after")
    assert actor.events == ["enter"]


async def test_tell_nowait_raises_would_block_when_the_mailbox_is_full(
    nursery: trio.Nursery,
) -> None:
    actor = Recorder()
    ref = await spawn(nursery, actor, inbox_size=1)
    gate = await blocked_on(ref)
    ref.tell_nowait("queued")
    with pytest.raises(trio.WouldBlock):
        ref.tell_nowait("overflow")
    gate.set()
    assert await ref.ask("last") == ("done", "last")
    assert actor.handled[1:] == ["queued", "last"]


async def test_tell_waits_while_the_mailbox_is_full(nursery: trio.Nursery) -> None:
    actor = Recorder()
    ref = await spawn(nursery, actor, inbox_size=1)
    gate = await blocked_on(ref)
    ref.tell_nowait("queued")
    delivered = trio.Event()

    async def tell_late() -> None:
        await ref.tell("late")
        delivered.set()

    nursery.start_soon(tell_late)
    await trio.testing.wait_all_tasks_blocked()
    assert not delivered.is_set()
    gate.set()
    await delivered.wait()
    await ref.ask("sync")
    assert actor.handled[1:] == ["queued", "late", "sync"]


async def test_cancelled_tell_delivers_nothing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    actor = Recorder()
    ref = await spawn(nursery, actor, inbox_size=1)
    gate = await blocked_on(ref)
    ref.tell_nowait("queued")
    with trio.move_on_after(1) as scope:
        await ref.tell("cancelled")
    assert scope.cancelled_caught
    gate.set()
    await ref.ask("sync")
    assert "cancelled" not in actor.handled
    assert actor.handled[1:] == ["queued", "sync"]


async def test_ask_cancelled_before_delivery_is_never_handled(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    actor = Recorder()
    ref = await spawn(nursery, actor, inbox_size=1)
    gate = await blocked_on(ref)
    ref.tell_nowait("queued")
    with trio.move_on_after(1) as scope:
        await ref.ask("cancelled")
    assert scope.cancelled_caught
    gate.set()
    assert await ref.ask("next") == ("done", "next")
    assert actor.handled[1:] == ["queued", "next"]


async def test_ask_cancelled_after_delivery_is_still_handled(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    actor = Recorder()
    ref = await spawn(nursery, actor)
    gate = await blocked_on(ref)
    with trio.move_on_after(1) as scope:
        await ref.ask("delivered")
    assert scope.cancelled_caught
    gate.set()
    assert await ref.ask("next") == ("done", "next")
    assert actor.handled[1:] == ["delivered", "next"]


async def test_ask_cancelled_while_being_handled_leaves_the_actor_working(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    actor = Recorder()
    ref = await spawn(nursery, actor)
    with trio.move_on_after(1) as scope:
        await ref.ask(("sleep", 5))
    assert scope.cancelled_caught
    assert actor.active == 1  # the handler still runs: the asker's cancel is not the actor's
    assert await ref.ask("next") == ("done", "next")
    assert actor.handled == [("sleep", 5), "next"]


async def test_close_lets_the_actor_finish_queued_messages() -> None:
    actor = Recorder()
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, actor)
        gate = await blocked_on(ref)
        for i in range(3):
            ref.tell_nowait(i)
        ref.close()
        assert actor.events == ["enter"]
        gate.set()
    assert actor.handled[1:] == [0, 1, 2]
    assert actor.events == ["enter", "exit"]


async def test_tell_and_ask_after_close_raise_closed_resource_error() -> None:
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Recorder())
        ref.close()
    with pytest.raises(trio.ClosedResourceError):
        await ref.tell("late")
    with pytest.raises(trio.ClosedResourceError):
        ref.tell_nowait("late")
    with pytest.raises(trio.ClosedResourceError):
        await ref.ask("late")


async def test_pending_asks_get_broken_resource_error_when_the_actor_is_cancelled() -> None:
    actor = Recorder()
    outcomes: dict[str, BaseException | Any] = {}

    async def ask(label: str, message: Any) -> None:
        try:
            outcomes[label] = await ref.ask(message)
        except trio.BrokenResourceError as exc:
            outcomes[label] = exc

    async with trio.open_nursery() as askers, trio.open_nursery() as actor_nursery:
        ref = await spawn(actor_nursery, actor)
        askers.start_soon(ask, "current", ("wait", trio.Event()))
        await trio.testing.wait_all_tasks_blocked()
        askers.start_soon(ask, "queued-1", "q1")
        askers.start_soon(ask, "queued-2", "q2")
        await trio.testing.wait_all_tasks_blocked()
        actor_nursery.cancel_scope.cancel()
    assert set(outcomes) == {"current", "queued-1", "queued-2"}
    assert all(isinstance(value, trio.BrokenResourceError) for value in outcomes.values())
    assert actor.handled == []
    assert actor.events == ["enter", "exit"]


async def test_ask_after_the_actor_was_cancelled_fails_instead_of_hanging(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Recorder())
        nursery.cancel_scope.cancel()
    with trio.fail_after(10), pytest.raises((trio.ClosedResourceError, trio.BrokenResourceError)):
        await ref.ask("late")
    with pytest.raises((trio.ClosedResourceError, trio.BrokenResourceError)):
        await ref.tell("late")


async def test_a_crashing_tell_ends_the_actor_and_propagates_to_the_nursery(
    autojump_clock: trio.testing.MockClock,
) -> None:
    actor = Recorder()
    queued_ask_error: list[BaseException] = []

    async def ask_queued() -> None:
        try:
            await ref.ask("queued")
        except trio.BrokenResourceError as exc:
            queued_ask_error.append(exc)

    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match=r"^crash$")):
        async with trio.open_nursery() as nursery:
            ref = await spawn(nursery, actor)
            gate = await blocked_on(ref)
            await ref.tell(("fail", "crash"))
            with trio.CancelScope(shield=True):
                async with trio.open_nursery() as shielded:
                    shielded.start_soon(ask_queued)
                    await trio.testing.wait_all_tasks_blocked()
                    gate.set()
    assert len(queued_ask_error) == 1
    assert "queued" not in actor.handled
    assert actor.events == ["enter", "exit"]
    with trio.fail_after(10), pytest.raises((trio.ClosedResourceError, trio.BrokenResourceError)):
        await ref.ask("after the crash")


async def test_running_is_exited_after_the_last_message() -> None:
    order: list[str] = []

    class Tracked(Actor[str]):
        @asynccontextmanager
        async def running(self) -> AsyncIterator[None]:
            order.append("enter")
            yield
            order.append("exit")

        async def handle(self, message: str) -> None:
            order.append(message)

    async with trio.open_nursery() as nursery:
        ref = await spawn(nursery, Tracked())
        ref.tell_nowait("a")
        ref.tell_nowait("b")
        ref.close()
    assert order == ["enter", "a", "b", "exit"]


async def test_a_failure_while_starting_is_raised_by_spawn() -> None:
    class BadStart(Actor[str]):
        @asynccontextmanager
        async def running(self) -> AsyncIterator[None]:
            raise OSError("no resource")
            yield  # pragma: no cover

    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError, match="no resource"):
            await spawn(nursery, BadStart())
        assert nursery.child_tasks == frozenset()


async def test_base_actor_handle_is_not_implemented(nursery: trio.Nursery) -> None:
    ref: ActorRef[str] = await spawn(nursery, Actor[str]())
    with pytest.raises(NotImplementedError):
        await ref.ask("anything")


async def test_ref_names(nursery: trio.Nursery) -> None:
    default = await spawn(nursery, Recorder())
    named = await spawn(nursery, Recorder(), name="worker")
    assert default.name == "Recorder"
    assert named.name == "worker"
    assert repr(named) == "<ActorRef 'worker'>"
    task_names = {task.name for task in nursery.child_tasks}
    assert task_names == {"actor:Recorder", "actor:worker"}


@pytest.mark.parametrize("size", [0, -3, 1.5, True, "10", math.nan])
async def test_spawn_rejects_an_invalid_inbox_size(size: Any) -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(ValueError, match="size"):
            await spawn(nursery, Recorder(), inbox_size=size)
        assert nursery.child_tasks == frozenset()


async def test_run_actor_without_fail_pending_keeps_queued_messages() -> None:
    mailbox: Mailbox[Any] = Mailbox(10)
    first = Recorder()
    with pytest.RaisesGroup(RuntimeError):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_actor, first, mailbox, fail_pending=False))
            mailbox.send_nowait(("fail", "x"))
            mailbox.send_nowait("kept")
    assert len(mailbox) == 1
    second = Recorder()
    mailbox.close()
    async with trio.open_nursery() as nursery:
        await nursery.start(run_actor, second, mailbox)
    assert second.handled == ["kept"]


async def test_run_actor_with_fail_pending_drops_queued_messages() -> None:
    mailbox: Mailbox[Any] = Mailbox(10)
    with pytest.RaisesGroup(RuntimeError):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_actor, Recorder(), mailbox)
            mailbox.send_nowait(("fail", "x"))
            mailbox.send_nowait("dropped")
    assert len(mailbox) == 0
