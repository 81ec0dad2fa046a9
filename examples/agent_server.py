"""An agent server: one lane system per websocket session, one SharedLimit for the LLM.

A Starlette app served by hypercorn's Trio worker. Each websocket at ``/session`` is an
agent session with its own lane system (one ``prompt`` lane); every session's model calls
share one :class:`lanes.SharedLimit`. The client sends JSON messages:

- ``{"type": "prompt", "text": "...", "tokens": 20}``: start a turn (a streaming model
  call over httpx); the server answers ``{"type": "accepted", "turn": N, "ahead": K}``,
  then ``{"type": "token", "turn": N, "text": ...}`` frames, then
  ``{"type": "done", "turn": N, "status": "completed" | "cancelled" | "failed"}``.
- ``{"type": "cancel"}``: stop the running turns (queued ones go on); answered
  ``{"type": "cancelled", "turns": N}`` once they have stopped.
- ``{"type": "pause"}`` / ``{"type": "resume"}``: running turns wait at their next token
  (``lanes.pause_point``); answered ``{"type": "paused"}`` / ``{"type": "resumed"}``.
- ``{"type": "close"}``: end the session now (the server closes the websocket).

Anything else is answered ``{"type": "error", "error": "..."}`` and the session goes on.

Run it on its own (the needs: ``pip install 'trio-lanes[agent]'``)::

    python examples/agent_server.py

starts a fake streaming LLM and the server on 127.0.0.1, plays one scripted session
against it with trio-websocket (``pip install trio-websocket``, if installed) and stops.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

import lanes

# -- the agent server ------------------------------------------------------------------------------

logger = logging.getLogger("agent_server")


@attrs.frozen
class Settings:
    """What the app needs: where the model is, and how much of it the sessions share."""

    llm_url: str
    llm_slots: int = 20  # model calls at once, across every session
    turns: int = 1  # turns one session runs at once (more are queued in its lane)
    llm_timeout: float = 60.0  # seconds httpx waits to connect, for a pool slot, or a token


async def complete(
    client: httpx.AsyncClient, websocket: WebSocket, turn: int, prompt: str, tokens: int
) -> int:
    """The command of a turn: one streaming model call, each token sent as it comes."""
    request = {"prompt": prompt, "tokens": tokens}
    count = 0
    async with client.stream("POST", "/generate", json=request) as response:
        response.raise_for_status()
        async for token in response.aiter_lines():
            await lanes.pause_point()  # waits here while the session is paused
            await websocket.send_json({"type": "token", "turn": turn, "text": token})
            count += 1
    return count


async def report(websocket: WebSocket, turn: int, handle: lanes.CommandHandle[int]) -> None:
    """Send how a turn ended (its ``on_done`` callback: it runs once the turn has ended)."""
    try:
        await handle.result()
        status = "completed"
    except lanes.CommandCancelled:
        status = "cancelled"
    except lanes.CommandFailed as exc:
        logger.warning("turn %d failed: %r", turn, exc.__cause__)
        status = "failed"
    await websocket.send_json({"type": "done", "turn": turn, "status": status})


def check(message: Any) -> str | None:
    """Why a client message cannot be run (None: it can)."""
    if not isinstance(message, dict):
        return f"expected a JSON object, got {message!r}"
    kind = message.get("type")
    if kind not in ("prompt", "cancel", "pause", "resume", "close"):
        return f"unknown message type {kind!r}; expected prompt, cancel, pause, resume or close"
    if kind == "prompt":
        if not isinstance(message.get("text"), str):
            return "a prompt needs a string 'text'"
        tokens = message.get("tokens", 20)
        if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= 4096:
            return f"'tokens' must be an integer from 1 to 4096, got {tokens!r}"
    return None


async def agent_session(websocket: WebSocket) -> None:
    """One websocket, one agent session, one lane system."""
    client: httpx.AsyncClient = websocket.app.state.client
    await websocket.accept()
    session_lanes = websocket.app.state.lanes  # the same configuration for every session
    async with lanes.open_lane_system(session_lanes) as session:
        turn = 0
        try:
            while True:
                try:
                    message = json.loads(await websocket.receive_text())
                except json.JSONDecodeError as exc:
                    message = f"not JSON: {exc}"
                error = check(message)
                if error is not None:
                    await websocket.send_json({"type": "error", "error": error})
                elif message["type"] == "prompt":
                    turn += 1
                    args = (client, websocket, turn, message["text"], message.get("tokens", 20))
                    done = functools.partial(report, websocket, turn)  # once the turn ended
                    handle = await session.submit("prompt", complete, *args, on_done=done)
                    ahead = handle.position or 0  # "3 requests ahead of you"
                    await websocket.send_json({"type": "accepted", "turn": turn, "ahead": ahead})
                elif message["type"] == "cancel":  # stop this turn, keep the queue
                    stopped = await session.cancel_lane("prompt", queued=False)
                    await websocket.send_json({"type": "cancelled", "turns": stopped})
                elif message["type"] == "pause":
                    session.pause("prompt")
                    await websocket.send_json({"type": "paused"})
                elif message["type"] == "resume":
                    session.resume("prompt")
                    await websocket.send_json({"type": "resumed"})
                else:  # close
                    break
        except WebSocketDisconnect:
            return  # the user went away (and the lane system is left at once, see below)
        finally:
            # Nobody is left to read the answers: leave now, without a drain (the turns
            # and their reports are cancelled).
            session.close_now()
    await websocket.close()  # once nothing sends any more


def create_app(settings: Settings) -> Starlette:
    """The ASGI app: ``/session`` websockets, one shared LLM client and limit."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = httpx.Limits(max_connections=settings.llm_slots)
        async with httpx.AsyncClient(
            base_url=settings.llm_url, limits=pool, timeout=settings.llm_timeout
        ) as client:
            app.state.settings = settings
            app.state.client = client
            app.state.llm = llm = lanes.SharedLimit(settings.llm_slots, name="llm")
            # A session's lanes: one "prompt" lane on the shared limit. Configurations are
            # frozen values, made once here and shared by every session's lane system.
            app.state.lanes = (
                lanes.LaneConfig("prompt", 5, max_concurrency=settings.turns, shared_limit=llm),
            )
            yield

    return Starlette(routes=[WebSocketRoute("/session", agent_session)], lifespan=lifespan)


# -- running it on its own: a fake LLM and one scripted session ----------------------------------


@attrs.frozen
class FakeLLM:
    """A bare ASGI app streaming ``tokens`` lines, one every ``delay`` seconds."""

    delay: float = 0.005

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                return  # the caller went away (e.g. a cancelled turn)
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(int(json.loads(body)["tokens"])):
            await trio.sleep(self.delay)
            await send({"type": "http.response.body", "body": b"tok%d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def serve(app: Any, nursery: trio.Nursery) -> str:
    """Serve ``app`` with hypercorn's Trio worker on a free port of 127.0.0.1; its URL."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds: list[str] = await nursery.start(hypercorn_serve, app, config)
    return binds[0]


async def main() -> None:
    async with trio.open_nursery() as nursery:
        llm_url = await serve(FakeLLM(), nursery)
        url = await serve(create_app(Settings(llm_url)), nursery)
        print(f"agent server at {url.replace('http', 'ws')}/session")
        try:
            from trio_websocket import open_websocket_url
        except ImportError:
            print("(pip install trio-websocket to play a session; Ctrl-C stops)")
            await trio.sleep_forever()
        async with open_websocket_url(url.replace("http", "ws") + "/session") as ws:
            await ws.send_message(json.dumps({"type": "prompt", "text": "hi", "tokens": 5}))
            while (reply := json.loads(await ws.get_message()))["type"] != "done":
                print(reply)
            print(reply)
            await ws.send_message(json.dumps({"type": "close"}))
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    sys.exit(trio.run(main))
