"""Serving a console with hypercorn's Trio worker (``lanes web`` and tests)."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .._errors import LaneConfigError
from ._app import Console

__all__ = ["ConsoleServer", "serve_console"]

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


@attrs.frozen
class ConsoleServer:
    """Where a running :func:`serve_console` listens (``port``: the bound port)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """The page's URL, like ``http://127.0.0.1:8765/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def _check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        msg = (
            f"lanes web: port={port!r} is invalid; expected an integer from 0 to 65535 "
            "(0: any free port)"
        )
        raise LaneConfigError(msg)
    return port


async def serve_console(
    console: Console,
    port: int = 8765,
    host: str = "127.0.0.1",
    *,
    task_status: trio.TaskStatus[ConsoleServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``console`` over HTTP with hypercorn (Trio worker) until cancelled.

    ``server = await nursery.start(serve_console, console, 0)`` returns once the socket
    listens. Cancelling it closes the socket and every connection (open pages reconnect
    to nothing), leaving no task behind. Bound to a loopback address, it answers only
    requests for a loopback host name (``Host: 127.0.0.1:PORT`` or ``localhost``), so a
    web page of another site cannot read it through DNS rebinding.

    Raises:
        LaneConfigError: ``port`` or ``host`` is invalid.
        OSError: the address cannot be bound.
    """
    port = _check_port(port)
    if not isinstance(host, str) or not host:
        raise LaneConfigError(f"lanes web: host={host!r} is invalid; expected an address")
    app: Any = console
    if host in LOOPBACK:  # DNS rebinding: a page of another site must not read it
        app = TrustedHostMiddleware(console, allowed_hosts=list(LOOPBACK_NAMES))
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("lanes.web")
    config.graceful_timeout = 0.5
    config.keep_alive_timeout = 5
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(_serve, app, config)
        bound = int(binds[0].rsplit(":", 1)[1])
        task_status.started(ConsoleServer(host, bound))


async def _serve(app: Any, config: Config, *, task_status: trio.TaskStatus[list[str]]) -> None:
    await serve(app, config, task_status=task_status)
