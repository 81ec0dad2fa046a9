"""A web console for lane systems: see and steer them from a browser.

Needs the ``web`` extra (``pip install 'trio-lanes[web]'``: Starlette and Hypercorn).

Mounted in your own Trio web app, it shows the lane systems of the process:

.. code-block:: python

    console = lanes.web.console(token=secrets.token_urlsafe())  # None: read-only
    app = Starlette(routes=[Mount("/lanes", app=console)])  # or serve it alone
    async with trio.open_nursery() as nursery:
        await nursery.start(lanes.web.serve_console, console, 8765)
        async with lanes.open_lane_system() as system:
            console.add(system, label="session-42")  # leaves the console when it closes

``lanes web --storage PATH`` serves :func:`storage_console` of a database (or a Redis URL).
"""

from __future__ import annotations

try:
    import hypercorn as _hypercorn  # noqa: F401
    import starlette as _starlette  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    from .._extras import missing_extra

    msg = missing_extra("lanes.web", "starlette and hypercorn", "web")
    raise ModuleNotFoundError(msg, name=error.name) from error

from typing import TYPE_CHECKING

from ._app import ACTIONS, Console
from ._live import LiveSource
from ._serve import ConsoleServer, serve_console
from ._source import ActionRefused, NotFound
from ._stored import StoredSource

if TYPE_CHECKING:
    from .._system import LaneSystem

__all__ = [
    "ACTIONS",
    "ActionRefused",
    "ConsoleServer",
    "LiveConsole",
    "NotFound",
    "StorageConsole",
    "console",
    "serve_console",
    "storage_console",
]


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
            when the systems are so many that a frame costs more than 1/50 of it).
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
