"""Limits shared by the lanes of many lane systems: ``SharedLimit``.

An app with one lane system per agent session still has resources that all sessions share:
at most 20 LLM calls at once, one provider rate limit. A :class:`SharedLimit` is created once
and given to the lanes of many systems (``LaneConfig(..., shared_limit=llm)``). Each such lane
of each system is a *member* of the limit.

How slots are handed out (all synchronous; time is passed in, as in the policy):

* A member takes a slot directly only when nobody waits and a slot (and a rate-limit token)
  is free. Otherwise it waits.
* When slots free up, they are *granted* to waiting members, one at a time: the most urgent
  base priority first; among equal priorities, the member holding the fewest slots; among
  those, the one granted least recently (round-robin). A grant is a ticket: the slot is
  counted as used at once, and the member's system is woken to start its command with it.
  A member that cannot use its ticket any more (its command was cancelled, its lane paused)
  gives it back, and the slot goes to the next waiter.
* A member leaving (its system closes) gives back everything it holds.

So a busy session cannot starve the others: as slots free up, they go to whoever holds
least, and the holdings even out. Priority still decides between lanes of different urgency.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import attrs

from ._checks import check_type, fail
from ._limiters import MIN_WAIT, Limiter, RateLimit, make_limiter

__all__ = ["SharedLimit", "SharedLimitStatistics", "SharedMember"]


def _nothing() -> None:
    pass


@attrs.frozen
class SharedLimitStatistics:
    """A snapshot of a :class:`SharedLimit`.

    Attributes:
        name: the limit's name.
        max_concurrency: its slot count (None: unlimited).
        in_use: slots held: running commands plus grants not yet started.
        waiting: members (lanes of systems) waiting for a slot.
        members: lanes of open systems that use the limit.
        granted: slots handed to waiting members so far.
    """

    name: str
    max_concurrency: int | None
    in_use: int
    waiting: int
    members: int
    granted: int


class SharedMember:
    """One lane of one lane system using a :class:`SharedLimit` (created by the policy)."""

    __slots__ = (
        "held",
        "lane",
        "last_turn",
        "limit",
        "priority",
        "tickets",
        "wait_seq",
        "wake",
    )

    def __init__(self, limit: SharedLimit, lane: str, priority: int) -> None:
        self.limit = limit
        self.lane = lane
        self.priority = priority
        self.held = 0  # slots of running commands plus tickets
        self.tickets = 0  # slots granted, not used yet
        self.last_turn = 0  # when it last took or was granted a slot
        self.wait_seq = 0  # when it began to wait (ties of fairness go to the earlier)
        self.wake: Callable[[], None] = _nothing  # asks the member's system to decide again

    @property
    def waiting(self) -> bool:
        return self in self.limit._waiters

    def _fairness(self) -> tuple[int, int, int, int]:
        return (self.priority, self.held, self.last_turn, self.wait_seq)


# A waiter's place in the fairness heap: its fairness key when pushed, a unique number
# (entries never compare members), then the member.
_Entry = tuple[int, int, int, int, int, SharedMember]


class SharedLimit:
    """A concurrency limit and/or a rate limit shared by lanes of many lane systems.

    Create one per app and pass it to the lanes that share the resource, in as many lane
    systems as you like::

        llm = lanes.SharedLimit(20, name="llm", rate_limit=lanes.RateLimit.per_second(50))
        prompt = lanes.LaneConfig("prompt", 5, max_concurrency=4, shared_limit=llm)

    A command of such a lane starts only when the lane's own rules allow it *and* the shared
    limit has a slot (and, with ``rate_limit``, a token) for it. Waiting lanes are granted
    slots by base priority, then to whoever holds the fewest, then round-robin, so one busy
    system cannot starve the others.

    The limit belongs to one Trio run (the systems using it run in the same event loop). A
    system leaving its ``async with`` (normally, by an error or by cancellation) gives back
    every slot, grant and wait it had: nothing leaks into the other systems.

    Args:
        max_concurrency: at most this many commands of all member lanes run at once (an
            int >= 1), or None for no concurrency limit.
        rate_limit: a :class:`RateLimit` on the starts of all member lanes together, or None.
        name: a name for statistics and error messages.

    Raises:
        LaneConfigError: a bad value, or neither a concurrency nor a rate limit.
    """

    def __init__(
        self,
        max_concurrency: int | None = None,
        *,
        rate_limit: RateLimit | None = None,
        name: str = "shared",
    ) -> None:
        owner = f"SharedLimit({name!r})"
        if not isinstance(name, str) or not name:
            raise fail("SharedLimit", "name", name, "expected a non-empty string")
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise fail(owner, "max_concurrency", max_concurrency, "expected an int >= 1 or None")
        check_type(owner, "rate_limit", rate_limit, RateLimit, optional=True)
        if max_concurrency is None and rate_limit is None:
            raise fail(
                owner,
                "max_concurrency",
                max_concurrency,
                "give max_concurrency, rate_limit, or both (a limit that limits nothing)",
            )
        self.name = name
        self.max_concurrency = max_concurrency
        self.rate_limit = rate_limit
        self._limiter: Limiter | None = make_limiter(rate_limit)
        self._in_use = 0
        self._waiters: dict[SharedMember, None] = {}
        # The waiters by fairness: entries whose key is no longer the member's (it stopped
        # waiting, or a slot it held came back) are dropped when they reach the top.
        self._fairest: list[_Entry] = []
        self._wait_seq = 0
        self._pushes = 0
        self._members: dict[SharedMember, None] = {}
        self._granted = 0
        self._turns = 0  # slots taken or granted: the round-robin clock
        self._timekeeper: SharedMember | None = None  # the waiter told to wait for a token

    def __repr__(self) -> str:
        return (
            f"SharedLimit({self.max_concurrency!r}, rate_limit={self.rate_limit!r}, "
            f"name={self.name!r})"
        )

    def statistics(self) -> SharedLimitStatistics:
        """How the limit is used right now."""
        return SharedLimitStatistics(
            self.name,
            self.max_concurrency,
            self._in_use,
            len(self._waiters),
            len(self._members),
            self._granted,
        )

    # -- members (called by the policy of each member system) ---------------------------

    def attach(self, lane: str, priority: int) -> SharedMember:
        """A lane of a system that is opening joins the limit."""
        member = SharedMember(self, lane, priority)
        self._members[member] = None
        return member

    def detach(self, member: SharedMember) -> None:
        """The member's system is gone: give back all it holds, stop waiting."""
        self._members.pop(member, None)
        self._waiters.pop(member, None)  # (its heap entry is stale from now on)
        self._in_use -= member.held
        member.held = member.tickets = 0
        member.wake = _nothing
        self._wake_best()

    def available(self, member: SharedMember, now: float) -> bool:
        """May ``member`` start a command now? Hands free slots to waiters first."""
        if member.tickets:
            return True
        if self._waiters:
            self.dispatch(now)
            if member.tickets:
                return True
            if self._waiters:
                return False  # the free slots (if any) went to fairer waiters
        return self._free() and (self._limiter is None or self._limiter.ready(now))

    def could_take(self, member: SharedMember, now: float) -> bool:
        """:meth:`available` without handing anything out (a side-effect-free check)."""
        if member.tickets:
            return True
        if self._waiters:
            return False
        return self._free() and (self._limiter is None or self._limiter.ready(now))

    def wait(self, member: SharedMember) -> None:
        """``member`` has a command that may start but for this limit."""
        if member not in self._waiters:
            self._waiters[member] = None
            self._wait_seq += 1
            member.wait_seq = self._wait_seq
            self._push(member)

    def withdraw(self, member: SharedMember) -> None:
        """``member`` no longer waits (its command went away or its lane is blocked)."""
        if member in self._waiters:
            del self._waiters[member]
            self._wake_best()  # it may have been the one set to wake on the next token

    def take(self, member: SharedMember, now: float) -> None:
        """``member`` starts a command: use a ticket, or take a free slot and token."""
        if member.tickets:
            member.tickets -= 1
            return
        self._waiters.pop(member, None)
        self._in_use += 1
        member.held += 1
        self._turns += 1
        member.last_turn = self._turns
        if self._limiter is not None:
            self._limiter.take(now)

    def release(self, member: SharedMember) -> None:
        """A command of ``member`` ended (or was preempted): its slot is free again."""
        member.held -= 1
        self._in_use -= 1
        if member in self._waiters:
            self._push(member)  # it holds fewer: fairer than its entry says
        self._wake_best()

    def give_back(self, member: SharedMember, now: float) -> None:
        """``member`` cannot use its tickets: the slots go to the next waiters."""
        count, member.tickets = member.tickets, 0
        member.held -= count
        self._in_use -= count
        if count and member in self._waiters:
            self._push(member)
        if self._limiter is not None:
            self._limiter.refund(count)
        self.dispatch(now)

    def dispatch(self, now: float) -> None:
        """Grant free slots (and tokens) to waiters, fairest first; wake each grantee."""
        waiters = self._waiters
        limiter = self._limiter
        while waiters and self._free() and (limiter is None or limiter.ready(now)):
            member = self._fairest_waiter()
            heapq.heappop(self._fairest)
            del waiters[member]
            self._in_use += 1
            if limiter is not None:
                limiter.take(now)
            member.held += 1
            member.tickets += 1
            self._granted += 1
            self._turns += 1
            member.last_turn = self._turns
            member.wake()
        if waiters and limiter is not None and self._free():
            # Waiting for a token: the fairest waiter keeps the timer. Tell it, once.
            best = self._fairest_waiter()
            if best is not self._timekeeper:
                self._timekeeper = best
                best.wake()

    def next_wakeup(self, member: SharedMember, now: float) -> float | None:
        """When ``member``'s system should wake for this limit (None: it need not).

        Only the fairest waiter keeps the timer for the next rate-limit token, so a token
        wakes one system, not all of them.
        """
        limiter = self._limiter
        if limiter is None or member not in self._waiters or not self._free():
            return None
        if member is not self._fairest_waiter():
            return None
        return now + MIN_WAIT if limiter.ready(now) else limiter.ready_at(now)

    # -- internals --------------------------------------------------------------------------

    def _free(self) -> bool:
        return self.max_concurrency is None or self._in_use < self.max_concurrency

    def _push(self, member: SharedMember) -> None:
        """(Re)file a waiter under its fairness now: O(log waiters)."""
        fairest = self._fairest
        if len(fairest) > 2 * len(self._waiters) + 32:  # mostly stale entries: rebuild
            fairest[:] = [(*m._fairness(), i, m) for i, m in enumerate(self._waiters)]
            self._pushes = len(fairest)
            heapq.heapify(fairest)
            if member in self._waiters:
                return  # filed under its key now
        self._pushes += 1
        heapq.heappush(fairest, (*member._fairness(), self._pushes, member))

    def _fairest_waiter(self) -> SharedMember:
        """The waiter granted next (there is one): the heap's top, once stale ones are gone.

        The same member ``min(waiters, key=_fairness)`` would find, in O(log waiters)
        amortized instead of O(waiters).
        """
        fairest, waiters = self._fairest, self._waiters
        while True:
            entry = fairest[0]
            member = entry[5]
            if member in waiters and entry[:4] == member._fairness():
                return member
            heapq.heappop(fairest)

    def _wake_best(self) -> None:
        self._timekeeper = None
        if self._waiters:
            self._fairest_waiter().wake()
