"""``lanes schedules``: list, pause, resume and cancel the schedules of a database."""

from __future__ import annotations

import pathlib
from datetime import UTC, datetime

import attrs
import pytest
import trio

import lanes
from lanes.__main__ import main
from lanes._cli_schedules import schedules_command
from lanes.storage import SqliteStorage, StoredSchedule, WriteBatch

NOW = datetime(2026, 3, 2, 12, 0, 5, tzinfo=UTC).timestamp()


@lanes.command(name="report")
@attrs.define
class Report:
    async def execute(self) -> None:
        return None


def row(key: str, **changes: object) -> StoredSchedule:
    base = StoredSchedule(
        key, "work", "report", "{}", 60.0, None, None, 0.0, "run_once", 100, "skip",
        NOW - 3605, False, NOW - 65, None,
    )  # fmt: skip
    return attrs.evolve(base, **changes)


async def write(path: pathlib.Path, *rows: StoredSchedule) -> None:
    storage = SqliteStorage(path)
    await storage.open()
    await storage.write(WriteBatch(save_schedules=rows))
    await storage.close()


async def read(path: pathlib.Path) -> dict[str, StoredSchedule]:
    storage = SqliteStorage(path)
    await storage.open()
    rows = (await storage.recover()).schedules
    await storage.close()
    return {r.key: r for r in rows}


@pytest.fixture
def db(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "queue.db"
    daily = row("daily", every=None, cron="30 2 * * *", tz="Europe/Berlin", last_slot=None)
    trio.run(write, path, row("minutely"), daily)
    return path


def test_lists_schedules_with_their_next_run(db: pathlib.Path) -> None:
    text = schedules_command(str(db), now=NOW)
    lines = text.splitlines()
    assert lines[0] == f"{db}: 2 schedule(s)"
    assert lines[2].split() == ["key", "lane", "type", "when", "misfire/overlap", "next", "run"]
    daily = next(line for line in lines if line.startswith("daily"))
    assert "cron '30 2 * * *' Europe/Berlin" in daily
    assert "2026-03-03 02:30:00 CET" in daily
    minutely = next(line for line in lines if line.startswith("minutely"))
    assert "every 60 s" in minutely and "run_once/skip" in minutely
    assert "2026-03-02 12:00:00 UTC, missed: misfire=run_once at the next start" in minutely


def test_pause_resume_and_cancel_by_key(
    db: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schedules", str(db), "--pause", "minutely"]) == 0
    assert "paused minutely" in capsys.readouterr().out
    assert trio.run(read, db)["minutely"].paused
    assert "paused (was" in schedules_command(str(db), now=NOW)

    later = NOW + 600
    assert schedules_command(str(db), "resume", "minutely", now=later) == "resumed minutely"
    resumed = trio.run(read, db)["minutely"]
    assert not resumed.paused
    assert resumed.last_slot == later - 5  # the slots that passed while paused: skipped

    assert main(["schedules", str(db), "--cancel", "daily"]) == 0
    assert "cancelled daily" in capsys.readouterr().out
    assert list(trio.run(read, db)) == ["minutely"]


def test_bad_key_and_bad_path(
    db: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schedules", str(db), "--resume", "nope"]) == 1
    err = capsys.readouterr().err
    assert "no schedule with key 'nope'" in err and "minutely" in err
    assert main(["schedules", str(tmp_path / "missing.db")]) == 1
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty.db"
    trio.run(write, empty)
    assert schedules_command(str(empty)) == f"{empty}: no schedules"


async def test_a_system_sees_what_the_command_line_changed(db: pathlib.Path) -> None:
    await trio.to_thread.run_sync(schedules_command, str(db), "pause", "minutely")
    config = [lanes.LaneConfig("work", 0)]
    async with lanes.open_lane_system(config, storage=db, commands=[Report]) as system:
        assert system.schedules["minutely"].paused
        assert system.schedules["daily"].next_run is not None


def test_lists_repeat_limits_and_after_completion(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "limits.db"
    rows = [
        row("capped", times=5, runs=2),
        row("done", times=3, runs=3),
        row("after", after_completion=True, anchor=NOW - 100, last_slot=NOW - 40),
        row("waiting", after_completion=True, anchor=NOW - 30, last_slot=NOW - 40),
        row("seconds", every=None, cron="*/15 * * * * *", last_slot=None, anchor=NOW - 5),
    ]
    trio.run(write, path, *rows)
    lines = {
        line.split()[0]: line for line in schedules_command(str(path), now=NOW).splitlines()[4:]
    }
    assert "every 60 s, 2/5 firings" in lines["capped"]
    assert "finished (3 of 3 firings)" in lines["done"]
    assert "every 60 s after completion" in lines["after"]
    assert "60 s after the last firing ends" in lines["after"]
    assert "2026-03-02 12:00:35 UTC" in lines["waiting"]  # anchor + every: its next slot
    assert "cron '*/15 * * * * *' UTC" in lines["seconds"]
    assert "2026-03-02 12:00:15 UTC" in lines["seconds"]
