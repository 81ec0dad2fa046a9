"""``lanes inspect``: unfinished commands and dead letters, read-only, as text or JSON;
``lanes dead-letters`` lists letters in the API's order."""

from __future__ import annotations

import json
import pathlib
import sqlite3
import time

import attrs
import pytest
import trio

import lanes
from lanes.__main__ import main
from lanes._inspect import read_redis, read_sqlite


@lanes.command(name="insp-job")
@attrs.define
class Job:
    fail: bool = False

    async def execute(self) -> str:
        if self.fail:
            raise lanes.Permanent(RuntimeError("nope"))
        return "ok"


CONFIGS = (
    lanes.LaneConfig("work", 0, max_concurrency=2),
    lanes.LaneConfig("paused", 1),
    lanes.LaneConfig("retry", 2, retry=lanes.RetryPolicy.fixed(3, 3600.0)),
)


@lanes.command(name="insp-flaky")
@attrs.define
class Flaky:
    async def execute(self) -> None:
        raise RuntimeError("again later")


async def make_db(path: pathlib.Path) -> dict[str, str]:
    """A stopped system's file: 2 paused commands (one keyed, one delayed), 1 retrying, and
    2 dead letters that failed in the order opposite to their submission."""
    ids: dict[str, str] = {}
    opening = lanes.open_lane_system(CONFIGS, storage=path, commands=[Job, Flaky])
    with pytest.raises(KeyError):
        async with opening as system:
            late = await system.submit("work", Job(fail=True), delay=0.2)
            early = await system.submit("work", Job(fail=True))
            for handle in (early, late):
                with pytest.raises(lanes.CommandFailed):
                    await handle.result()
            ids["early"], ids["late"] = early.id, late.id
            system.pause("paused")
            ids["keyed"] = (await system.submit("paused", Job(), key="welcome")).id
            ids["delayed"] = (await system.submit("paused", Job(), delay=7200)).id
            async with system.subscribe(lanes.events.Retrying) as retrying:
                flaky = await system.submit("retry", Flaky())
                await retrying.receive()
            ids["retrying"] = flaky.id
            raise KeyError("stop")
    return ids


@pytest.fixture
def db(tmp_path: pathlib.Path) -> tuple[pathlib.Path, dict[str, str]]:
    path = tmp_path / "queue.db"
    ids = trio.run(make_db, path)
    return path, ids


def test_inspect_lists_the_unfinished_commands(
    db: tuple[pathlib.Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, ids = db
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 unfinished command(s), 2 dead letter(s)" in out
    assert "id  " in out and "next due" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows[ids["keyed"]][1:6] == ["insp-job", "welcome", "paused", "pending", "0"]
    assert rows[ids["keyed"]][6] == "now"
    assert rows[ids["delayed"]][2:5] == ["-", "paused", "pending"]
    assert rows[ids["delayed"]][6] == time.strftime("%Y-%m-%d", time.localtime(time.time() + 7200))
    assert rows[ids["retrying"]][1:6] == ["insp-flaky", "-", "retry", "retrying", "1"]
    assert "RuntimeError('nope')" in out


def test_inspect_json(
    db: tuple[pathlib.Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, ids = db
    before = time.time()
    assert main(["inspect", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == str(path)
    commands = {c["id"]: c for c in data["commands"]}
    assert set(commands) == {ids["keyed"], ids["delayed"], ids["retrying"]}
    assert commands[ids["keyed"]] == {
        "id": ids["keyed"],
        "type": "insp-job",
        "key": "welcome",
        "lane": "paused",
        "status": "pending",
        "attempts": 0,
        "next_due": None,
    }
    assert before + 7000 < commands[ids["delayed"]]["next_due"] < before + 7300
    assert before + 3500 < commands[ids["retrying"]]["next_due"] < before + 3700
    letters = data["dead_letters"]
    assert [letter["id"] for letter in letters] == [ids["early"], ids["late"]]
    assert all(before - 60 < letter["failed_at"] <= before for letter in letters)


def test_inspect_never_writes(db: tuple[pathlib.Path, dict[str, str]]) -> None:
    path, _ = db
    before = path.read_bytes()
    stat = path.stat()
    read_sqlite(path)
    assert main(["inspect", str(path), "--json"]) == 0
    assert path.read_bytes() == before
    assert path.stat().st_mtime_ns == stat.st_mtime_ns


def test_an_empty_file_is_left_untouched(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    for command in (["inspect", str(path)], ["inspect", str(path), "--json"]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert "is empty: not a trio-lanes database yet" in err
    assert main(["dead-letters", str(path)]) == 1
    assert "is empty" in capsys.readouterr().err
    assert path.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def test_a_missing_file_is_not_created(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "missing.db"
    assert main(["inspect", str(path)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["dead-letters", str(path)]) == 1
    assert list(tmp_path.iterdir()) == []


def test_foreign_files_are_refused(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert main(["inspect", str(text)]) == 1
    assert "not a SQLite database" in capsys.readouterr().err
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    content = other.read_bytes()
    assert main(["inspect", str(other)]) == 1
    assert "another application" in capsys.readouterr().err
    assert other.read_bytes() == content
    assert main(["inspect", str(tmp_path)]) == 1
    assert "is not a file" in capsys.readouterr().err


def test_missing_optional_columns_read_as_none(tmp_path: pathlib.Path) -> None:
    """An older (or newer) schema: only the columns that exist are read."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA application_id=0x4C414E45")
        conn.execute("CREATE TABLE commands (id, seq, lane, type, status, attempts)")
        conn.execute("INSERT INTO commands VALUES ('c-1', 1, 'work', 'job', 'running', 2)")
    conn.close()
    found = read_sqlite(path)
    (command,) = found.commands
    assert (command.id, command.key, command.status, command.next_due) == (
        "c-1",
        None,
        "running",
        None,
    )
    assert found.letters == ()


def test_dead_letters_are_listed_in_the_apis_order(
    db: tuple[pathlib.Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, ids = db

    async def api_order() -> list[str]:
        opening = lanes.open_lane_system(CONFIGS, storage=path, commands=[Job, Flaky])
        async with opening as system:
            order = [letter.id for letter in system.dead_letters.list()]
            system.pause("paused")
            system.pause("retry")
            await system.cancel_lane("paused")
            await system.cancel_lane("retry")
            return order

    assert main(["dead-letters", str(path)]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert listed == [ids["early"], ids["late"]]  # failure order, not submission order
    assert trio.run(api_order) == listed


def test_redis_without_support_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import lanes.distributed

    monkeypatch.delattr(lanes.distributed, "unfinished_commands", raising=False)
    with pytest.raises(lanes.StorageError, match="cannot inspect Redis"):
        trio.run(read_redis, "redis://127.0.0.1:1/0", "lanes")


def test_redis_rows_are_shown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import lanes.distributed

    seen = {}

    async def unfinished(url: str, *, prefix: str = "lanes") -> list[dict[str, object]]:
        seen.update(url=url, prefix=prefix)
        row = {"id": "r-1", "type": "resize", "key": None, "lane": "bulk"}
        return [{**row, "status": "pending", "attempts": 0, "next_due": None}]

    monkeypatch.setattr(lanes.distributed, "unfinished_commands", unfinished, raising=False)
    url = "redis://:secret@127.0.0.1:6390/0"
    assert main(["inspect", url, "--prefix", "app", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert seen == {"url": url, "prefix": "app"}
    assert data["commands"][0]["id"] == "r-1"
    assert "secret" not in data["source"]
    assert "dead_letters" not in data
    assert main(["inspect", url, "--prefix", "app"]) == 0
    assert "r-1" in capsys.readouterr().out


def test_schedules_leave_an_empty_file_untouched(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    assert main(["schedules", str(path)]) == 1
    assert "is empty" in capsys.readouterr().err
    assert main(["schedules", str(path), "--pause", "x"]) == 1
    assert path.read_bytes() == b""
    assert main(["schedules", str(tmp_path / "missing.db")]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]
