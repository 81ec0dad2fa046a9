"""Inspection of the live commands: ``system.commands()`` and ``lanes.report_progress()``.

A running command reports how far it got (``done`` of ``total``) and log lines; the
listing shows them next to each command's lane, status, priority and age. Live commands
(pending, delayed, running, retrying) are listed; a finished command leaves the listing
when it resolves (its handle keeps its result), unless the system keeps finished commands
(``open_lane_system(retention=lanes.Retention(...))``, see ``lanes/_retention.py``): then
``state="done"`` (``"failed"``, ``"cancelled"``) lists them, with their outcome.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any

import attrs
import trio

from ._checks import check_int
from ._errors import LaneConfigError
from ._policy import JobState
from ._running import current_command

__all__ = ["LOG_LINES", "CommandInfo", "Progress", "list_commands", "report_progress"]

LOG_LINES = 20
"""How many of a command's latest log lines (``report_progress(message=)``) are kept."""

_QUEUED = JobState.QUEUED

# What a command's one state reads as in a listing (DELAYED: waiting for its ready time).
_STATES = {
    JobState.QUEUED: "waiting",
    JobState.DELAYED: "delayed",
    JobState.ACTIVE: "running",
}
LIVE_STATES = frozenset(_STATES.values())
FINISHED_STATES = frozenset({"done", "failed", "cancelled"})
LISTED_STATES = LIVE_STATES | FINISHED_STATES


@attrs.frozen
class Progress:
    """How far a running command got, as it last reported (``lanes.report_progress``).

    ``done`` of ``total`` (``total`` None: unknown); ``fraction`` is ``done / total`` when
    both are known; ``at``: Trio time of the report.
    """

    done: float
    total: float | None
    at: float

    @property
    def fraction(self) -> float | None:
        if self.total is None or self.total == 0:
            return None
        return self.done / self.total


@attrs.frozen
class CommandInfo:
    """A snapshot of one command (``system.commands()``).

    ``state`` is ``"waiting"`` (queued), ``"delayed"`` (waiting for its ready time: a
    ``delay=`` or a retry's backoff) or ``"running"``; for a finished command kept by a
    retention, ``"done"``, ``"failed"`` or ``"cancelled"``. ``age``: seconds since it was
    accepted; ``running_for``: seconds since its current attempt started (None unless
    running); ``log``: its latest log lines, oldest first. For a finished command:
    ``finished_for``, seconds since it ended; ``error``, ``repr()`` of a failure's last
    error; ``result``, a done command's value (after a restart, only a JSON value is kept).
    """

    id: str
    lane: str
    type: str
    state: str
    priority: int
    attempts: int
    key: str | None
    age: float
    running_for: float | None
    progress: Progress | None
    log: tuple[str, ...]
    finished_for: float | None = None
    error: str | None = None
    result: Any = None
    position: int | None = None


class Reports:
    """A command's progress and log lines (created on its first report)."""

    __slots__ = ("lines", "progress")

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.lines: deque[str] = deque(maxlen=LOG_LINES)


def report_progress(
    done: float | None = None, total: float | None = None, *, message: str | None = None
) -> None:
    """Report how far the running command got, and/or add a log line, for listings.

    Call it from inside a command's body (or a task it started): synchronous and cheap, so
    it may be called per item or per token. ``system.commands()`` (and the web console)
    show the latest ``done`` of ``total`` and the last :data:`LOG_LINES` messages. A retry
    keeps the last report until its own first one.

    Args:
        done: the work done so far (items, bytes, tokens: any unit), >= 0.
        total: the whole work in the same unit (None: unknown), >= 0.
        message: a log line (a string).

    Raises:
        LaneUsageError: called outside a running command.
        LaneConfigError: a negative or non-finite number, ``total`` without ``done``, or
            a message that is not a string.
    """
    cmd: Any = current_command("report_progress")
    for name, value in (("done", done), ("total", total)):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            msg = (
                f"lanes.report_progress: {name}={value!r} is invalid; expected a finite "
                "number >= 0 (or None)"
            )
            raise LaneConfigError(msg)
    if total is not None and done is None:
        msg = "lanes.report_progress: total= given without done=; pass both, or done= alone"
        raise LaneConfigError(msg)
    if message is not None and not isinstance(message, str):
        msg = f"lanes.report_progress: message={message!r} is invalid; expected a string"
        raise LaneConfigError(msg)
    reports = cmd.reports
    if reports is None:
        reports = cmd.reports = Reports()
    if done is not None:
        reports.progress = Progress(float(done), total, trio.current_time())
    if message is not None:
        reports.lines.append(message)


def list_commands(
    live: Iterable[Any],
    now: float,
    *,
    lane: str | None,
    states: frozenset[str] | None,
    offset: int,
    limit: int,
    finished: Iterable[Any] = (),
) -> list[CommandInfo]:
    """The live commands that match, in the order they were accepted, then the finished
    ones kept (``finished``: records with ``info(now)``), in the order they ended; paged."""
    out: list[CommandInfo] = []
    skipped = 0
    if states is None or states & LIVE_STATES:
        skipped = _list_live(live, now, lane, states, offset, limit, out)
    if len(out) == limit or states is None or not states & FINISHED_STATES:
        return out
    for record in finished:
        if (lane is not None and record.lane != lane) or record.status not in states:
            continue
        if skipped < offset:
            skipped += 1
            continue
        out.append(record.info(now))
        if len(out) == limit:
            break
    return out


def _list_live(
    live: Iterable[Any],
    now: float,
    lane: str | None,
    states: frozenset[str] | None,
    offset: int,
    limit: int,
    out: list[CommandInfo],
) -> int:
    """Append the live commands that match to ``out``; return how many were skipped."""
    skipped = 0
    page: list[tuple[Any, str]] = []
    for cmd in live:
        if lane is not None and cmd.lane != lane:
            continue
        state = _STATES.get(cmd.state)
        if state is None or (states is not None and state not in states):
            continue  # between states (being settled): not listed
        if skipped < offset:
            skipped += 1
            continue
        page.append((cmd, state))
        if len(out) + len(page) == limit:
            break
    positions = _positions([cmd for cmd, state in page if state == "waiting"])
    for cmd, state in page:
        reports: Reports | None = cmd.reports
        out.append(
            CommandInfo(
                cmd.id,
                cmd.lane,
                cmd.type_name,
                state,
                cmd.priority,
                cmd.attempts,
                cmd.key,
                now - cmd.accepted_at,
                now - cmd.started_at if state == "running" else None,
                None if reports is None else reports.progress,
                () if reports is None else tuple(reports.lines),
                position=positions.get(id(cmd)),
            )
        )
    return skipped


def _positions(waiting: list[Any]) -> dict[int, int]:
    """The place of each of the ``waiting`` commands (queued, of one system) in the order
    its lane would start them, by ``id()`` of the command.

    Per lane they are in, one pass: over its FIFO queue up to the deepest of them
    (O(that position)), or, when some command of the lane has a priority, over its whole
    queue in start order (O(the queue)). A ``handle.position`` per command would cost
    that for each of them.
    """
    if not waiting:
        return {}
    lanes = waiting[0].core.policy.lanes
    wanted: dict[str, set[int]] = {}
    for cmd in waiting:
        wanted.setdefault(cmd.lane, set()).add(id(cmd))
    found: dict[int, int] = {}
    for name, ids in wanted.items():
        state = lanes[name]
        # Prioritized: the start order is sorted. FIFO: the queue's order, in which
        # cancelled commands stay until they reach its head (skipped).
        jobs = state.queued() if state.ranked else state.fifo()
        left = len(ids)
        position = 0
        for job in jobs:
            if job.state is not _QUEUED:
                continue
            if id(job) in ids:
                found[id(job)] = position
                left -= 1
                if not left:
                    break
            position += 1
    return found


def check_listing(
    where: str,
    state: str | Iterable[str] | None,
    offset: int,
    limit: int,
    *,
    retains: bool = False,
) -> frozenset[str] | None:
    """The states asked for (None: the live ones), after checking the arguments of
    ``where`` (``retains``: finished commands are kept, so their states may be asked)."""
    check_int(where, "offset", offset, 0)
    check_int(where, "limit", limit, 1)
    if state is None:
        return None
    wanted = frozenset([state] if isinstance(state, str) else state)
    unknown = sorted(s for s in wanted if s not in LISTED_STATES)
    if unknown or not wanted:
        known = ", ".join(sorted(LISTED_STATES))
        msg = f"{where}: state={state!r} is invalid; expected one of {known} (or a list of them)"
        raise LaneConfigError(msg)
    if wanted & FINISHED_STATES and not retains:
        msg = (
            f"{where}: state={state!r} is invalid here: it asks for finished commands, "
            "and this system keeps none; open it with "
            "open_lane_system(retention=lanes.Retention(count=...)) to list them"
        )
        raise LaneConfigError(msg)
    return wanted
