"""The dispatcher: the one async shell around the pure policy.

Decisions are synchronous and happen at defined points: a submit, a finished attempt, a
timer, a configuration change (pause, resume, a cancellation). On a local lane (no global
cap, rate limit or shared limit) the life cycle decides a submit or a freed slot in O(1)
through the policy's fast path (``Policy.add`` / ``Policy.finish_next``) and never calls
here. Everything else calls :meth:`Dispatcher.wake`: one decision round over the lanes
(``Policy.schedule``), whose starts go to the lanes' worker pools and whose preemptions
cancel scopes. A round is never re-entered: a state change made while one runs folds into
one more round. The dispatcher's own task only sleeps until the next time-driven change the
policy asks for (a delayed command falls due, a rate-limit token arrives, a boost point is
reached) and is never woken while the system is idle.
"""

from __future__ import annotations

import math

import trio

from actors import WorkerPool

from ._command import Command
from ._core import Core

__all__ = ["Dispatcher"]


class Dispatcher:
    """Grants start permits outside the fast path; its task runs the policy's timers."""

    def __init__(self, core: Core, pools: dict[str, WorkerPool[Command, int]]) -> None:
        self.core = core
        self.pools = pools
        self.rounds = 0
        self._deciding = False
        self._again = False
        self._armed = math.inf
        self._rearm = trio.Event()
        core.wake = self.wake
        core.policy.set_waker(self.poke)

    def poke(self) -> None:
        """Decide again soon, from the dispatcher's own task (a shared limit granted a slot).

        Unlike :meth:`wake` this never decides synchronously: the caller may be another
        system's dispatcher in the middle of its own round.
        """
        self._rearm.set()

    def wake(self) -> None:
        """Decide now: start what may start, preempt what must give way.

        If the round needs a timer earlier than the one the dispatcher's task sleeps on,
        that task is woken to re-arm.
        """
        wake_at = self._decide_all()
        if wake_at is not None and wake_at < self._armed:
            self._rearm.set()

    def _decide_all(self) -> float | None:
        """Rounds until nothing changes; a call from inside a round folds into one more."""
        if self._deciding:
            self._again = True
            return None
        self._deciding = True
        try:
            now = self.core.now()  # one clock read for the whole step
            wake_at = self._decide(now)
            while self._again:
                self._again = False
                wake_at = self._decide(now)
        finally:
            self._deciding = False
        return wake_at

    def _decide(self, now: float) -> float | None:
        self.rounds += 1
        core = self.core
        decision = core.policy.schedule(now)
        for job in decision.start:
            assert isinstance(job, Command)
            core.grant(job, now)
        for job in decision.preempt:
            assert isinstance(job, Command)
            core.preempt(job)
        return core.policy.next_wakeup(now)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sleep until the policy's next timer, decide, repeat. Idle systems never wake."""
        task_status.started()
        while True:
            self._rearm = trio.Event()
            wake_at = self._decide_all()
            self._armed = math.inf if wake_at is None else wake_at
            with trio.move_on_at(self._armed):
                await self._rearm.wait()
