"""actors.WorkerPool: jobs run in the pool's own nursery, back to back, started on demand."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import WorkerPool


class Jobs:
    """A pool whose jobs sleep, and which records what ran and what was settled."""

    def __init__(self, *, chain: list[int] | None = None) -> None:
        self.ran: list[int] = []
        self.settled: list[tuple[int, int]] = []
        self.chain = chain or []
        self.pool: WorkerPool[int, int] = WorkerPool(self.run, self.settle, name="test")

    async def run(self, job: int) -> int:
        self.ran.append(job)
        await trio.sleep(job)
        return job * 10

    def settle(self, job: int, result: int) -> None:
        self.settled.append((job, result))
        if self.chain:
            self.pool.deliver(self.chain.pop(0))  # handed to the settling worker


async def test_serve_runs_each_job_and_settles_it(autojump_clock: trio.abc.Clock) -> None:
    jobs = Jobs()
    async with trio.open_nursery() as nursery:
        await nursery.start(jobs.pool.serve)
        assert jobs.pool.serving
        jobs.pool.deliver(2)
        jobs.pool.deliver(1)
        await trio.sleep(3)
        assert sorted(jobs.settled) == [(1, 10), (2, 20)]
        assert jobs.pool.workers == 0  # an idle pool holds no worker task
        nursery.cancel_scope.cancel()
    assert not jobs.pool.serving


async def test_a_job_delivered_while_settling_runs_back_to_back(
    autojump_clock: trio.abc.Clock,
) -> None:
    jobs = Jobs(chain=[1, 1])
    async with trio.open_nursery() as nursery:
        await nursery.start(jobs.pool.serve)
        jobs.pool.deliver(1)
        await trio.testing.wait_all_tasks_blocked()
        assert jobs.pool.workers == 1
        await trio.sleep(3.5)
        assert [job for job, _ in jobs.settled] == [1, 1, 1]
        assert jobs.pool.workers == 0
        nursery.cancel_scope.cancel()


async def test_an_attached_pool_starts_with_its_first_job(autojump_clock: trio.abc.Clock) -> None:
    jobs = Jobs()
    async with trio.open_nursery() as nursery:
        jobs.pool.attach(nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert jobs.pool.serving
        assert len(nursery.child_tasks) == 0  # idle: no task, no nursery of its own
        jobs.pool.deliver(1)
        jobs.pool.deliver(2)  # before serve() ran: both wait for it
        await trio.sleep(2.5)
        assert sorted(jobs.settled) == [(1, 10), (2, 20)]
        assert [task.name for task in nursery.child_tasks] == ["test"]
        nursery.cancel_scope.cancel()
    assert not jobs.pool.serving


async def test_cancelling_the_owner_cancels_running_jobs(autojump_clock: trio.abc.Clock) -> None:
    jobs = Jobs()
    with trio.move_on_after(1):
        async with trio.open_nursery() as nursery:
            jobs.pool.attach(nursery)
            jobs.pool.deliver(100)
    assert jobs.ran == [100]
    assert jobs.settled == []  # cancelled in run(): never settled
    assert trio.current_time() == pytest.approx(1.0)


async def test_a_closed_or_unstarted_pool_refuses_jobs() -> None:
    jobs = Jobs()
    with pytest.raises(RuntimeError, match="not serving"):
        jobs.pool.deliver(1)
    async with trio.open_nursery() as nursery:
        jobs.pool.attach(nursery)
        jobs.pool.close()
        assert not jobs.pool.serving
        with pytest.raises(RuntimeError, match="attach"):
            jobs.pool.deliver(1)
