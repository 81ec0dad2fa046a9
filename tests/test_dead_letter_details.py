"""Dead letters keep their traceback (in memory and in storage), and ``dead_letters.discard``."""

from __future__ import annotations

import pathlib
import sqlite3

import attrs
import pytest
import trio

import lanes
import lanes.web
from lanes._dlq import MAX_TRACEBACK, format_traceback
from lanes._inspect import read_sqlite

from .helpers import boom


def nested(depth: int) -> None:
    if depth:
        nested(depth - 1)
    raise ValueError("<script>deep</script>")


async def fails_with_a_cause() -> None:
    try:
        {}["missing"]
    except KeyError as error:
        raise RuntimeError("lookup failed") from error


@lanes.command(name="detail-fails")
@attrs.define
class Fails:
    async def execute(self) -> None:
        await fails_with_a_cause()


@lanes.command(name="detail-ok")
@attrs.define
class Ok:
    async def execute(self) -> None:
        return None


# -- format_traceback -----------------------------------------------------------------------


def raised(fn: object, *args: object) -> BaseException:
    try:
        fn(*args)  # type: ignore[operator]
    except BaseException as error:
        return error
    raise AssertionError("it did not raise")


def test_a_traceback_names_the_frames_the_chain_and_the_error() -> None:
    def chained() -> None:
        try:
            nested(2)
        except ValueError as error:
            raise RuntimeError("wrapped") from error

    text = format_traceback(raised(chained))
    assert text.startswith("Traceback (most recent call last):")
    assert "in nested" in text and "direct cause" in text
    assert text.endswith("RuntimeError: wrapped\n")


def chain(levels: int) -> None:
    """Fails with ``levels`` chained errors (Python prints every one: a long traceback)."""
    if not levels:
        raise ValueError("<script>deep</script>")
    try:
        chain(levels - 1)
    except Exception as error:
        raise RuntimeError(f"level {levels}") from error


def test_a_long_traceback_keeps_its_end_within_the_bound() -> None:
    error = raised(chain, 80)
    full = format_traceback(error, limit=10**9)
    text = format_traceback(error)
    assert len(full) > MAX_TRACEBACK
    assert len(text) <= MAX_TRACEBACK + 60
    first, _, rest = text.partition("\n")
    assert first == f"... ({len(full) - len(rest)} characters left out)"
    assert full.endswith(rest)
    assert rest.startswith(("  ", "Traceback", "The above", "\n", "RuntimeError"))  # a line
    assert text.endswith("RuntimeError: level 80\n")
    assert "ValueError: <script>deep</script>" in full
    assert format_traceback(error, limit=40).endswith("RuntimeError: level 80\n")


def test_an_error_that_cannot_be_formatted_still_gives_text() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    text = format_traceback(Broken())
    assert isinstance(text, str) and text  # traceback's own fallback, or ours
    assert format_traceback(trio.TooSlowError("timed out")) == "trio.TooSlowError: timed out\n"


# -- in-process letters ----------------------------------------------------------------------


async def test_an_in_process_letter_has_its_traceback() -> None:
    async with lanes.open_lane_system() as system:
        with pytest.raises(lanes.CommandFailed):
            await system.run("query", fails_with_a_cause)
        [letter] = system.dead_letters.list()
    assert letter.traceback is not None
    assert "KeyError: 'missing'" in letter.traceback
    assert letter.traceback.endswith("RuntimeError: lookup failed\n")


async def test_a_stored_letter_keeps_its_traceback_across_a_restart(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "lanes.db")
    async with lanes.open_lane_system(storage=path, commands=[Fails]) as system:
        with pytest.raises(lanes.CommandFailed):
            await system.run("query", Fails())
        [letter] = system.dead_letters.list()
    found = read_sqlite(path)
    assert found.letters is not None
    [stored] = found.letters
    assert stored.id == letter.id
    assert stored.traceback is not None
    assert "in fails_with_a_cause" in stored.traceback
    assert "KeyError: 'missing'" in stored.traceback
    assert stored.traceback.endswith("RuntimeError: lookup failed\n")
    async with lanes.open_lane_system(storage=path, commands=[Fails]) as system:
        [recovered] = system.dead_letters.list()  # the in-process console shows it
        assert recovered.traceback == stored.traceback
        console = lanes.web.console()
        sid = console.add(system)
        detail = await console.source.system(sid)
        assert detail["letters"][0]["traceback"] == stored.traceback


async def test_a_letter_stored_before_version_6_has_no_traceback(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "lanes.db"
    async with lanes.open_lane_system(storage=str(path), commands=[Fails]) as system:
        with pytest.raises(lanes.CommandFailed):
            await system.run("query", Fails())
    db = sqlite3.connect(path)  # as schema version 5 left it: no traceback column
    db.execute("ALTER TABLE dead_letters DROP COLUMN traceback")
    db.execute("PRAGMA user_version=5")
    db.commit()
    db.close()
    async with lanes.open_lane_system(storage=str(path), commands=[Fails]) as system:
        [letter] = system.dead_letters.list()
        assert letter.traceback is None
        assert letter.error == "RuntimeError('lookup failed')"
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (lanes.storage.SCHEMA_VERSION,)
    assert db.execute("SELECT traceback FROM dead_letters").fetchall() == [(None,)]
    db.close()


async def test_the_storage_console_shows_the_traceback(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "lanes.db")
    async with lanes.open_lane_system(storage=path, commands=[Fails]) as system:
        with pytest.raises(lanes.CommandFailed):
            await system.run("query", Fails())
    source = lanes.web.storage_console(path).source
    detail = await source.system("db")
    [letter] = detail["letters"]
    assert letter["traceback"].endswith("RuntimeError: lookup failed\n")
    found = read_sqlite(path)
    assert found.letters is not None
    assert found.letters[0].traceback == letter["traceback"]


# -- discard ---------------------------------------------------------------------------------


async def test_discard_removes_one_letter_and_says_whether_it_did() -> None:
    async with lanes.open_lane_system() as system:
        for _ in range(3):
            with pytest.raises(lanes.CommandFailed):
                await system.run("query", boom)
        first, second, third = (letter.id for letter in system.dead_letters.list())
        assert await system.dead_letters.discard(second) is True
        assert [letter.id for letter in system.dead_letters.list()] == [first, third]
        assert await system.dead_letters.discard(second) is False  # already gone
        assert await system.dead_letters.discard("no-such-id") is False
        assert len(system.dead_letters) == 2
        assert system.statistics().dead_letters == 2
        assert system.commands() == []  # nothing was submitted again


@pytest.mark.parametrize("bad", [None, 3, b"id", ["id"]])
async def test_discard_of_a_non_string_is_a_usage_error(bad: object) -> None:
    async with lanes.open_lane_system() as system:
        with pytest.raises(
            lanes.LaneUsageError, match=r"discard: command_id=.* expected a command"
        ):
            await system.dead_letters.discard(bad)  # type: ignore[arg-type]


async def test_discard_from_another_run_is_a_usage_error() -> None:
    async with lanes.open_lane_system() as system:
        queue = system.dead_letters

    def other() -> None:
        trio.run(queue.discard, "x")

    with pytest.raises(lanes.LaneUsageError, match=r"dead_letters\.discard"):
        await trio.to_thread.run_sync(other)


async def test_discard_is_written_to_storage(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "lanes.db")
    async with lanes.open_lane_system(storage=path, commands=[Fails]) as system:
        for _ in range(2):
            with pytest.raises(lanes.CommandFailed):
                await system.run("query", Fails())
        first, second = (letter.id for letter in system.dead_letters.list())
        assert await system.dead_letters.discard(first)
    found = read_sqlite(path)
    assert [letter.id for letter in found.letters or ()] == [second]
    assert found.commands == ()  # discarded, not requeued


async def test_discard_on_a_closed_system(tmp_path: pathlib.Path) -> None:
    async with lanes.open_lane_system() as plain:
        with pytest.raises(lanes.CommandFailed):
            await plain.run("query", boom)
        [letter] = plain.dead_letters.list()
    assert await plain.dead_letters.discard(letter.id)  # memory only: nothing to write
    assert len(plain.dead_letters) == 0

    path = str(tmp_path / "lanes.db")
    async with lanes.open_lane_system(storage=path, commands=[Fails]) as durable:
        for _ in range(2):
            with pytest.raises(lanes.CommandFailed):
                await durable.run("query", Fails())
        first, second = (letter.id for letter in durable.dead_letters.list())
    with pytest.raises(lanes.StorageError, match="closed"):
        await durable.dead_letters.discard(second)
    assert [lt.id for lt in durable.dead_letters.list()] == [first, second]  # put back
    assert await durable.dead_letters.discard("unknown") is False
    assert len(read_sqlite(path).letters or ()) == 2  # still stored


async def test_a_cancelled_discard_still_removes_the_letter(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "lanes.db")
    async with lanes.open_lane_system(storage=path, commands=[Fails]) as system:
        with pytest.raises(lanes.CommandFailed):
            await system.run("query", Fails())
        [letter] = system.dead_letters.list()
        with trio.CancelScope() as scope:
            scope.cancel()  # already cancelled when the write is handed over
            await system.dead_letters.discard(letter.id)
            await trio.lowlevel.checkpoint()
        assert scope.cancelled_caught
        assert len(system.dead_letters) == 0
    assert read_sqlite(path).letters == ()


async def test_the_console_deletes_with_discard(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = lanes.DeadLetterQueue.discard

    async def spy(self: lanes.DeadLetterQueue, command_id: str) -> bool:
        calls.append(command_id)
        return await original(self, command_id)

    monkeypatch.setattr(lanes.DeadLetterQueue, "discard", spy)
    console = lanes.web.console(token="t" * 20)
    async with lanes.open_lane_system() as system:
        sid = console.add(system)
        with pytest.raises(lanes.CommandFailed):
            await system.run("query", boom)
        [letter] = system.dead_letters.list()
        await console.source.act("delete", sid, letter.id)
        assert calls == [letter.id]
        assert len(system.dead_letters) == 0
        with pytest.raises(lanes.DeadLetterNotFound, match=f"no dead letter with id {letter.id!r}"):
            await console.source.act("delete", sid, letter.id)
