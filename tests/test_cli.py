"""The command line: ``lanes inspect`` and ``lanes dead-letters`` on a real database."""

from __future__ import annotations

import pathlib

import attrs
import pytest
import trio

import lanes
from lanes.__main__ import main


@lanes.command(name="cli-job")
@attrs.define
class CliJob:
    fail: bool

    async def execute(self) -> str:
        if self.fail:
            raise RuntimeError("nope")
        return "ok"


async def make_db(path: pathlib.Path) -> None:
    configs = [lanes.LaneConfig("work", 0), lanes.LaneConfig("paused", 1)]
    with pytest.raises(KeyError):
        async with lanes.open_lane_system(configs, storage=path, commands=[CliJob]) as system:
            with pytest.raises(lanes.CommandFailed):
                await system.run("work", CliJob(fail=True))
            system.pause("paused")
            await system.submit("paused", CliJob(fail=False))
            await system.submit("paused", CliJob(fail=False))
            raise KeyError("stop")


def test_inspect_and_dead_letters(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "queue.db"
    trio.run(make_db, path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 unfinished command(s), 1 dead letter(s)" in out
    assert "paused  2" in out
    assert "RuntimeError('nope')" in out

    assert main(["dead-letters", str(path)]) == 0
    listing = capsys.readouterr().out
    letter_id = listing.splitlines()[2].split()[0]
    assert "cli-job" in listing

    assert main(["dead-letters", str(path), "--requeue", "nope"]) == 1
    assert "no dead letter with id 'nope'" in capsys.readouterr().err

    assert main(["dead-letters", str(path), "--requeue", letter_id]) == 0
    assert "requeued" in capsys.readouterr().out
    assert main(["inspect", str(path)]) == 0
    assert "3 unfinished command(s), 0 dead letter(s)" in capsys.readouterr().out

    assert main(["dead-letters", str(path), "--clear"]) == 0
    assert "cleared 0" in capsys.readouterr().out


def test_storage_commands_reject_bad_paths(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(tmp_path / "missing.db")]) == 1
    assert "does not exist" in capsys.readouterr().err
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert main(["dead-letters", str(text), "--clear"]) == 1
    assert "not a SQLite database" in capsys.readouterr().err
    assert text.read_text() == "hello"
