"""Finished commands kept for listings: ``open_lane_system(retention=lanes.Retention(...))``.

Without a retention, a command leaves ``system.commands()`` when it resolves (its handle
keeps its result). With one, the last ``count`` finished commands (and, with ``seconds``,
only those that finished in the last ``seconds``) stay listable with their outcome: their
status, their error (``repr``) and their value. Memory is bounded by ``count``.

How it hooks in: :class:`LiveTable` is the core's dict of live commands (``core.live``),
installed only when a retention is given; the core deletes a command from it when it
resolves, which calls :meth:`LiveTable.__delitem__`, where the finished record is made.
Without a retention the core's plain dict stays: nothing is paid per command.

With storage, a durable command's record is written in the batch that deletes the command
(its value as JSON when it is JSON: numbers, text, lists, dicts; else its value is not
kept), and the records are listed again after a restart.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from typing import Any

import attrs

from ._checks import check_int, check_seconds
from ._codec import DEFAULT_MAX_PAYLOAD_BYTES
from ._command import Command
from ._core import Core
from ._errors import LaneConfigError
from ._listing import CommandInfo
from ._policy import JobState
from .storage import StoredFinished

__all__ = [
    "LiveTable",
    "Retention",
    "check_retention",
    "finished_records",
    "install",
    "restore",
]


@attrs.frozen
class Retention:
    """How many finished commands ``system.commands()`` keeps listing, and how long.

    Args:
        count: at most this many (the oldest finished is dropped first); >= 1.
        seconds: only those that finished in the last ``seconds`` (None: no time limit).

    Raises:
        LaneConfigError: ``count`` is not an integer >= 1, or ``seconds`` not > 0.
    """

    count: int = 1000
    seconds: float | None = None

    def __attrs_post_init__(self) -> None:
        check_int("Retention", "count", self.count, 1)
        object.__setattr__(
            self, "seconds", check_seconds("Retention", "seconds", self.seconds, zero_ok=False)
        )


@attrs.define(kw_only=True)
class Finished:
    """The record of one finished command (what a listing shows of it); times are Trio's."""

    id: str
    lane: str
    type_name: str
    key: str | None
    status: str
    priority: int
    attempts: int
    accepted_at: float
    ended_at: float
    error: str | None
    result: Any
    stored: bool  # with storage: its row is written (deleted when it is dropped)

    def info(self, now: float) -> CommandInfo:
        return CommandInfo(
            self.id,
            self.lane,
            self.type_name,
            self.status,
            self.priority,
            self.attempts,
            self.key,
            now - self.accepted_at,
            None,
            None,
            (),
            finished_for=now - self.ended_at,
            error=self.error,
            result=self.result,
        )


class LiveTable(dict[Command, None]):
    """The core's live commands; a resolved one becomes a :class:`Finished` record."""

    def __init__(self, core: Core, retention: Retention, live: Iterable[Command] = ()) -> None:
        super().__init__(dict.fromkeys(live))
        self.core = core
        self.retention = retention
        self.records: deque[Finished] = deque()

    def __delitem__(self, cmd: Command) -> None:
        dict.__delitem__(self, cmd)
        if cmd.state >= JobState.DONE:
            self._add(cmd)

    def _add(self, cmd: Command) -> None:
        status = cmd.status.value
        error = None
        if cmd.state is JobState.FAILED and cmd.error is not None:
            error = repr(cmd.error)
        result = cmd.value if cmd.state is JobState.DONE else None
        record = Finished(
            id=cmd.id,
            lane=cmd.lane,
            type_name=cmd.type_name,
            key=cmd.key,
            status=status,
            priority=cmd.priority,
            attempts=cmd.attempts,
            accepted_at=cmd.accepted_at,
            ended_at=self.core.now(),
            error=error,
            result=result,
            stored=False,
        )
        durable = self.core.durable
        if durable is not None and cmd.payload is not None:
            record.stored = True
            wall = durable.storage.clock() - self.core.now()
            durable.journal.save_finished(
                StoredFinished(
                    record.id,
                    cmd.stored_seq,
                    record.lane,
                    record.type_name,
                    record.key,
                    status,
                    record.attempts,
                    record.priority,
                    record.accepted_at + wall,
                    record.ended_at + wall,
                    error,
                    _json(result),
                )
            )
        self.records.append(record)
        self.purge()

    def purge(self) -> None:
        """Drop the records beyond ``count``, and those older than ``seconds``."""
        records, retention = self.records, self.retention
        while len(records) > retention.count:
            self._drop(records.popleft())
        if retention.seconds is not None and records:
            oldest = self.core.now() - retention.seconds
            while records and records[0].ended_at <= oldest:
                self._drop(records.popleft())

    def _drop(self, record: Finished) -> None:
        durable = self.core.durable
        if record.stored and durable is not None:
            durable.journal.delete_finished(record.id)


def _json(value: object) -> str | None:
    """A done command's value as JSON, or None when it is not plain JSON (or too big)."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None
    return text if len(text) <= DEFAULT_MAX_PAYLOAD_BYTES else None


def check_retention(retention: object) -> Retention | None:
    """``open_lane_system(retention=)``, checked.

    Raises:
        LaneConfigError: ``retention`` is neither None nor a :class:`Retention`.
    """
    if retention is None or isinstance(retention, Retention):
        return retention
    msg = (
        f"open_lane_system: retention={retention!r} is invalid; expected "
        "lanes.Retention(count=..., seconds=...) or None"
    )
    raise LaneConfigError(msg)


def install(core: Core, retention: Retention) -> None:
    """Keep finished commands in ``core`` for listings (before any command is accepted)."""
    core.live = LiveTable(core, retention, core.live)


def finished_records(core: Core) -> deque[Finished] | None:
    """The finished records, oldest first (None: no retention)."""
    live = core.live
    if type(live) is not LiveTable:
        return None
    live.purge()
    return live.records


def restore(core: Core) -> None:
    """After a durable start: the records storage kept, before any new one."""
    live = core.live
    durable = core.durable
    if type(live) is not LiveTable or durable is None:
        return
    shift = core.now() - durable.storage.clock()
    restored = [
        Finished(
            id=row.id,
            lane=row.lane,
            type_name=row.type,
            key=row.key,
            status=row.status,
            priority=row.priority,
            attempts=row.attempts,
            accepted_at=row.accepted_at + shift,
            ended_at=row.ended_at + shift,
            error=row.error,
            result=None if row.result is None else json.loads(row.result),
            stored=True,
        )
        for row in durable.retained
    ]
    live.records.extendleft(reversed(restored))
    live.purge()
