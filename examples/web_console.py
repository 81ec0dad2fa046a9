"""The web console mounted in your own Trio web app: many sessions, seen and steered from a page.

Needs the ``web`` extra: ``pip install -e '.[web]'`` in a checkout, ``pip install
'trio-lanes[web]'`` otherwise (httpx too, for the in-process requests below).

Run it with ``python examples/web_console.py``: it opens 50 sessions, mounts the console at
``/lanes`` in a Starlette app next to the app's own routes, and drives it in process (no
socket): the busiest sessions, a lane paused through the API with the token and CSRF token.
Add ``--hold 60`` to serve the app on http://127.0.0.1:8765/lanes/ for a minute (hypercorn's
Trio worker, in the same ``trio.run`` as the sessions) and open the printed URL.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
from functools import partial

import trio

import lanes

try:
    import httpx
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    import lanes.web
except ModuleNotFoundError as missing:  # one line saying what to install, not a traceback
    from lanes._extras import exit_missing_extra

    # httpx (the in-process requests) comes with the test extra, the rest with web.
    extra = "test" if missing.name == "httpx" else "web"
    exit_missing_extra(missing, "examples/web_console.py", extra)


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("the app's own page\n")


async def llm_call(seconds: float) -> str:
    await trio.sleep(seconds)
    return "answer"


async def broken_tool() -> None:
    raise ConnectionError("tool server refused the call")


async def session(
    console: lanes.web.LiveConsole,
    number: int,
    done: trio.Event,
    task_status: trio.TaskStatus[lanes.LaneSystem] = trio.TASK_STATUS_IGNORED,
) -> None:
    """One user session: a lane system shown in the console until it closes."""
    async with lanes.open_lane_system() as system:
        console.add(system, label=f"session-{number:03d}")
        for _ in range(number % 7):  # some sessions have a backlog of LLM calls
            await system.submit("prompt", llm_call, 30.0)
        if number == 3:
            with contextlib.suppress(lanes.CommandFailed):  # kept as a dead letter
                await system.run("query", broken_tool)
        task_status.started(system)
        await done.wait()
        system.close_now()


async def main(hold: float = 0.0, port: int = 8765) -> None:
    token = secrets.token_urlsafe(24)  # actions need it; without one the console is read-only
    console = lanes.web.console(token=token, title="sessions")
    app = Starlette(routes=[Route("/", hello), Mount("/lanes", app=console)])
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        systems = [await nursery.start(session, console, n, done) for n in range(50)]
        print(f"console shows {len(console)} sessions")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            page = await client.get("/lanes/")
            print(f"GET /lanes/: {page.status_code} {page.headers['content-type']}")
            busiest = await client.get("/lanes/api/systems", params={"sort": "depth", "limit": 3})
            for row in busiest.json()["systems"]:
                print(f"  {row['label']}: {row['pending']} pending, {row['active']} running")
            sid = busiest.json()["systems"][0]["id"]
            headers = {
                "Authorization": f"Bearer {token}",
                "X-Lanes-CSRF": page.cookies["lanes_csrf"],  # the page's double-submit cookie
            }
            url = f"/lanes/api/systems/{sid}/pause"
            answer = await client.post(url, json={"target": "prompt"}, headers=headers)
            print(f"pause: {answer.status_code} {answer.json()['message']}")
            refused = await client.post(url, json={"target": "prompt"})  # no token
            print(f"without the token: {refused.status_code} {refused.json()['error']}")
            wrong = await client.post(url, json={"target": "nope"}, headers=headers)
            print(f"unknown lane: {wrong.status_code} {wrong.json()['type']}")
            letters = await client.get("/lanes/api/systems/s4")
            print(f"dead letter of session-003: {letters.json()['letters'][0]['error']}")
        paused = [s for s in systems if s.statistics().lanes["prompt"].paused]
        print(f"paused sessions: {len(paused)}")
        if hold:
            config = Config()
            config.bind = [f"127.0.0.1:{port}"]
            await nursery.start(partial(serve, app, config))  # type: ignore[arg-type]
            print(f"open http://127.0.0.1:{port}/lanes/#token={token}")
            await trio.sleep(hold)
            nursery.cancel_scope.cancel()
        done.set()
    print(f"console shows {len(console)} sessions once they closed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hold", type=float, default=0.0, help="seconds to serve the app")
    parser.add_argument("--port", type=int, default=8765, help="port to serve it on")
    args = parser.parse_args()
    trio.run(main, args.hold, args.port)
