"""What follows an attempt: one pure decision, shared by the in-process core and the
distributed worker.

:func:`next_step` maps how an attempt ended and the lane's retry policy to the command's next
step: done, retry after a delay, dead letter, cancelled, or requeued at its lane's head
(preempted). No clock, no randomness of its own (the jitter draw is passed in), no I/O: the
callers perform the step.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs

from actors import leaves

from ._config import RetryPolicy
from ._errors import Permanent

__all__ = ["Ended", "Next", "Step", "next_step", "unwrap_permanent"]


class Ended(enum.Enum):
    """How an attempt ended."""

    RETURNED = "returned"
    RAISED = "raised"
    TIMED_OUT = "timed out"
    CANCELLED = "cancelled"  # handle.cancel(), cancel_lane, shutdown
    PREEMPTED = "preempted"


class Next(enum.Enum):
    """The command's next step."""

    DONE = "done"
    RETRY = "retry"
    DEAD_LETTER = "dead letter"
    CANCELLED = "cancelled"
    REQUEUE = "requeue"  # back to the head of its lane; the attempt does not count


@attrs.frozen
class Step:
    """The decision: ``next``; for a retry, ``delay`` seconds; the error to report."""

    next: Next
    delay: float = 0.0
    error: BaseException | None = None
    permanent: bool = False


def _no_jitter() -> float:
    return 0.0


DONE = Step(Next.DONE)
CANCELLED = Step(Next.CANCELLED)
REQUEUE = Step(Next.REQUEUE)


def next_step(
    ended: Ended,
    *,
    attempt: int,
    retry: RetryPolicy,
    error: BaseException | None = None,
    draw: Callable[[], float] = _no_jitter,
) -> Step:
    """Decide what follows attempt number ``attempt`` (1 for the first) that ended so.

    A failure (raised or timed out) is retried while ``attempt <= retry.max_retries``,
    after ``retry.delay(attempt, draw())`` seconds (``draw()`` returns a number in [0, 1)
    that drives the jitter; it is called only for a retry), unless it is permanent
    (:func:`unwrap_permanent`); otherwise it is dead-lettered.
    """
    if ended is Ended.RETURNED:
        return DONE
    if ended is Ended.CANCELLED:
        return CANCELLED
    if ended is Ended.PREEMPTED:
        return REQUEUE
    if error is None:
        msg = f"next_step({ended}) needs the attempt's error"
        raise ValueError(msg)
    permanent, reported = unwrap_permanent(error)
    if permanent or attempt > retry.max_retries:
        return Step(Next.DEAD_LETTER, error=reported, permanent=permanent)
    return Step(Next.RETRY, delay=retry.delay(attempt, draw()), error=reported)


def unwrap_permanent(error: BaseException) -> tuple[bool, BaseException]:
    """Whether ``error`` is a :class:`Permanent` failure, and the error to report.

    Permanent alone, or as every leaf of an exception group (as a nursery inside the
    command raises it), is permanent; the error reported is the wrapped one (a group's
    single leaf is unwrapped; with several leaves the group is reported). A group that
    also holds other errors is not permanent.
    """
    if isinstance(error, BaseExceptionGroup):
        _, rest = error.split(Permanent)
        if rest is not None:
            return False, error
        found = leaves(error)
        if len(found) != 1:
            return True, error
        error = found[0]
    if not isinstance(error, Permanent):
        return False, error
    return True, error.error if isinstance(error.error, BaseException) else error
