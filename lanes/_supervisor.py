"""The supervisor: the async shell around the pure policy.

It wakes when the state changes (a submit, a finished attempt, a resume...) or when the policy
asks for a timer (a delayed command falls due, a rate-limit token arrives), asks the policy
what to do, and does it: grants go to the lanes' mailboxes, preemptions cancel scopes. Many
state changes between two wake-ups cost one decision round.
"""

from __future__ import annotations

import trio

from actors import ActorRef

from ._command import Command
from ._core import Core

__all__ = ["Supervisor"]


class Supervisor:
    """Grants start permits. Runs as one task in the system's nursery."""

    def __init__(self, core: Core, lanes: dict[str, ActorRef[Command]]) -> None:
        self.core = core
        self.lanes = lanes
        self.rounds = 0
        self._event = trio.Event()
        core.wake = self.wake

    def wake(self) -> None:
        """Ask for a decision round soon (cheap; many calls make one round)."""
        self._event.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            wake_at = self._decide(trio.current_time())
            if wake_at is None:
                await self._event.wait()
            else:
                with trio.move_on_at(wake_at):
                    await self._event.wait()
            self._event = trio.Event()

    def _decide(self, now: float) -> float | None:
        self.rounds += 1
        policy = self.core.policy
        decision = policy.schedule(now)
        for job in decision.start:
            assert isinstance(job, Command)
            self.lanes[job.lane].tell_nowait(job)
        for job in decision.preempt:
            assert isinstance(job, Command)
            self.core.preempt(job)
        return policy.next_wakeup(now)
