"""The two consoles: of the live systems of this process, and of a database."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._app import Console
from ._live import LiveSource
from ._stored import StoredSource

if TYPE_CHECKING:
    from .._system import LaneSystem

__all__ = ["LiveConsole", "StorageConsole", "console", "storage_console"]


class LiveConsole(Console):
    """A console of the live lane systems of this process: :meth:`add` each one."""

    source: LiveSource

    def add(self, system: LaneSystem, *, label: str | None = None) -> str:
        """Show ``system`` until it closes (or until :meth:`remove`); return its id.

        Args:
            system: an open local lane system.
            label: the name shown and searched (default: its id, like ``s17``).

        Raises:
            LaneUsageError: not a local open system, added already, or of another trio.run.
            LaneConfigError: a blank label.
        """
        return self.source.add(system, label)

    def remove(self, system: LaneSystem) -> None:
        """Stop showing ``system`` now (a no-op if it is not shown)."""
        self.source.remove(system)

    def __len__(self) -> int:
        """How many systems are shown."""
        return len(self.source)


class StorageConsole(Console):
    """A console of what a database holds (see :func:`storage_console`)."""

    source: StoredSource


def console(
    *, token: str | None = None, interval: float = 1.0, title: str = "trio-lanes"
) -> LiveConsole:
    """The console of this process's lane systems, as an ASGI app.

    Serve it in the ``trio.run`` of the systems (hypercorn's Trio worker, started in that
    run: :func:`serve_console`, or your own Starlette app on hypercorn). It reads the
    systems only while a request is served: with no page open it runs no task and no timer.

    Args:
        token: the secret that actions (pause, resume, cancel, requeue, delete, trigger)
            require, at least 16 characters (``secrets.token_urlsafe()``); None: read-only.
        interval: seconds between two updates pushed to an open page (at least; slower
            when the systems are so many that a frame costs more than 1/60 of it).
        title: the page's title.

    Raises:
        LaneConfigError: a token shorter than 16 characters, or an interval not > 0.
    """
    return LiveConsole(LiveSource(), token=token, interval=interval, title=title)


def storage_console(
    target: str,
    *,
    prefix: str = "lanes",
    token: str | None = None,
    interval: float = 2.0,
    title: str = "trio-lanes storage",
) -> StorageConsole:
    """The console of what a SQLite database (or Redis, ``redis://...``) holds.

    Read at each request, read-only (a missing file is never created). With a token, the
    dead letters of a SQLite file can be requeued (they run at the next start of the lane
    system) or deleted; other actions need the running system (:func:`console`).

    Raises:
        LaneConfigError: bad ``token`` or ``interval``.
    """
    source = StoredSource(target, prefix)
    return StorageConsole(source, token=token, interval=interval, title=title)
