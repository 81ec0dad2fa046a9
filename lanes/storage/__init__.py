"""Durable storage for lane systems: the ``Storage`` protocol and its two implementations."""

from __future__ import annotations

import os

from .._errors import LaneConfigError
from ._memory import MemoryStorage
from ._protocol import (
    Recovered,
    Storage,
    StoredCommand,
    StoredFinished,
    StoredKey,
    StoredLetter,
    StoredSchedule,
    WriteBatch,
)
from ._sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStorage

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "MemoryStorage",
    "Recovered",
    "SqliteStorage",
    "Storage",
    "StoredCommand",
    "StoredFinished",
    "StoredKey",
    "StoredLetter",
    "StoredSchedule",
    "WriteBatch",
    "as_storage",
]


def as_storage(spec: object) -> Storage | None:
    """``None`` stays None, a path becomes :class:`SqliteStorage`, a Storage is kept.

    Raises:
        LaneConfigError: anything else.
    """
    if spec is None or isinstance(spec, Storage):
        return spec
    if isinstance(spec, str | os.PathLike):
        return SqliteStorage(spec)
    msg = (
        f"open_lane_system: storage={spec!r} is invalid; expected a path, a Storage object "
        "(MemoryStorage, SqliteStorage) or None"
    )
    raise LaneConfigError(msg)
