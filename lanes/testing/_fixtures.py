"""Record a lane system's events, and open systems that check themselves on exit."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio
import trio.testing

from .._config import DEFAULT_LANES, LaneConfig
from .._errors import DrainTimeout, LaneConfigError, LaneUsageError
from .._system import LaneSystem, open_lane_system
from ..events import Event, Reprioritized, Submitted
from ._checker import InvariantViolation, check_invariants
from ._workload import Livelock, WorkloadHang

__all__ = ["EventLog", "LaneSystemFactory", "record_events"]

_BUFFER = 1_000_000
_LISTED = 10  # unresolved commands a hang's message names


class EventLog:
    """Every event of one lane system, in emission order (see :func:`record_events`)."""

    def __init__(self, system: LaneSystem, receive: trio.MemoryReceiveChannel[Event]) -> None:
        self.lanes: tuple[LaneConfig, ...] = system.lanes
        self.max_concurrency = system.statistics().max_concurrency
        self._system = system
        self._receive = receive
        self._events: list[Event] = []

    @property
    def priorities(self) -> dict[str, int | None]:
        """Each command's ``submit(priority=)`` by id, None for one reprioritized while it
        waited (from the ``Submitted`` and ``Reprioritized`` events so far).

        :meth:`check` needs none of it: the checker follows each command's priority
        through the events themselves.
        """
        found: dict[str, int | None] = {}
        for event in self.events:
            if isinstance(event, Submitted):
                found.setdefault(event.command_id, event.priority)
            elif isinstance(event, Reprioritized):
                found[event.command_id] = None
        return found

    @property
    def events(self) -> list[Event]:
        """The events so far (a copy; reading it takes what has arrived since)."""
        self._collect()
        return list(self._events)

    def _collect(self) -> None:
        while True:
            try:
                self._events.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return

    def check(
        self,
        *,
        paused: Iterable[str] = (),
        complete: bool = True,
        priorities: Mapping[str, int | None] | None = None,
    ) -> None:
        """Run :func:`~lanes.testing.check_invariants` on the log.

        Args:
            paused: lanes that were paused at some time (pauses are not events).
            complete: whether every command's whole life is in the log.
            priorities: command priorities by id for commands whose ``Submitted`` carries
                none (see :func:`~lanes.testing.check_invariants`; a recorded system's
                events carry them, so this is rarely needed).

        Raises:
            InvariantViolation: a rule is broken, or events were dropped.
        """
        events = self.events
        dropped = self._system.statistics().events_dropped
        if dropped:
            msg = f"{dropped} events were dropped; record with a larger buffer"
            raise InvariantViolation("event log", msg, [])
        check_invariants(
            events,
            self.lanes,
            self.max_concurrency,
            paused=paused,
            complete=complete,
            priorities=priorities,
        )


@asynccontextmanager
async def record_events(system: LaneSystem, *, buffer: int = _BUFFER) -> AsyncIterator[EventLog]:
    """Record every event of ``system`` while the block runs.

    Use ``async with record_events(system) as log: ...``, then ``log.events`` or
    ``log.check()``. Enter it before the first submit so the log is complete (each
    command's ``Submitted``, with its priority, in it). Leaving the block stops the
    recording, also when it is cancelled; the events that arrived stay in the log.
    """
    async with system.subscribe(buffer=buffer) as receive:
        log = EventLog(system, receive)
        try:
            yield log
        finally:
            log._collect()


class LaneSystemFactory:
    """Opens lane systems that record their events and check the rules when they close.

    This is what the ``lane_system`` pytest fixture gives (under pytest-trio's
    ``autojump_clock``)::

        async def test_my_lanes(lane_system, autojump_clock):
            async with lane_system(MY_LANES, max_concurrency=4) as system:
                await system.submit("query", fetch, url)
            # left normally: drained, then lane_system.log.check() ran

    Args:
        clock: the clock the test must run under (None: any).
    """

    def __init__(self, clock: trio.abc.Clock | None = None) -> None:
        self.clock = clock
        self.logs: list[EventLog] = []

    @property
    def log(self) -> EventLog:
        """The event log of the system opened last."""
        if not self.logs:
            msg = "no lane system was opened yet: use `async with lane_system(...) as system:`"
            raise LaneUsageError(msg)
        return self.logs[-1]

    def __call__(
        self,
        lanes: Iterable[LaneConfig] = DEFAULT_LANES,
        *,
        max_concurrency: int | None = None,
        check: bool = True,
        paused: Iterable[str] = (),
        time_limit: float = 3600.0,
        step_budget: int = 100_000,
        **options: Any,
    ) -> AbstractAsyncContextManager[LaneSystem]:
        """``open_lane_system(lanes, max_concurrency=..., **options)``, recorded and checked.

        Without ``storage=`` (and ``clock=``), the system's wall clock is
        ``trio.current_time``: event timestamps are the test's Trio (mock) times.
        On normal exit the system is drained (up to its ``drain_timeout``, default 30 s; what
        is left then is cancelled) and, with ``check=True``, its event log is checked with
        :func:`~lanes.testing.check_invariants` (pass the lanes you paused in ``paused``).

        Liveness: a block that takes longer than ``time_limit`` seconds of the test's clock
        (virtual under ``autojump_clock``: a hang there fails at once, not after an hour),
        or runs ``step_budget`` task steps at one instant of virtual time (a livelock), is
        cancelled and fails with :class:`~lanes.testing.WorkloadHang` naming the commands
        left unresolved. Those are left as they are and the system's exit cancels them;
        nothing is drained or checked then.

        Raises:
            LaneConfigError: ``time_limit`` is not positive or ``step_budget`` < 1.
        """
        if not time_limit > 0:
            msg = f"lane_system(time_limit={time_limit!r}): expected seconds > 0"
            raise LaneConfigError(msg)
        if step_budget < 1:
            msg = f"lane_system(step_budget={step_budget!r}): expected a step count >= 1"
            raise LaneConfigError(msg)
        limits = (time_limit, step_budget)
        return self._open(tuple(lanes), max_concurrency, check, tuple(paused), limits, options)

    @asynccontextmanager
    async def _open(
        self,
        lanes: tuple[LaneConfig, ...],
        max_concurrency: int | None,
        check: bool,
        paused: tuple[str, ...],
        limits: tuple[float, int],
        options: dict[str, Any],
    ) -> AsyncIterator[LaneSystem]:
        self._check_clock()
        if options.get("storage") is None and options.get("backend") is None:
            # Events carry wall time; here the wall clock is the test's (mock) Trio clock,
            # so timestamps equal trio.current_time() at each event, exactly.
            options.setdefault("clock", trio.current_time)
        drain_timeout = options.get("drain_timeout", 30.0)
        opening = open_lane_system(lanes, max_concurrency=max_concurrency, **options)
        async with opening as system, record_events(system) as log:
            self.logs.append(log)
            time_limit, step_budget = limits
            guard = Livelock(step_budget)
            trio.lowlevel.add_instrument(guard)
            try:
                with trio.move_on_after(time_limit) as limit, guard.scope:
                    yield system
            finally:
                trio.lowlevel.remove_instrument(guard)
            if guard.tripped or limit.cancelled_caught:
                raise WorkloadHang(_hang_message(system, guard, time_limit, step_budget))
            with contextlib.suppress(DrainTimeout):
                await system.drain(drain_timeout)
        if check:
            log.check(paused=paused)

    def _check_clock(self) -> None:
        if self.clock is None or trio.lowlevel.current_clock() is self.clock:
            return
        msg = (
            "the lane_system fixture runs under pytest-trio's autojump_clock, but this test "
            "does not: add `autojump_clock` to the test's parameters (pytest-trio only passes "
            "a clock to trio.run when the test itself asks for it)"
        )
        raise LaneUsageError(msg)


def _hang_message(system: LaneSystem, guard: Livelock, time_limit: float, budget: int) -> str:
    if guard.tripped:
        why = (
            f"livelock: {budget} task steps at t={guard.at} without time advancing "
            "(something keeps rescheduling at one instant; raise step_budget= if the "
            "test really does that much at one time)"
        )
    else:
        why = (
            f"the lane_system block did not finish within its time_limit of {time_limit} s "
            "(something waits for a command that never resolves: is a lane paused, or "
            "does the scheduler never start it?)"
        )
    live = system.commands(limit=_LISTED + 1)
    listed = "".join(
        f"\n  {c.id} (lane {c.lane!r}, {c.state}, {c.attempts} attempts)" for c in live[:_LISTED]
    )
    more = "\n  ..." if len(live) > _LISTED else ""
    return f"{why}. Unresolved:{listed}{more}" if live else f"{why}. No command is unresolved."
