"""lanes._outcome.next_step: the one decision of what follows an attempt."""

from __future__ import annotations

import pytest

from lanes import Permanent, RetryPolicy
from lanes._outcome import Ended, Next, next_step, unwrap_permanent

RETRY_TWICE = RetryPolicy.fixed(2, 0.5)


def no_draw() -> float:
    raise AssertionError("the jitter draw is only for retries")


def test_a_returned_attempt_is_done_and_never_retried() -> None:
    assert next_step(Ended.RETURNED, attempt=1, retry=RETRY_TWICE, draw=no_draw).next is Next.DONE


@pytest.mark.parametrize("ended", [Ended.RAISED, Ended.TIMED_OUT])
def test_a_failure_is_retried_while_retries_remain(ended: Ended) -> None:
    error = ValueError("boom")
    for attempt in (1, 2):
        step = next_step(ended, attempt=attempt, retry=RETRY_TWICE, error=error)
        assert (step.next, step.delay, step.error) == (Next.RETRY, 0.5, error)
    step = next_step(ended, attempt=3, retry=RETRY_TWICE, error=error, draw=no_draw)
    assert (step.next, step.error, step.permanent) == (Next.DEAD_LETTER, error, False)


def test_no_retry_policy_dead_letters_the_first_failure() -> None:
    step = next_step(Ended.RAISED, attempt=1, retry=RetryPolicy.none(), error=KeyError("k"))
    assert step.next is Next.DEAD_LETTER


def test_the_jitter_draw_drives_the_delay() -> None:
    retry = RetryPolicy.exponential(3, initial_delay=1.0, multiplier=2.0, jitter=0.5)
    low = next_step(Ended.RAISED, attempt=2, retry=retry, error=OSError(), draw=lambda: 0.0)
    high = next_step(Ended.RAISED, attempt=2, retry=retry, error=OSError(), draw=lambda: 0.999)
    assert low.delay == retry.delay(2, 0.0)
    assert high.delay == retry.delay(2, 0.999)
    assert low.delay != high.delay


def test_permanent_skips_the_retries_and_reports_the_wrapped_error() -> None:
    inner = ValueError("bad input")
    step = next_step(Ended.RAISED, attempt=1, retry=RETRY_TWICE, error=Permanent(inner))
    assert (step.next, step.error, step.permanent) == (Next.DEAD_LETTER, inner, True)


def test_permanent_with_a_message_reports_itself() -> None:
    error = Permanent("no such user")
    step = next_step(Ended.RAISED, attempt=1, retry=RETRY_TWICE, error=error, draw=no_draw)
    assert (step.next, step.error) == (Next.DEAD_LETTER, error)


def test_permanent_inside_an_exception_group_is_permanent() -> None:
    inner = ValueError("bad")
    group = ExceptionGroup("from a nursery", [ExceptionGroup("nested", [Permanent(inner)])])
    step = next_step(Ended.RAISED, attempt=1, retry=RETRY_TWICE, error=group, draw=no_draw)
    assert (step.next, step.error, step.permanent) == (Next.DEAD_LETTER, inner, True)


def test_a_group_of_several_permanent_errors_is_permanent_and_reported_whole() -> None:
    group = ExceptionGroup("two", [Permanent("a"), Permanent("b")])
    assert unwrap_permanent(group) == (True, group)


def test_a_group_mixing_permanent_and_other_errors_is_retried() -> None:
    group = ExceptionGroup("mixed", [Permanent("a"), OSError("flaky")])
    step = next_step(Ended.RAISED, attempt=1, retry=RETRY_TWICE, error=group)
    assert (step.next, step.error, step.permanent) == (Next.RETRY, group, False)


def test_cancelled_and_preempted_attempts() -> None:
    assert next_step(Ended.CANCELLED, attempt=1, retry=RETRY_TWICE).next is Next.CANCELLED
    assert next_step(Ended.PREEMPTED, attempt=1, retry=RETRY_TWICE).next is Next.REQUEUE


def test_a_failure_without_its_error_is_refused() -> None:
    with pytest.raises(ValueError, match="needs the attempt's error"):
        next_step(Ended.RAISED, attempt=1, retry=RETRY_TWICE)
