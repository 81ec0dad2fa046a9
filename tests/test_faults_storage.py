"""Storage faults: a second system on one database, bad rows in a batch, hostile payloads,
a full disk, read-only files, I/O errors under SQLite, odd rows under the CLI.

Each fault test counts what it submitted, what was acknowledged, what was lost and what ran
twice; the counts are printed (``pytest -s``) and checked: nothing acknowledged is lost.
SQLite tests use the real clock (SQLite runs in a thread, which an autojump clock would
take for idleness).
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import signal
import socket
import sqlite3
import subprocess
import sys
from typing import Any

import attrs
import pytest
import trio

import lanes
from lanes import LaneConfig, PayloadError
from lanes.__main__ import main
from lanes._codec import MAX_NESTING, CommandRegistry
from lanes._durable import Durability
from lanes.storage import (
    MemoryStorage,
    SqliteStorage,
    StoredCommand,
    StoredLetter,
    WriteBatch,
)

RAN: list[str] = []
WORK = [LaneConfig("work", 0, max_concurrency=4)]


@pytest.fixture(autouse=True)
def _clear_ran() -> None:
    RAN.clear()


@lanes.command(name="note")
@attrs.define
class Note:
    text: str

    async def execute(self) -> str:
        RAN.append(self.text)
        await trio.lowlevel.checkpoint()
        return self.text


@lanes.command(name="nested")
@attrs.define
class Nested:
    data: list[Any]

    async def execute(self) -> None:
        await trio.lowlevel.checkpoint()


@lanes.command(name="anything")
@attrs.define
class Anything:
    value: object

    async def execute(self) -> None:
        await trio.lowlevel.checkpoint()


@lanes.command(name="counter")
@attrs.define
class Counter:
    n: int

    async def execute(self) -> None:
        await trio.lowlevel.checkpoint()


def report(fault: str, rounds: int, acked: list[str], ran: list[str]) -> None:
    """Print and check the counts of a fault class: nothing acknowledged lost."""
    counts = collections.Counter(ran)
    lost = [text for text in acked if counts[text] == 0]
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    print(
        f"\n{fault}: rounds {rounds}, acknowledged {len(acked)}, lost {len(lost)}, "
        f"duplicated {duplicated}"
    )
    assert lost == []
    assert duplicated == 0


def files_size(folder: pathlib.Path) -> int:
    """Bytes of the database and its -wal / -shm files (the lock file left out)."""
    return sum(
        f.stat().st_size
        for f in folder.iterdir()
        if f.name.startswith("q.db") and f.suffix != ".lock"
    )


def stored_ids(path: pathlib.Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [row[0] for row in db.execute("SELECT id FROM commands ORDER BY seq")]
    finally:
        db.close()


# -- 1. one database, one lane system ---------------------------------------------------------


async def test_a_second_system_on_one_database_fails_at_once(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "queue.db"
    async with lanes.open_lane_system(WORK, storage=path, commands=[Note]) as system:
        with pytest.raises(lanes.StorageError) as caught:
            async with lanes.open_lane_system(WORK, storage=path, commands=[Note]):
                pytest.fail("a second system must not start")
        message = str(caught.value)
        assert repr(str(path)) in message
        assert f"pid {os.getpid()}" in message
        assert socket.gethostname() in message
        assert await system.run("work", Note("first still works")) == "first still works"
    async with lanes.open_lane_system(WORK, storage=path, commands=[Note]) as system:
        assert await system.run("work", Note("free again")) == "free again"  # released


HOLDER = """
import sys, time, trio
from lanes.storage import SqliteStorage

async def main():
    store = SqliteStorage(sys.argv[1])
    await store.open()
    print("locked", flush=True)
    time.sleep(600)

trio.run(main)
"""


def test_the_lock_names_another_process_and_dies_with_it(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "queue.db"

    async def second_open() -> None:
        async with lanes.open_lane_system(storage=path):
            pytest.fail("must not start while the child holds the database")

    async def after_kill() -> str:
        async with lanes.open_lane_system(WORK, storage=path, commands=[Note]) as system:
            return await system.run("work", Note("after kill -9"))

    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parent.parent)}
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "locked\n"
        with pytest.raises(lanes.StorageError, match=f"pid {child.pid} on host") as caught:
            trio.run(second_open)
        assert "another lane system" in str(caught.value)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    assert trio.run(after_kill) == "after kill -9"


async def test_one_storage_object_cannot_be_opened_twice(tmp_path: pathlib.Path) -> None:
    store = SqliteStorage(tmp_path / "queue.db")
    await store.open()
    try:
        with pytest.raises(lanes.StorageError, match="already open"):
            await store.open()
    finally:
        await store.close()


# -- 2. one bad row never fails its batch -----------------------------------------------------


def poison_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the row of any command whose text starts with "poison" unstorable (an integer
    wider than 64 bits), as a bug in the row's construction would."""
    real = Durability.row

    def row(self: Durability, cmd: Any, status: str, ready_at: float | None = None) -> Any:
        built = real(self, cmd, status, ready_at)
        if '"poison' in built.payload:
            built = attrs.evolve(built, attempts=2**70)
        return built

    monkeypatch.setattr(Durability, "row", row)


async def submit_all(system: lanes.LaneSystem, texts: list[str]) -> dict[str, BaseException]:
    """Submit concurrently (one group-commit batch); return the errors by text."""
    errors: dict[str, BaseException] = {}

    async def one(text: str) -> None:
        try:
            await system.submit("work", Note(text))
        except lanes.LaneError as exc:
            errors[text] = exc

    async with trio.open_nursery() as nursery:
        for text in texts:
            nursery.start_soon(one, text)
    return errors


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
async def test_an_unstorable_row_fails_alone_before_its_batch(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    poison_rows(monkeypatch)
    store: Any = SqliteStorage(tmp_path / "q.db") if kind == "sqlite" else MemoryStorage()
    texts = [f"innocent {i}" for i in range(20)]
    texts.insert(7, "poison")
    async with lanes.open_lane_system(WORK, storage=store, commands=[Note]) as system:
        system.pause("work")
        errors = await submit_all(system, texts)
        assert list(errors) == ["poison"]
        assert isinstance(errors["poison"], lanes.StorageError)
        assert "'attempts' cannot be stored" in str(errors["poison"])
        assert "64 bits" in str(errors["poison"])
        assert system.statistics().lanes["work"].submitted == 20
        system.resume("work")
    acked = [t for t in texts if t not in errors]
    report("unstorable row in a batch", 1, acked, RAN)


class PickyStorage(MemoryStorage):
    """Refuses, inside ``write``, any batch that saves a "poison" command: a row that
    passes the checks and still fails its transaction."""

    async def write(self, batch: WriteBatch) -> None:
        await trio.lowlevel.checkpoint()
        check_batch(batch)
        self.apply(batch)


class PickySqlite(SqliteStorage):
    def write_blocking(self, batch: WriteBatch) -> None:
        check_batch(batch)
        super().write_blocking(batch)


def check_batch(batch: WriteBatch) -> None:
    if any('"poison' in row.payload for row in batch.save):
        raise lanes.StorageError("the storage refuses poison")


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
async def test_a_batch_that_fails_for_one_row_writes_the_others(
    tmp_path: pathlib.Path, kind: str
) -> None:
    store: Any = PickySqlite(tmp_path / "q.db") if kind == "sqlite" else PickyStorage()
    texts = [f"innocent {i}" for i in range(30)]
    texts[5:5] = ["poison a"]
    texts[20:20] = ["poison b"]
    async with lanes.open_lane_system(WORK, storage=store, commands=[Note]) as system:
        system.pause("work")
        errors = await submit_all(system, texts)
        assert sorted(errors) == ["poison a", "poison b"]
        assert all("refuses poison" in str(e) for e in errors.values())
        assert system.statistics().lanes["work"].submitted == 30
        system.resume("work")
    acked = [t for t in texts if t not in errors]
    report("row failing inside its batch", 1, acked, RAN)


async def test_a_lone_surrogate_in_a_payload_is_stored_escaped(tmp_path: pathlib.Path) -> None:
    # JSON escapes it (\ud800), so the payload is valid text and rebuilds exactly.
    path = tmp_path / "q.db"
    texts = ["lone \ud800 surrogate", *(f"innocent {i}" for i in range(10))]
    with pytest.raises(KeyError):
        async with lanes.open_lane_system(WORK, storage=path, commands=[Note]) as system:
            system.pause("work")
            assert await submit_all(system, texts) == {}
            raise KeyError("crash")
    async with lanes.open_lane_system(WORK, storage=path, commands=[Note]) as system:
        assert len(system.recovered) == 11
    assert sorted(RAN) == sorted(texts)


async def test_a_dead_letter_whose_error_is_not_unicode_is_stored_escaped(
    tmp_path: pathlib.Path,
) -> None:
    # The system writes repr(error), which escapes surrogates; a storage of one's own or a
    # future change might not: the journal escapes what SQLite could not store.
    path = tmp_path / "q.db"
    async with lanes.open_lane_system(WORK, storage=path, commands=[Note]) as system:
        durable = system._core.durable
        assert durable is not None
        letter = StoredLetter("l1", 1, "work", "note", "{}", None, "lone \udc80", 1, 0.0, None)
        durable.journal.save_letter(letter)
        await durable.journal.commit()
        assert await system.run("work", Note("after")) == "after"
    async with lanes.open_lane_system(WORK, storage=path, commands=[Note]) as system:
        (kept,) = system.dead_letters.list()
        assert kept.error == "lone \\udc80"


def test_a_command_name_that_cannot_be_stored_is_refused() -> None:
    with pytest.raises(lanes.LaneConfigError, match="valid Unicode"):

        @lanes.command(name="bad \ud800 name")
        @attrs.define
        class Bad:
            async def execute(self) -> None:
                return None


# -- 3. hostile payloads: refused at submit, nothing stored -----------------------------------


def deep(levels: int) -> list[Any]:
    data: list[Any] = []
    for _ in range(levels - 1):
        data = [data]
    return data


async def refused(
    system: lanes.LaneSystem, store: MemoryStorage, command: object, match: str
) -> PayloadError:
    writes = store.writes
    with pytest.raises(PayloadError, match=match) as caught:
        await system.submit("work", command)
    assert isinstance(caught.value, lanes.LaneUsageError)
    assert isinstance(caught.value, lanes.NotDurableError)
    assert store.commands == {}
    assert store.writes == writes  # nothing was even written
    assert system.statistics().lanes["work"].submitted == 0
    return caught.value


def test_payload_error_is_a_public_lane_error() -> None:
    """``lanes.PayloadError`` is exported, lives with the other errors and is what
    the registry raises for a value JSON cannot carry back."""
    assert "PayloadError" in lanes.__all__
    assert lanes.PayloadError.__module__ == "lanes._errors"
    assert issubclass(lanes.PayloadError, lanes.NotDurableError)
    assert issubclass(lanes.PayloadError, lanes.LaneUsageError)
    registry = CommandRegistry([Nested])
    with pytest.raises(lanes.PayloadError, match="levels"):
        registry.encode(Nested(deep(MAX_NESTING + 5)))


async def test_a_deeply_nested_payload_names_the_limit(autojump_clock: trio.abc.Clock) -> None:
    store = MemoryStorage()
    async with lanes.open_lane_system(WORK, storage=store, commands=[Nested]) as system:
        limit = f"limit of {MAX_NESTING} levels"
        await refused(system, store, Nested(deep(100_000)), limit)
        await refused(system, store, Nested(deep(MAX_NESTING + 1)), limit)
        await system.run("work", Nested(deep(MAX_NESTING - 1)))  # within the limit


async def test_a_field_that_cannot_be_rebuilt_is_refused_at_first_submit(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = MemoryStorage()
    async with lanes.open_lane_system(WORK, storage=store, commands=[Anything]) as system:
        error = await refused(system, store, Anything(5), "field 'value' has type")
        assert "object" in str(error)


async def test_a_value_of_the_wrong_type_is_refused(autojump_clock: trio.abc.Clock) -> None:
    store = MemoryStorage()
    async with lanes.open_lane_system(WORK, storage=store, commands=[Counter, Note]) as system:
        await refused(system, store, Counter("three"), "cannot be rebuilt|not rebuilt")  # type: ignore[arg-type]
        await refused(system, store, Note({1, 2}), "cannot be stored as JSON")  # type: ignore[arg-type]
        await system.run("work", Counter(3))


async def test_the_payload_cap_names_the_size_and_the_cap(autojump_clock: trio.abc.Clock) -> None:
    store = MemoryStorage()
    async with lanes.open_lane_system(WORK, storage=store, commands=[Note]) as system:
        error = await refused(system, store, Note("x" * 2_000_000), "above the cap")
        assert "at least 2,000,004 bytes" in str(error)  # known before it is encoded
        assert "1,048,576" in str(error)
        assert "max_payload_bytes" in str(error)
        assert await system.run("work", Note("x" * 1_000_000)) == "x" * 1_000_000
    store = MemoryStorage()
    config: dict[str, Any] = {"storage": store, "commands": [Note], "max_payload_bytes": 100}
    async with lanes.open_lane_system(WORK, **config) as system:
        await refused(system, store, Note("y" * 100), "at least 104 bytes, above the cap of 100")
        assert await system.run("work", Note("small")) == "small"


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "1MB"])
def test_a_bad_payload_cap_is_a_config_error(bad: object) -> None:
    with pytest.raises(lanes.LaneConfigError, match="max_payload_bytes"):
        lanes.open_lane_system(max_payload_bytes=bad)  # type: ignore[arg-type]


# -- 4. a full disk ---------------------------------------------------------------------------


async def test_a_full_disk_says_so_keeps_what_was_accepted_and_recovers(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "q.db"
    store = SqliteStorage(path)
    acked: list[str] = []
    rounds = 3
    async with lanes.open_lane_system(WORK, storage=store, commands=[Note]) as system:
        system.pause("work")
        for round_ in range(rounds):
            in_use = await store.set_max_pages(1)  # SQLite keeps it at the pages in use
            await store.set_max_pages(in_use + 20)  # room for a few dozen commands
            failed = None
            for i in range(1000):
                text = f"r{round_} #{i} " + "x" * 2000
                try:
                    handle = await system.submit("work", Note(text))
                except lanes.StorageError as exc:
                    failed = exc
                    break
                acked.append(text)
                assert handle.status == "pending"
            assert failed is not None, "the storage never filled"
            message = str(failed)
            assert "storage is full" in message
            assert "cannot rollback" not in message
            assert "everything accepted before is kept" in message
            assert len(stored_ids(path)) == len(acked)  # the failed one is not half-stored
            assert system.statistics().lanes["work"].submitted == len(acked)
            await store.set_max_pages(1_000_000)  # space is back
            text = f"r{round_} after"
            await system.submit("work", Note(text))
            acked.append(text)
        system.resume("work")
    assert stored_ids(path) == []
    report("storage full", rounds, acked, RAN)


async def test_a_full_disk_during_recovery_and_background_writes_loses_nothing(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "q.db"
    acked: list[str] = []
    with pytest.raises(KeyError):
        async with lanes.open_lane_system(WORK, storage=path, commands=[Note]) as system:
            system.pause("work")
            for i in range(20):
                await system.submit("work", Note(f"kept {i}"))
                acked.append(f"kept {i}")
            raise KeyError("crash")
    store = SqliteStorage(path, max_pages=1)  # full from the start: starts fail to write
    async with lanes.open_lane_system(WORK, storage=store, commands=[Note]) as system:
        await trio.sleep(0.05)
        await store.set_max_pages(1_000_000)
    assert sorted(RAN) == sorted(acked)
    assert stored_ids(path) == []
    report("storage full at restart", 1, acked, RAN)


# -- 5. read-only files and folders -----------------------------------------------------------

ROOT = os.geteuid() == 0


@pytest.mark.skipif(ROOT, reason="root writes through chmod; see the os.access test below")
async def test_a_read_only_database_file_is_refused_at_open(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "q.db"
    async with lanes.open_lane_system(storage=path):
        pass
    path.chmod(0o400)
    with pytest.raises(lanes.StorageError, match="database file is read-only"):
        async with lanes.open_lane_system(storage=path):
            pytest.fail("must not start")


@pytest.mark.skipif(ROOT, reason="root writes through chmod; see the os.access test below")
async def test_a_read_only_folder_is_refused_at_open(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(lanes.StorageError, match="is read-only; SQLite writes"):
            async with lanes.open_lane_system(storage=folder / "q.db"):
                pytest.fail("must not start")
    finally:
        folder.chmod(0o700)


async def test_read_only_rights_are_read_as_the_os_reports_them(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Works as root too: os.access answers for the caller (a read-only mount stops root),
    # here simulated for the file and then for its folder.
    path = tmp_path / "q.db"
    async with lanes.open_lane_system(storage=path):
        pass
    real = os.access
    denied: list[pathlib.Path] = [path]

    def access(target: Any, mode: int, **kwargs: Any) -> bool:
        if pathlib.Path(target) in denied and mode & os.W_OK:
            return False
        return real(target, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(lanes.StorageError, match="database file is read-only"):
        async with lanes.open_lane_system(storage=path):
            pytest.fail("must not start")
    denied[:] = [tmp_path]
    with pytest.raises(lanes.StorageError, match=f"folder {str(tmp_path)!r} is read-only"):
        async with lanes.open_lane_system(storage=tmp_path / "new.db"):
            pytest.fail("must not start")
    assert not (tmp_path / "new.db").exists()


# -- 6. I/O errors under the storage layer ----------------------------------------------------


class FlakyConnection:
    """Wraps a sqlite3 connection; while ``broken``, every COMMIT raises an I/O error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.broken = False
        self.faults = 0

    def execute(self, sql: str, *args: Any) -> Any:
        if self.broken and sql == "COMMIT":
            self.faults += 1
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def close(self) -> None:
        self.db.close()


async def test_io_errors_under_sqlite_fail_only_the_writes_they_hit(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "q.db"
    store = SqliteStorage(path)
    acked: list[str] = []
    rounds = 5
    async with lanes.open_lane_system(WORK, storage=store, commands=[Note]) as system:
        assert store._db is not None
        flaky = FlakyConnection(store._db)
        store._db = flaky  # type: ignore[assignment]
        for round_ in range(rounds):
            for i in range(10):  # accepted, and some run meanwhile
                await system.submit("work", Note(f"r{round_} ok {i}"))
                acked.append(f"r{round_} ok {i}")
            flaky.broken = True
            errors = await submit_all(system, [f"r{round_} during {i}" for i in range(5)])
            assert len(errors) == 5
            assert all(isinstance(e, lanes.StorageError) for e in errors.values())
            assert all("disk I/O error" in str(e) for e in errors.values())
            flaky.broken = False  # the fault clears
            await system.submit("work", Note(f"r{round_} after"))
            acked.append(f"r{round_} after")
        assert flaky.faults >= rounds * 5
    failed = [t for t in RAN if "during" in t]
    assert failed == []  # a submit that failed never ran
    assert stored_ids(path) == []
    report("I/O errors under SQLite", rounds, acked, RAN)


# -- 7. the CLI on odd but valid rows ---------------------------------------------------------


def fill(path: pathlib.Path, batch: WriteBatch) -> None:
    async def write() -> None:
        store = SqliteStorage(path)
        await store.open()
        await store.write(batch)
        await store.close()

    trio.run(write)


ODD = ["", "nul \x00 inside", "new\nline", "tab\tand 🚀 中文", "x" * 100_000, "'; --", "\ud800"]


def test_the_cli_reads_odd_rows_without_crashing(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "odd.db"
    texts = [text.encode("utf-8", "backslashreplace").decode() for text in ODD]
    commands = tuple(
        StoredCommand(
            f"c{i}", i, text, text, json.dumps(text), text, "pending", 2**62, None, None, 0.0
        )
        for i, text in enumerate(texts)
    )
    letters = tuple(
        StoredLetter(f"l{i}", 100 + i, text, text, json.dumps(text), text, text, 0, 0.0, 1e-9)
        for i, text in enumerate(texts)
    )
    fill(path, WriteBatch(save=commands, save_letters=letters))
    assert main(["inspect", str(path)]) == 0
    assert main(["dead-letters", str(path)]) == 0
    assert main(["dead-letters", str(path), "--requeue", "l1"]) == 0
    out = capsys.readouterr().out
    assert "7 unfinished command(s), 7 dead letter(s)" in out


def test_the_cli_reads_a_letter_with_an_extreme_timestamp(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "odd.db"
    letter = StoredLetter("l0", 1, "work", "note", "{}", None, "boom", 1, -1e300, None)
    fill(path, WriteBatch(save_letters=(letter,)))
    assert main(["dead-letters", str(path)]) == 0
    assert "-1e+300 (not a representable time)" in capsys.readouterr().out


# -- 8. big payloads: off the event loop, and their space given back --------------------------


def test_a_long_text_is_encoded_in_slices_exactly() -> None:
    from lanes._codec import _SLICE, DEFERRED, OFF_LOOP_BYTES, CommandRegistry

    registry = CommandRegistry([Note], max_payload_bytes=1 << 30)
    # Non-ASCII, a non-BMP character, a lone surrogate, quotes and controls on the cuts.
    unit = 'aé🚀"\\\n\ud800\x00'
    text = (unit * (3 * _SLICE // len(unit) + 7))[: 3 * _SLICE + 5]
    assert len(text) > OFF_LOOP_BYTES
    assert registry.submit_payload(Note(text)) == DEFERRED
    payload = registry.encode(Note(text))[1]
    assert payload == json.dumps({"text": text})
    assert registry.decode("note", payload) == Note(text)
    assert registry.submit_payload(Note("short")) == json.dumps({"text": "short"})


async def test_a_big_command_is_stored_and_rebuilt_exactly(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "q.db"
    text = "big é🚀 " * 200_000  # 1.6 M characters: encoded off the event loop
    options: dict[str, Any] = {"storage": path, "commands": [Note], "max_payload_bytes": 1 << 24}
    with pytest.raises(KeyError):
        async with lanes.open_lane_system(WORK, **options) as system:
            system.pause("work")
            await system.submit("work", Note(text), key="big")
            raise KeyError("crash")
    async with lanes.open_lane_system(WORK, **options) as system:
        (handle,) = system.recovered
        assert await handle.result() == text


async def test_the_space_of_finished_big_commands_is_given_back(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "q.db"
    async with lanes.open_lane_system(WORK, storage=path, commands=[Note]) as system:
        system.pause("work")
        for i in range(4):
            await system.submit("work", Note(f"{i}" + "x" * 900_000))
        system.resume("work")
    assert len(RAN) == 4
    assert stored_ids(path) == []
    size = files_size(tmp_path)
    print(f"\nfiles after 4 x 0.9 MB commands: {size / 1e6:.2f} MB")
    assert size < 500_000  # without the reclaim: about 3.6 MB


async def test_an_older_database_is_switched_to_incremental_vacuum(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "q.db"
    options: dict[str, Any] = {"storage": path, "commands": [Note], "drain_timeout": 0}
    async with lanes.open_lane_system(WORK, **options) as system:
        system.pause("work")
        await system.submit("work", Note("kept"))
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("PRAGMA auto_vacuum=NONE")
    db.execute("VACUUM")  # as a database written by an older release
    assert db.execute("PRAGMA auto_vacuum").fetchone() == (0,)
    db.close()
    async with lanes.open_lane_system(WORK, storage=path, commands=[Note]) as system:
        assert len(system.recovered) == 1
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()
    assert RAN == ["kept"]


@lanes.command(name="big-counter")
@attrs.define
class BigCounter:
    text: str
    n: int

    async def execute(self) -> int:
        await trio.lowlevel.checkpoint()
        return self.n


async def test_a_big_command_refused_off_the_loop_leaves_nothing_behind(
    tmp_path: pathlib.Path,
) -> None:
    config = [LaneConfig("work", 0, inbox_size=1)]
    path = tmp_path / "q.db"
    async with lanes.open_lane_system(config, storage=path, commands=[BigCounter]) as system:
        big = "x" * 300_000  # above OFF_LOOP_BYTES: encoded in a thread
        with pytest.raises(PayloadError, match="not rebuilt"):
            await system.submit("work", BigCounter(big, "three"), key="k")  # type: ignore[arg-type]
        assert stored_ids(path) == []
        assert system.statistics().lanes["work"].submitted == 0
        # The inbox place and the key were given back.
        assert await system.run("work", BigCounter(big, 3), key="k") == 3
