"""Run a workload of :class:`~lanes.testing.WorkItem` on a real lane system."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import attrs
import trio

from .._command import CommandHandle
from .._errors import CommandCancelled, CommandFailed, CommandTimeout
from .._system import LaneSystem

__all__ = ["Outcome", "WorkItem", "WorkloadError", "WorkloadResult", "run_workload"]

Outcome = Literal["success", "fail", "flaky", "slow", "cancel"]
"""What a command of a workload does: succeed; always fail; fail ``failures`` times then
succeed; run ``slow`` (past its lane's timeout, when it has one); or get cancelled by its
submitter ``cancel_after`` seconds after it was submitted."""


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
    """

    lane: str
    at: float
    outcome: Outcome
    duration: float = 0.0
    delay: float = 0.0
    failures: int = 0
    cancel_after: float = 0.0


_SLOW = 5.0  # extra seconds a "slow" command runs past its lane's timeout


class WorkloadError(Exception):
    """What a failing command of a workload raises."""


@attrs.frozen
class WorkloadResult:
    """One command of a finished workload.

    Attributes:
        item: what was asked for.
        handle: its handle (resolved).
        outcome: ``"completed"``, ``"failed"``, ``"timed_out"`` or ``"cancelled"``.
        calls: how many attempts the command body saw begin.
    """

    item: WorkItem
    handle: CommandHandle[Any]
    outcome: str
    calls: int


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


async def run_workload(system: LaneSystem, workload: Sequence[WorkItem]) -> list[WorkloadResult]:
    """Submit each item at its time (relative to now), then wait until every one resolved.

    ``"cancel"`` items are cancelled through their handle ``cancel_after`` seconds after
    their submit. Returns one :class:`WorkloadResult` per item, in workload order.
    """
    start = trio.current_time()
    timeouts = {config.name: config.timeout for config in system.lanes}
    submitted: dict[int, tuple[_Body, CommandHandle[Any]]] = {}
    async with trio.open_nursery() as nursery:
        for i in sorted(range(len(workload)), key=lambda i: workload[i].at):
            item = workload[i]
            await trio.sleep_until(start + item.at)
            body = _Body(item, timeouts[item.lane])
            handle = await system.submit(item.lane, body, delay=item.delay or None)
            submitted[i] = (body, handle)
            if item.outcome == "cancel":
                nursery.start_soon(_cancel_later, handle, item.cancel_after)
    results = []
    for i, item in enumerate(workload):
        body, handle = submitted[i]
        results.append(WorkloadResult(item, handle, await _outcome(handle), body.calls))
    return results


async def _cancel_later(handle: CommandHandle[Any], seconds: float) -> None:
    await trio.sleep(seconds)
    handle.cancel()
