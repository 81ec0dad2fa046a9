"""A lane's FIFO is linked through its jobs (``Job.after``): every way a job leaves it keeps
the links, the front and the back right, and allocates nothing per queued job."""

from __future__ import annotations

import tracemalloc

import lanes
from lanes._policy import Job, Policy

LANE = lanes.LaneConfig("work", 0, max_concurrency=1)


def policy_with(count: int) -> tuple[Policy, list[Job]]:
    """A policy whose lane runs one job and queues ``count`` more (FIFO, priority 0)."""
    policy = Policy((LANE,), None)
    running = Job("work")
    assert policy.add(running, 0.0)  # the lane's slot: the others queue behind it
    jobs = [Job("work") for _ in range(count)]
    for job in jobs:
        assert not policy.add(job, 0.0)
    return policy, jobs


def check_links(policy: Policy, expected: list[Job]) -> None:
    state = policy.lanes["work"]
    assert state.queue == expected
    assert state.first is (expected[0] if expected else None)
    assert state.last is (expected[-1] if expected else None)
    if expected:
        assert expected[-1].after is None


def test_jobs_join_at_the_back_and_leave_from_anywhere() -> None:
    policy, (a, b, c, d) = policy_with(4)
    check_links(policy, [a, b, c, d])
    assert policy.reprioritize(d, 1)  # the back leaves the FIFO (for the ranked heap)
    check_links(policy, [a, b, c])
    e = Job("work")
    policy.add(e, 0.0)  # joins behind c, not behind the job that left
    check_links(policy, [a, b, c, e])
    assert policy.move(b, 0.0, 5.0)  # the middle becomes delayed
    check_links(policy, [a, c, e])
    assert b.after is None
    assert policy.reprioritize(a, 2)  # the front
    check_links(policy, [c, e])
    assert policy.position(e) == 1


def test_cancelled_jobs_are_dropped_when_they_reach_the_front() -> None:
    policy, (a, b, c) = policy_with(3)
    assert policy.remove(a)  # cancelled: still linked, skipped at the front
    assert policy.remove(b)
    state = policy.lanes["work"]
    assert state.head() is c
    check_links(policy, [c])
    assert a.after is None and b.after is None  # unlinked: they hold no later job alive


def test_a_preempted_job_goes_back_to_the_front() -> None:
    policy, (a,) = policy_with(1)
    running = next(iter(policy.lanes["work"].running))
    policy.requeue_front(running, 1.0)
    check_links(policy, [running, a])
    empty, _ = policy_with(0)
    alone = next(iter(empty.lanes["work"].running))
    empty.requeue_front(alone, 1.0)  # into an empty FIFO: front and back
    check_links(empty, [alone])


def test_removing_a_lane_unlinks_every_job() -> None:
    policy, jobs = policy_with(5)
    policy.remove(jobs[1])  # a cancelled one, still linked
    removed = policy.remove_lane("work")
    assert removed == [jobs[0], *jobs[2:]]
    check_links(policy, [])
    assert all(job.after is None for job in jobs)


def test_queueing_allocates_nothing_per_job() -> None:
    policy, _ = policy_with(0)
    state = policy.lanes["work"]
    jobs = [Job("work") for _ in range(1000)]
    orders = list(range(1000, 2000))  # (made first: an int above 256 is an object)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for job, order in zip(jobs, orders, strict=True):
            state.enqueue(job, order)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert state.queue == jobs
    assert grown < 200, grown  # a deque takes a 528-byte block per 64 jobs
