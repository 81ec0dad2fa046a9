"""`lanes inspect redis://...`: the unfinished commands a deployment holds in Redis, end to end."""

from __future__ import annotations

import json
import pathlib
import uuid
from collections.abc import Iterator

import pytest
import trio

from lanes.__main__ import main
from lanes.distributed import LocalRedis, RedisBackend, local_redis_server
from tests.distributed_commands import Step
from tests.test_distributed import needs_redis, system_on

pytestmark = needs_redis


@pytest.fixture(scope="module")
def redis_server() -> Iterator[LocalRedis]:
    with local_redis_server() as server:
        yield server


async def test_inspect_lists_what_redis_holds(
    redis_server: LocalRedis, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = RedisBackend(redis_server.url, prefix=f"t{uuid.uuid4().hex[:8]}", lease=0.6)
    log = str(tmp_path / "log.txt")
    async with system_on(backend, drain_timeout=0) as system:  # no worker: all stay queued
        queued = await system.submit("urgent", Step(log, "q"), key="k-1")
        later = await system.submit("urgent", Step(log, "later"), delay=60)
        argv = ["inspect", redis_server.url, "--prefix", backend.prefix, "--json"]
        assert await trio.to_thread.run_sync(main, argv) == 0
        rows = {row["id"]: row for row in json.loads(capsys.readouterr().out)["commands"]}
        assert set(rows) == {queued.id, later.id}
        assert (rows[queued.id]["status"], rows[queued.id]["key"]) == ("pending", "k-1")
        assert rows[later.id]["status"] == "delayed"
        argv = ["inspect", redis_server.url, "--prefix", backend.prefix]
        assert await trio.to_thread.run_sync(main, argv) == 0
        text = capsys.readouterr().out
        assert queued.id in text and later.id in text
