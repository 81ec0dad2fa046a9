"""A pool of worker tasks that run jobs back to back, in a nursery the pool owns."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

__all__ = ["WorkerPool"]

J = TypeVar("J")
YIELD_EVERY = 0.0001  # seconds a worker may run jobs back to back without a checkpoint
R = TypeVar("R")


class WorkerPool(Generic[J, R]):
    """Runs each job given to :meth:`deliver` in a worker task of the pool's own nursery.

    A job runs in two steps: ``run(job, scope)`` (async: the work itself) and then
    ``settle(job, result)`` (synchronous: the bookkeeping). If ``settle`` delivers another
    job to the same pool, the worker that just finished runs it next, back to back, instead
    of a new task being spawned; otherwise the worker exits. So an idle pool holds no worker
    tasks, and a busy one pays for a task spawn only when its concurrency grows. A worker that
    ran jobs back to back for :data:`YIELD_EVERY` seconds checkpoints before the next one, so
    jobs that never checkpoint cannot starve other tasks.

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

    The pool does not limit concurrency itself: the caller delivers a job only when it has a
    slot for it (each delivered job gets a worker at once).

    Run the pool with ``await nursery.start(pool.serve)``, or let it start itself with its
    first job: ``pool.attach(nursery)`` (then an idle pool costs no task at all). Either way
    the pool's jobs run in its own nursery, and cancelling the task that owns it cancels
    every running job.
    """

    def __init__(
        self,
        run: Callable[[J, trio.CancelScope], Awaitable[R]],
        settle: Callable[[J, R], None],
        name: str = "",
        *,
        cancelled: R,
        interrupted: Callable[[J], None] | None = None,
    ) -> None:
        self._run = run
        self._settle = settle
        self._cancelled = cancelled
        self._interrupted = interrupted
        self.name = name or "pool"
        self.workers = 0
        self._nursery: trio.Nursery | None = None
        self._parent: trio.Nursery | None = None  # where serve() starts itself (attach)
        self._backlog: list[J] = []  # jobs delivered before serve() started
        self._returning = False
        self._handoff: J | None = None
        self._has_handoff = False

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the pool's nursery until cancelled. Ready (``started``) once jobs can run."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            backlog, self._backlog = self._backlog, []
            for job in backlog[1:]:
                self.workers += 1
                nursery.start_soon(self._worker, job)
            task_status.started()
            try:
                if backlog:  # the first job runs in this task: no extra task switch
                    self.workers += 1
                    await self._worker(backlog[0])
                await trio.sleep_forever()
            finally:
                self._nursery = None
                self._parent = None  # a pool that stopped serving never starts again

    def attach(self, nursery: trio.Nursery) -> None:
        """Serve lazily: the first :meth:`deliver` starts :meth:`serve` in ``nursery``.

        Jobs delivered before it runs wait for it (a task switch). Until then the pool holds
        no task and no nursery of its own.
        """
        self._parent = nursery

    def close(self) -> None:
        """Take no more jobs: a pool attached but not started yet never starts."""
        if self._nursery is None:
            self._parent = None

    @property
    def serving(self) -> bool:
        """Whether jobs can be delivered: :meth:`serve` runs, or will start on demand."""
        return self._nursery is not None or self._parent is not None

    def deliver(self, job: J) -> None:
        """Run ``job`` now: hand it to the worker that is settling, or spawn a worker.

        Raises:
            RuntimeError: the pool is not serving.
        """
        if self._returning and not self._has_handoff:
            self._handoff = job
            self._has_handoff = True
            return
        if self._nursery is None:
            if self._parent is None:
                msg = (
                    f"worker pool {self.name!r} is not serving; start it with "
                    "nursery.start(serve) or attach(nursery)"
                )
                raise RuntimeError(msg)
            self._backlog.append(job)
            if len(self._backlog) == 1:
                self._parent.start_soon(self.serve, name=self.name)
            return
        self.workers += 1
        self._nursery.start_soon(self._worker, job)

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

    async def _worker(self, job: J) -> None:
        """Run ``job``, then every job handed over while settling, each in the worker's scope.

        One scope serves the jobs that run back to back; a fresh one is entered only after
        a job's scope was cancelled. The :data:`YIELD_EVERY` checkpoint is taken between
        jobs with no deadline on the scope, so nothing of a finished job can fire in it.
        """
        try:
            while True:
                scope = trio.CancelScope()
                running = False  # whether `job` has started and is not settled yet
                try:
                    with scope:
                        until = time.perf_counter() + YIELD_EVERY
                        while True:
                            running = True
                            result = await self._run(job, scope)
                            running = False
                            if not self._settle_and_take(job, result):
                                return
                            job = self._take()
                            if scope.cancel_called:
                                break  # a fresh scope for the next job
                            if time.perf_counter() >= until:
                                # Let other tasks run: a stream of jobs that never
                                # checkpoint must not hold the event loop for more than
                                # about YIELD_EVERY seconds.
                                if scope.deadline != math.inf:
                                    scope.deadline = math.inf
                                await trio.lowlevel.checkpoint()
                                until = time.perf_counter() + YIELD_EVERY
                except BaseException:
                    if running and self._interrupted is not None:
                        self._interrupted(job)
                    raise
                if running:  # the scope caught a cancellation of `job`
                    if not self._settle_and_take(job, self._cancelled):
                        return
                    job = self._take()
        finally:
            self.workers -= 1
