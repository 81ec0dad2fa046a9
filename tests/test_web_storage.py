"""The web console of a database (``lanes web --storage PATH``)."""

from __future__ import annotations

import os
import pathlib
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import pytest
import trio

import lanes
import lanes.web
from lanes.__main__ import main
from lanes.distributed import LocalRedis, RedisBackend, local_redis_server
from lanes.web._app import CSRF_COOKIE, CSRF_HEADER
from tests.distributed_commands import Step
from tests.test_distributed import needs_redis, system_on, worker_on
from tests.test_web import read_events

TOKEN = secrets.token_urlsafe(18)


@lanes.command(name="<b>fails</b>")
@attrs.define
class Fails:
    async def execute(self) -> None:
        raise lanes.Permanent(RuntimeError("<script>alert(1)</script>"))


@lanes.command(name="web-slow")
@attrs.define
class Slow:
    async def execute(self) -> None:
        await trio.sleep(100)


async def make_database(path: pathlib.Path) -> list[str]:
    """A stopped system's database: 2 commands pending in 'prompt', 2 letters, a schedule."""
    commands = [Fails, Slow]
    async with lanes.open_lane_system(storage=str(path), commands=commands) as system:
        for _ in range(2):
            with pytest.raises(lanes.CommandFailed):
                await system.run("query", Fails())
        system.pause("prompt")
        await system.submit("prompt", Slow())
        await system.submit("prompt", Slow())
        await system.schedule("query", Slow(), every=3600, key="hourly")
        letters = [letter.id for letter in system.dead_letters.list()]
        system.close_now()
    return letters


def client(console: lanes.web.StorageConsole) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=console), base_url="http://t")


async def test_views_of_a_database(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "lanes.db"
    letters = await make_database(path)
    async with client(lanes.web.storage_console(str(path))) as c:
        overview = (await c.get("/api/overview")).json()
        assert (overview["kind"], overview["pending"], overview["dead_letters"]) == (
            "storage",
            2,
            2,
        )
        detail = (await c.get("/api/systems/db")).json()
        assert {lane["name"]: lane["pending"] for lane in detail["lane_rows"]} == {
            "prompt": 2,
            "query": 0,
        }
        assert [letter["id"] for letter in detail["letters"]] == letters
        assert detail["letters"][0]["error"] == "RuntimeError('<script>alert(1)</script>')"
        assert detail["schedules"][0]["key"] == "hourly"
        assert detail["schedules"][0]["next_run"] is not None
        queue = (await c.get("/api/systems/db/lanes/prompt/queue")).json()
        assert [row["position"] for row in queue["commands"]] == [0, 1]
        assert (await c.get("/api/systems/s1")).status_code == 404
        page = (await c.get("/")).text
        assert "<script>alert" not in page


async def test_dead_letters_are_requeued_and_deleted(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "lanes.db"
    first, second = await make_database(path)
    console = lanes.web.storage_console(str(path), token=TOKEN)
    async with client(console) as c:
        csrf = (await c.get("/")).cookies[CSRF_COOKIE]
        headers = {"Authorization": f"Bearer {TOKEN}", CSRF_HEADER: csrf}

        async def post(action: str, target: str) -> httpx.Response:
            return await c.post(
                f"/api/systems/db/{action}", json={"target": target}, headers=headers
            )

        refused = await post("pause", "prompt")
        assert refused.status_code == 409
        assert "needs the running lane system" in refused.json()["error"]
        assert (await post("delete", first)).status_code == 200
        assert (await post("requeue", second)).status_code == 200
        missing = await post("requeue", second)
        assert missing.status_code == 409 and "no dead letter" in missing.json()["error"]
        no_csrf = await c.post(
            "/api/systems/db/delete",
            json={"target": first},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert no_csrf.status_code == 403
        overview = (await c.get("/api/overview")).json()
        assert (overview["pending"], overview["dead_letters"]) == (3, 0)


async def test_a_missing_file_is_refused_and_not_created(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "missing.db"
    console = lanes.web.storage_console(str(path))
    with pytest.raises(lanes.StorageError, match="does not exist"):
        await console.source.check()
    async with client(console) as c:
        answer = await c.get("/api/overview")
        assert answer.status_code == 409 and "does not exist" in answer.json()["error"]
    assert not path.exists()


def test_cli_refuses_a_missing_file_and_a_short_token(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["web", "--storage", str(tmp_path / "nope.db"), "--port", "0"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["web", "--storage", str(tmp_path / "nope.db"), "--token", "short"]) == 1
    assert "at least 16 characters" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()


def test_cli_serves_the_database_on_localhost_with_a_generated_token(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "lanes.db"
    trio.run(make_database, path)
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parent.parent)}
    command = [sys.executable, "-m", "lanes", "web", "--storage", str(path), "--port", "0"]
    with subprocess.Popen(
        [*command, "--actions"], stdout=subprocess.PIPE, text=True, env=env
    ) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(3)]
            url = lines[0].split(" at ")[1].strip()
            assert url.startswith("http://127.0.0.1:")
            token = lines[1].rsplit(" ", 1)[1].strip()
            assert len(token) >= 16 and f"#token={token}" in lines[2]
            page = httpx.get(url, timeout=10)
            assert page.status_code == 200 and "trio-lanes storage" in page.text
            body = httpx.get(url + "api/systems/db", timeout=10).json()
            assert body["pending"] == 2
        finally:
            process.terminate()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[LocalRedis]:
    with local_redis_server() as server:
        yield server


@needs_redis
async def test_the_console_of_a_deployment_on_redis(
    redis_server: LocalRedis, tmp_path: pathlib.Path
) -> None:
    backend = RedisBackend(redis_server.url, prefix=f"w{uuid.uuid4().hex[:8]}", lease=0.6)
    log = str(tmp_path / "log.txt")
    async with system_on(backend, drain_timeout=0) as system:  # no worker: all stay queued
        queued = await system.submit("urgent", Step(log, "q"), key="<k>")
        await system.submit("urgent", Step(log, "later"), delay=60)
        console = lanes.web.storage_console(redis_server.url, prefix=backend.prefix, token=TOKEN)
        async with client(console) as c:
            detail = (await c.get("/api/systems/db")).json()
            [lane] = detail["lane_rows"]
            assert (lane["name"], lane["pending"], lane["delayed"]) == ("urgent", 2, 1)
            queue = (await c.get("/api/systems/db/lanes/urgent/queue")).json()
            assert queue["commands"][0]["id"] == queued.id
            assert queue["commands"][0]["key"] == "<k>"
            csrf = (await c.get("/")).cookies[CSRF_COOKIE]
            headers = {"Authorization": f"Bearer {TOKEN}", CSRF_HEADER: csrf}
            answer = await c.post(
                "/api/systems/db/delete", json={"target": queued.id}, headers=headers
            )
            assert answer.status_code == 409 and "Redis" in answer.json()["error"]


@needs_redis
async def test_the_dead_letters_of_a_deployment_on_redis(
    redis_server: LocalRedis, tmp_path: pathlib.Path
) -> None:
    backend = RedisBackend(redis_server.url, prefix=f"w{uuid.uuid4().hex[:8]}", lease=0.6)
    log = str(tmp_path / "log.txt")
    console = lanes.web.storage_console(redis_server.url, prefix=backend.prefix)
    async with (
        worker_on(backend),  # type: ignore[attr-defined]
        system_on(backend) as system,
        client(console) as c,
    ):
        empty = (await c.get("/api/systems/db")).json()
        assert (empty["letters"], empty["letters_total"]) == ([], 0)
        for tag in ("<script>one</script>", "two"):
            with pytest.raises(lanes.CommandFailed):
                await system.run("urgent", Step(log, tag, fail=True))
        stored = system.dead_letters.list()
        detail = (await c.get("/api/systems/db")).json()
        assert [row["id"] for row in detail["letters"]] == [d.id for d in stored]
        first = detail["letters"][0]
        assert (first["lane"], first["type"], first["attempts"]) == ("urgent", "Step", 1)
        assert first["error"] == "RuntimeError: <script>one</script> failed on purpose"
        assert first["traceback"] is None  # Redis keeps none
        assert first["failed_at"] == stored[0].failed_at
        assert (await c.get("/api/overview")).json()["dead_letters"] == 2
        assert [lane["name"] for lane in detail["lane_rows"]] == ["urgent"]
        again = await system.dead_letters.requeue(stored[0].id)  # XDEL'd, a new run
        with pytest.raises(lanes.CommandFailed):
            await again.result()  # a new letter
        now = [d.id for d in system.dead_letters.list()]
        shown = (await c.get("/api/systems/db")).json()["letters"]
        assert [row["id"] for row in shown] == now and stored[0].id not in now
        await system.dead_letters.clear()
        assert (await c.get("/api/systems/db")).json()["letters_total"] == 0


async def test_the_events_stream_reports_a_database_that_went_away(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "lanes.db"
    await make_database(path)
    console = lanes.web.storage_console(str(path), interval=0.01)
    seen: list[str] = []

    async def enough(frames: list[dict[str, Any]]) -> bool:
        if len(frames) == 1:
            path.unlink()
        seen.extend(str(frame.get("error")) for frame in frames[len(seen) :])
        return len(frames) >= 3

    with trio.fail_after(10):
        await read_events(console, [], enough)
    assert seen[0] == "None"  # the first frame: no error
    assert "does not exist" in seen[1] and "does not exist" in seen[2]
