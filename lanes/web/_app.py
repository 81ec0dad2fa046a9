"""The console as an ASGI application (Starlette, run on Trio).

Routes (relative to where it is mounted):

- ``GET /``: the page (its first frame rendered on the server).
- ``GET /api/overview``, ``/api/systems?q=&sort=&offset=&limit=``, ``/api/systems/{id}``,
  ``/api/systems/{id}/lanes/{lane}/queue?offset=&limit=``: JSON views.
- ``GET /api/events?...``: server-sent events, one ``update`` per tick while connected.
- ``POST /api/systems/{id}/{action}`` with ``{"target": ...}``: pause, resume (a lane),
  cancel (a command), requeue, delete (a dead letter), trigger (a schedule).

Nothing runs while no request is being served: no task, no timer. An events stream ticks
every ``interval`` seconds, or slower when building a frame is costly (the console never
takes more than 1/``COST_FACTOR`` of the time it waits), and at once after an action.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .._dlq import DeadLetterNotFound
from .._errors import LaneConfigError, LaneError, UnknownLaneError
from ._page import render_page
from ._source import MAX_PAGE, SORTS, NotFound, Sort, Source, View

__all__ = ["ACTIONS", "COST_FACTOR", "Console", "check_token"]

ACTIONS = ("pause", "resume", "cancel", "requeue", "delete", "trigger")
COST_FACTOR = 60  # an events stream waits at least this many times what a frame cost
HISTORY = 600  # chart samples kept (10 minutes at one a second)
CSRF_COOKIE = "lanes_csrf"
CSRF_HEADER = "x-lanes-csrf"
MAX_QUERY = 200
MAX_TARGET = 1000
MAX_BODY = 4096


class BadRequest(LaneError, ValueError):
    """A request parameter is invalid; the message names it and what is expected."""


class Refused(LaneError):
    """The request may not act: no token, a wrong token, or no CSRF token."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def check_token(token: object) -> str | None:
    """``token`` if it is None or a string of at least 16 characters; LaneConfigError else."""
    if token is None:
        return None
    if not isinstance(token, str) or len(token) < 16 or not token.isprintable():
        msg = (
            "lanes.web: token must be None (read-only) or a printable string of at least 16 "
            "characters; make one with secrets.token_urlsafe()"
        )
        raise LaneConfigError(msg)
    return token


def _check_interval(interval: object) -> float:
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not interval > 0:
        msg = f"lanes.web: interval={interval!r} is invalid; expected seconds > 0 (e.g. 1.0)"
        raise LaneConfigError(msg)
    return float(interval)


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        msg = f"{name}={raw!r} is invalid; expected an integer from {low} to {high}"
        raise BadRequest(msg)
    return value


def _query(request: Request) -> str:
    q = request.query_params.get("q", "")
    if len(q) > MAX_QUERY:
        raise BadRequest(f"q is {len(q)} characters long; at most {MAX_QUERY} are searched")
    return q


def _sort(request: Request) -> Sort:
    raw = request.query_params.get("sort") or "depth"
    for sort in SORTS:
        if raw == sort:
            return sort
    msg = f"sort={raw!r} is invalid; expected one of {', '.join(SORTS)}"
    raise BadRequest(msg)


def _error(error: Exception) -> Response:
    if isinstance(error, Refused):
        status = error.status
    elif isinstance(error, BadRequest):
        status = 400
    elif isinstance(error, NotFound | DeadLetterNotFound | UnknownLaneError):
        status = 404
    else:  # any other LaneError: the API refused the operation
        status = 409
    return JSONResponse({"error": str(error), "type": type(error).__name__}, status_code=status)


Handler = Callable[[Request], Awaitable[Response]]


def _answer(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except LaneError as error:
            return _error(error)

    return wrapped


class Console:
    """The web console: an ASGI application (mount it, or serve it with hypercorn).

    Make it with :func:`lanes.web.console` (live systems of this process) or
    :func:`lanes.web.storage_console` (what a database holds).
    """

    def __init__(self, source: Source, *, token: str | None, interval: float, title: str) -> None:
        self.source = source
        self.token = check_token(token)
        self.interval = _check_interval(interval)
        self.title = title
        self.streams = 0  # open events streams
        self.frame_seconds = 0.0  # time spent building the frames of events streams
        self._history: deque[tuple[float, int, float, int]] = deque(maxlen=HISTORY)
        self._poke = trio.Event()
        routes = [
            Route("/", _answer(self._page)),
            Route("/favicon.ico", _no_icon),
            Route("/api/overview", _answer(self._overview)),
            Route("/api/systems", _answer(self._systems)),
            Route("/api/systems/{system}", _answer(self._system)),
            Route("/api/systems/{system}/lanes/{lane:path}/queue", _answer(self._queue)),
            Route("/api/events", _answer(self._events)),
            Route("/api/systems/{system}/{action}", _answer(self._act), methods=["POST"]),
        ]
        self._app = Starlette(routes=routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        await self._app(scope, receive, send)

    @property
    def actions(self) -> bool:
        """Whether actions are possible (a token was given)."""
        return self.token is not None

    # -- reading ---------------------------------------------------------------------------

    async def _page(self, request: Request) -> Response:
        overview = await self.source.overview()
        systems = await self.source.systems("", "depth", 0, 50)
        base = request.scope.get("root_path", "").rstrip("/") + "/"
        body = render_page(
            base=base,
            overview=overview,
            systems=systems,
            actions=self.actions,
            interval=self.interval,
            title=self.title,
        )
        response = HTMLResponse(body, headers=_SECURITY_HEADERS)
        if request.cookies.get(CSRF_COOKIE) is None:
            response.set_cookie(
                CSRF_COOKIE,
                secrets.token_urlsafe(24),
                path=base,
                samesite="strict",
                httponly=False,  # the page's script reads it (double submit)
            )
        return response

    async def _overview(self, request: Request) -> Response:
        return JSONResponse(await self.source.overview())

    async def _systems(self, request: Request) -> Response:
        view = await self.source.systems(
            _query(request),
            _sort(request),
            _int(request, "offset", 0, 0, 10**9),
            _int(request, "limit", 50, 1, MAX_PAGE),
        )
        return JSONResponse(view)

    async def _system(self, request: Request) -> Response:
        return JSONResponse(await self.source.system(request.path_params["system"]))

    async def _queue(self, request: Request) -> Response:
        view = await self.source.queue(
            request.path_params["system"],
            request.path_params["lane"],
            _int(request, "offset", 0, 0, 10**9),
            _int(request, "limit", 100, 1, MAX_PAGE),
        )
        return JSONResponse(view)

    async def frame(
        self, q: str, sort: Sort, offset: int, limit: int, system: str | None, lane: str | None
    ) -> View:
        """What one events tick sends: overview, a page of systems, the selected system and
        lane queue, and the chart's points."""
        source = self.source
        frame: View = {
            "overview": await source.overview(),
            "systems": await source.systems(q, sort, offset, limit),
            "system": None,
            "queue": None,
            "error": None,
        }
        try:
            if system is not None:
                frame["system"] = await source.system(system)
                if lane is not None:
                    frame["queue"] = await source.queue(system, lane, 0, 100)
        except (NotFound, UnknownLaneError) as error:
            frame["error"] = str(error)
        self._sample(frame["overview"])
        frame["history"] = self._points()
        return frame

    def _sample(self, overview: View) -> None:
        now = time.time()
        if self._history and now - self._history[-1][0] < self.interval * 0.9:
            return
        if overview["completed"] is None:
            return  # a database keeps no counts of finished commands
        finished = overview["completed"] + overview["failed"] + overview["cancelled"]
        self._history.append((now, finished, overview["run_seconds"], overview["run_attempts"]))

    def _points(self) -> list[View]:
        points = []
        history = list(self._history)
        for before, after in itertools.pairwise(history):
            seconds = after[0] - before[0]
            attempts = after[3] - before[3]
            latency = (after[2] - before[2]) / attempts * 1000 if attempts > 0 else 0.0
            rate = max(0, after[1] - before[1]) / seconds if seconds > 0 else 0.0
            points.append({"t": after[0], "rate": round(rate, 3), "latency_ms": round(latency, 3)})
        return points

    async def _events(self, request: Request) -> Response:
        params = (
            _query(request),
            _sort(request),
            _int(request, "offset", 0, 0, 10**9),
            _int(request, "limit", 50, 1, MAX_PAGE),
            request.query_params.get("system") or None,
            request.query_params.get("lane") or None,
        )
        return StreamingResponse(
            self._stream(*params),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _stream(
        self, q: str, sort: Sort, offset: int, limit: int, system: str | None, lane: str | None
    ) -> AsyncIterator[str]:
        self.streams += 1
        try:
            while True:
                poke = self._poked()
                started = time.perf_counter()
                try:
                    frame = await self.frame(q, sort, offset, limit, system, lane)
                except LaneError as error:  # e.g. the database went away: say so, go on
                    problem = json.dumps({"error": str(error), "type": type(error).__name__})
                    yield f"event: problem\ndata: {problem}\n\n"
                else:
                    text = json.dumps(frame, separators=(",", ":"))
                    yield f"event: update\ndata: {text}\n\n"
                cost = time.perf_counter() - started
                self.frame_seconds += cost
                with trio.move_on_after(max(self.interval, cost * COST_FACTOR)):
                    await poke.wait()
        finally:
            self.streams -= 1

    def _poked(self) -> trio.Event:
        return self._poke

    # -- acting ----------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        if self.token is None:
            msg = (
                "this console is read-only: start it with a token (lanes web --token, or "
                "lanes.web.console(token=...)) to pause, cancel or requeue"
            )
            raise Refused(msg, 403)
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            value.encode(), self.token.encode()
        ):
            raise Refused("missing or wrong token: send Authorization: Bearer TOKEN", 401)
        cookie = request.cookies.get(CSRF_COOKIE, "")
        header = request.headers.get(CSRF_HEADER, "")
        if not cookie or not secrets.compare_digest(cookie.encode(), header.encode()):
            msg = (
                f"CSRF check failed: the {CSRF_HEADER} header must equal the {CSRF_COOKIE} "
                "cookie (load the console's page first)"
            )
            raise Refused(msg, 403)

    async def _act(self, request: Request) -> Response:
        self._authorize(request)
        action = request.path_params["action"]
        if action not in ACTIONS:
            raise BadRequest(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise BadRequest("send the action as JSON: Content-Type: application/json")
        body = await request.body()
        if len(body) > MAX_BODY:
            raise BadRequest(f"the request body is larger than {MAX_BODY} bytes")
        target = _target(body)
        result = await self.source.act(action, request.path_params["system"], target)
        poke, self._poke = self._poke, trio.Event()
        poke.set()  # open pages show the change now
        return JSONResponse(result)


async def _no_icon(request: Request) -> Response:
    return Response(status_code=204)  # no icon; and no 404 in the browser's console


_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'self'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _target(body: bytes) -> str:
    try:
        data: Any = json.loads(body)
    except ValueError as error:
        raise BadRequest(f"the request body is not JSON: {error}") from None
    target = data.get("target") if isinstance(data, dict) else None
    if not isinstance(target, str) or not target or len(target) > MAX_TARGET:
        msg = (
            'expected a JSON object {"target": "..."} naming the lane, command, dead letter '
            f"or schedule (a non-empty string of at most {MAX_TARGET} characters)"
        )
        raise BadRequest(msg)
    return target
