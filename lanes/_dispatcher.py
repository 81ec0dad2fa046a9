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
reached), and once, :data:`REAP_AFTER` seconds after the system's last command ended, to
end the workers parked since. It starts on demand in the system's nursery, runs while it
has such a timer or the system has commands (a shared limit's grants to a busy system then
wake it, instead of starting a task each), and ends when the system is idle with nothing
left to wait for, so a system that stays idle holds no task at all.
"""

from __future__ import annotations

import math

import trio

from ._command import Command
from ._core import Core

__all__ = ["REAP_AFTER", "Dispatcher"]

REAP_AFTER = 1.0
"""Seconds an idle system keeps its parked workers, for a command that comes soon after."""


class Dispatcher:
    """Grants start permits outside the fast path; its task runs the policy's timers."""

    def __init__(
        self,
        core: Core,
        nursery: trio.Nursery | None = None,
    ) -> None:
        self.core = core
        self._nursery = nursery  # where the timer task starts on demand (None: closed)
        self.running = False  # whether the timer task runs (or is about to)
        self.rounds = 0
        self._deciding = False
        self._again = False
        self._armed = math.inf  # the policy's next timer, which the task sleeps until
        self._owed = False  # a poke asked the task for a decision round
        self._rearm: trio.Event | None = None  # while the timer task runs
        self._reap_at = math.inf  # when to reap, if the system stays idle until then
        core.wake = self.wake
        core.arm_reap = self._nudge  # the reap needs the task's timer, not a decision
        core.policy.set_waker(self.poke)

    def poke(self) -> None:
        """Decide again soon, from the dispatcher's own task (a shared limit granted a slot).

        Unlike :meth:`wake` this never decides synchronously: the caller may be another
        system's dispatcher in the middle of its own round. Starts the task if it is not
        running (it decides first thing).
        """
        self._owed = True
        self._nudge()

    def _nudge(self) -> None:
        """Let the task look at its timers again (start it if it is not running)."""
        if self.running:
            if self._rearm is not None:  # (None: the task is about to start and decide)
                self._rearm.set()
        elif self._nursery is not None:
            self.running = True
            self._nursery.start_soon(self.run)

    def close(self) -> None:
        """The system is closing: the timer task is not started again."""
        self._nursery = None

    def wake(self) -> None:
        """Decide now: start what may start, preempt what must give way.

        If the round needs a timer earlier than the one the dispatcher's task sleeps on,
        that task is woken to re-arm.
        """
        wake_at = self._decide_all()
        if wake_at is not None and wake_at < self._armed:
            self._armed = wake_at  # decided just now: the task only needs the earlier timer
            self._nudge()

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

    async def run(self) -> None:
        """Decide, sleep until the policy's next timer (or a poke), repeat; end when no
        timer is left. Cancellation leaves nothing behind: the next poke starts it again."""
        core = self.core
        self.running = True
        try:
            while True:
                self._rearm = rearm = trio.Event()
                # A round only if one was asked for or the policy's timer is due: a wake
                # for the reap, or for an earlier timer a round just set, needs none.
                if self._owed or core.now() >= self._armed:
                    self._owed = False
                    wake_at = self._decide_all()
                    self._armed = math.inf if wake_at is None else wake_at
                if core.reap_armed:
                    self._reap_step(core.now())
                until = min(self._armed, self._reap_at)
                if until == math.inf:
                    if not core.live:
                        return  # nothing to wait for: a poke or a timer starts it again
                    # Busy without a timer: stay for the pokes to come (a shared limit's
                    # grant, the next idle moment) rather than start a task for each.
                    await rearm.wait()
                    continue
                with trio.move_on_at(until):
                    await rearm.wait()
        finally:
            self.running = False
            self._rearm = None  # an idle system keeps no Event
            self._armed = math.inf

    def _reap_step(self, now: float) -> None:
        """Reap the parked workers once the system has been idle for REAP_AFTER seconds.

        Counted from the moment it last became idle (``Core.idle_since``): a system that
        was busy again in between waits REAP_AFTER from its new idle moment, not longer.
        Before that deadline nothing is checked: a poke in between (a shared limit's
        grant) leaves the timer as it is.
        """
        core = self.core
        if self._reap_at == math.inf:  # just armed by an idle moment
            self._reap_at = core.idle_since + REAP_AFTER
        if now < self._reap_at:
            return
        if core.live:
            core.reap_armed = False  # busy again: its next idle moment re-arms
            self._reap_at = math.inf
            return
        self._reap_at = core.idle_since + REAP_AFTER
        if now >= self._reap_at:
            core.reap()
            self._reap_at = math.inf
