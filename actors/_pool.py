"""A pool of worker tasks that run jobs back to back, in a nursery the pool owns or is given."""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import outcome
import trio

__all__ = ["WorkerPool"]

J = TypeVar("J")
YIELD_EVERY = 0.0001  # seconds a worker may run jobs back to back without a checkpoint
R = TypeVar("R")

_STOP: Any = object()  # what a parked worker is woken with when it is to exit


class WorkerPool(Generic[J, R]):
    """Runs each job given to :meth:`deliver` in a worker task (of the pool's own nursery, or
    of the one it is attached to).

    A job runs in two steps: ``run(job, scope)`` (async: the work itself) and then
    ``settle(job, result)`` (synchronous: the bookkeeping). If ``settle`` delivers another
    job to the same pool, the worker that just finished runs it next, back to back, without
    a task switch. A worker with nothing to run parks; the next :meth:`deliver` hands its job
    to a parked worker (a reschedule, cheaper than a new task) before it spawns one.
    :meth:`reap` ends the parked workers: the owner calls it when it goes idle, so an idle
    pool holds no task. A worker that ran jobs back to back for :data:`YIELD_EVERY` seconds
    checkpoints before the next one, so jobs that never checkpoint cannot starve other tasks.

    Each worker runs its jobs inside a cancel scope of its own, the ``scope`` that ``run``
    receives (entering a fresh scope per job would cost more than a trivial job itself).
    While a job runs, cancelling that scope, or setting its deadline, acts on that job
    alone: a job whose scope catches a cancellation is settled with the ``cancelled``
    result, and the worker's next job gets a fresh scope. So ``run`` may keep the scope only
    until its job is settled, and must set the deadline it needs (``math.inf`` for none)
    before it awaits anything: the previous job's deadline is still on it.

    If a cancellation from outside the pool (its owner's) ends a running job,
    ``interrupted(job)`` is called, if given, before the cancellation propagates; a job
    delivered but not started yet is then left to its owner (the pool never runs it).

    ``context_of(job)``, if given, is the ``contextvars.Context`` a job runs in (or None).
    A parked worker handed such a job gets that context as its task's context, so the
    job's steps run in it natively (``run`` can tell: ``current_task().context`` is the
    job's), and the worker's own context is given back before it parks. With
    ``adopt_context(job, context)`` too, a new worker is spawned inside the job's context:
    its task runs in a copy of it, which ``adopt_context`` makes the job's. A worker
    handed a job back to back runs it in the step's context: ``run`` then enters the job's
    context itself (``actors.run_in_context``) unless it is the job's already.

    The pool does not limit concurrency itself: the caller delivers a job only when it has a
    slot for it (each delivered job gets a worker at once).

    Run the pool with ``await nursery.start(pool.serve)`` (it then serves until cancelled,
    its workers in a nursery of its own), or attach it to a nursery: ``pool.attach(nursery)``,
    and each worker is a task of that nursery, started when a job needs one and ended when
    it is reaped, so an idle attached pool costs no task at all (and a busy one no nursery
    of its own). Either way cancelling the nursery's owner cancels every running job; an
    attached pool whose worker was cancelled from outside (or failed) stops serving.
    """

    def __init__(
        self,
        run: Callable[[J, trio.CancelScope], Awaitable[R]],
        settle: Callable[[J, R], None],
        name: str = "",
        *,
        cancelled: R,
        interrupted: Callable[[J], None] | None = None,
        context_of: Callable[[J], contextvars.Context | None] | None = None,
        adopt_context: Callable[[J, contextvars.Context], None] | None = None,
    ) -> None:
        self._run = run
        self._context_of = context_of
        self._adopt_context = adopt_context
        self._settle = settle
        self._cancelled = cancelled
        self._interrupted = interrupted
        self.name = name or "pool"
        self.workers = 0
        self._nursery: trio.Nursery | None = None  # serve()'s own (the workers' nursery)
        self._parent: trio.Nursery | None = None  # attach()'s: where workers start
        self._parked: list[trio.lowlevel.Task] = []
        self._returning = False
        self._handoff: J | None = None
        self._has_handoff = False
        self._closed = False
        self._cancels = 0  # how many times cancel() was called
        self._linger = True  # whether a worker with nothing to run parks (or exits)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the pool's nursery until cancelled. Ready (``started``) once jobs can run."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._parent = None  # a pool that stopped serving never starts again

    def attach(self, nursery: trio.Nursery) -> None:
        """Serve in ``nursery``: each worker is a task of it, started by a :meth:`deliver`
        that finds no worker free (its job runs when that task first runs).

        While no job runs and none is parked, and again once its workers are reaped, the
        pool holds no task. A worker that a cancellation from outside ends (the nursery's
        owner cancelled it), or that fails, stops the pool: it never starts workers again.
        """
        self._parent = nursery

    def close(self) -> None:
        """Take no more jobs: parked workers exit, running ones exit after their job."""
        self._closed = True
        self._parent = None
        self.reap()

    @property
    def serving(self) -> bool:
        """Whether jobs can be delivered: the pool runs, or will start on demand."""
        return not self._closed and (self._nursery is not None or self._parent is not None)

    @property
    def parked(self) -> int:
        """How many workers wait for a job."""
        return len(self._parked)

    def deliver(self, job: J) -> None:
        """Run ``job`` now: hand it to the worker that is settling, to a parked worker, or
        to a new worker.

        Raises:
            RuntimeError: the pool is not serving.
        """
        self._linger = True
        if self._returning and not self._has_handoff:
            self._handoff = job
            self._has_handoff = True
            return
        if self._parked:
            task = self._parked.pop()
            if self._context_of is not None:
                context = self._context_of(job)
                if context is not None:
                    # The worker's next step, the job's start, runs in the job's context
                    # (the event loop enters a task's context at each of its steps).
                    task.context = context
            # The job travels in the reschedule itself: no table of given jobs to keep.
            trio.lowlevel.reschedule(task, outcome.Value(job))
            return
        if not self.serving:
            msg = (
                f"worker pool {self.name!r} is not serving; start it with "
                "nursery.start(serve) or attach(nursery)"
            )
            raise RuntimeError(msg)
        nursery = self._nursery if self._nursery is not None else self._parent
        assert nursery is not None
        context = None
        if self._adopt_context is not None and self._context_of is not None:
            context = self._context_of(job)
        if context is None:
            nursery.start_soon(self._worker, job, name=self.name)
        else:
            # Spawned inside the job's context, the worker's task runs in a copy of it,
            # which becomes the job's (adopt_context): its steps then run in the job's
            # context natively. Its own context for later is what it would have had.
            home = contextvars.copy_context()
            try:
                context.run(self._spawn, nursery, job, home)
            except RuntimeError:  # the context is entered right now (or the nursery closed:
                nursery.start_soon(self._worker, job, name=self.name)  # that raises again)
        self.workers += 1

    def _spawn(self, nursery: trio.Nursery, job: J, home: contextvars.Context) -> None:
        nursery.start_soon(self._worker, job, home, name=self.name)

    def cancel(self, scope: trio.CancelScope) -> None:
        """Cancel a running job's ``scope`` (the one its ``run`` received).

        Use this rather than ``scope.cancel()``: a worker checks whether its scope was
        cancelled after a job that returned anyway only when this was called (or the scope
        has a deadline), which spares a clock read per job.
        """
        self._cancels += 1
        scope.cancel()

    def reap(self) -> None:
        """End every parked worker, and let workers that run out of jobs exit instead of
        parking, until the next :meth:`deliver`. Running jobs are not affected."""
        self._linger = False
        parked, self._parked = self._parked, []
        for task in parked:
            trio.lowlevel.reschedule(task, outcome.Value(_STOP))  # (an outcome is used once)

    def _settle_and_take(self, job: J, result: R) -> bool:
        """Settle ``job``; True if that handed this worker its next job (in ``_handoff``)."""
        self._returning = True
        try:
            self._settle(job, result)
        finally:
            self._returning = False
        return self._has_handoff

    def _take(self) -> J:
        job = self._handoff
        self._handoff = None
        self._has_handoff = False
        return job  # type: ignore[return-value]

    async def _park(self) -> J:
        """Wait for a job from :meth:`deliver` (or ``_STOP`` from :meth:`reap`)."""
        task = trio.lowlevel.current_task()
        self._parked.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            self._parked.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        job: J = await trio.lowlevel.wait_task_rescheduled(abort)
        return job

    async def _worker(self, first: J, home: contextvars.Context | None = None) -> None:
        """Run ``first``, then every job handed over, each in the worker's scope; park between.

        One scope serves the jobs that run back to back; a fresh one is entered only after
        a job's scope was cancelled. The :data:`YIELD_EVERY` checkpoint and parking happen
        with no deadline on the scope, so nothing of a finished job can fire in them.
        """
        job: J | None = first
        cancels = self._cancels
        task = trio.lowlevel.current_task()
        # Its own context, given back before it parks or checkpoints after a job it ran in
        # the job's context. Only then: a task's context is entered for a whole step, so
        # within a step task.context is the context entered, which `run` relies on (a job
        # handed over back to back runs in the same step; if it is the same command, its
        # context is the one entered, and must not be entered again).
        if home is None:
            home = task.context
        else:  # spawned in a copy of the first job's context: it is the job's now
            assert self._adopt_context is not None
            self._adopt_context(first, task.context)
        try:
            while True:
                scope = trio.CancelScope()
                running = False  # whether `job` has started and is not settled yet
                try:
                    with scope:
                        until = time.perf_counter() + YIELD_EVERY
                        while True:
                            if job is None:
                                if not self._linger or self._closed:
                                    return
                                if task.context is not home:
                                    task.context = home  # for its steps from now on
                                job = await self._park()
                                if job is _STOP:
                                    return
                                until = time.perf_counter() + YIELD_EVERY
                            running = True
                            result = await self._run(job, scope)
                            running = False
                            # _settle_and_take and _take, inlined (the hot path)
                            self._returning = True
                            try:
                                self._settle(job, result)
                            finally:
                                self._returning = False
                            if self._has_handoff:
                                job = self._handoff
                                self._handoff = None
                                self._has_handoff = False
                            else:
                                job = None
                            deadline = scope.deadline
                            if (
                                cancels != self._cancels or deadline != math.inf
                            ) and scope.cancel_called:
                                break  # a fresh scope for what comes next
                            cancels = self._cancels
                            if job is not None and time.perf_counter() < until:
                                continue  # back to back: the next job sets its deadline
                            if deadline != math.inf:
                                scope.deadline = math.inf
                            if job is not None:
                                # Let other tasks run: a stream of jobs that never
                                # checkpoint must not hold the event loop for more than
                                # about YIELD_EVERY seconds.
                                if task.context is not home:
                                    task.context = home
                                await trio.lowlevel.checkpoint()
                                until = time.perf_counter() + YIELD_EVERY
                except BaseException:
                    if self._nursery is None:
                        self._parent = None  # attached: a stopped pool never starts again
                    if running and self._interrupted is not None:
                        self._interrupted(job)  # type: ignore[arg-type]
                    raise
                if running:  # the scope caught a cancellation of `job`
                    assert job is not None
                    settled = self._settle_and_take(job, self._cancelled)
                    job = self._take() if settled else None
        finally:
            self.workers -= 1
