"""The live lane systems of a process, as the console sees and steers them.

Systems are added like to a :class:`lanes.prometheus.LaneCollector` (``add(system)``, and
they leave when they close); nothing runs per command and nothing runs between requests:
every view reads the systems when it is asked for.
"""

from __future__ import annotations

import itertools
import sys
import weakref
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._command import CommandHandle, CommandStatus
from .._dlq import DeadLetterNotFound
from .._errors import LaneConfigError, LaneUsageError
from .._listing import FINISHED_STATES, CommandInfo, Progress
from .._shared import SharedLimit
from ._source import MAX_PAGE, ActionRefused, NotFound, Sort, View

if TYPE_CHECKING:
    from .._core import Core
    from .._policy import LaneState
    from .._system import LaneSystem

__all__ = ["LiveSource"]

CHUNK = 500  # systems read between two checkpoints
ERROR_CHARS = 4000  # of a dead letter's error shown


@attrs.define
class _Entry:
    id: str
    label: str
    system: LaneSystem
    core: Core
    unhook: Callable[[], None]
    folded: str = ""  # the label, casefolded (searched)


def _seconds(value: float) -> float:
    return round(value, 6)


def _percentiles(histogram: Any) -> tuple[float | None, float | None]:
    if not histogram.count:
        return None, None
    p50, p99 = histogram.percentiles((50.0, 99.0))
    return _seconds(p50), _seconds(p99)


def _oldest_wait(state: LaneState, now: float) -> float:
    """How long the lane's longest-waiting queued command has waited (0: none queued)."""
    head = state.head()
    if head is None:
        return 0.0
    if not state.ranked:  # FIFO only: the head joined first (or was put back in front)
        return now - head.pending_since
    return now - min(job.pending_since for job in state.queued())


class LiveSource:
    """The open lane systems added to a console, read in the Trio thread of their run."""

    kind = "live"

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._by_system: dict[LaneSystem, str] = {}
        self._ids = itertools.count(1)
        self._token: trio.lowlevel.TrioToken | None = None
        self._limits: weakref.WeakValueDictionary[str, SharedLimit] = weakref.WeakValueDictionary()
        self._closed_totals = [0, 0, 0]  # completed, failed, cancelled of closed systems
        self._closed_runs = (0.0, 0)  # run seconds and attempts of closed systems

    # -- systems coming and going ----------------------------------------------------------

    def add(self, system: LaneSystem, label: str | None = None) -> str:
        from .._system import LaneSystem

        if not isinstance(system, LaneSystem):
            msg = (
                f"console.add: {system!r} is not a local lane system; pass the system that "
                "`async with lanes.open_lane_system()` gives"
            )
            raise LaneUsageError(msg)
        system._check_open("console.add")
        if system in self._by_system:
            msg = "console.add: this lane system is already added"
            raise LaneUsageError(msg)
        if label is not None and (not isinstance(label, str) or not label.strip()):
            msg = f"console.add: label={label!r} is invalid; expected a non-blank string or None"
            raise LaneConfigError(msg)
        token = system._token
        if self._token is not None and token is not self._token:
            msg = "console.add: the system runs in another trio.run than the others"
            raise LaneUsageError(msg)
        self._token = token
        core = system._core
        system_id = f"s{next(self._ids)}"
        unhook = core.bus.on_close(lambda: self.remove(system))
        label = label or system_id
        entry = _Entry(system_id, label, system, core, unhook, label.casefold())
        self._entries[system_id] = entry
        self._by_system[system] = system_id
        for config in core.configs.values():
            if config.shared_limit is not None:
                self._limits[config.shared_limit.name] = config.shared_limit
        return system_id

    def remove(self, system: LaneSystem) -> None:
        system_id = self._by_system.pop(system, None)
        if system_id is None:
            return
        entry = self._entries.pop(system_id)
        entry.unhook()
        for counters in entry.core.counters.values():
            self._closed_totals[0] += counters.completed
            self._closed_totals[1] += counters.failed
            self._closed_totals[2] += counters.cancelled
        seconds, attempts = self._closed_runs
        for histogram in entry.core.metrics.run.values():
            seconds += histogram.sum
            attempts += histogram.count
        self._closed_runs = (seconds, attempts)

    def __len__(self) -> int:
        return len(self._entries)

    def check_thread(self) -> None:
        """Raise LaneUsageError unless called from the Trio run of the systems."""
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            token = None
        if self._token is not None and token is not self._token:
            msg = (
                "lanes.web: the console is served outside the trio.run of its lane systems; "
                "serve it from that run (hypercorn's trio worker in the same trio.run)"
            )
            raise LaneUsageError(msg)

    # -- views -----------------------------------------------------------------------------

    async def _each(self) -> AsyncIterator[_Entry]:
        """Every open system; a checkpoint every ``CHUNK`` of them, so that reading
        thousands of systems never holds up the app's other tasks for long."""
        self.check_thread()
        for index, entry in enumerate(list(self._entries.values()), 1):
            yield entry
            if not index % CHUNK:
                await trio.lowlevel.checkpoint()

    async def overview(self) -> View:
        completed, failed, cancelled = self._closed_totals
        pending = active = letters = 0
        run_seconds, run_attempts = self._closed_runs
        async for entry in self._each():  # the hot loop of a frame: kept plain
            core = entry.core
            policy = core.policy
            for state in policy.lanes.values():  # each lane's record: no dicts made
                pending += state.pending
                counters = state.counters
                completed += counters.completed
                failed += counters.failed
                cancelled += counters.cancelled
                histogram = state.run
                count = histogram.count
                if count:
                    run_seconds += histogram.sum
                    run_attempts += count
            active += policy.active_total
            letters += core.dead_letters_held
        return {
            "kind": self.kind,
            "systems": len(self._entries),
            "pending": pending,
            "active": active,
            "completed": completed,
            "failed": failed,
            "cancelled": cancelled,
            "dead_letters": letters,
            "run_seconds": run_seconds,
            "run_attempts": run_attempts,
            "shared_limits": self._shared_limits(),
        }

    def _shared_limits(self) -> list[View]:
        if not self._limits:
            return []
        holders: dict[str, list[View]] = {}
        for entry in self._entries.values():
            for lane, state in entry.core.policy.lanes.items():
                member = state.shared
                if member is None:
                    continue
                holders.setdefault(member.limit.name, []).append(
                    {
                        "system": entry.id,
                        "label": entry.label,
                        "lane": lane,
                        "held": member.held,
                        "waiting": member.waiting,
                    }
                )
        rows = []
        for name in sorted(self._limits.keys()):
            limit = self._limits.get(name)
            if limit is None:
                continue
            stats = limit.statistics()
            members = holders.get(name, [])
            rows.append(
                {
                    "name": stats.name,
                    "max_concurrency": stats.max_concurrency,
                    "in_use": stats.in_use,
                    "waiting": stats.waiting,
                    "members": stats.members,
                    "granted": stats.granted,
                    "holders": [m for m in members if m["held"]][:MAX_PAGE],
                    "waiters": [m for m in members if m["waiting"]][:MAX_PAGE],
                }
            )
        return rows

    def _row(self, entry: _Entry, now: float) -> View:
        core = entry.core
        policy = core.policy
        wait = 0.0
        paused = 0
        for state in policy.lanes.values():
            if state.pending:
                wait = max(wait, _oldest_wait(state, now))
            paused += state.paused
        completed = failed = 0
        for counters in core.counters.values():
            completed += counters.completed
            failed += counters.failed
        return {
            "id": entry.id,
            "label": entry.label,
            "lanes": len(policy.lanes),
            "pending": policy.pending_total(),
            "active": policy.active_total,
            "paused": paused,
            "wait": _seconds(wait),
            "completed": completed,
            "failed": failed,
            "dead_letters": core.dead_letters_held,
            "accepting": core.accepting,
        }

    async def systems(self, query: str, sort: Sort, offset: int, limit: int) -> View:
        now = trio.current_time()
        needle = query.casefold()
        keyed: list[tuple[float, str, _Entry]] = []
        async for entry in self._each():
            if needle and needle not in entry.folded and needle != entry.id:
                continue
            if sort == "name":
                key = 0.0
            elif sort == "depth":
                key = 0.0
                for state in entry.core.policy.lanes.values():
                    key -= state.pending
            else:
                key = -max(
                    (_oldest_wait(s, now) for s in entry.core.policy.lanes.values() if s.pending),
                    default=0.0,
                )
            keyed.append((key, entry.label, entry))
        keyed.sort(key=lambda item: (item[0], item[1]))
        page = keyed[offset : offset + limit]
        return {
            "total": len(keyed),
            "offset": offset,
            "limit": limit,
            "sort": sort,
            "query": query,
            "systems": [self._row(entry, now) for _, _, entry in page],
        }

    def _entry(self, system_id: str) -> _Entry:
        self.check_thread()
        entry = self._entries.get(system_id)
        if entry is None:
            msg = f"no open lane system with id {system_id!r} (it may have closed)"
            raise NotFound(msg)
        return entry

    async def system(self, system_id: str) -> View:
        entry = self._entry(system_id)
        core = entry.core
        now = trio.current_time()
        lanes = [self._lane(core, name, state, now) for name, state in core.policy.lanes.items()]
        running_total = sum(state.active for state in core.policy.lanes.values())
        running = [
            _running(info) for info in entry.system.commands(state="running", limit=MAX_PAGE)
        ]
        letters = [
            {
                "id": letter.id,
                "lane": letter.lane,
                "type": letter.command_type,
                "error": letter.error[:ERROR_CHARS],
                "traceback": letter.traceback,
                "attempts": letter.attempts,
                "failed_at": letter.failed_at,
            }
            for letter in entry.system.dead_letters.list()[-MAX_PAGE:]
        ]
        schedules = [
            {
                "key": key,
                "lane": handle.lane,
                "paused": handle.paused,
                "next_run": _iso(handle.next_run),
                "fired": handle.fired,
                "skipped": handle.skipped,
                "problem": handle.problem,
            }
            for key, handle in list(entry.system.schedules.items())[:MAX_PAGE]
        ]
        row = self._row(entry, now)
        return {
            **row,
            "lane_rows": lanes,
            "running": running,
            "running_total": running_total,
            "letters": letters,
            "letters_total": len(entry.system.dead_letters),
            "schedules": schedules,
            "max_concurrency": core.policy.cap,
        }

    def _lane(self, core: Core, name: str, state: LaneState, now: float) -> View:
        limiter = state.limiter
        rate_limited = bool(state.pending and limiter is not None and not limiter.ready(now))
        wait_p50, wait_p99 = _percentiles(state.wait)  # the record's: no dict per lane
        run_p50, run_p99 = _percentiles(state.run)
        counters = state.counters
        return {
            "name": name,
            "priority": state.priority,
            "effective_priority": core.policy.effective_priority(name, now),
            "pending": state.pending,
            "delayed": state.delayed,
            "active": state.active,
            "max_concurrency": state.max,
            "paused": state.paused,
            "rate_limited": rate_limited,
            "shared_limit": None if state.shared is None else state.shared.limit.name,
            "wait": _seconds(_oldest_wait(state, now)) if state.pending else 0.0,
            "wait_p50": wait_p50,
            "wait_p99": wait_p99,
            "run_p50": run_p50,
            "run_p99": run_p99,
            "completed": counters.completed,
            "failed": counters.failed,
            "cancelled": counters.cancelled,
        }

    async def queue(self, system_id: str, lane: str, offset: int, limit: int) -> View:
        """A page of ``lane``'s waiting commands in the order they would start, read
        through ``system.commands()`` and each one's ``CommandInfo.position``.

        When the lane starts its commands in the order they were accepted (the common
        case: no priorities, no retries or delays that came due behind later ones), the
        accepted-order page is that page: O(offset + limit). Otherwise every waiting
        command of the lane is listed and sorted: O(the lane's waiting commands).

        Raises:
            NotFound: no such system.
            UnknownLaneError: the system has no lane ``lane`` (the API's error).
        """
        entry = self._entry(system_id)
        system = entry.system
        page = system.commands(lane, state="waiting", offset=offset, limit=limit)
        if [info.position for info in page] != list(range(offset, offset + len(page))):
            waiting = system.commands(lane, state="waiting", limit=sys.maxsize)
            waiting.sort(key=_place)  # the positions are 0, 1, 2... of these
            page = waiting[offset : offset + limit]
        state = entry.core.policy.lanes[lane]  # the counts of the lanes table
        rows = [
            {
                "position": info.position,
                "id": info.id,
                "type": info.type,
                "key": info.key,
                "priority": info.priority,
                "attempts": info.attempts,
                "age": _seconds(info.age),
            }
            for info in page
        ]
        return {
            "system": system_id,
            "lane": lane,
            "pending": state.pending,
            "queued": state.pending - state.delayed,
            "delayed": state.delayed,
            "offset": offset,
            "limit": limit,
            "commands": rows,
        }

    # -- actions ---------------------------------------------------------------------------

    async def act(self, action: str, system_id: str, target: str) -> View:
        entry = self._entry(system_id)
        system = entry.system
        if action == "pause":
            system.pause(target)
            return {"ok": True, "message": f"lane {target!r} paused"}
        if action == "resume":
            system.resume(target)
            return {"ok": True, "message": f"lane {target!r} resumed"}
        if action == "cancel":
            return {"ok": True, "message": _cancel(entry, target)}
        if action == "requeue":
            handle = await system.dead_letters.requeue(target)
            return {"ok": True, "message": f"dead letter {target!r} requeued as {handle.id}"}
        if action == "delete":
            if not await system.dead_letters.discard(target):
                known = ", ".join(letter.id for letter in system.dead_letters.list()[:5])
                msg = f"no dead letter with id {target!r} (first ids: {known or 'none'})"
                raise DeadLetterNotFound(msg)
            return {"ok": True, "message": f"dead letter {target!r} deleted"}
        if action == "trigger":
            handle = await _trigger(system, target)
            return {"ok": True, "message": f"schedule {target!r} fired now as {handle.id}"}
        raise ActionRefused(f"unknown action {action!r}")


def _place(info: CommandInfo) -> int:
    return -1 if info.position is None else info.position


def _running(info: CommandInfo) -> View:
    """A running command as ``system.commands()`` lists it, with what it reported."""
    return {
        "id": info.id,
        "lane": info.lane,
        "type": info.type,
        "key": info.key,
        "attempts": info.attempts,
        "elapsed": _seconds(info.running_for or 0.0),
        "progress": _progress(info.progress),
        "fraction": None if info.progress is None else info.progress.fraction,
        "log": info.log[-1] if info.log else None,
    }


def _progress(progress: Progress | None) -> str | None:
    """``3 of 10 (30%)``, ``3 of ?``, or None before the command's first report."""
    if progress is None:
        return None
    done = f"{progress.done:g}"
    if progress.total is None:
        return f"{done} of ?"
    fraction = progress.fraction
    share = "" if fraction is None else f" ({fraction:.0%})"
    return f"{done} of {progress.total:g}{share}"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _cancel(entry: _Entry, command_id: str) -> str:
    """``handle.cancel()`` of the live command ``command_id``; what happened, as a message.

    Raises:
        NotFound: no live command has that id (none ever had, or it finished and the
            system keeps no finished commands to tell).
        ActionRefused: the command already finished (``done``, ``failed``, ``cancelled``).
        LaneUsageError: called outside the system's ``trio.run`` (the API's error).
    """
    handle = _live_handle(entry.core, command_id)
    if handle is None:
        finished = _finished_state(entry.system, command_id)
        if finished is None:
            msg = (
                f"system {entry.id!r} has no pending or running command with id "
                f"{command_id!r} (it never had one, or it finished: the running ones are "
                "listed under the system)"
            )
            raise NotFound(msg)
        raise ActionRefused(f"command {command_id!r} already finished ({finished}): not cancelled")
    if handle.done():  # being settled: its outcome is decided
        msg = f"command {command_id!r} already finished ({handle.status.value}): not cancelled"
        raise ActionRefused(msg)
    running = handle.status is CommandStatus.RUNNING
    handle.cancel()
    if running:
        return f"command {command_id!r} cancelled: it stops at its next checkpoint"
    return f"command {command_id!r} cancelled"


def _live_handle(core: Core, command_id: str) -> CommandHandle[Any] | None:
    """The handle of the live command ``command_id`` (lanes has no public lookup of a
    handle by id, only by key: ``system.handle_for``)."""
    for cmd in core.live:
        if cmd.id == command_id:
            return cmd.handle
    return None


def _finished_state(system: LaneSystem, command_id: str) -> str | None:
    """How ``command_id`` ended, if the system keeps finished commands and this one."""
    try:
        kept = system.commands(state=sorted(FINISHED_STATES), limit=sys.maxsize)
    except LaneConfigError:  # no retention: a finished command is forgotten
        return None
    return next((info.state for info in kept if info.id == command_id), None)


async def _trigger(system: LaneSystem, key: str) -> CommandHandle[Any]:
    """Fire the schedule ``key`` now, with ``ScheduleHandle.trigger()`` (submit's errors).

    ``ScheduleHandle.trigger()``: the firing takes no slot (``runs`` and the slots stay as
    they are) and becomes the schedule's ``last``.

    Raises:
        NotFound: no schedule with that key (or it was cancelled).
        ActionRefused: the schedule cannot fire in this process (``problem``), or it
            ended (``times=``).
        ShutdownInProgress, LaneFull...: what ``system.submit`` raises.
    """
    schedule = system.schedules.get(key)
    if schedule is None or schedule.cancelled:
        known = ", ".join(repr(k) for k in list(system.schedules)[:5]) or "none"
        raise NotFound(f"no schedule with key {key!r} (first keys: {known})")
    if schedule.problem is not None:
        raise ActionRefused(f"schedule {key!r} cannot fire here: {schedule.problem}")
    if schedule.finished:
        msg = f"schedule {key!r} ended after its {schedule.times} firings (times=); not fired"
        raise ActionRefused(msg)
    return await schedule.trigger()
