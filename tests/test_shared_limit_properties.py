"""Property tests of SharedLimit: never exceeded, fair at every grant, never stalled, leak-free.

A state machine drives bare members the way member systems do (take, wait, release, give
back, leave, and act when woken) and checks the invariants after every step; an end-to-end
property runs random sessions on real lane systems under the mock clock.
"""

from __future__ import annotations

import collections

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import lanes
from lanes import LaneConfig, RateLimit, SharedLimit
from lanes._shared import SharedMember

_picks = st.integers(0, 15)


class SharedLimitMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.limit: SharedLimit | None = None
        self.now = 0.0
        self.attached: list[SharedMember] = []
        self.woken: collections.deque[SharedMember] = collections.deque()
        self.grants = 0

    @initialize(
        cap=st.one_of(st.none(), st.integers(1, 3)),
        rate=st.one_of(st.none(), st.integers(1, 3)),
        priorities=st.lists(st.integers(0, 2), min_size=2, max_size=5),
    )
    def create(self, cap: int | None, rate: int | None, priorities: list[int]) -> None:
        limit = RateLimit.per_second(rate) if rate is not None else None
        self.limit = self._watch(SharedLimit(cap if cap or limit else 1, rate_limit=limit))
        for priority in priorities:
            self.attach(priority)

    def _member(self, pick: int) -> SharedMember | None:
        return self.attached[pick % len(self.attached)] if self.attached else None

    @rule(priority=st.integers(0, 2))
    def attach(self, priority: int) -> None:
        assert self.limit is not None
        member = self.limit.attach(f"m{len(self.attached)}", priority)
        member.wake = lambda: self.woken.append(member)
        self.attached.append(member)

    def _watch(self, limit: SharedLimit) -> SharedLimit:
        """Check every grant of ``limit``'s dispatch: each goes to a fairest waiter."""
        dispatch = limit.dispatch

        def checked_dispatch(now: float) -> None:
            # The rule, written out here: most urgent priority, then fewest held, then the
            # least recent turn.
            before = {m: (m.priority, m.held, m.last_turn) for m in self.attached if m.waiting}
            tickets = {m: m.tickets for m in self.attached}
            dispatch(now)
            granted = [m for m in self.attached if m.tickets > tickets[m]]
            self.grants += len(granted)
            still_waiting = [m for m in before if m.waiting]
            for member in granted:
                assert member in before, "a grant to a member that did not wait"
                for other in still_waiting:
                    assert before[member] <= before[other], (
                        f"{member.lane} {before[member]} was granted a slot while "
                        f"{other.lane} {before[other]} waits"
                    )

        limit.dispatch = checked_dispatch  # type: ignore[method-assign]
        return limit

    @rule(pick=_picks)
    def want(self, pick: int) -> None:
        self._want(self._member(pick))

    def _want(self, member: SharedMember | None) -> None:
        if member is None:
            return
        limit = self.limit
        assert limit is not None

        def go() -> None:
            if limit.available(member, self.now):
                limit.take(member, self.now)
            else:
                limit.wait(member)

        go()

    @rule(pick=_picks, more=st.booleans())
    def finish(self, pick: int, more: bool) -> None:
        """A command ends; with ``more``, its lane has another one to start (as a lane
        with a queue asks again in the same decision)."""
        member = self._member(pick)
        if member is None or member.held <= member.tickets:
            return
        limit = self.limit
        assert limit is not None
        limit.release(member)
        if more:
            self._want(member)

    @rule(pick=_picks)
    def withdraw(self, pick: int) -> None:
        member = self._member(pick)
        if member is None:
            return
        assert self.limit is not None
        self.limit.withdraw(member)

    @rule(pick=_picks)
    def leave(self, pick: int) -> None:
        member = self._member(pick)
        if member is None:
            return
        assert self.limit is not None
        self.attached.remove(member)
        self.limit.detach(member)
        assert member.held == member.tickets == 0

    @rule(use=st.booleans())
    def act_on_wakes(self, use: bool) -> None:
        """The woken systems decide: each starts with its ticket (or gives it back), or asks."""
        while self.woken:
            self._act(self.woken.popleft(), use)

    def _act(self, member: SharedMember, use: bool) -> None:
        limit = self.limit
        if member not in self.attached or limit is None:
            return

        def go() -> None:
            if member.tickets and use:
                limit.take(member, self.now)
            elif member.tickets:
                limit.give_back(member, self.now)
            elif member.waiting and limit.available(member, self.now):
                limit.take(member, self.now)

        go()

    @rule(seconds=st.sampled_from([0.1, 0.25, 0.5, 1.0]))
    def advance(self, seconds: float) -> None:
        """Time passes: the member holding the token timer wakes when it asked to."""
        self.now += seconds
        limit = self.limit
        if limit is None:
            return
        for member in self.attached:
            wake = limit.next_wakeup(member, self.now - seconds)
            if wake is not None and wake <= self.now:
                self.woken.append(member)

    @invariant()
    def bounded_and_accounted(self) -> None:
        limit = self.limit
        if limit is None:
            return
        stats = limit.statistics()
        assert stats.in_use == sum(m.held for m in self.attached)
        if limit.max_concurrency is not None:
            assert stats.in_use <= limit.max_concurrency
        assert stats.members == len(self.attached)
        for member in self.attached:
            assert 0 <= member.tickets <= member.held

    @invariant()
    def never_stalled(self) -> None:
        """Waiters with a free slot always have someone about to act for them."""
        limit = self.limit
        if limit is None or not any(m.waiting for m in self.attached):
            return
        if limit.max_concurrency is not None and limit.statistics().in_use >= limit.max_concurrency:
            return  # a release will wake the fairest waiter
        pending_wakes = any(m in self.attached for m in self.woken)
        timers = [limit.next_wakeup(m, self.now) for m in self.attached]
        assert pending_wakes or any(t is not None for t in timers), "waiters nobody will serve"


TestSharedLimitMachine = SharedLimitMachine.TestCase
TestSharedLimitMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


# -- end to end ------------------------------------------------------------------------------

_session = st.lists(
    st.tuples(st.sampled_from(["tool", "prompt"]), st.sampled_from([0.5, 1.0, 2.0])),
    min_size=1,
    max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(
    cap=st.integers(1, 4),
    rate=st.one_of(st.none(), st.integers(1, 4)),
    work=st.lists(st.tuples(st.floats(0, 2), _session), min_size=2, max_size=5),
    cancel=st.sets(st.integers(0, 20), max_size=4),
)
def test_random_sessions_never_exceed_the_limit(
    cap: int, rate: int | None, work: list[tuple[float, list[tuple[str, float]]]], cancel: set[int]
) -> None:
    limit = SharedLimit(cap, rate_limit=RateLimit.per_second(rate) if rate else None)
    configs = [
        LaneConfig("control", 0),
        LaneConfig("tool", 3, max_concurrency=2, shared_limit=limit),
        LaneConfig("prompt", 5, max_concurrency=3, shared_limit=limit),
    ]
    running = 0
    peak = 0
    outcomes: collections.Counter[str] = collections.Counter()

    async def call(seconds: float) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await trio.sleep(seconds)
        finally:
            running -= 1

    async def session(index: int, start: float, calls: list[tuple[str, float]]) -> None:
        await trio.sleep(start)
        async with lanes.open_lane_system(configs) as system:
            handles = [await system.submit(lane, call, seconds) for lane, seconds in calls]
            for number, handle in enumerate(handles):
                if index * 6 + number in cancel:
                    handle.cancel()
            for handle in handles:
                try:
                    await handle.result()
                    outcomes["completed"] += 1
                except lanes.CommandCancelled:
                    outcomes["cancelled"] += 1

    async def main() -> None:
        with trio.fail_after(10_000):
            async with trio.open_nursery() as nursery:
                for index, (start, calls) in enumerate(work):
                    nursery.start_soon(session, index, start, calls)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert peak <= cap
    assert sum(outcomes.values()) == sum(len(calls) for _, calls in work)
    stats = limit.statistics()
    assert (stats.in_use, stats.waiting, stats.members) == (0, 0, 0)


@settings(max_examples=60, deadline=None)
@given(
    priorities=st.lists(st.integers(0, 2), min_size=1, max_size=60),
    steps=st.lists(st.tuples(st.sampled_from("wtrg"), st.integers(0, 59)), max_size=400),
)
def test_the_fairest_waiter_is_the_fairness_minimum(
    priorities: list[int], steps: list[tuple[str, int]]
) -> None:
    """The fairness heap (stale entries, rebuilds) names the member ``min`` would.

    Steps on bare members: ``w`` wait, ``t`` take (a slot it then holds), ``r`` release one
    it holds, ``g`` grant the free slots (``dispatch``). Many waiters and long runs of
    releases while waiting reach the heap's rebuild.
    """
    limit = SharedLimit(len(priorities) * 2)
    members = [limit.attach(f"m{i}", p) for i, p in enumerate(priorities)]
    for kind, pick in steps:
        member = members[pick % len(members)]
        if kind == "w":
            limit.wait(member)
        elif kind == "t" and limit._free():
            limit.take(member, 0.0)
        elif kind == "r" and member.held > member.tickets:
            limit.release(member)
        elif kind == "g":
            limit.dispatch(0.0)
            for m in members:  # grantees start their commands with their tickets
                while m.tickets:
                    limit.take(m, 0.0)
        if limit._waiters:
            expected = min(limit._waiters, key=lambda m: (m.priority, m.held, m.last_turn))
            assert limit._fairest_waiter() is expected


def test_the_fairness_heap_is_rebuilt_when_mostly_stale() -> None:
    """Slots coming back to members that wait file them again: the heap fills with stale
    entries until it is rebuilt, and stays bounded; the fairest waiter stays right."""
    limit = SharedLimit(1000)
    members = [limit.attach(f"m{i}", i % 2) for i in range(10)]
    for member in members:
        for _ in range(20):
            limit.take(member, 0.0)
        limit.wait(member)
    sizes = []
    for round_ in range(20):
        for member in members[round_ % 3 :: 3] + members:
            if member.held:
                limit.release(member)
                sizes.append(len(limit._fairest))
                expected = min(limit._waiters, key=lambda m: (m.priority, m.held, m.last_turn))
                assert limit._fairest_waiter() is expected
    assert max(sizes) <= 2 * len(members) + 33
    assert len(sizes) == 200  # every slot came back while its member waited
