"""SqliteStorage's writes: any text round-trips, batches are atomic, bad values are errors."""

from __future__ import annotations

import pathlib
import sqlite3
from typing import Any

import pytest

from lanes import StorageError
from lanes.storage import (
    SqliteStorage,
    StoredCommand,
    StoredLetter,
    StoredSchedule,
    WriteBatch,
)

HOSTILE = [
    "plain",
    "it's",
    "'); DROP TABLE commands; --",
    'quote " and back\\slash',
    "nul \x00 inside",
    "newline\nand\ttab",
    "émoji 🚀 and 中文",
    "",
]


def command(i: int, text: str = "x", **changes: Any) -> StoredCommand:
    fields: dict[str, Any] = {
        "id": f"id-{i}",
        "seq": i,
        "lane": "query",
        "type": "job",
        "payload": '{"text": "' + text + '"}',
        "key": None,
        "status": "pending",
        "attempts": 0,
        "ready_at": None,
        "timeout": None,
        "submitted_at": 1_700_000_000.25,
    }
    fields.update(changes)
    return StoredCommand(**fields)


def batch(**parts: Any) -> WriteBatch:
    empty: dict[str, tuple[Any, ...]] = {
        "save": (),
        "delete": (),
        "save_letters": (),
        "delete_letters": (),
        "save_schedules": (),
        "delete_schedules": (),
    }
    empty.update(parts)
    return WriteBatch(**empty)


def letter(i: int, error: str) -> StoredLetter:
    return StoredLetter(f"dl-{i}", i, "query", "job", "{}", None, error, 3, 1.5e9, 2.0)


def schedule(key: str, paused: bool) -> StoredSchedule:
    return StoredSchedule(
        key,
        "query",
        "job",
        "{}",
        60.0,
        None,
        None,
        0.5,
        "skip",
        10,
        "queue",
        1e9,
        paused,
        None,
        None,
    )


@pytest.fixture
async def storage(tmp_path: pathlib.Path) -> Any:
    store = SqliteStorage(tmp_path / "queue.db")
    await store.open()
    yield store
    await store.close()


async def test_any_text_round_trips_and_injects_nothing(storage: SqliteStorage) -> None:
    saved = tuple(
        command(i, key=text, lane=text, type=text, payload=text, status="running", attempts=i)
        for i, text in enumerate(HOSTILE)
    )
    letters = tuple(letter(i, text) for i, text in enumerate(HOSTILE))
    schedules = (schedule(HOSTILE[2], True), schedule(HOSTILE[4], False))
    await storage.write(batch(save=saved, save_letters=letters, save_schedules=schedules))
    recovered = await storage.recover()
    assert recovered.commands == saved
    assert recovered.letters == letters
    assert sorted(recovered.schedules, key=lambda s: s.key) == sorted(
        schedules, key=lambda s: s.key
    )


async def test_numbers_round_trip_exactly(storage: SqliteStorage) -> None:
    rows = (
        command(1, ready_at=1_732_345_678.123456, timeout=1e-05, submitted_at=0.1 + 0.2),
        command(2, ready_at=-0.0, timeout=123456789.0, attempts=2**40),
    )
    await storage.write(batch(save=rows))
    assert (await storage.recover()).commands == rows


async def test_saves_and_deletes_in_one_batch(storage: SqliteStorage) -> None:
    await storage.write(batch(save=(command(1), command(2))))
    # replace 2, delete 1 and an id that was never stored, add 3
    await storage.write(
        batch(save=(command(2, status="running"), command(3)), delete=("id-1", "id-9"))
    )
    stored = (await storage.recover()).commands
    assert [(row.id, row.status) for row in stored] == [("id-2", "running"), ("id-3", "pending")]


async def test_a_failing_statement_rolls_the_whole_batch_back(
    storage: SqliteStorage, tmp_path: pathlib.Path
) -> None:
    other = sqlite3.connect(tmp_path / "queue.db", isolation_level=None)
    other.execute("DROP TABLE schedules")  # the batch's last statement will fail
    other.close()
    with pytest.raises(StorageError, match="no such table: schedules"):
        await storage.write(batch(save=(command(1),), save_schedules=(schedule("s", False),)))
    assert storage._db is not None
    assert not storage._db.in_transaction
    await storage.write(batch(save=(command(2),)))  # the storage carries on
    db = sqlite3.connect(tmp_path / "queue.db")
    assert db.execute("SELECT id FROM commands").fetchall() == [("id-2",)]
    db.close()


@pytest.mark.parametrize(
    ("field", "bad"), [("key", "lone \ud800 surrogate"), ("attempts", 2**70), ("payload", object())]
)
async def test_a_value_sqlite_cannot_store_is_a_storage_error(
    storage: SqliteStorage, field: str, bad: object
) -> None:
    with pytest.raises(StorageError, match="write failed"):
        await storage.write(batch(save=(command(1), command(2, **{field: bad}))))
    assert (await storage.recover()).commands == ()  # nothing of that batch was written
