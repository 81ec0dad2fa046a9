"""What the console shows and does, whatever it reads: live systems or a database.

Every view is a plain JSON-ready dict (str, int, float, bool, None, lists, dicts). A live
view is built in the Trio thread without a checkpoint in between, so it is a consistent
snapshot; a stored one is read in a worker thread (SQLite) or from Redis.
Actions are async and raise :class:`~lanes.LaneError` subclasses with the API's messages.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from .._errors import LaneError

__all__ = ["MAX_PAGE", "SORTS", "ActionRefused", "NotFound", "Source", "View"]

View = dict[str, Any]
Sort = Literal["name", "depth", "wait"]
SORTS: tuple[Sort, ...] = ("name", "depth", "wait")
MAX_PAGE = 500  # rows of one page of systems, commands or letters


class NotFound(LaneError, KeyError):
    """The system, lane, command, letter or schedule named in a request does not exist."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class ActionRefused(LaneError):
    """The action is not possible on what this console reads (e.g. pausing a stored lane)."""


class Source(Protocol):
    """The data behind the console: the live systems of a process, or a storage."""

    kind: str  # "live" or "storage"

    async def overview(self) -> View:
        """Totals (systems, pending, active, finished, failed, dead letters), shared limits."""

    async def systems(self, query: str, sort: Sort, offset: int, limit: int) -> View:
        """One page of systems (``total`` says how many matched)."""

    async def system(self, system_id: str) -> View:
        """One system: its lanes, running commands, dead letters, schedules."""

    async def queue(self, system_id: str, lane: str, offset: int, limit: int) -> View:
        """A lane's pending commands in order, with position and age."""

    async def act(self, action: str, system_id: str, target: str) -> View:
        """Do ``action`` (pause, resume, cancel, requeue, delete, trigger) on ``target``."""
