"""Tests of actors.Mailbox: a bounded FIFO over a trio memory channel."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from actors import Mailbox


async def test_messages_come_out_in_the_order_they_went_in() -> None:
    mailbox: Mailbox[int] = Mailbox(10)
    for i in range(5):
        await mailbox.send(i)
    mailbox.send_nowait(5)
    assert [mailbox.receive_nowait() for _ in range(3)] == [0, 1, 2]
    assert [await mailbox.receive() for _ in range(3)] == [3, 4, 5]


async def test_len_counts_waiting_messages() -> None:
    mailbox: Mailbox[str] = Mailbox(3)
    assert len(mailbox) == 0
    mailbox.send_nowait("a")
    await mailbox.send("b")
    assert len(mailbox) == 2
    assert mailbox.receive_nowait() == "a"
    assert len(mailbox) == 1


def test_size_is_kept() -> None:
    assert Mailbox[int](4).size == 4
    assert Mailbox[int](math.inf).size == math.inf


def test_send_nowait_raises_would_block_when_full() -> None:
    mailbox: Mailbox[int] = Mailbox(2)
    mailbox.send_nowait(1)
    mailbox.send_nowait(2)
    with pytest.raises(trio.WouldBlock):
        mailbox.send_nowait(3)
    assert len(mailbox) == 2
    assert mailbox.receive_nowait() == 1
    mailbox.send_nowait(3)
    assert [mailbox.receive_nowait(), mailbox.receive_nowait()] == [2, 3]


async def test_send_waits_while_full_then_delivers_in_order() -> None:
    mailbox: Mailbox[int] = Mailbox(1)
    mailbox.send_nowait(1)
    sent = trio.Event()

    async def sender() -> None:
        await mailbox.send(2)
        sent.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert not sent.is_set()
        assert len(mailbox) == 1
        assert await mailbox.receive() == 1
        await sent.wait()
    assert mailbox.receive_nowait() == 2


async def test_infinite_mailbox_never_blocks() -> None:
    mailbox: Mailbox[int] = Mailbox(math.inf)
    for i in range(1000):
        mailbox.send_nowait(i)
    with trio.fail_after(1):
        await mailbox.send(1000)
    assert len(mailbox) == 1001


async def test_cancelled_blocked_send_leaves_mailbox_unchanged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mailbox: Mailbox[str] = Mailbox(1)
    mailbox.send_nowait("first")
    with trio.move_on_after(1) as scope:
        await mailbox.send("never")  # blocks: the mailbox is full
    assert scope.cancelled_caught
    assert len(mailbox) == 1
    assert mailbox.receive_nowait() == "first"
    with pytest.raises(trio.WouldBlock):
        mailbox.receive_nowait()


async def test_cancelled_send_from_another_task_is_not_delivered() -> None:
    mailbox: Mailbox[str] = Mailbox(1)
    mailbox.send_nowait("first")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mailbox.send, "never")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert mailbox.receive_nowait() == "first"
    mailbox.send_nowait("next")  # there is room again: the cancelled message holds none
    assert mailbox.receive_nowait() == "next"
    assert len(mailbox) == 0


async def test_receive_waits_for_a_message() -> None:
    mailbox: Mailbox[int] = Mailbox(1)
    got: list[int] = []

    async def receiver() -> None:
        got.append(await mailbox.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        await mailbox.send(7)
    assert got == [7]


def test_receive_nowait_on_empty_mailbox_raises_would_block() -> None:
    with pytest.raises(trio.WouldBlock):
        Mailbox[int](1).receive_nowait()


async def test_close_lets_the_receiver_finish_then_ends_iteration() -> None:
    mailbox: Mailbox[int] = Mailbox(5)
    for i in range(3):
        mailbox.send_nowait(i)
    mailbox.close()
    received = [message async for message in mailbox]
    assert received == [0, 1, 2]
    with pytest.raises(trio.EndOfChannel):
        await mailbox.receive()
    with pytest.raises(trio.EndOfChannel):
        mailbox.receive_nowait()


async def test_close_ends_a_waiting_receiver() -> None:
    mailbox: Mailbox[int] = Mailbox(1)
    received: list[int] = []

    async def consume() -> None:
        async for message in mailbox:
            received.append(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await mailbox.send(1)
        await trio.testing.wait_all_tasks_blocked()
        mailbox.close()
    assert received == [1]


async def test_send_after_close_raises_closed_resource_error() -> None:
    mailbox: Mailbox[int] = Mailbox(5)
    mailbox.close()
    with pytest.raises(trio.ClosedResourceError):
        mailbox.send_nowait(1)
    with pytest.raises(trio.ClosedResourceError):
        await mailbox.send(1)
    assert len(mailbox) == 0


async def test_close_wakes_a_blocked_sender_with_closed_resource_error() -> None:
    mailbox: Mailbox[int] = Mailbox(1)
    mailbox.send_nowait(1)
    errors: list[BaseException] = []

    async def sender() -> None:
        try:
            await mailbox.send(2)
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        mailbox.close()
    assert len(errors) == 1
    assert [message async for message in mailbox] == [1]


@pytest.mark.parametrize("size", [0, -1, 0.5, 1.5, 2.0, -math.inf, math.nan, True, False])
def test_invalid_size_raises_value_error(size: object) -> None:
    with pytest.raises(ValueError, match="Mailbox size"):
        Mailbox(size)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", ["3", None, [1]])
def test_non_number_size_raises_value_error(size: object) -> None:
    with pytest.raises(ValueError, match=r"expected an integer >= 1"):
        Mailbox(size)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [1, 2, 100, math.inf])
def test_valid_sizes_are_accepted(size: float) -> None:
    mailbox: Mailbox[int] = Mailbox(size)
    mailbox.send_nowait(1)
    assert mailbox.receive_nowait() == 1
