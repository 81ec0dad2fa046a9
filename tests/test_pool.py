"""actors.WorkerPool: jobs run in worker tasks (of the pool's own nursery when served, of the
nursery it is attached to otherwise), back to back, started on demand."""

from __future__ import annotations

import contextvars
import math
import time

import pytest
import trio
import trio.testing

from actors import WorkerPool

CANCELLED = -1


class Jobs:
    """A pool whose jobs sleep, and which records what ran and what was settled.

    A job ``j`` sleeps ``j`` seconds (under a deadline ``deadlines[j]``, default none) and
    returns ``j * 10``; the pool settles a job its scope cancelled with ``CANCELLED``.
    """

    def __init__(
        self, *, chain: list[int] | None = None, deadlines: dict[int, float] | None = None
    ) -> None:
        self.ran: list[int] = []
        self.settled: list[tuple[int, int]] = []
        self.interrupted: list[int] = []
        self.scopes: dict[int, trio.CancelScope] = {}
        self.chain = chain or []
        self.deadlines = deadlines or {}
        self.pool: WorkerPool[int, int] = WorkerPool(
            self.run,
            self.settle,
            name="test",
            cancelled=CANCELLED,
            interrupted=self.interrupted.append,
        )

    async def run(self, job: int, scope: trio.CancelScope) -> int:
        self.ran.append(job)
        self.scopes[job] = scope
        scope.deadline = self.deadlines.get(job, math.inf)
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
        assert jobs.pool.workers == jobs.pool.parked == 2  # idle workers park...
        jobs.pool.reap()
        await trio.testing.wait_all_tasks_blocked()
        assert jobs.pool.workers == jobs.pool.parked == 0  # ...until reaped: no task left
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
        assert jobs.pool.workers == jobs.pool.parked == 1  # one worker ran all three
        nursery.cancel_scope.cancel()


async def test_an_attached_pool_starts_with_its_first_job(autojump_clock: trio.abc.Clock) -> None:
    jobs = Jobs()
    async with trio.open_nursery() as nursery:
        jobs.pool.attach(nursery)
        await trio.testing.wait_all_tasks_blocked()
        assert jobs.pool.serving
        assert len(nursery.child_tasks) == 0  # idle: no task, no nursery of its own
        jobs.pool.deliver(1)
        jobs.pool.deliver(2)  # no worker free: each gets a task of the nursery, at once
        assert [task.name for task in nursery.child_tasks] == ["test", "test"]
        assert not any(task.child_nurseries for task in nursery.child_tasks)
        await trio.sleep(2.5)
        assert sorted(jobs.settled) == [(1, 10), (2, 20)]
        assert jobs.pool.parked == 2
        jobs.pool.reap()  # the workers end
        await trio.testing.wait_all_tasks_blocked()
        assert len(nursery.child_tasks) == 0
        assert jobs.pool.serving  # it starts again with its next job
        jobs.pool.deliver(1)
        await trio.sleep(1.5)
        assert jobs.settled[-1] == (1, 10)
        assert [task.name for task in nursery.child_tasks] == ["test"]
        nursery.cancel_scope.cancel()
    assert not jobs.pool.serving  # its worker was cancelled from outside: it stopped


async def test_cancelling_the_owner_cancels_running_jobs(autojump_clock: trio.abc.Clock) -> None:
    jobs = Jobs()
    with trio.move_on_after(1):
        async with trio.open_nursery() as nursery:
            jobs.pool.attach(nursery)
            jobs.pool.deliver(100)
    assert jobs.ran == [100]
    assert jobs.settled == []  # cancelled in run(): never settled...
    assert jobs.interrupted == [100]  # ...but reported to the owner
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


async def test_a_cancelled_job_is_settled_and_the_next_gets_a_fresh_scope(
    autojump_clock: trio.abc.Clock,
) -> None:
    jobs = Jobs(chain=[1, 2])
    async with trio.open_nursery() as nursery:
        await nursery.start(jobs.pool.serve)
        jobs.pool.deliver(5)
        await trio.sleep(1)
        jobs.scopes[5].cancel()  # cancels job 5 alone
        await trio.sleep(10)
        assert jobs.settled == [(5, CANCELLED), (1, 10), (2, 20)]
        assert jobs.scopes[1] is not jobs.scopes[5]  # renewed after the cancellation
        assert jobs.scopes[2] is jobs.scopes[1]  # back to back: one scope
        assert not jobs.scopes[1].cancel_called
        assert jobs.interrupted == []
        assert jobs.pool.workers == jobs.pool.parked == 1  # one worker, parked
        nursery.cancel_scope.cancel()


async def test_a_deadline_acts_on_its_own_job_only(autojump_clock: trio.abc.Clock) -> None:
    # Job 3 times out at t=2; job 4, handed to the same worker, sets no deadline and runs
    # its full 4 s; then job 1 gets a deadline that does not bite.
    jobs = Jobs(chain=[4, 1], deadlines={3: 2.0, 1: 100.0})
    async with trio.open_nursery() as nursery:
        await nursery.start(jobs.pool.serve)
        jobs.pool.deliver(3)
        await trio.sleep(10)
        assert jobs.settled == [(3, CANCELLED), (4, 40), (1, 10)]
        assert trio.current_time() == pytest.approx(10)
        nursery.cancel_scope.cancel()


async def test_a_job_that_raises_through_run_fails_the_worker_only_after_reporting(
    autojump_clock: trio.abc.Clock,
) -> None:
    class Boom(Exception):
        pass

    interrupted: list[int] = []

    async def run(job: int, scope: trio.CancelScope) -> int:
        await trio.sleep(1)
        raise Boom(job)

    pool: WorkerPool[int, int] = WorkerPool(
        run, lambda job, result: None, cancelled=CANCELLED, interrupted=interrupted.append
    )
    with pytest.RaisesGroup(Boom, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.serve)
            pool.deliver(7)
    assert interrupted == [7]
    assert pool.workers == 0


async def test_jobs_that_never_checkpoint_still_let_other_tasks_run() -> None:
    # 2,000 jobs back to back that never checkpoint (about 1 us each): the worker
    # checkpoints every YIELD_EVERY seconds, so a task spinning on checkpoints gets turns.
    left = [2_000]
    settled: list[int] = []
    scopes: set[int] = set()

    async def run(job: int, scope: trio.CancelScope) -> int:
        scopes.add(id(scope))
        end = time.perf_counter() + 1e-6
        while time.perf_counter() < end:
            pass
        return job

    def settle(job: int, result: int) -> None:
        settled.append(result)
        left[0] -= 1
        if left[0]:
            pool.deliver(job + 1)

    pool: WorkerPool[int, int] = WorkerPool(run, settle, cancelled=CANCELLED)
    turns = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.serve)
        pool.deliver(0)
        while left[0]:
            turns += 1
            await trio.lowlevel.checkpoint()
        nursery.cancel_scope.cancel()
    assert settled == list(range(2_000))
    assert turns >= 2  # the other task ran in between, more than once
    assert len(scopes) == 1  # yielding keeps the worker's scope


async def test_a_parked_worker_takes_the_next_job_instead_of_a_new_task(
    autojump_clock: trio.abc.Clock,
) -> None:
    jobs = Jobs()
    workers: list[trio.lowlevel.Task] = []
    run = jobs.run

    async def recording_run(job: int, scope: trio.CancelScope) -> int:
        workers.append(trio.lowlevel.current_task())
        return await run(job, scope)

    jobs.pool._run = recording_run  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(jobs.pool.serve)
        jobs.pool.deliver(1)
        await trio.sleep(2)
        assert jobs.pool.parked == 1
        jobs.pool.deliver(1)
        await trio.sleep(2)
        assert jobs.settled == [(1, 10), (1, 10)]
        assert workers[0] is workers[1]  # the same task ran both
        assert jobs.pool.workers == 1
        nursery.cancel_scope.cancel()


async def test_a_worker_that_runs_dry_after_reap_exits_instead_of_parking(
    autojump_clock: trio.abc.Clock,
) -> None:
    jobs = Jobs()
    original = jobs.settle

    def settle_and_reap(job: int, result: int) -> None:
        original(job, result)
        jobs.pool.reap()  # the owner went idle while this worker settled

    jobs.pool._settle = settle_and_reap  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(jobs.pool.serve)
        jobs.pool.deliver(1)
        await trio.sleep(2)
        assert jobs.pool.workers == jobs.pool.parked == 0
        nursery.cancel_scope.cancel()


async def test_closing_ends_parked_workers(autojump_clock: trio.abc.Clock) -> None:
    jobs = Jobs()
    async with trio.open_nursery() as nursery:
        jobs.pool.attach(nursery)
        jobs.pool.deliver(1)
        await trio.sleep(2)
        assert jobs.pool.parked == 1
        jobs.pool.close()
        await trio.testing.wait_all_tasks_blocked()
        assert jobs.pool.workers == 0
        assert len(nursery.child_tasks) == 0
        assert not jobs.pool.serving


async def test_a_job_that_returns_despite_pool_cancel_leaves_a_fresh_scope_to_the_next(
    autojump_clock: trio.abc.Clock,
) -> None:
    scopes: list[trio.CancelScope] = []
    settled: list[tuple[int, int]] = []
    chain = [2]

    async def run(job: int, scope: trio.CancelScope) -> int:
        scopes.append(scope)
        scope.deadline = math.inf
        if job == 1:
            pool.cancel(scope)  # cancelled, but it returns before any checkpoint
            return 10
        await trio.sleep(1)  # the next job must not see the cancellation
        return 20

    def settle(job: int, result: int) -> None:
        settled.append((job, result))
        if chain:
            pool.deliver(chain.pop(0))

    pool: WorkerPool[int, int] = WorkerPool(run, settle, name="t", cancelled=CANCELLED)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.serve)
        pool.deliver(1)
        await trio.sleep(2)
        assert settled == [(1, 10), (2, 20)]
        assert scopes[1] is not scopes[0]  # renewed after the cancelled one
        nursery.cancel_scope.cancel()


VAR = contextvars.ContextVar[str]("pool_test_var", default="home")


class ContextJobs:
    """Jobs that each carry a context (``context_of``); the pool adopts new workers' copies."""

    def __init__(self) -> None:
        self.contexts: dict[int, contextvars.Context] = {}
        self.adopted: list[int] = []
        self.seen: dict[int, tuple[str, bool]] = {}  # job: (VAR in run, ran natively)
        self.settled: list[tuple[int, int]] = []
        self.scopes: dict[int, trio.CancelScope] = {}
        self.pool: WorkerPool[int, int] = WorkerPool(
            self.run,
            self.settle,
            name="ctx",
            cancelled=CANCELLED,
            context_of=self.contexts.get,
            adopt_context=self.adopt,
        )

    def job(self, number: int, value: str) -> int:
        context = contextvars.copy_context()
        context.run(VAR.set, value)
        self.contexts[number] = context
        return number

    def adopt(self, job: int, context: contextvars.Context) -> None:
        self.adopted.append(job)
        self.contexts[job] = context

    async def run(self, job: int, scope: trio.CancelScope) -> int:
        native = trio.lowlevel.current_task().context is self.contexts[job]
        self.seen[job] = (VAR.get(), native)
        self.scopes[job] = scope
        scope.deadline = math.inf
        await trio.sleep(job)
        return job * 10

    def settle(self, job: int, result: int) -> None:
        self.settled.append((job, result))


async def test_jobs_run_natively_in_their_context_on_new_and_parked_workers(
    autojump_clock: trio.abc.Clock,
) -> None:
    jobs = ContextJobs()
    async with trio.open_nursery() as nursery:
        jobs.pool.attach(nursery)
        jobs.pool.deliver(jobs.job(1, "one"))  # no worker: one is spawned in its context
        await trio.sleep(1.5)
        assert jobs.adopted == [1]  # the new worker's copy became the job's context
        (worker,) = jobs.pool._parked
        home = worker.context
        assert VAR not in home  # parked in its own context, not the job's
        jobs.pool.deliver(jobs.job(2, "two"))  # the parked worker: no adoption needed
        assert worker.context is jobs.contexts[2]
        await trio.sleep(2.5)
        assert worker.context is home
        nursery.cancel_scope.cancel()
    assert jobs.seen == {1: ("one", True), 2: ("two", True)}
    assert jobs.adopted == [1]
    assert VAR.get() == "home"


async def test_a_job_cancelled_while_running_in_its_context_leaves_the_worker_its_own(
    autojump_clock: trio.abc.Clock,
) -> None:
    jobs = ContextJobs()
    async with trio.open_nursery() as nursery:
        jobs.pool.attach(nursery)
        jobs.pool.deliver(jobs.job(1, "one"))
        await trio.sleep(1.5)
        (worker,) = jobs.pool._parked
        home = worker.context
        jobs.pool.deliver(jobs.job(5, "five"))
        await trio.sleep(1)
        jobs.pool.cancel(jobs.scopes[5])  # mid-run, in its context
        await trio.testing.wait_all_tasks_blocked()
        assert jobs.settled[-1] == (5, CANCELLED)
        assert jobs.pool._parked == [worker] and worker.context is home
        jobs.pool.deliver(jobs.job(1, "again"))  # the next job sees its own value
        await trio.sleep(1.5)
        nursery.cancel_scope.cancel()
    assert jobs.seen[1] == ("again", True)
    assert jobs.pool.workers == 0


async def test_a_job_whose_context_is_entered_at_delivery_gets_a_plain_worker(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Spawning inside a context that is entered at that moment cannot be done: the worker
    # is spawned as without context_of, and the job's context stays the job's.
    jobs = ContextJobs()
    async with trio.open_nursery() as nursery:
        jobs.pool.attach(nursery)
        job = jobs.job(1, "one")
        context = jobs.contexts[job]
        context.run(jobs.pool.deliver, job)
        await trio.sleep(1.5)
        nursery.cancel_scope.cancel()
    assert jobs.adopted == []
    assert jobs.contexts[job] is context
    assert jobs.settled == [(1, 10)]
    # Not natively: the worker's context is a copy of the deliverer's (here the job's own,
    # entered), which the job does not adopt; `run` would enter the job's itself.
    assert jobs.seen[1] == ("one", False)
