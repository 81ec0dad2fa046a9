"""examples/agent_server.py end to end: hypercorn, websockets and httpx on real sockets.

The example's app is served in-process on a free port, next to a fake LLM whose tokens the
test releases one at a time (so what the server may have sent is known at every step).
Real sockets run on the real clock: nothing here waits for time to pass, except the one
check that a paused turn sends nothing (a bounded wait for a frame that must not come).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from tests.test_examples import load

example = load("agent_server")


@attrs.define
class GatedLLM:
    """A fake streaming LLM: each token of a prompt waits for ``release(prompt)``.

    Prompt "fail" gets a 500 at once.
    """

    gates: dict[str, trio.Semaphore] = attrs.field(factory=dict)
    requests: int = 0

    def gate(self, prompt: str) -> trio.Semaphore:
        return self.gates.setdefault(prompt, trio.Semaphore(0))

    def release(self, prompt: str, tokens: int = 1) -> None:
        for _ in range(tokens):
            self.gate(prompt).release()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await example.FakeLLM()(scope, receive, send)
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        request = json.loads(body)
        self.requests += 1
        if request["prompt"] == "fail":
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"boom"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(request["tokens"]):
            await self.gate(request["prompt"]).acquire()
            await send({"type": "http.response.body", "body": b"t%d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


@attrs.frozen
class Server:
    url: str
    app: Any
    llm: GatedLLM

    def statistics(self) -> Any:
        return self.app.state.llm.statistics()


@asynccontextmanager
async def running(*, slots: int = 4, turns: int = 1) -> AsyncIterator[Server]:
    llm = GatedLLM()
    async with trio.open_nursery() as nursery:
        llm_url = await example.serve(llm, nursery)
        app = example.create_app(example.Settings(llm_url, llm_slots=slots, turns=turns))
        url = await example.serve(app, nursery)
        yield Server(url.replace("http://", "ws://") + "/session", app, llm)
        nursery.cancel_scope.cancel()


async def send(ws: WebSocketConnection, message: object) -> None:
    await ws.send_message(message if isinstance(message, str) else json.dumps(message))


async def receive(ws: WebSocketConnection) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(await ws.get_message())
    return reply


async def receive_all(ws: WebSocketConnection, count: int) -> list[dict[str, Any]]:
    return [await receive(ws) for _ in range(count)]


async def settled(server: Server) -> None:
    """Wait until every session that ended has left its lane system and the shared limit."""
    while server.statistics().members:
        await trio.testing.wait_all_tasks_blocked(cushion=0.01)


async def test_stream_a_prompt_then_close() -> None:
    with trio.fail_after(20):
        async with running() as server, open_websocket_url(server.url) as ws:
            await send(ws, {"type": "prompt", "text": "hello", "tokens": 3})
            assert await receive(ws) == {"type": "accepted", "turn": 1, "ahead": 0}
            server.llm.release("hello", 3)
            assert await receive_all(ws, 4) == [
                {"type": "token", "turn": 1, "text": "t0"},
                {"type": "token", "turn": 1, "text": "t1"},
                {"type": "token", "turn": 1, "text": "t2"},
                {"type": "done", "turn": 1, "status": "completed"},
            ]
            assert server.statistics().members == 1  # this session's prompt lane
            await send(ws, {"type": "close"})
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason.code == 1000
            await settled(server)
            stats = server.statistics()
            assert (stats.in_use, stats.waiting, stats.members) == (0, 0, 0)


async def test_cancel_stops_the_running_turn_and_keeps_the_queued_one() -> None:
    with trio.fail_after(20):
        async with running(turns=1) as server, open_websocket_url(server.url) as ws:
            await send(ws, {"type": "prompt", "text": "long", "tokens": 100})
            assert await receive(ws) == {"type": "accepted", "turn": 1, "ahead": 0}
            await send(ws, {"type": "prompt", "text": "next", "tokens": 1})
            assert (await receive(ws))["type"] == "accepted"
            server.llm.release("long")
            assert await receive(ws) == {"type": "token", "turn": 1, "text": "t0"}
            await send(ws, {"type": "cancel"})
            replies = await receive_all(ws, 2)
            assert {"type": "cancelled", "turns": 1} in replies
            assert {"type": "done", "turn": 1, "status": "cancelled"} in replies
            server.llm.release("next")  # the queued turn started once the first one stopped
            assert await receive_all(ws, 2) == [
                {"type": "token", "turn": 2, "text": "t0"},
                {"type": "done", "turn": 2, "status": "completed"},
            ]
            await send(ws, {"type": "cancel"})  # nothing runs: nothing to stop
            assert await receive(ws) == {"type": "cancelled", "turns": 0}


async def test_pause_holds_the_running_turn_until_resume() -> None:
    with trio.fail_after(20):
        async with running() as server, open_websocket_url(server.url) as ws:
            await send(ws, {"type": "prompt", "text": "story", "tokens": 4})
            await receive(ws)  # accepted
            server.llm.release("story")
            assert await receive(ws) == {"type": "token", "turn": 1, "text": "t0"}
            await send(ws, {"type": "pause"})
            assert await receive(ws) == {"type": "paused"}
            server.llm.release("story", 2)  # the model goes on; the turn waits at its pause point
            with trio.move_on_after(0.3) as nothing_came:
                unexpected = await receive(ws)
            assert nothing_came.cancelled_caught, f"a paused turn sent {unexpected}"
            await send(ws, {"type": "resume"})
            replies = await receive_all(ws, 3)
            assert replies[0] == {"type": "resumed"} or replies[0]["type"] == "token"
            assert [r for r in replies if r["type"] == "token"] == [
                {"type": "token", "turn": 1, "text": "t1"},
                {"type": "token", "turn": 1, "text": "t2"},
            ]
            server.llm.release("story")
            assert await receive_all(ws, 2) == [
                {"type": "token", "turn": 1, "text": "t3"},
                {"type": "done", "turn": 1, "status": "completed"},
            ]


async def test_bad_input_gets_an_error_frame_and_the_session_goes_on() -> None:
    bad = [
        ("{not json", "not JSON"),
        ([1, 2], "expected a JSON object"),
        ({"type": "shout"}, "unknown message type 'shout'"),
        ({"text": "no type"}, "unknown message type None"),
        ({"type": "prompt"}, "needs a string 'text'"),
        ({"type": "prompt", "text": "x", "tokens": 0}, "'tokens' must be an integer"),
        ({"type": "prompt", "text": "x", "tokens": True}, "'tokens' must be an integer"),
        ({"type": "prompt", "text": "x", "tokens": "5"}, "'tokens' must be an integer"),
    ]
    with trio.fail_after(20):
        async with running() as server, open_websocket_url(server.url) as ws:
            for message, error in bad:
                await send(ws, message)
                reply = await receive(ws)
                assert reply["type"] == "error"
                assert error in reply["error"]
            assert server.llm.requests == 0  # nothing bad reached the model
            await send(ws, {"type": "prompt", "text": "still here", "tokens": 1})
            await receive(ws)  # accepted
            server.llm.release("still here")
            assert (await receive_all(ws, 2))[1] == {
                "type": "done",
                "turn": 1,
                "status": "completed",
            }


async def test_a_failing_model_call_ends_the_turn_as_failed() -> None:
    with trio.fail_after(20):
        async with running() as server, open_websocket_url(server.url) as ws:
            await send(ws, {"type": "prompt", "text": "fail", "tokens": 1})
            await receive(ws)  # accepted
            assert await receive(ws) == {"type": "done", "turn": 1, "status": "failed"}
            await send(ws, {"type": "prompt", "text": "ok", "tokens": 1})
            await receive(ws)
            server.llm.release("ok")
            assert (await receive_all(ws, 2))[1]["status"] == "completed"


async def test_a_websocket_that_goes_away_mid_turn_leaves_nothing_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with trio.fail_after(20):
        async with running(slots=1) as server:
            async with open_websocket_url(server.url) as ws:
                await send(ws, {"type": "prompt", "text": "long", "tokens": 100})
                await receive(ws)
                server.llm.release("long")
                await receive(ws)  # a token: the model call is streaming
                assert server.statistics().in_use == 1
            # The client left without a "close": the server leaves now, no drain.
            await settled(server)
            stats = server.statistics()
            assert (stats.in_use, stats.waiting, stats.members) == (0, 0, 0)
            # The slot it held serves the next session at once.
            async with open_websocket_url(server.url) as ws:
                await send(ws, {"type": "prompt", "text": "next", "tokens": 1})
                await receive(ws)
                server.llm.release("next")
                assert (await receive_all(ws, 2))[1]["status"] == "completed"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_the_example_runs_on_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(20):
        await example.main()
    out = capsys.readouterr().out
    assert "agent server at ws://127.0.0.1:" in out
    assert "{'type': 'token', 'turn': 1, 'text': 'tok4'}" in out
    assert out.rstrip().endswith("{'type': 'done', 'turn': 1, 'status': 'completed'}")
