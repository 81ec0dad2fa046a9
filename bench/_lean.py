"""The lean priority scheduler: what plain Trio allows for the throughput workload.

Not a product: the limit trio-lanes is measured against. A deque per priority (FIFO within a
priority, the most urgent non-empty deque first), a fixed set of worker tasks that run queued
commands back to back, and one wake-up per waiter. Two flavours:

- ``LeanScheduler``: a ``trio.Event`` per waiter and per parked worker (public Trio API only).
- ``LowLevelScheduler``: the same with ``trio.lowlevel.wait_task_rescheduled`` /
  ``reschedule`` instead of events (no Event object, no lot, one fewer indirection).

Both keep Trio's rules: a worker checkpoints after every command (so it never starves other
tasks), a waiter's wait is a checkpoint, and a cancelled waiter's command is skipped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import outcome
import trio

Fn = Callable[..., Awaitable[Any]]


class Waiter:
    """One submitted command: its result, and the event its submitter waits on."""

    __slots__ = ("cancelled", "done", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None
        self.cancelled = False

    async def result(self) -> Any:
        try:
            await self.done.wait()
        except trio.Cancelled:
            self.cancelled = True  # the worker skips it if it has not started
            raise
        return self.value


class LeanScheduler:
    """A deque per priority (lower number first), ``workers`` tasks, a ``trio.Event`` each."""

    def __init__(self, priorities: int) -> None:
        self.queues: list[deque[tuple[Fn, tuple[Any, ...], Waiter]]] = [
            deque() for _ in range(priorities)
        ]
        self.pending = 0
        self.parked: list[trio.Event] = []

    def submit(self, priority: int, fn: Fn, *args: Any) -> Waiter:
        waiter = Waiter()
        self.queues[priority].append((fn, args, waiter))
        self.pending += 1
        if self.parked:
            self.parked.pop().set()
        return waiter

    async def worker(self) -> None:
        while True:
            if not self.pending:
                wake = trio.Event()
                self.parked.append(wake)
                await wake.wait()
                continue
            self.pending -= 1
            fn, args, waiter = next(q for q in self.queues if q).popleft()
            if not waiter.cancelled:
                waiter.value = await fn(*args)
                waiter.done.set()
            await trio.lowlevel.checkpoint()


class LowLevelWaiter:
    """A submitted command whose submitter parks with ``wait_task_rescheduled``."""

    __slots__ = ("cancelled", "finished", "task", "value")

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.cancelled = self.finished = False
        self.value: Any = None

    async def result(self) -> Any:
        if self.finished:  # ran before its submitter waited: still a checkpoint
            await trio.lowlevel.checkpoint()
            return self.value
        self.task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.cancelled = True
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)


class LowLevelScheduler:
    """``LeanScheduler`` with ``wait_task_rescheduled`` / ``reschedule`` instead of events."""

    def __init__(self, priorities: int) -> None:
        self.queues: list[deque[tuple[Fn, tuple[Any, ...], LowLevelWaiter]]] = [
            deque() for _ in range(priorities)
        ]
        self.pending = 0
        self.parked: list[trio.lowlevel.Task] = []

    def submit(self, priority: int, fn: Fn, *args: Any) -> LowLevelWaiter:
        waiter = LowLevelWaiter()
        self.queues[priority].append((fn, args, waiter))
        self.pending += 1
        if self.parked:
            trio.lowlevel.reschedule(self.parked.pop())
        return waiter

    async def worker(self) -> None:
        while True:
            if not self.pending:
                await self._park()
                continue
            self.pending -= 1
            fn, args, waiter = next(q for q in self.queues if q).popleft()
            if waiter.cancelled:
                continue
            value = await fn(*args)
            if waiter.task is None:
                waiter.value, waiter.finished = value, True
            elif not waiter.cancelled:
                trio.lowlevel.reschedule(waiter.task, outcome.Value(value))
            await trio.lowlevel.checkpoint()

    async def _park(self) -> None:
        task = trio.lowlevel.current_task()
        self.parked.append(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.parked.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
