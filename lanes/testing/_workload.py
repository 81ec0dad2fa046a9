"""Run a workload of :class:`~lanes.testing.WorkItem` on a real lane system, with a time limit
and a livelock guard, and check its results against what each item must end with."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import attrs
import trio

from .._checks import MAX_PRIORITY
from .._command import CommandHandle
from .._config import LaneConfig
from .._errors import CommandCancelled, CommandFailed, CommandTimeout, LaneError, Permanent
from .._system import LaneSystem

__all__ = [
    "Outcome",
    "Reprioritized",
    "WorkItem",
    "WorkloadError",
    "WorkloadHang",
    "WorkloadResult",
    "check_results",
    "expected_attempts",
    "expected_outcomes",
    "expected_reprioritize",
    "priorities",
    "run_workload",
]

Outcome = Literal["success", "fail", "flaky", "permanent", "slow", "cancel"]
"""What a command of a workload does: succeed; always fail; fail ``failures`` times then
succeed; fail with a :class:`~lanes.Permanent` error (never retried); run ``slow`` (past its
lane's timeout, when it has one); or get cancelled by its submitter ``cancel_after`` seconds
after it was submitted."""


@attrs.frozen
class WorkItem:
    """One command of a workload (see ``lanes.testing.workloads()`` and :func:`run_workload`).

    Attributes:
        lane: the lane it is submitted to.
        at: when it is submitted, in seconds from the start of the workload.
        outcome: what it does (see :data:`Outcome`).
        duration: how long each attempt runs before it returns or raises.
        delay: the ``delay=`` of its submit.
        failures: for ``"flaky"``: how many attempts fail before one succeeds.
        cancel_after: for ``"cancel"``: seconds after its submit when its handle is cancelled.
        priority: the ``priority=`` of its submit (within its lane; lower starts first).
        reprioritize_after: seconds after its submit when ``handle.reprioritize(
            new_priority)`` is called (None: never).
        new_priority: the priority that call asks for (one out of range must be refused
            with :class:`~lanes.LaneConfigError`).
    """

    lane: str
    at: float
    outcome: Outcome
    duration: float = 0.0
    delay: float = 0.0
    failures: int = 0
    cancel_after: float = 0.0
    priority: int = 0
    reprioritize_after: float | None = None
    new_priority: int = 0


_SLOW = 5.0  # extra seconds a "slow" command runs past its lane's timeout


class WorkloadError(Exception):
    """What a failing command of a workload raises (``"permanent"`` ones wrap it in
    :class:`~lanes.Permanent`)."""


class WorkloadHang(AssertionError):
    """A workload did not finish: past its time limit, or a livelock (tasks kept running at
    one instant of virtual time). The message lists the commands left unresolved."""


@attrs.frozen
class Reprioritized:
    """What one ``handle.reprioritize()`` call of a workload met and answered.

    Attributes:
        status: the command's status just before the call (``"pending"``, ``"retrying"``,
            ``"running"``, ...).
        answer: what it returned (None: it raised).
        error: the name of the error it raised (``""``: none).
        priority: ``handle.priority`` just after the call.
    """

    status: str
    answer: bool | None
    error: str
    priority: int


@attrs.frozen
class WorkloadResult:
    """One command of a finished workload.

    Attributes:
        item: what was asked for.
        handle: its handle (resolved).
        outcome: ``"completed"``, ``"failed"``, ``"timed_out"`` or ``"cancelled"``.
        calls: how many attempts the command body saw begin.
        reprioritized: the ``reprioritize`` call of an item with ``reprioritize_after``
            (None: it has none).
    """

    item: WorkItem
    handle: CommandHandle[Any]
    outcome: str
    calls: int
    reprioritized: Reprioritized | None = None


class _Body:
    """The async callable of one work item; counts its calls."""

    def __init__(self, item: WorkItem, timeout: float | None) -> None:
        self.item = item
        self.timeout = timeout
        self.calls = 0
        self.failures = 0

    async def __call__(self) -> str:
        self.calls += 1
        item = self.item
        if item.outcome == "slow":
            await trio.sleep(item.duration + (self.timeout or 0.0) + _SLOW)
            return "slow"
        await trio.sleep(item.duration)
        if item.outcome == "fail" or (item.outcome == "flaky" and self.failures < item.failures):
            self.failures += 1  # a preempted call does not get here: it does not count
            msg = f"{item.outcome} command, failure {self.failures}"
            raise WorkloadError(msg)
        if item.outcome == "permanent":
            self.failures += 1
            raise Permanent(WorkloadError(f"permanent failure {self.failures}"))
        return item.outcome


async def _outcome(handle: CommandHandle[Any]) -> str:
    try:
        await handle.result()
    except CommandTimeout:
        return "timed_out"
    except CommandFailed:
        return "failed"
    except CommandCancelled:
        return "cancelled"
    return "completed"


class Livelock(trio.abc.Instrument):
    """Cancels ``scope`` after ``budget`` task steps at one instant of virtual time.

    A time limit cannot see a livelock: virtual time stands still while tasks keep running.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.scope = trio.CancelScope()
        self.at = -1.0
        self.steps = 0
        self.tripped = False

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        now = trio.current_time()
        if now != self.at:
            self.at, self.steps = now, 0
            return
        self.steps += 1
        if self.steps > self.budget and not self.tripped:
            self.tripped = True
            self.scope.cancel()


async def run_workload(
    system: LaneSystem,
    workload: Sequence[WorkItem],
    *,
    time_limit: float = 3600.0,
    step_budget: int = 100_000,
) -> list[WorkloadResult]:
    """Submit each item at its time (relative to now), then wait until every one resolved.

    ``"cancel"`` items are cancelled through their handle ``cancel_after`` seconds after
    their submit, and items with ``reprioritize_after`` get their ``handle.reprioritize``
    call then (what it met and answered is in the result). Returns one
    :class:`WorkloadResult` per item, in workload order.

    Args:
        system: the lane system (its event log, if recorded, covers the whole workload).
        workload: the items.
        time_limit: seconds (of the trio clock: virtual under a ``MockClock``) the whole
            workload may take.
        step_budget: task steps allowed at one instant of time before it counts as a
            livelock (only a clock that stands still, like a ``MockClock``, can trip it).

    Raises:
        WorkloadHang: past ``time_limit``, or a livelock; the commands left unresolved
            stay as they are (the system's exit drains or cancels them).
    """
    guard = Livelock(step_budget)
    trio.lowlevel.add_instrument(guard)
    submitted: dict[int, tuple[_Body, CommandHandle[Any]]] = {}
    try:
        with trio.move_on_after(time_limit) as limit, guard.scope:
            return await _run(system, workload, submitted)
    finally:
        trio.lowlevel.remove_instrument(guard)
    handles = [(workload[i], h) for i, (_, h) in sorted(submitted.items())]
    if guard.tripped:
        why = (
            f"livelock: {step_budget} task steps at t={guard.at} without time advancing "
            f"(something keeps rescheduling at one instant)"
        )
    else:
        assert limit.cancelled_caught
        why = f"the workload did not finish within its time_limit of {time_limit} s"
    raise WorkloadHang(_unresolved(why, handles, len(workload)))


async def _run(
    system: LaneSystem,
    workload: Sequence[WorkItem],
    submitted: dict[int, tuple[_Body, CommandHandle[Any]]],
) -> list[WorkloadResult]:
    start = trio.current_time()
    timeouts = {config.name: config.timeout for config in system.lanes}
    calls: dict[int, Reprioritized] = {}
    async with trio.open_nursery() as nursery:
        for i in sorted(range(len(workload)), key=lambda i: workload[i].at):
            item = workload[i]
            await trio.sleep_until(start + item.at)
            body = _Body(item, timeouts[item.lane])
            handle = await system.submit(
                item.lane, body, delay=item.delay or None, priority=item.priority
            )
            submitted[i] = (body, handle)
            if item.outcome == "cancel":
                nursery.start_soon(_cancel_later, handle, item.cancel_after)
            if item.reprioritize_after is not None:
                nursery.start_soon(_reprioritize_later, handle, item, calls, i)
    results = []
    for i, item in enumerate(workload):
        body, handle = submitted[i]
        outcome = await _outcome(handle)
        results.append(WorkloadResult(item, handle, outcome, body.calls, calls.get(i)))
    return results


def _unresolved(
    why: str, handles: Sequence[tuple[WorkItem, CommandHandle[Any]]], total: int
) -> str:
    lines = [f"{why}; {len(handles)} of {total} commands were submitted. Unresolved:"]
    for item, handle in handles:
        status = handle.status
        if str(status) not in ("done", "failed", "cancelled"):
            lines.append(f"  {handle.id} (lane {handle.lane!r}, {status}): {item!r}")
    return "\n".join(lines)


async def _cancel_later(handle: CommandHandle[Any], seconds: float) -> None:
    await trio.sleep(seconds)
    handle.cancel()


async def _reprioritize_later(
    handle: CommandHandle[Any], item: WorkItem, calls: dict[int, Reprioritized], index: int
) -> None:
    assert item.reprioritize_after is not None
    await trio.sleep(item.reprioritize_after)
    status = str(handle.status)
    answer: bool | None = None
    error = ""
    try:
        answer = handle.reprioritize(item.new_priority)
    except LaneError as exc:
        error = type(exc).__name__
    calls[index] = Reprioritized(status, answer, error, handle.priority)


def priorities(results: Iterable[WorkloadResult]) -> dict[str, int | None]:
    """Each command's ``submit(priority=)``, or None if a ``reprioritize`` changed it while
    it waited, by command id.

    A recorded log needs none of it (its ``Submitted`` and ``Reprioritized`` events carry
    the priorities); pass it as ``check_invariants(..., priorities=)`` for a log whose
    events carry none (a command mapped to None is then not checked against the others of
    its lane)."""
    found: dict[str, int | None] = {}
    for result in results:
        call = result.reprioritized
        changed = call is not None and call.answer and call.priority != result.item.priority
        found[result.handle.id] = None if changed else result.item.priority
    return found


def expected_reprioritize(call: Reprioritized, item: WorkItem) -> str | None:
    """What is wrong with a ``reprioritize`` call's answer by the API's contract (None:
    nothing): a priority out of range raises ``LaneConfigError`` and changes nothing; a
    waiting (pending or retrying) command takes the new priority and answers True; any
    other answers False and keeps its priority."""
    if not -MAX_PRIORITY <= item.new_priority <= MAX_PRIORITY:
        if call.error != "LaneConfigError" or call.priority != item.priority:
            return (
                f"reprioritize({item.new_priority}) must raise LaneConfigError and change "
                f"nothing; it {call.error or f'answered {call.answer}'}, priority now "
                f"{call.priority}"
            )
        return None
    waiting = call.status in ("pending", "retrying")
    wanted = item.new_priority if waiting else item.priority
    if call.error or call.answer is not waiting or call.priority != wanted:
        got = f"raised {call.error}" if call.error else f"answered {call.answer}"
        return (
            f"reprioritize({item.new_priority}) of a {call.status} command {got} with "
            f"priority {call.priority} after it; expected {waiting} with priority {wanted}"
        )
    return None


def expected_outcomes(item: WorkItem, config: LaneConfig) -> set[str]:
    """The outcomes (``WorkloadResult.outcome``) the rules allow ``item`` on its lane.

    A ``"permanent"`` failure is never retried; a ``"fail"`` item fails after its policy's
    ``max_retries + 1`` attempts, a ``"flaky"`` one succeeds if its failures leave an
    attempt; an attempt that runs as long as the lane's timeout times out (and is retried
    like a failure); a ``"cancel"`` item may finish before its cancel arrives.
    """
    timeout = config.timeout
    tries = config.retry.max_retries + 1
    if timeout is not None and (item.duration >= timeout or item.outcome == "slow"):
        return {"timed_out", "cancelled"} if item.outcome == "cancel" else {"timed_out"}
    if item.outcome == "cancel":
        return {"cancelled", "completed"}
    if item.outcome in ("fail", "permanent") or (
        item.outcome == "flaky" and item.failures >= tries
    ):
        return {"failed"}
    return {"completed"}


def expected_attempts(item: WorkItem, config: LaneConfig, outcome: str) -> int | None:
    """How many attempts ``item`` must have taken to end with ``outcome`` (None: any)."""
    tries = config.retry.max_retries + 1
    if item.outcome == "cancel":
        return None
    if outcome == "timed_out":
        return tries
    if item.outcome == "permanent":
        return 1
    if item.outcome == "flaky":
        return min(item.failures + 1, tries)
    return tries if item.outcome == "fail" else 1


def check_results(
    results: Iterable[WorkloadResult],
    configs: Iterable[LaneConfig],
    *,
    dead_letters: Iterable[str] | None = None,
) -> None:
    """Check a finished workload against the rules: each item ended as it must
    (:func:`expected_outcomes`) after as many attempts as it must (a Permanent error is
    never retried, a failure is retried exactly ``max_retries`` times, a timeout counts as a
    failure), each ``reprioritize`` call answered as the API promises
    (:func:`expected_reprioritize`), and, given the ids of the system's dead letters, those
    are exactly the commands that failed or timed out for good.

    Raises:
        AssertionError: the first result that breaks a rule, named with its item.
    """
    lanes = {config.name: config for config in configs}
    failed = set()
    for result in results:
        config = lanes[result.item.lane]
        allowed = expected_outcomes(result.item, config)
        assert result.outcome in allowed, (
            f"{result.handle.id} ended {result.outcome}, the rules allow {sorted(allowed)}: "
            f"{result.item!r} on {config!r}"
        )
        attempts = expected_attempts(result.item, config, result.outcome)
        assert attempts is None or result.handle.attempts == attempts, (
            f"{result.handle.id} ended {result.outcome} after {result.handle.attempts} "
            f"attempts, the rules say {attempts} (retry {config.retry}): {result.item!r}"
        )
        if result.reprioritized is not None:
            wrong = expected_reprioritize(result.reprioritized, result.item)
            assert wrong is None, f"{result.handle.id}: {wrong}: {result.item!r}"
        if result.outcome in ("failed", "timed_out"):
            failed.add(result.handle.id)
    if dead_letters is not None:
        letters = set(dead_letters)
        assert letters == failed, (
            f"dead letters must be exactly the commands that failed for good: "
            f"{sorted(letters - failed)} dead-lettered but not failed, "
            f"{sorted(failed - letters)} failed but not dead-lettered"
        )
