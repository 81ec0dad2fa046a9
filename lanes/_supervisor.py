"""The supervisor: the async shell around the pure policy.

Decisions are synchronous: every state change (a submit, a finished attempt, a resume, a
cancellation) calls :meth:`Supervisor.wake`, which asks the policy what to do and does it at
once (grants go to the lanes' worker pools, preemptions cancel scopes). The supervisor's own
task only sleeps until the next time-driven change the policy asks for (a delayed command falls
due, a rate-limit token arrives) and is never woken while the system is idle.
"""

from __future__ import annotations

import math

import trio

from actors import WorkerPool

from ._command import Command
from ._core import Core

__all__ = ["Supervisor"]


class Supervisor:
    """Grants start permits; its task runs the policy's timers."""

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
        """Decide again soon, from the supervisor's own task (a shared limit granted a slot).

        Unlike :meth:`wake` this never decides synchronously: the caller may be another
        system's supervisor in the middle of its own decision.
        """
        self._rearm.set()

    def wake(self) -> None:
        """Decide now: start what may start, preempt what must give way.

        Called on every state change. If the decision needs a timer earlier than the one the
        supervisor's task sleeps on, that task is woken to re-arm.
        """
        wake_at = self._decide_all()
        if wake_at is not None and wake_at < self._armed:
            self._rearm.set()

    def _decide_all(self) -> float | None:
        """Decision rounds until nothing changes; re-entrant calls fold into one more round."""
        if self._deciding:
            self._again = True
            return None
        self._deciding = True
        try:
            wake_at = self._decide(trio.current_time())
            while self._again:
                self._again = False
                wake_at = self._decide(trio.current_time())
        finally:
            self._deciding = False
        return wake_at

    def _decide(self, now: float) -> float | None:
        self.rounds += 1
        policy = self.core.policy
        decision = policy.schedule(now)
        for job in decision.start:
            assert isinstance(job, Command)
            self.core.grant(job, now)
        for job in decision.preempt:
            assert isinstance(job, Command)
            self.core.preempt(job)
        return policy.next_wakeup(now)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sleep until the policy's next timer, decide, repeat. Idle systems never wake."""
        task_status.started()
        while True:
            self._rearm = trio.Event()
            wake_at = self._decide_all()
            self._armed = math.inf if wake_at is None else wake_at
            with trio.move_on_at(self._armed):
                await self._rearm.wait()
