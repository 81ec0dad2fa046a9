"""The web console's ASGI app, driven in process with httpx (no socket, no browser)."""

from __future__ import annotations

import contextlib
import json
import pathlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing

import lanes
import lanes.web
from lanes.web._app import CSRF_COOKIE, CSRF_HEADER

from .helpers import boom, noop
from .test_idle import steps_while_sleeping
from .test_metrics import task_count

TOKEN = "t" * 8 + secrets.token_urlsafe(12)


@asynccontextmanager
async def client(console: lanes.web.LiveConsole | Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=console)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def csrf(c: httpx.AsyncClient) -> str:
    page = await c.get("/")
    assert page.status_code == 200
    return page.cookies[CSRF_COOKIE]


def auth(token: str, csrf_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", CSRF_HEADER: csrf_token}


async def blocker(event: trio.Event) -> None:
    await event.wait()


async def test_json_views_show_lanes_queue_running_and_letters() -> None:
    console = lanes.web.console()
    release = trio.Event()
    async with lanes.open_lane_system() as system:
        sid = console.add(system, label="session-1")
        running = await system.submit("prompt", blocker, release)
        await system.submit("prompt", blocker, release)
        queued = await system.submit("prompt", blocker, release)
        with pytest.raises(lanes.CommandFailed):
            await system.run("query", boom, "bad thing")
        await trio.testing.wait_all_tasks_blocked()
        async with client(console) as c:
            listing = (await c.get("/api/systems")).json()
            assert listing["total"] == 1
            assert listing["systems"][0]["label"] == "session-1"
            assert listing["systems"][0]["pending"] == 1
            detail = (await c.get(f"/api/systems/{sid}")).json()
            prompt = next(lane for lane in detail["lane_rows"] if lane["name"] == "prompt")
            assert (prompt["pending"], prompt["active"], prompt["paused"]) == (1, 2, False)
            assert {r["id"] for r in detail["running"]} >= {running.id}
            assert detail["letters"][0]["error"].startswith("RuntimeError('bad thing')")
            queue = (await c.get(f"/api/systems/{sid}/lanes/prompt/queue")).json()
            assert [(r["position"], r["id"]) for r in queue["commands"]] == [(0, queued.id)]
            overview = (await c.get("/api/overview")).json()
            assert (overview["systems"], overview["failed"], overview["dead_letters"]) == (1, 1, 1)
        release.set()


async def test_systems_are_searched_sorted_and_paged() -> None:
    console = lanes.web.console()
    release = trio.Event()
    async with lanes.open_lane_system() as a, lanes.open_lane_system() as b:
        console.add(a, label="alpha")
        console.add(b, label="beta")
        for _ in range(3):
            await b.submit("prompt", blocker, release)
        async with client(console) as c:
            rows = (await c.get("/api/systems", params={"sort": "depth"})).json()["systems"]
            assert [r["label"] for r in rows] == ["beta", "alpha"]
            rows = (await c.get("/api/systems", params={"sort": "name"})).json()["systems"]
            assert [r["label"] for r in rows] == ["alpha", "beta"]
            found = (await c.get("/api/systems", params={"q": "ALP"})).json()
            assert [r["label"] for r in found["systems"]] == ["alpha"]
            page = (await c.get("/api/systems", params={"offset": 1, "limit": 1})).json()
            assert page["total"] == 2 and [r["label"] for r in page["systems"]] == ["alpha"]
        release.set()


async def test_a_closed_system_leaves_the_console() -> None:
    console = lanes.web.console()
    async with lanes.open_lane_system() as system:
        sid = console.add(system)
        await system.run("query", noop)
        assert len(console) == 1
    assert len(console) == 0
    async with client(console) as c:
        answer = await c.get(f"/api/systems/{sid}")
        assert answer.status_code == 404
        assert "may have closed" in answer.json()["error"]
        assert (await c.get("/api/overview")).json()["completed"] == 1  # kept in totals


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"sort": "size"}, "sort='size' is invalid; expected one of name, depth, wait"),
        ({"offset": "-1"}, "offset='-1' is invalid"),
        ({"limit": "0"}, "limit='0' is invalid"),
        ({"limit": "many"}, "limit='many' is invalid"),
        ({"q": "x" * 201}, "q is 201 characters long"),
    ],
)
async def test_bad_parameters_are_refused_with_a_message(
    params: dict[str, str], message: str
) -> None:
    async with client(lanes.web.console()) as c:
        answer = await c.get("/api/systems", params=params)
        assert answer.status_code == 400
        assert message in answer.json()["error"]


async def test_unknown_lane_queue_names_the_lanes() -> None:
    console = lanes.web.console()
    async with lanes.open_lane_system() as system:
        sid = console.add(system)
        async with client(console) as c:
            answer = await c.get(f"/api/systems/{sid}/lanes/nope/queue")
            assert answer.status_code == 404
            assert answer.json()["type"] == "UnknownLaneError"  # system.commands()'s error
            assert "unknown lane 'nope'; known lanes: system, control" in answer.json()["error"]


async def test_read_only_console_refuses_actions() -> None:
    console = lanes.web.console()
    async with lanes.open_lane_system() as system:
        sid = console.add(system)
        async with client(console) as c:
            token = await csrf(c)
            answer = await c.post(
                f"/api/systems/{sid}/pause", json={"target": "query"}, headers=auth(TOKEN, token)
            )
            assert answer.status_code == 403
            assert "read-only" in answer.json()["error"]
            assert not system.statistics().lanes["query"].paused


async def test_actions_need_the_token_and_the_csrf_token() -> None:
    console = lanes.web.console(token=TOKEN)
    async with lanes.open_lane_system() as system:
        sid = console.add(system)
        url = f"/api/systems/{sid}/pause"
        async with client(console) as c:
            token = await csrf(c)
            wrong = await c.post(url, json={"target": "query"}, headers=auth("x" * 20, token))
            assert wrong.status_code == 401
            none = await c.post(url, json={"target": "query"}, headers={CSRF_HEADER: token})
            assert none.status_code == 401
            no_csrf = await c.post(
                url, json={"target": "query"}, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert no_csrf.status_code == 403 and "CSRF" in no_csrf.json()["error"]
            bad_csrf = await c.post(url, json={"target": "query"}, headers=auth(TOKEN, "other"))
            assert bad_csrf.status_code == 403
            assert not system.statistics().lanes["query"].paused
            ok = await c.post(url, json={"target": "query"}, headers=auth(TOKEN, token))
            assert ok.status_code == 200, ok.text
            assert system.statistics().lanes["query"].paused
            ok = await c.post(
                f"/api/systems/{sid}/resume", json={"target": "query"}, headers=auth(TOKEN, token)
            )
            assert ok.status_code == 200
            assert not system.statistics().lanes["query"].paused


async def test_actions_give_the_api_errors() -> None:
    console = lanes.web.console(token=TOKEN)
    async with lanes.open_lane_system() as system:
        sid = console.add(system)
        async with client(console) as c:
            headers = auth(TOKEN, await csrf(c))

            async def post(action: str, body: Any, **extra: Any) -> httpx.Response:
                return await c.post(
                    f"/api/systems/{sid}/{action}",
                    content=json.dumps(body),
                    headers=headers | {"Content-Type": "application/json", **extra},
                )

            unknown = await post("pause", {"target": "nope"})
            assert unknown.status_code == 404
            assert unknown.json()["type"] == "UnknownLaneError"
            assert "'nope'" in unknown.json()["error"]
            letter = await post("requeue", {"target": "x-1"})
            assert letter.status_code == 404
            assert "no dead letter with id 'x-1'" in letter.json()["error"]
            assert (await post("cancel", {"target": "x-1"})).status_code == 404
            assert (await post("trigger", {"target": "daily"})).status_code == 404
            assert (await post("explode", {"target": "x"})).status_code == 400
            assert (await post("pause", {"lane": "query"})).status_code == 400
            assert (await post("pause", ["query"])).status_code == 400
            form = await c.post(
                f"/api/systems/{sid}/pause", data={"target": "query"}, headers=headers
            )
            assert form.status_code == 400 and "JSON" in form.json()["error"]


async def test_cancel_requeue_delete_and_trigger() -> None:
    console = lanes.web.console(token=TOKEN)
    release = trio.Event()
    fired: list[int] = []

    async def tick() -> None:
        fired.append(1)

    async with lanes.open_lane_system() as system:
        sid = console.add(system)
        handle = await system.submit("prompt", blocker, release)
        for _ in range(2):
            with pytest.raises(lanes.CommandFailed):
                await system.run("query", boom)
        await system.schedule("query", tick, every=3600, key="hourly")
        first, second = (letter.id for letter in system.dead_letters.list())
        async with client(console) as c:
            headers = auth(TOKEN, await csrf(c))

            async def post(action: str, target: str) -> httpx.Response:
                url = f"/api/systems/{sid}/{action}"
                return await c.post(url, json={"target": target}, headers=headers)

            assert (await post("cancel", handle.id)).status_code == 200
            with pytest.raises(lanes.CommandCancelled):
                await handle.result()
            assert (await post("delete", first)).status_code == 200
            assert [letter.id for letter in system.dead_letters.list()] == [second]
            again = await post("delete", first)
            assert again.status_code == 404
            requeued = await post("requeue", second)
            assert requeued.status_code == 200, requeued.text
            assert "requeued" in requeued.json()["message"]
            assert (await post("trigger", "hourly")).status_code == 200
            await system.drain(5)
            assert fired == [1]
            assert len(system.dead_letters) == 1  # the requeued boom failed again


async def test_every_value_is_escaped_in_the_page() -> None:
    console = lanes.web.console()
    async with lanes.open_lane_system() as system:
        console.add(system, label="<script>alert(1)</script>")
        async with client(console) as c:
            page = await c.get("/")
            assert "<script>alert(1)</script>" not in page.text
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
            assert "default-src 'none'" in page.headers["content-security-policy"]


async def read_events(
    console: Any, frames: list[dict[str, Any]], enough: Any, query: str = ""
) -> None:
    """Drive GET /api/events over raw ASGI (httpx's transport buffers whole bodies) until
    ``enough(frames)``; then the client disconnects."""
    gone = trio.Event()
    send_channel, receive_channel = trio.open_memory_channel[dict[str, Any]](100)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/events",
        "raw_path": b"/api/events",
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
    }
    sent_request = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await send_channel.send(message)

    async def app() -> None:
        async with send_channel:
            await console(scope, receive, send)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app)
        start = await receive_channel.receive()
        assert start["status"] == 200
        assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
        buffer = b""
        async for message in receive_channel:
            buffer += message.get("body", b"")
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                for line in block.decode().splitlines():
                    if line.startswith("data: "):
                        frames.append(json.loads(line[6:]))
            if await enough(frames):
                gone.set()
                break
        async for _ in receive_channel:  # let the app finish writing
            pass


async def test_events_stream_pushes_updates_and_stops_with_the_client() -> None:
    console = lanes.web.console(interval=0.05)
    async with lanes.open_lane_system() as system:
        console.add(system, label="s")
        frames: list[dict[str, Any]] = []

        async def enough(frames: list[dict[str, Any]]) -> bool:
            if len(frames) == 1:
                await system.run("query", noop)
            return len(frames) >= 3

        with trio.fail_after(10):
            await read_events(console, frames, enough)
        assert frames[0]["overview"]["completed"] == 0
        assert frames[-1]["overview"]["completed"] == 1
        assert frames[-1]["systems"]["systems"][0]["label"] == "s"
        assert console.streams == 0


async def test_events_stream_refuses_bad_parameters() -> None:
    async with client(lanes.web.console()) as c:
        answer = await c.get("/api/events", params={"sort": "x"})
        assert answer.status_code == 400


async def test_an_idle_console_costs_no_task_steps(autojump_clock: trio.abc.Clock) -> None:
    console = lanes.web.console()
    async with lanes.open_lane_system() as system:
        console.add(system)
        async with client(console) as c:
            assert (await c.get("/")).status_code == 200
            await system.run("query", noop)
            await trio.sleep(5)  # its worker is reaped
            assert await steps_while_sleeping(60) == 0


async def test_bad_configuration_is_refused() -> None:
    with pytest.raises(lanes.LaneConfigError, match="at least 16"):
        lanes.web.console(token="short")
    with pytest.raises(lanes.LaneConfigError, match="interval=0"):
        lanes.web.console(interval=0)
    console = lanes.web.console()
    with pytest.raises(lanes.LaneUsageError, match="not a local lane system"):
        console.add(object())  # type: ignore[arg-type]
    async with lanes.open_lane_system() as system:
        console.add(system)
        with pytest.raises(lanes.LaneUsageError, match="already added"):
            console.add(system)
        with pytest.raises(lanes.LaneConfigError, match="label"):
            lanes.web.console().add(system, label=" ")


async def test_serve_console_listens_on_localhost_and_cancels_cleanly() -> None:
    console = lanes.web.console(interval=0.05)
    async with lanes.open_lane_system() as system:
        console.add(system, label="s")
        before = task_count()
        async with trio.open_nursery() as nursery:
            server = await nursery.start(lanes.web.serve_console, console, 0)
            assert server.host == "127.0.0.1"
            assert server.url == f"http://127.0.0.1:{server.port}/"
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            request = f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n"
            await stream.send_all(request.encode())
            data = b""
            while b"event: update" not in data:
                data += await stream.receive_some()
            assert data.startswith(b"HTTP/1.1 200")
            assert console.streams == 1
            nursery.cancel_scope.cancel()  # an events stream is open: it is cut
        assert console.streams == 0
        assert task_count() == before
        await stream.aclose()
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", server.port)


@pytest.mark.parametrize("port", [-1, 65536, "8765", True])
async def test_serve_console_refuses_a_bad_port(port: object) -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(lanes.LaneConfigError, match=rf"port={port!r} is invalid"):
            await nursery.start(lanes.web.serve_console, lanes.web.console(), port)


async def test_reading_many_systems_lets_other_tasks_run() -> None:
    console = lanes.web.console()
    ticks = 0

    async def other_task() -> None:
        nonlocal ticks
        while True:
            await trio.lowlevel.checkpoint()
            ticks += 1

    async with contextlib.AsyncExitStack() as stack:
        for index in range(1200):
            console.add(await stack.enter_async_context(lanes.open_lane_system()), label=f"{index}")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_task)
            await trio.sleep(0.01)  # it runs
            ticks = 0  # from here on, it runs only at the frame's checkpoints
            frame = await console.frame("", "wait", 0, 50, None, None)
            nursery.cancel_scope.cancel()
    assert frame["systems"]["total"] == 1200
    # Checkpoints in each pass over the systems (overview, the page): the other task ran
    # between them (how often it runs at each one is up to the scheduler).
    assert ticks >= 2


async def test_served_on_loopback_it_answers_only_loopback_host_names() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lanes.web.serve_console, lanes.web.console(), 0)

        async def status(host: str) -> bytes:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                request = f"GET /api/overview HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                await stream.send_all(request.encode())
                data = b""
                while chunk := await stream.receive_some():
                    data += chunk
            return data.split(b"\r\n", 1)[0]

        assert await status(f"127.0.0.1:{server.port}") == b"HTTP/1.1 200 "
        assert await status(f"localhost:{server.port}") == b"HTTP/1.1 200 "
        assert await status(f"rebound.example:{server.port}") == b"HTTP/1.1 400 "
        nursery.cancel_scope.cancel()


def test_lanes_web_and_the_example_without_starlette() -> None:
    from lanes import _extras

    from .test_extras import ROOT, RUN_EXAMPLE, run_without

    done = run_without(
        ["starlette"],
        "from lanes.__main__ import main; sys.exit(main(['web', '--storage', 'x.db']))",
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "lanes.web needs starlette and hypercorn: " + _extras.install_hint("web")
    )
    done = run_without(["starlette"], RUN_EXAMPLE.format(str(ROOT / "examples" / "web_console.py")))
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "pip install -e '.[web]'" in line and "starlette" in line


async def test_a_lane_queue_is_shown_in_the_order_commands_would_start() -> None:
    console = lanes.web.console()
    async with lanes.open_lane_system() as system:
        sid = console.add(system)
        system.pause("prompt")
        first = await system.submit("prompt", noop)
        urgent = await system.submit("prompt", noop, priority=-1)
        last = await system.submit("prompt", noop, priority=2)
        second = await system.submit("prompt", noop)
        async with client(console) as c:
            queue = (await c.get(f"/api/systems/{sid}/lanes/prompt/queue")).json()
            ids = [row["id"] for row in queue["commands"]]
            assert ids == [urgent.id, first.id, second.id, last.id]
            assert [row["position"] for row in queue["commands"]] == [0, 1, 2, 3]
            assert [row["priority"] for row in queue["commands"]] == [-1, 0, 0, 2]
            page = await c.get(
                f"/api/systems/{sid}/lanes/prompt/queue", params={"offset": 2, "limit": 1}
            )
            assert [(r["position"], r["id"]) for r in page.json()["commands"]] == [(2, second.id)]
        system.resume("prompt")


async def test_cancel_and_trigger_give_the_api_errors() -> None:
    console = lanes.web.console(token=TOKEN)
    release = trio.Event()
    fired: list[int] = []

    async def tick() -> None:
        fired.append(1)

    retention = lanes.Retention(count=10)
    async with lanes.open_lane_system(retention=retention) as system:
        sid = console.add(system)
        running = await system.submit("prompt", blocker, release)
        await system.submit("prompt", blocker, release)
        queued = await system.submit("prompt", blocker, release)
        finished = await system.submit("query", noop)
        await finished.result()
        once = await system.schedule("query", tick, every=0.01, key="once", times=1)
        with trio.fail_after(5):
            await once.wait_finished()
        await trio.testing.wait_all_tasks_blocked()
        assert once.finished and fired == [1]
        await system.schedule("query", tick, every=3600, key="hourly")
        async with client(console) as c:
            headers = auth(TOKEN, await csrf(c))

            async def post(action: str, target: str) -> httpx.Response:
                url = f"/api/systems/{sid}/{action}"
                return await c.post(url, json={"target": target}, headers=headers)

            unknown = await post("cancel", "s9-1")
            assert (unknown.status_code, unknown.json()["type"]) == (404, "NotFound")
            assert "no pending or running command with id 's9-1'" in unknown.json()["error"]
            done = await post("cancel", finished.id)
            assert (done.status_code, done.json()["type"]) == (409, "ActionRefused")
            assert (
                done.json()["error"]
                == f"command {finished.id!r} already finished (done): not cancelled"
            )
            waiting = await post("cancel", queued.id)
            assert waiting.json()["message"] == f"command {queued.id!r} cancelled"
            assert queued.status is lanes.CommandStatus.CANCELLED
            again = await post("cancel", queued.id)  # now kept as a finished command
            assert again.status_code == 409 and "(cancelled)" in again.json()["error"]
            stopping = await post("cancel", running.id)
            assert "stops at its next checkpoint" in stopping.json()["message"]
            with pytest.raises(lanes.CommandCancelled):
                await running.result()
            nothing = await post("trigger", "daily")
            assert nothing.status_code == 404 and "'hourly'" in nothing.json()["error"]
            ended = await post("trigger", "once")
            assert (ended.status_code, ended.json()["type"]) == (409, "ActionRefused")
            assert "ended after its 1 firings" in ended.json()["error"]
            assert (await post("trigger", "hourly")).status_code == 200
            await trio.testing.wait_all_tasks_blocked()
            assert fired == [1, 1]
            await system.shutdown()  # no new commands: the API's ShutdownInProgress
            closing = await post("trigger", "hourly")
            assert (closing.status_code, closing.json()["type"]) == (409, "ShutdownInProgress")
        release.set()


async def test_a_queue_page_follows_start_order_after_a_delay_came_due(
    autojump_clock: trio.abc.Clock,
) -> None:
    console = lanes.web.console()
    async with lanes.open_lane_system() as system:
        sid = console.add(system)
        system.pause("prompt")
        late = await system.submit("prompt", noop, delay=5)
        others = [await system.submit("prompt", noop) for _ in range(3)]
        async with client(console) as c:

            async def page(offset: int, limit: int) -> list[tuple[int, str]]:
                url = f"/api/systems/{sid}/lanes/prompt/queue"
                view = (await c.get(url, params={"offset": offset, "limit": limit})).json()
                return [(row["position"], row["id"]) for row in view["commands"]]

            assert await page(0, 2) == [(0, others[0].id), (1, others[1].id)]  # in order
            await trio.sleep(6)  # ``late`` is due: behind the others, though accepted first
            assert await page(0, 2) == [(0, others[0].id), (1, others[1].id)]
            assert await page(3, 1) == [(3, late.id)]
            assert await page(4, 10) == []
        system.resume("prompt")


TICKS: list[str] = []


@lanes.command(name="web-tick")
@attrs.define
class Tick:
    tag: str

    async def execute(self) -> None:
        TICKS.append(self.tag)


async def test_trigger_of_a_stored_schedule_submits_its_command(tmp_path: pathlib.Path) -> None:
    console = lanes.web.console(token=TOKEN)
    TICKS.clear()
    storage = str(tmp_path / "lanes.db")
    async with lanes.open_lane_system(storage=storage, commands=[Tick]) as system:
        sid = console.add(system)
        schedule = await system.schedule("query", Tick("hourly"), every=3600, key="hourly")
        async with client(console) as c:
            url = f"/api/systems/{sid}/trigger"
            answer = await c.post(
                url, json={"target": "hourly"}, headers=auth(TOKEN, await csrf(c))
            )
            assert answer.status_code == 200, answer.text
        await system.drain(5)
        assert TICKS == ["hourly"]  # rebuilt from its stored JSON, a new object
        assert (schedule.fired, schedule.runs) == (0, 0)  # a one-off: the slots are as they were
