"""The plain-Trio twin of examples/agent_server.py: the same protocol, no lanes.

A nursery per session, a task and a ``trio.CancelScope`` per turn, a per-session
``trio.CapacityLimiter`` for the turns it runs at once and one app-wide
``trio.CapacityLimiter`` for the LLM (first come, first served). Pausing is an event the
turns wait on between tokens. The message checks and the settings are the example's
(imported, so both servers accept exactly the same input).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

logger = logging.getLogger("plain_agent_server")


@attrs.define(eq=False)
class Turns:
    """A session's running turns (their scopes and exit events) and its pause gate."""

    limiter: trio.CapacityLimiter
    running: dict[trio.CancelScope, trio.Event] = attrs.field(factory=dict)
    resumed: trio.Event | None = None  # None: not paused

    async def pause_point(self) -> None:
        if self.resumed is not None:
            await self.resumed.wait()
        else:
            await trio.lowlevel.checkpoint()


async def turn(websocket: WebSocket, turns: Turns, number: int, prompt: str, tokens: int) -> None:
    client: httpx.AsyncClient = websocket.app.state.client
    status = "cancelled"
    async with turns.limiter, websocket.app.state.llm:
        stopped = trio.Event()
        with trio.CancelScope() as scope:
            turns.running[scope] = stopped
            try:
                request = {"prompt": prompt, "tokens": tokens}
                async with client.stream("POST", "/generate", json=request) as response:
                    response.raise_for_status()
                    async for token in response.aiter_lines():
                        await turns.pause_point()
                        await websocket.send_json({"type": "token", "turn": number, "text": token})
                status = "completed"
            except httpx.HTTPError as exc:
                logger.warning("turn %d failed: %r", number, exc)
                status = "failed"
            finally:
                del turns.running[scope]
                stopped.set()
    await websocket.send_json({"type": "done", "turn": number, "status": status})


async def plain_session(websocket: WebSocket) -> None:
    check: Callable[[Any], str | None] = websocket.app.state.check
    turns = Turns(trio.CapacityLimiter(websocket.app.state.settings.turns))
    await websocket.accept()
    async with trio.open_nursery() as nursery:
        number = 0
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
                    number += 1
                    ahead = turns.limiter.statistics().tasks_waiting
                    await websocket.send_json({"type": "accepted", "turn": number, "ahead": ahead})
                    tokens = message.get("tokens", 20)
                    nursery.start_soon(turn, websocket, turns, number, message["text"], tokens)
                elif message["type"] == "cancel":
                    running = list(turns.running.items())
                    for scope, _ in running:
                        scope.cancel()
                    for _, stopped in running:
                        await stopped.wait()
                    await websocket.send_json({"type": "cancelled", "turns": len(running)})
                elif message["type"] == "pause":
                    turns.resumed = turns.resumed or trio.Event()
                    await websocket.send_json({"type": "paused"})
                elif message["type"] == "resume":
                    if turns.resumed is not None:
                        turns.resumed.set()
                        turns.resumed = None
                    await websocket.send_json({"type": "resumed"})
                else:  # close
                    break
        except WebSocketDisconnect:
            return
        finally:
            nursery.cancel_scope.cancel()
    await websocket.close()


def create_app(settings: Any, check: Callable[[Any], str | None]) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = httpx.Limits(max_connections=settings.llm_slots)
        async with httpx.AsyncClient(
            base_url=settings.llm_url, limits=pool, timeout=settings.llm_timeout
        ) as client:
            app.state.settings = settings
            app.state.check = check
            app.state.client = client
            app.state.llm = trio.CapacityLimiter(settings.llm_slots)
            yield

    return Starlette(routes=[WebSocketRoute("/session", plain_session)], lifespan=lifespan)
