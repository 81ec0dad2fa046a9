"""The pure, synchronous scheduling core.

Nothing here awaits or reads a clock: every method that depends on time takes ``now``. The
async shell (``_dispatcher``) calls :meth:`Policy.schedule` after each state change and on the
timer that :meth:`Policy.next_wakeup` asks for, then performs the decisions it returns. This
keeps every scheduling rule in one place that a plain Hypothesis state machine can check.

Rules implemented (the scheduling contract of docs/architecture.md):

1. A command of lane L may start only if L is not paused, ``active(L) < max(L)``, L's rate
   limit has a token, and the global cap allows it: ``active_total < cap`` and
   (``active(L) < min(L)`` or ``active_total + unmet reservations of the other lanes < cap``).
2. The command started is the startable lane head with the smallest effective priority, ties
   to the earliest submission. Within a lane, the head is the queued command with the
   smallest command priority (``submit(priority=)``, 0 by default), FIFO among equals (by
   the time each entered the queue). A lane's effective priority is its base priority
   lowered by the boost levels of the age of its *longest-waiting* queued command (the
   smallest ``pending_since``; delayed commands not yet due do not count), never below 0:
   a trickle of more urgent commands, each the head for a moment with a fresh clock, does
   not take a waiting lane's boost away. The lane still starts its head.
3. Preemption: a lane head blocked only by the global cap makes the most recently started
   command of a less urgent, preemptible lane give its slot back (it is requeued at the head
   of its lane, and its attempt is not counted).
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Callable, Iterable, Iterator
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import attrs

from ._config import LaneConfig
from ._histogram import Histogram
from ._limiters import MIN_WAIT, make_limiter
from ._room import Room
from ._stats import LaneCounters

if TYPE_CHECKING:
    from actors import WorkerPool

__all__ = ["Decision", "Job", "JobState", "Policy"]


class JobState(IntEnum):
    """Where a job is: the one state of a command (its public status derives from it).

    The policy moves jobs between NEW, QUEUED, DELAYED, ACTIVE and GONE; the life cycle
    (lanes/_core.py) takes a GONE job to its terminal state in the same synchronous step.
    """

    NEW = 0
    QUEUED = 1  # in its lane's FIFO
    DELAYED = 2  # waiting for its ready time (delay= or retry backoff)
    ACTIVE = 3  # granted a slot (starting or running)
    GONE = 4  # released by the policy: its outcome is being settled
    DONE = 5  # terminal: returned a value
    FAILED = 6  # terminal: failed for good
    CANCELLED = 7  # terminal: cancelled


# The states as module constants, for the hot paths: on Python 3.11 reading an enum
# member through its class (``JobState.DONE``) costs about 200 ns, several times a
# whole state check.
NEW, QUEUED, DELAYED, ACTIVE, GONE, DONE, FAILED, CANCELLED = tuple(JobState)


class Job:
    """What the policy knows of one command. The async shell subclasses it."""

    __slots__ = (
        "after",
        "entry",
        "lane",
        "order",
        "pending_since",
        "preempting",
        "priority",
        "ready_at",
        "seq",
        "start_seq",
        "state",
    )

    def __init__(self, lane: str, priority: int = 0) -> None:
        self.lane = lane
        self.priority = priority  # within its lane: lower starts first
        self.order = 0  # when it entered its lane's queue (FIFO among equal priorities)
        self.entry: Ranked | None = None  # its live entry in the lane's ranked heap
        self.seq = 0
        self.start_seq = 0
        self.pending_since = 0.0
        self.ready_at = 0.0
        self.state = NEW
        self.preempting = False
        self.after: Job | None = None  # the next job in its lane's FIFO (LaneState.first)

    def __lt__(self, other: Job) -> bool:  # heap tie-breaker
        return self.seq < other.seq


Ranked = tuple[int, int, Job]
"""An entry of a lane's heap of prioritized jobs: (priority, order, job)."""

Waiting = tuple[float, int, Job]
"""An entry of a boosted lane's heap by age (:attr:`LaneState.waiting`): (pending_since,
order, job)."""


@attrs.frozen
class Decision:
    """What :meth:`Policy.schedule` decided: jobs to start now, and jobs to preempt."""

    start: list[Job]
    preempt: list[Job]


class LaneState:
    """One lane of a system: the policy's view of it, and the rest of its state.

    The policy reads and changes the scheduling fields. The others belong to the rest of
    the system and the policy never touches them: ``counters`` (its totals), ``room`` (its
    inbox places), ``wait``/``run`` (its latency histograms), ``recent`` (the waits of its
    latest starts) and ``pool`` (its worker pool, once the system runs). They live here so
    that a lane is one record rather than an entry in eight dictionaries: an idle session's
    lane system holds thousands of fewer objects across a server.
    """

    __slots__ = (
        "active",
        "boost",
        "config",
        "counters",
        "delayed",
        "first",
        "last",
        "limiter",
        "local",
        "max",
        "name",
        "paused",
        "pending",
        "pool",
        "priority",
        "ranked",
        "recent",
        "room",
        "run",
        "running",
        "shared",
        "wait",
        "waiting",
    )

    def __init__(self, config: LaneConfig) -> None:
        self.config = config
        self.name = config.name
        self.priority = config.priority
        self.max = config.max_concurrency
        self.boost = config.boost
        self.limiter = make_limiter(config.rate_limit)
        # Priority-0 jobs, in order: a FIFO linked through the jobs (Job.after), from
        # `first` to `last`. It allocates nothing: a deque is about 600 bytes even with one
        # job in it, and most lanes of a busy server hold zero or one. Cancelled jobs stay
        # linked until they reach the front (dropped lazily, as from a heap).
        self.first: Job | None = None
        self.last: Job | None = None
        # Jobs with another priority (or reprioritized): a heap of (priority, order, job),
        # stale entries (job.entry is not the entry) dropped lazily. Empty unless some job
        # of the lane has ever had a priority: the common case costs one test.
        self.ranked: list[Ranked] = []
        # The queued jobs of a lane with a boost that may be older than its FIFO's first one
        # (prioritized jobs, and preempted jobs put back at the FIFO's front), by age: a
        # heap of (pending_since, order, job), stale entries (the job is no longer QUEUED,
        # or joined again since: another order) dropped lazily. Empty in the common case.
        self.waiting: list[Waiting] = []
        self.pending = 0  # queued + delayed jobs, cancelled ones excluded
        self.delayed = 0  # of which delayed (in the policy's delay heap)
        self.active = 0
        self.running: dict[Job, None] = {}  # insertion order = start order
        self.paused = False
        limit = config.shared_limit
        self.shared = None if limit is None else limit.attach(config.name, config.priority)
        self.local = False  # set by the policy: whether this lane's starts depend on it alone
        # The rest of the system's per-lane state (see the class docstring).
        self.counters = LaneCounters()
        self.room = Room(config.inbox_size)
        self.wait = Histogram()
        self.run = Histogram()
        # The waits of the latest starts: one append per start (Core.begin), the oldest half
        # cut when it holds 2 * RECENT_STARTS (amortized O(1)). Doubles, 8 bytes a wait
        # where a list holds a 32-byte float object; compaction trims it to RECENT_STARTS.
        self.recent = array("d")
        self.pool: WorkerPool[Any, int] | None = None

    @property
    def queue(self) -> list[Job]:
        """The FIFO's jobs, front first, cancelled ones not dropped yet included (a copy:
        for inspection and tests, not the hot paths)."""
        return list(self.fifo())

    def fifo(self) -> Iterator[Job]:
        """The FIFO's jobs, front first (cancelled ones not dropped yet included)."""
        job = self.first
        while job is not None:
            yield job
            job = job.after

    def pop_first(self) -> None:
        """Unlink the FIFO's front job."""
        job = self.first
        assert job is not None
        following = job.after
        job.after = None
        self.first = following
        if following is None:
            self.last = None

    def head(self) -> Job | None:
        """The first live queued job (cancelled jobs are dropped lazily)."""
        job = self.first
        while job is not None and job.state is not QUEUED:
            self.pop_first()
            job = self.first
        ranked = self.ranked
        if not ranked:
            return job
        while ranked:
            entry = ranked[0]
            top = entry[2]
            if top.entry is entry and top.state is QUEUED:
                if job is None or entry[0] < 0 or (entry[0] == 0 and entry[1] < job.order):
                    return top
                return job
            heapq.heappop(ranked)
        return job

    def enqueue(self, job: Job, order: int) -> None:
        """Put a QUEUED job into the lane's queue at ``order``."""
        job.order = order
        if job.priority == 0 and job.entry is None:
            if order < 0:  # a preempted job, put back at the front
                job.after = self.first
                self.first = job
                if self.last is None:
                    self.last = job
            elif self.last is None:
                self.first = self.last = job
            else:
                self.last.after = job
                self.last = job
        else:
            entry = (job.priority, order, job)
            job.entry = entry
            heapq.heappush(self.ranked, entry)
            if self.boost is not None:
                heapq.heappush(self.waiting, (job.pending_since, order, job))

    def take_head(self, job: Job) -> None:
        """Take ``job``, just returned by :meth:`head`, out of the queue."""
        if job.entry is None:
            self.pop_first()
        else:
            heapq.heappop(self.ranked)
            job.entry = None

    def withdraw(self, job: Job) -> None:
        """Take a QUEUED job out of the queue wherever it is (O(queue) for the FIFO part)."""
        if job.entry is None:
            before = None
            at = self.first
            while at is not job:
                assert at is not None  # a queued FIFO job is linked
                before, at = at, at.after
            following = job.after
            job.after = None
            if before is None:
                self.first = following
            else:
                before.after = following
            if self.last is job:
                self.last = before
        else:
            job.entry = None  # its heap entry is stale from now on

    def queued(self) -> list[Job]:
        """The live queued jobs, in the order they would start."""
        jobs = [job for job in self.fifo() if job.state is QUEUED]
        if not self.ranked:
            return jobs
        jobs += [e[2] for e in self.ranked if e[2].entry is e and e[2].state is QUEUED]
        jobs.sort(key=lambda job: (job.priority, job.order))
        return jobs

    def effective_priority(self, job: Job | None, now: float) -> int:
        """The lane's priority boosted by ``job``'s boost clock (a running job's own, for
        the preemption victim test; the lane's is :meth:`lane_priority`)."""
        priority = self.config.priority
        if job is None or self.boost is None:
            return priority
        return max(0, priority - self.boost.levels(now - job.pending_since))

    def lane_priority(self, head: Job | None, now: float) -> int:
        """The lane's effective priority: boosted by the age of its longest-waiting queued
        job. ``head`` is what :meth:`head` just returned (None: nothing queued)."""
        if head is None or self.boost is None or not self.waiting:
            if head is None and self.waiting:
                self.waiting.clear()  # nothing is queued: every entry is stale
            return self.effective_priority(head, now)  # the head is the oldest queued job
        return self.effective_priority(self.longest_waiting(head), now)

    def longest_waiting(self, head: Job) -> Job:
        """The live queued job with the smallest ``pending_since`` (the lane's boost clock).

        ``head`` is what :meth:`head` just returned: that call left the first live job of
        the FIFO at its front. Jobs join the FIFO's tail in time order, so its first job
        that never left it is the oldest of those; the others (prioritized jobs, and
        preempted jobs put back at the front, whose clocks keep their first queueing) are
        kept in :attr:`waiting` too when the lane has a boost. So without them the head is
        the oldest: O(1); with some, the oldest of the head, the FIFO's first job and the
        top of :attr:`waiting` (stale entries popped): O(log n) amortized.

        The exception: a delayed job released by a round later than its ready time has that
        ready time as its clock, older than a job that joined in between (behind which it
        queues). The shell decides at each ready time, so that is at most one round's
        latency.
        """
        if self.boost is None or not self.waiting:
            return head
        oldest = head
        first = self.first
        if first is not None and first.pending_since < oldest.pending_since:
            oldest = first  # head() dropped the cancelled jobs in front of it
        waiting = self.waiting
        while waiting:
            since, order, job = waiting[0]
            if job.state is QUEUED and job.order == order:
                if since < oldest.pending_since:
                    oldest = job
                break
            heapq.heappop(waiting)
        return oldest

    def unmet(self) -> int:
        return max(0, self.config.min_concurrency - self.active)


class Policy:
    """Scheduling state of one lane system; see the module docstring for the rules."""

    def __init__(self, configs: Iterable[LaneConfig], max_concurrency: int | None) -> None:
        self.lanes: dict[str, LaneState] = {c.name: LaneState(c) for c in configs}
        self._order = 0  # queue entries, in time (a job's ``order``)
        self._front = 0  # requeues at the front: negative orders, each before the last
        self.cap = max_concurrency
        self.active_total = 0
        self.preempting = 0
        # Tuples, not lists: an empty one is shared, and they change only with the lanes.
        self._reserving = tuple(s for s in self.lanes.values() if s.config.min_concurrency > 0)
        self._by_priority = tuple(sorted(self.lanes.values(), key=lambda s: s.priority))
        self._no_boosts = all(s.boost is None for s in self.lanes.values())
        self._limited = tuple(s for s in self.lanes.values() if s.limiter is not None)
        self._preemption_possible = max_concurrency is not None and any(
            s.config.preemptible for s in self.lanes.values()
        )
        self._boost_timers = (
            max_concurrency is not None
            and not self._no_boosts
            and any(s.config.preemptible for s in self.lanes.values())
        )
        self._delayed: list[tuple[float, Job]] = []
        self._gone_delayed = 0  # withdrawn jobs still in the heap (at most about half)
        self._seq = 0
        self._start_seq = 0
        self._shared = tuple(s for s in self.lanes.values() if s.shared is not None)
        for state in self.lanes.values():
            # Without a global cap, a rate limit or a shared limit, a lane's commands compete
            # only with each other: a start or a freed slot there concerns that lane alone,
            # so it is decided in O(1) without a round over every lane (the fast path).
            state.local = max_concurrency is None and state.limiter is None
            state.local = state.local and state.shared is None
        # Whether a change since the last round may have made a queued job startable (a
        # resume, a freed slot): then the fast path waits for that round, so a new job never
        # starts ahead of a startable one submitted earlier (rule 2).
        self.round_owed = False

    def set_waker(self, wake: Callable[[], None]) -> None:
        """How a :class:`SharedLimit` asks this policy's shell to decide again (a grant)."""
        for state in self._shared:
            assert state.shared is not None
            state.shared.wake = wake

    def detach(self) -> None:
        """The system is gone: leave every shared limit, giving back all slots held."""
        for state in self._shared:
            assert state.shared is not None
            state.shared.limit.detach(state.shared)

    # -- state changes ------------------------------------------------------------------

    def add(self, job: Job, now: float, *, ready_at: float | None = None) -> bool:
        """Accept a new job: queue it (or hold it until ``ready_at``).

        Returns True if the job started at once (it is ACTIVE): its lane is local (see
        :attr:`LaneState.local`), not paused and has a free slot. Its queue is then empty:
        a local lane with room never holds a queued job. Otherwise the job waits for
        :meth:`schedule` (or :meth:`finish_next`).
        """
        self._seq += 1
        job.seq = self._seq
        state = self.lanes[job.lane]
        if (
            ready_at is None
            and state.local
            and not state.paused
            and state.active < state.max
            and not self.round_owed
            and not ((delayed := self._delayed) and delayed[0][0] <= now)  # due(), inlined
        ):
            job.pending_since = now
            self._activate(state, job)
            return True
        state.pending += 1
        self._enqueue(job, now, ready_at)
        if ready_at is None and state.local and not state.paused and state.active < state.max:
            self.round_owed = True  # it could start but waits for the round owed first
        return False

    def finish_next(self, job: Job, now: float) -> Job | None:
        """:meth:`finish` ``job``; if its lane is local, start its next queued job and
        return it (None: nothing to start there, or the lane is not local and needs a
        :meth:`schedule` round)."""
        owed = self.round_owed
        self.finish(job)
        state = self.lanes[job.lane]
        if not state.local or owed or ((delayed := self._delayed) and delayed[0][0] <= now):
            return None  # a round decides (finish() owes it), or a delayed job is due
        self.round_owed = False  # the freed slot concerns this lane alone
        if not state.pending or state.paused:
            return None
        head = state.head()
        if head is None:
            return None
        self._start(head, now)
        return head

    def _enqueue(self, job: Job, now: float, ready_at: float | None) -> None:
        if ready_at is not None and ready_at > now:
            job.state = DELAYED
            job.ready_at = ready_at
            self.lanes[job.lane].delayed += 1
            heapq.heappush(self._delayed, (ready_at, job))
        else:
            job.state = QUEUED
            job.pending_since = now
            self._order += 1
            if job.priority == 0 and job.entry is None:  # LaneState.enqueue, inlined
                job.order = self._order
                state = self.lanes[job.lane]
                last = state.last
                if last is None:
                    state.first = state.last = job
                else:
                    last.after = job
                    state.last = job
            else:
                self.lanes[job.lane].enqueue(job, self._order)

    def remove(self, job: Job) -> bool:
        """Withdraw a queued or delayed job (cancellation). False if it is not pending."""
        if job.state not in (QUEUED, DELAYED):
            return False
        delayed = job.state is DELAYED
        job.state = GONE  # dropped lazily from the queue / heap
        state = self.lanes[job.lane]
        state.pending -= 1
        if delayed:
            state.delayed -= 1
            self._drop_gone_delayed()
        return True

    def _drop_gone_delayed(self) -> None:
        """Keep the delay heap mostly live: withdrawn jobs could otherwise stay in it (and
        set its timer) until their ready time, however far off."""
        heap = self._delayed
        while heap and not _live_delay(heap[0]):
            heapq.heappop(heap)
        self._gone_delayed += 1
        if self._gone_delayed * 2 > len(heap):
            heap[:] = [item for item in heap if _live_delay(item)]
            heapq.heapify(heap)
            self._gone_delayed = 0

    def remove_lane(self, lane: str) -> list[Job]:
        """Withdraw every queued and delayed job of ``lane``; return them in order (the
        queued ones in the order they would start: by command priority, FIFO among equals,
        a requeued preempted job first among them; then the delayed ones by ready time).

        O(jobs of the lane) (a sort of the queued ones when some have a priority of their
        own), plus one pass over the delay heap only when the lane has delayed jobs (only
        those are sorted): other lanes' delayed jobs cost nothing.
        """
        state = self.lanes[lane]
        removed = [job for job in state.queued() if self.remove(job)]
        while state.first is not None:  # unlinked, cancelled ones included
            state.pop_first()
        state.ranked.clear()
        state.waiting.clear()
        if state.delayed:
            mine = [item for item in self._delayed if item[1].lane == lane and _live_delay(item)]
            mine.sort()
            removed.extend(job for _, job in mine if self.remove(job))
        return removed

    def compact(self) -> None:
        """Give back the memory of lanes with nothing queued (an idle system's step).

        An emptied ``running`` dict (a dict never shrinks) is replaced with a fresh one, and
        the age heap of a lane with nothing queued (its entries all stale) is emptied.
        """
        for state in self.lanes.values():
            if state.waiting and state.pending == state.delayed:
                state.waiting = []
            if not state.running:
                state.running = {}

    def position(self, job: Job) -> int | None:
        """How many jobs of ``job``'s lane start before it (None: it is not queued).

        A lane starts its jobs by command priority, FIFO among equals: without prioritized
        jobs that is the live jobs ahead of it in the lane's queue, a scan of those
        (O(position)); with some, the queued jobs whose (priority, queue order) is smaller
        (O(the lane's queued jobs)). A delayed job has no position until it is due.
        """
        if job.state is not QUEUED:
            return None
        state = self.lanes[job.lane]
        if state.ranked:  # prioritized jobs: count those that start before it
            key = (job.priority, job.order)
            return sum(1 for other in state.queued() if (other.priority, other.order) < key)
        ahead = 0
        for other in state.fifo():
            if other is job:
                return ahead
            if other.state is QUEUED:
                ahead += 1
        return None  # pragma: no cover - a queued job is always in its lane's queue

    def due(self, now: float) -> bool:
        """Whether a delayed job is due: it must be queued (a round) before others start."""
        delayed = self._delayed
        return bool(delayed) and delayed[0][0] <= now

    def needs_round(self, lane: str, now: float) -> bool:
        """Whether a change in ``lane`` may start something that a round must decide."""
        if self.round_owed or not self.lanes[lane].local:
            return True
        delayed = self._delayed  # due(), inlined
        return bool(delayed) and delayed[0][0] <= now

    def quiet(self) -> bool:
        """Whether a round could do nothing at all: no lane holds a pending job (queued or
        delayed), and no shared-limit member of the system waits or holds a grant it has
        not used. Then nothing can start, be preempted or be given back, and no timer is
        needed; the round a freed slot owes can wait for the next change."""
        for state in self._by_priority:
            if state.pending:
                return False
        for state in self._shared:
            member = state.shared
            assert member is not None
            if member.tickets or member.waiting:
                return False
        return True

    def finish(self, job: Job) -> None:
        """Release the slot of an active job (it completed, failed, or was cancelled)."""
        if job.state is not ACTIVE:
            msg = f"finish() of a job that is not active (state {job.state.name})"
            raise RuntimeError(msg)
        state = self.lanes[job.lane]
        state.active -= 1
        self.active_total -= 1
        del state.running[job]
        if state.shared is not None:
            state.shared.limit.release(state.shared)
        if job.preempting:
            job.preempting = False
            self.preempting -= 1
        job.state = GONE
        self.round_owed = True  # the freed slot may start a queued job

    def retry(self, job: Job, now: float, ready_at: float) -> None:
        """Release an active job's slot and queue it again once ``ready_at`` is reached."""
        self.finish(job)
        self.lanes[job.lane].pending += 1
        self._seq += 1
        job.seq = self._seq
        self._enqueue(job, now, ready_at)

    def requeue_front(self, job: Job, now: float) -> None:
        """Release a preempted job's slot and put it back at the head of its lane."""
        self.finish(job)
        state = self.lanes[job.lane]
        state.pending += 1
        job.state = QUEUED
        self._front -= 1
        state.enqueue(job, self._front)
        if job.entry is None and state.boost is not None:  # at the FIFO's front, maybe older
            heapq.heappush(state.waiting, (job.pending_since, job.order, job))

    def reprioritize(self, job: Job, priority: int) -> bool:
        """Give a pending job another priority within its lane (FIFO among equals stays by
        the time it entered the queue). False if it is not pending (then nothing changes).
        """
        if job.state is QUEUED:
            state = self.lanes[job.lane]
            if job.entry is None and state.boost is not None:  # it joins the heap by age
                heapq.heappush(state.waiting, (job.pending_since, job.order, job))
            state.withdraw(job)
            job.priority = priority
            entry = (priority, job.order, job)
            job.entry = entry
            heapq.heappush(state.ranked, entry)
            self.round_owed = True  # its lane's head may have changed
            return True
        if job.state is DELAYED:
            job.priority = priority  # it takes its place when it is due
            return True
        return False

    def move(self, job: Job, now: float, ready_at: float) -> bool:
        """Make a pending job due at ``ready_at`` (at once if that is not later than
        ``now``): a delayed job's due time moves, a queued one becomes delayed. False if it
        is not pending."""
        if job.state not in (QUEUED, DELAYED):
            return False
        state = self.lanes[job.lane]
        moved = job.state is DELAYED
        if not moved:
            if ready_at <= now:
                return True  # already due: it keeps its place
            state.withdraw(job)
            job.state = DELAYED
            state.delayed += 1
        # A moved job's old heap entry goes stale: _live_delay checks job.ready_at.
        job.ready_at = max(ready_at, now)
        heapq.heappush(self._delayed, (job.ready_at, job))
        if moved:
            self._drop_gone_delayed()  # its old entry counts as gone
        self.round_owed = True  # the timer or the head may change
        return True

    def pause(self, lane: str) -> None:
        self.lanes[lane].paused = True

    def resume(self, lane: str) -> None:
        self.lanes[lane].paused = False
        self.round_owed = True

    # -- decisions ------------------------------------------------------------------------

    def schedule(self, now: float) -> Decision:
        """Decide what starts now (rules 1-2) and what is preempted (rule 3).

        Jobs in ``start`` are ACTIVE on return: their slots and rate-limit tokens are taken.
        Jobs in ``preempt`` stay ACTIVE until the shell reports them with
        :meth:`requeue_front` (or :meth:`finish`, if they ended first).
        """
        self._release_due(now)
        started: list[Job] = []
        while (job := self._best_startable(now)) is not None:
            self._start(job, now)
            started.append(job)
        if self._shared:
            self._settle_shared(now)
        preempt = self._choose_preemptions(now) if self._preemption_possible else []
        self.round_owed = False
        return Decision(started, preempt)

    def _settle_shared(self, now: float) -> None:
        """After a round: wait only while blocked by the shared limit alone; return unused
        grants (the lane cannot use them now: its command went away, or it is blocked)."""
        for state in self._shared:
            member = state.shared
            assert member is not None
            limit = member.limit
            if member.tickets:
                limit.give_back(member, now)
            elif member.waiting and not self._locally_startable(state, now):
                limit.withdraw(member)

    def _locally_startable(self, state: LaneState, now: float) -> bool:
        """Rule 1 without the shared limit: the lane has a head that may start."""
        if not state.pending or state.head() is None or not self._lane_ready(state, now):
            return False
        return self.cap_allows(state)

    def _release_due(self, now: float) -> None:
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            ready_at, job = heapq.heappop(delayed)
            if job.state is DELAYED and job.ready_at == ready_at:  # not moved since
                self.lanes[job.lane].delayed -= 1
                job.state = QUEUED
                job.pending_since = ready_at
                self._order += 1
                self.lanes[job.lane].enqueue(job, self._order)

    def _unmet_total(self) -> int:
        return sum(state.unmet() for state in self._reserving)

    def cap_allows(self, state: LaneState) -> bool:
        """The global-cap part of rule 1 for a command of ``state``'s lane."""
        cap = self.cap
        if cap is None:
            return True
        if self.active_total >= cap:
            return False
        if state.active < state.config.min_concurrency:
            return True
        return self.active_total + self._unmet_total() < cap

    def _lane_ready(self, state: LaneState, now: float) -> bool:
        """Rule 1 without the global cap."""
        if state.paused or state.active >= state.config.max_concurrency:
            return False
        return state.limiter is None or state.limiter.ready(now)

    def _best_startable(self, now: float) -> Job | None:
        capped = self.cap is not None
        if capped and self.active_total >= self.cap:  # type: ignore[operator]
            return None  # the cap is full: no lane can start, whatever its state
        best: Job | None = None
        best_priority = math.inf
        best_seq = math.inf
        for state in self._by_priority:
            if self._no_boosts and state.priority > best_priority:
                break  # lanes are sorted: nothing further can be more urgent
            if not state.pending or state.paused or state.active >= state.max:
                continue
            job = state.head()
            if job is None:
                continue
            if state.limiter is not None and not state.limiter.ready(now):
                continue
            if capped and not self.cap_allows(state):
                continue
            shared = state.shared
            if shared is not None and not shared.limit.available(shared, now):
                shared.limit.wait(shared)
                continue
            # LaneState.lane_priority, inlined: with an empty age heap the head is the oldest
            clock = state.longest_waiting(job) if state.waiting else job
            priority = state.effective_priority(clock, now)
            if priority < best_priority or (priority == best_priority and job.seq < best_seq):
                best, best_priority, best_seq = job, priority, job.seq
        return best

    def _start(self, job: Job, now: float) -> None:
        state = self.lanes[job.lane]
        if job.entry is None:  # LaneState.take_head, inlined (the hot path)
            following = job.after  # (job is the FIFO's first)
            job.after = None
            state.first = following
            if following is None:
                state.last = None
        else:
            state.take_head(job)
        state.pending -= 1
        if state.limiter is not None:
            state.limiter.take(now)
        if state.shared is not None:
            state.shared.limit.take(state.shared, now)
        self._activate(state, job)

    def _activate(self, state: LaneState, job: Job) -> None:
        state.active += 1
        self.active_total += 1
        self._start_seq += 1
        job.start_seq = self._start_seq
        job.state = ACTIVE
        state.running[job] = None

    def _blocked_by_cap(self, now: float) -> list[tuple[int, int, LaneState]]:
        blocked = []
        for state in self.lanes.values():
            job = state.head() if state.pending else None
            if job is None or not self._lane_ready(state, now) or self.cap_allows(state):
                continue
            shared = state.shared
            if shared is None or shared.limit.could_take(shared, now):
                blocked.append((state.lane_priority(job, now), job.seq, state))
        blocked.sort(key=lambda item: item[:2])
        return blocked

    def _choose_preemptions(self, now: float) -> list[Job]:
        chosen: list[Job] = []
        for rank, (priority, _, state) in enumerate(self._blocked_by_cap(now), start=1):
            if self.preempting >= rank:
                continue  # slots already being freed cover this command
            victim = self._victim(priority, state, now)
            if victim is None:
                continue
            victim.preempting = True
            self.preempting += 1
            chosen.append(victim)
        return chosen

    def _victim(self, priority: int, waiting: LaneState, now: float) -> Job | None:
        """The most recently started preemptible job that would free a slot for ``waiting``.

        A job is no victim if its lane, with the job requeued, would not be less urgent than
        ``priority``: it would win the freed slot back at once, and be chosen again (a
        livelock at one instant). That lane's boost counts from the older of the job's own
        clock (which keeps running while it runs) and the lane's longest-waiting job.
        """
        best: Job | None = None
        for state in self.lanes.values():
            config = state.config
            if not config.preemptible or state is waiting or config.priority <= priority:
                continue
            leaving = sum(1 for job in state.running if job.preempting)
            if state.active - leaving <= config.min_concurrency:
                continue  # what is left is the lane's reservation
            queued = state.head() if state.pending and state.boost is not None else None
            oldest = None if queued is None else state.longest_waiting(queued)
            for job in reversed(state.running):
                older = oldest is not None and oldest.pending_since < job.pending_since
                clock = oldest if older else job  # the lane's clock with the job requeued
                if not job.preempting and state.effective_priority(clock, now) > priority:
                    if best is None or job.start_seq > best.start_seq:
                        best = job
                    break
        if best is None or not self._would_fit(waiting):
            return None
        return best

    def _would_fit(self, waiting: LaneState) -> bool:
        """Would ``waiting`` pass the cap with one slot (above a victim's minimum) freed?"""
        assert self.cap is not None
        if waiting.active < waiting.config.min_concurrency:
            return True
        return self.active_total - 1 + self._unmet_total() < self.cap

    def next_wakeup(self, now: float) -> float | None:
        """When a decision could change without any state change (None: never).

        That is the next delayed job becoming due, the next rate-limit token of a lane that
        waits only for one, and (when preemption may be possible) the next boost point.
        """
        if not (self._delayed or self._limited or self._boost_timers or self._shared):
            return None  # the common case: nothing here is time-driven
        times: list[float] = []
        for shared_state in self._shared:
            member = shared_state.shared
            assert member is not None
            wake = member.limit.next_wakeup(member, now)
            if wake is not None:
                times.append(wake)
        if self._delayed:
            times.append(self._delayed[0][0])
        for state in self._limited:
            # Also when the cap is full: with the token, the lane may preempt (rule 3).
            limiter = state.limiter
            assert limiter is not None
            if (
                state.pending
                and not state.paused
                and state.active < state.max
                and state.head() is not None
                and not limiter.ready(now)
            ):
                times.append(limiter.ready_at(now))
        if self._boost_timers and any(
            s.config.preemptible and s.active for s in self.lanes.values()
        ):
            times.extend(self._next_boosts(now))
        return min(times) if times else None

    def _next_boosts(self, now: float) -> Iterator[float]:
        for state in self.lanes.values():
            job = state.head() if state.pending else None
            if job is None or state.boost is None:
                continue
            job = state.longest_waiting(job)  # the lane's boost clock
            age = now - job.pending_since
            for point in state.boost.at:
                if point > age:  # float rounding: never ask for a time that is not ahead
                    yield max(job.pending_since + point, now + MIN_WAIT)
                    break

    # -- lanes added and retired while the system runs ---------------------------------

    def add_lane(self, config: LaneConfig) -> LaneState:
        """A new lane, idle, after the others (``LaneSystem.add_lane``); the caller checked
        ``config`` against the others (a unique name, reservations within the cap)."""
        state = self.lanes[config.name] = LaneState(config)
        state.local = self.cap is None and state.limiter is None and state.shared is None
        if config.min_concurrency > 0:
            self._reserving += (state,)
        self._by_priority = tuple(sorted(self.lanes.values(), key=lambda s: s.priority))
        self._no_boosts = self._no_boosts and state.boost is None
        if state.limiter is not None:
            self._limited += (state,)
        if state.shared is not None:
            self._shared += (state,)
        self._lane_set_changed()
        return state

    def drop_lane(self, lane: str) -> None:
        """Forget an idle lane (``LaneSystem.retire_lane``): nothing of it is pending or
        active; a shared limit it belongs to gets its slots back."""
        state = self.lanes.pop(lane)
        assert not state.pending and not state.active, "drop_lane: the lane is not idle"
        self._reserving = tuple(s for s in self._reserving if s is not state)
        self._by_priority = tuple(s for s in self._by_priority if s is not state)
        self._no_boosts = all(s.boost is None for s in self.lanes.values())
        self._limited = tuple(s for s in self._limited if s is not state)
        if state.shared is not None:
            self._shared = tuple(s for s in self._shared if s is not state)
            state.shared.limit.detach(state.shared)
        if any(job.lane == lane for _, job in self._delayed):  # withdrawn entries left
            self._delayed = [item for item in self._delayed if item[1].lane != lane]
            heapq.heapify(self._delayed)
        self._lane_set_changed()

    def _lane_set_changed(self) -> None:
        preemptible = any(s.config.preemptible for s in self.lanes.values())
        self._preemption_possible = self.cap is not None and preemptible
        self._boost_timers = self.cap is not None and not self._no_boosts and preemptible
        self.round_owed = True  # a lane more or less may change what starts next

    # -- views -----------------------------------------------------------------------------

    def effective_priority(self, lane: str, now: float) -> int:
        """The lane's effective priority: boosted by the age of its longest-waiting queued
        command, or its base priority when nothing is queued."""
        state = self.lanes[lane]
        return state.lane_priority(state.head() if state.pending else None, now)

    def pending_total(self) -> int:
        return sum(state.pending for state in self.lanes.values())


def _live_delay(item: tuple[float, Job]) -> bool:
    """Whether an entry of the delay heap still holds its job (not withdrawn or moved)."""
    ready_at, job = item
    return job.state is DELAYED and job.ready_at == ready_at
