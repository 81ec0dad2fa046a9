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

from ._app import ACTIONS, Console
from ._consoles import LiveConsole, StorageConsole, console, storage_console
from ._serve import ConsoleServer, serve_console
from ._source import ActionRefused, NotFound

__all__ = [
    "ACTIONS",
    "ActionRefused",
    "Console",
    "ConsoleServer",
    "LiveConsole",
    "NotFound",
    "StorageConsole",
    "console",
    "serve_console",
    "storage_console",
]
