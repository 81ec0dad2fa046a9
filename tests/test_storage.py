"""Durable storage: group commit, recovery, dead letters across restarts, bad input."""

from __future__ import annotations

import json
import os
import pathlib
import sqlite3
import stat
import threading

import attrs
import pytest
import trio
import trio.testing

import lanes
from lanes import LaneConfig
from lanes._journal import Journal
from lanes.storage import MemoryStorage, SqliteStorage, Storage, WriteBatch

from .helpers import noop

RAN: list[str] = []
FAST: list[bool] = []  # set to make every Job skip its sleep


@lanes.command(name="job")
@attrs.define
class Job:
    name: str
    seconds: float = 1.0
    fail: bool = False

    async def execute(self) -> str:
        await trio.sleep(0 if FAST else self.seconds)
        if self.fail:
            raise RuntimeError(f"{self.name} failed")
        RAN.append(self.name)
        return self.name


@lanes.command(name="unlisted")
@attrs.define
class Unlisted:
    async def execute(self) -> None:
        return None


ONE = [LaneConfig("work", 0, max_concurrency=1)]


@pytest.fixture(autouse=True)
def _clear_ran() -> None:
    RAN.clear()
    FAST.clear()


def memory() -> MemoryStorage:
    return MemoryStorage(clock=trio.current_time)


async def test_submit_returns_once_the_command_is_stored(autojump_clock: trio.abc.Clock) -> None:
    store = memory()
    async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
        system.pause("work")
        handle = await system.submit("work", Job("a"))
        assert list(store.commands) == [handle.id]
        row = store.commands[handle.id]
        assert (row.lane, row.type, row.status, row.attempts) == ("work", "job", "pending", 0)
        assert '"name":"a"' in row.payload.replace(" ", "")
        system.resume("work")
        assert await handle.result() == "a"
    assert store.commands == {}


async def test_group_commit_batches_concurrent_submits(autojump_clock: trio.abc.Clock) -> None:
    store = memory()
    async with lanes.open_lane_system(storage=store, commands=[Job]) as system:
        system.pause("query")
        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(system.submit, "query", Job(str(i)))
        assert len(store.commands) == 100
        assert store.writes < 10  # 100 submits in a handful of transactions
        system.resume("query")


async def test_restart_requeues_pending_in_order_and_reruns_running(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = memory()
    with pytest.raises(KeyError):
        async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
            for name in "abcd":
                await system.submit("work", Job(name, seconds=10))
            await trio.sleep(1)  # "a" is running
            raise KeyError("crash")
    statuses = [
        (json.loads(row.payload)["name"], row.status, row.attempts)
        for row in sorted(store.commands.values(), key=lambda r: r.seq)
    ]
    assert statuses == [
        ("a", "running", 1),
        ("b", "pending", 0),
        ("c", "pending", 0),
        ("d", "pending", 0),
    ]
    async with lanes.open_lane_system(
        ONE, storage=store, commands=[Job], drain_timeout=None
    ) as system:
        assert len(system.recovered) == 4
        first = system.recovered[0]
        assert await first.result() == "a"
        assert first.attempts == 2  # the interrupted attempt is counted
    assert RAN == ["a", "b", "c", "d"]
    assert store.commands == {}


async def test_sqlite_restart(tmp_path: pathlib.Path) -> None:
    # The real clock: SQLite runs in a thread, which an autojump clock would take for idleness.
    path = tmp_path / "queue.db"
    with pytest.raises(KeyError):
        async with lanes.open_lane_system(ONE, storage=path, commands=[Job]) as system:
            await system.submit("work", Job("x", seconds=100))
            await system.submit("work", Job("y", seconds=100))
            await trio.sleep(0.2)
            raise KeyError("crash")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    db = sqlite3.connect(path)
    rows = db.execute("SELECT status, attempts FROM commands ORDER BY seq").fetchall()
    assert rows == [("running", 1), ("pending", 0)]
    FAST.append(True)
    async with lanes.open_lane_system(ONE, storage=str(path), commands=[Job]) as system:
        assert [await h.result() for h in system.recovered] == ["x", "y"]
    assert db.execute("SELECT count(*) FROM commands").fetchone() == (0,)


async def test_drain_timeout_keeps_unfinished_commands_stored(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = memory()
    async with lanes.open_lane_system(ONE, storage=store, commands=[Job], drain_timeout=2) as sys:
        done = await sys.submit("work", Job("quick", seconds=1))
        slow = await sys.submit("work", Job("slow", seconds=100))
        cancelled = await sys.submit("work", Job("cancelled", seconds=1))
        cancelled.cancel()  # a user's cancellation is final: not kept
    assert done.status == "done"
    assert slow.status == "cancelled"
    assert [row.id for row in store.commands.values()] == [slow.id]
    async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
        assert [h.id for h in system.recovered] == [slow.id]


async def test_dead_letters_survive_restarts_and_can_be_requeued(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = memory()
    config = [LaneConfig("work", 0, retry=lanes.RetryPolicy.fixed(1, 1))]
    async with lanes.open_lane_system(config, storage=store, commands=[Job]) as system:
        with pytest.raises(lanes.CommandFailed):
            await system.run("work", Job("bad", fail=True))
    assert store.commands == {}
    assert len(store.letters) == 1
    async with lanes.open_lane_system(config, storage=store, commands=[Job]) as system:
        letters = system.dead_letters.list()
        assert len(letters) == 1
        assert (letters[0].lane, letters[0].command_type, letters[0].attempts) == ("work", "job", 2)
        assert "bad failed" in letters[0].error
        handle = await system.dead_letters.requeue(letters[0].id)
        assert store.letters == {}
        with pytest.raises(lanes.CommandFailed):
            await handle.result()
        assert await system.dead_letters.clear() == 1
    assert store.letters == {}


async def test_unknown_type_at_recovery_goes_to_the_dead_letter_queue(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = memory()
    with pytest.raises(KeyError):
        async with lanes.open_lane_system(storage=store, commands=[Job]) as system:
            await system.submit("query", Job("orphan", seconds=5))
            raise KeyError("crash")
    async with lanes.open_lane_system(storage=store, commands=[]) as system:
        assert system.recovered == ()
        (letter,) = system.dead_letters.list()
        assert "stored command type 'job' is unknown" in letter.error
        assert "commands=[...]" in letter.error
    assert store.commands == {}
    assert len(store.letters) == 1  # never dropped


async def test_idempotency_key_across_restarts(autojump_clock: trio.abc.Clock) -> None:
    store = memory()
    with pytest.raises(KeyError):
        async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
            await system.submit("work", Job("once", seconds=5), key="k1")
            raise KeyError("crash")
    async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
        again = await system.submit("work", Job("twice"), key="k1")
        assert again is system.recovered[0]
        assert await again.result() == "once"
    assert RAN == ["once"]


async def test_delay_across_restarts(autojump_clock: trio.abc.Clock) -> None:
    store = memory()
    start = trio.current_time()
    with pytest.raises(KeyError):
        async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
            await system.submit("work", Job("later", seconds=0), delay=30)
            await trio.sleep(10)
            raise KeyError("crash")
    await trio.sleep(5)  # the process is "down" for 5 s
    async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
        await system.recovered[0].result()
    assert trio.current_time() - start == pytest.approx(30)


async def test_durability_rules_at_submit(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(storage=memory(), commands=[Job]) as system:
        with pytest.raises(lanes.NotDurableError, match="durable=False"):
            await system.submit("query", noop)
        assert await system.run("query", noop, durable=False) == 1
        with pytest.raises(lanes.NotDurableError, match="not listed"):
            await system.submit("query", Unlisted())
        with pytest.raises(lanes.LaneUsageError, match="submit_nowait cannot wait"):
            system.submit_nowait("query", Job("x"))
        with pytest.raises(lanes.LaneConfigError, match="durable='yes'"):
            await system.submit("query", Job("x"), durable="yes")  # type: ignore[arg-type]
        assert await system.run("query", Job("ok", seconds=0)) == "ok"
    async with lanes.open_lane_system() as system:
        with pytest.raises(lanes.LaneConfigError, match="durable=True needs a storage"):
            await system.submit("query", Job("x"), durable=True)
        assert await system.run("query", Job("memory", seconds=0)) == "memory"


async def test_bad_storage_arguments() -> None:
    with pytest.raises(lanes.LaneConfigError, match="storage=42"):
        lanes.open_lane_system(storage=42)  # type: ignore[arg-type]
    with pytest.raises(lanes.LaneConfigError, match=r"not a @lanes\.command class"):
        lanes.open_lane_system(commands=[int])
    with pytest.raises(lanes.LaneConfigError, match="commands='Job'"):
        lanes.open_lane_system(commands="Job")  # type: ignore[arg-type]


async def test_missing_directory_is_a_storage_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nope" / "queue.db"
    with pytest.raises(lanes.StorageError, match="does not exist"):
        async with lanes.open_lane_system(storage=path):
            pytest.fail("must not start")
    assert not path.parent.exists()


async def test_a_file_that_is_not_ours_is_never_touched(tmp_path: pathlib.Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("my precious notes\n")
    with pytest.raises(lanes.StorageError, match="not a SQLite database"):
        async with lanes.open_lane_system(storage=text):
            pytest.fail("must not start")
    assert text.read_text() == "my precious notes\n"
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    before = other.read_bytes()
    with pytest.raises(lanes.StorageError, match="another application"):
        async with lanes.open_lane_system(storage=other):
            pytest.fail("must not start")
    assert other.read_bytes() == before


async def test_a_newer_schema_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "queue.db"
    async with lanes.open_lane_system(storage=path):
        pass
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(lanes.StorageError, match="schema version 99 is newer"):
        async with lanes.open_lane_system(storage=path):
            pytest.fail("must not start")


class FailingStorage(MemoryStorage):
    """Fails writes while ``broken`` is set."""

    broken = False

    async def write(self, batch: WriteBatch) -> None:
        if self.broken:
            await trio.lowlevel.checkpoint()
            raise lanes.StorageError("disk on fire")
        await super().write(batch)


async def test_storage_error_during_submit(autojump_clock: trio.abc.Clock) -> None:
    store = FailingStorage(clock=trio.current_time)
    assert isinstance(store, Storage)
    config = [LaneConfig("work", 0, inbox_size=1)]
    async with lanes.open_lane_system(config, storage=store, commands=[Job]) as system:
        store.broken = True
        with pytest.raises(lanes.StorageError, match="disk on fire"):
            await system.submit("work", Job("lost"))
        stats = system.statistics()
        assert (stats.pending, stats.lanes["work"].submitted) == (0, 0)
        store.broken = False
        # The inbox place was given back and the system works.
        assert await system.run("work", Job("fine", seconds=0)) == "fine"
    assert RAN == ["fine"]


async def test_full_disk_is_a_storage_error(
    autojump_clock: trio.abc.Clock, tmp_path: pathlib.Path
) -> None:
    store = SqliteStorage(tmp_path / "small.db", clock=trio.current_time, max_pages=8)
    async with lanes.open_lane_system(storage=store, commands=[Job]) as system:
        system.pause("query")
        with pytest.raises(lanes.StorageError, match="full"):
            for i in range(1000):
                await system.submit("query", Job("x" * 500 + str(i)))
        accepted = system.statistics().lanes["query"].submitted
        assert 0 < accepted < 1000
        system.resume("query")
    assert len(RAN) == accepted


async def test_cancelled_submit_with_storage_is_all_or_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    store = memory()
    async with lanes.open_lane_system(ONE, storage=store, commands=[Job]) as system:
        system.pause("work")
        with trio.CancelScope() as scope:
            scope.cancel()
            await system.submit("work", Job("never"))
        assert store.commands == {}
        assert system.statistics().lanes["work"].submitted == 0
        system.resume("work")


# -- review findings: what a path may be ------------------------------------------------------


async def test_a_directory_is_a_storage_error_naming_it(tmp_path: pathlib.Path) -> None:
    # Was a raw IsADirectoryError: the header check ran outside the error mapping.
    with pytest.raises(lanes.StorageError, match="is a directory") as caught:
        async with lanes.open_lane_system(storage=tmp_path):
            pytest.fail("must not start")
    message = str(caught.value)
    assert repr(str(tmp_path)) in message
    assert repr(str(tmp_path / "lanes.db")) in message  # what to pass instead
    assert os.listdir(tmp_path) == []  # nothing created in it


async def test_an_empty_file_becomes_a_new_database(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "touched.db"
    path.touch()
    async with lanes.open_lane_system(storage=path, commands=[Job], drain_timeout=0) as system:
        system.pause("query")
        await system.submit("query", Job("kept"))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA application_id").fetchone() == (0x4C414E45,)
    assert db.execute("PRAGMA user_version").fetchone() == (lanes.storage.SCHEMA_VERSION,)
    assert db.execute("SELECT count(*) FROM commands").fetchone() == (1,)
    db.close()


@pytest.mark.parametrize(
    "content",
    [b"SQL", b"not a database at all, just text\n", b"SQLite format 3\x00" + b"\xff" * 200],
    ids=["short", "text", "sqlite-header-then-garbage"],
)
async def test_a_non_empty_file_that_is_not_a_database_is_refused(
    tmp_path: pathlib.Path, content: bytes
) -> None:
    path = tmp_path / "queue.db"
    path.write_bytes(content)
    with pytest.raises(lanes.StorageError) as caught:
        async with lanes.open_lane_system(storage=path):
            pytest.fail("must not start")
    assert repr(str(path)) in str(caught.value)
    assert path.read_bytes() == content  # never touched


# -- the writer -----------------------------------------------------------------


class RecordingSqlite(SqliteStorage):
    """Records each batch the journal commits (in a worker thread); optionally holds it."""

    def __init__(self, path: pathlib.Path) -> None:
        super().__init__(path)
        self.batches: list[WriteBatch] = []
        self.written = threading.Event()  # set after every batch
        self.entered = threading.Event()  # set when a write begins
        self.gate = threading.Event()  # a write waits for it
        self.gate.set()
        self.fail_next: Exception | None = None

    def write_blocking(self, batch: WriteBatch) -> None:
        self.entered.set()
        assert self.gate.wait(30)
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        super().write_blocking(batch)
        self.batches.append(batch)
        self.written.set()


async def wait_for(event: threading.Event) -> None:
    assert await trio.to_thread.run_sync(event.wait, 30), "the write did not report"
    event.clear()


async def test_sqlite_group_commit_writes_concurrent_submits_together(
    tmp_path: pathlib.Path,
) -> None:
    store = RecordingSqlite(tmp_path / "queue.db")
    async with lanes.open_lane_system(storage=store, commands=[Job], drain_timeout=0) as system:
        system.pause("query")
        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(system.submit, "query", Job(str(i)))
        saved = [row for batch in store.batches for row in batch.save]
        assert len(saved) == 100
        assert len(store.batches) < 50  # concurrent submits share transactions


async def test_background_changes_ride_with_the_next_commit(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lanes._journal, "BACKGROUND_DELAY", 3600.0)
    FAST.append(True)
    store = RecordingSqlite(tmp_path / "queue.db")
    async with lanes.open_lane_system(
        ONE, storage=store, commands=[Job], drain_timeout=0
    ) as system:
        first = await system.submit("work", Job("a"))
        assert await first.result() == "a"  # its start and completion are not written yet
        assert [[row.id for row in batch.save] for batch in store.batches] == [[first.id]]
        system.pause("work")
        second = await system.submit("work", Job("b"))
        assert [row.id for row in store.batches[1].save] == [second.id]
        assert store.batches[1].delete == (first.id,)  # carried by the commit
        assert len(store.batches) == 2


async def test_background_changes_alone_are_written_after_the_delay(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lanes._journal, "BACKGROUND_DELAY", 0.05)
    FAST.append(True)
    store = RecordingSqlite(tmp_path / "queue.db")
    async with lanes.open_lane_system(
        ONE, storage=store, commands=[Job], drain_timeout=0
    ) as system:
        handle = await system.submit("work", Job("a"))
        store.written.clear()
        assert await handle.result() == "a"
        await wait_for(store.written)  # no commit came: the deletion went alone
        assert (store.batches[-1].save, store.batches[-1].delete) == ((), (handle.id,))
        assert len(store.batches) == 2


async def test_cancelled_submit_waits_for_its_sqlite_write(tmp_path: pathlib.Path) -> None:
    store = RecordingSqlite(tmp_path / "queue.db")
    handles: list[lanes.CommandHandle[str]] = []
    async with lanes.open_lane_system(
        ONE, storage=store, commands=[Job], drain_timeout=0
    ) as system:
        system.pause("work")
        store.gate.clear()

        async def submitter(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                handles.append(await system.submit("work", Job("held")))
                await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            scope = await nursery.start(submitter)
            await wait_for(store.entered)  # the transaction has begun
            scope.cancel()
            store.gate.set()
        # The cancellation waited for the write: the command is stored and accepted.
        assert len(handles) == 1
        assert [row.id for row in store.batches[0].save] == [handles[0].id]
        assert system.statistics().lanes["work"].submitted == 1
        FAST.append(True)
        system.resume("work")
        assert await handles[0].result() == "held"


async def test_a_failed_sqlite_write_fails_only_its_submits(tmp_path: pathlib.Path) -> None:
    store = RecordingSqlite(tmp_path / "queue.db")
    async with lanes.open_lane_system(
        ONE, storage=store, commands=[Job], drain_timeout=0
    ) as system:
        system.pause("work")
        store.fail_next = RuntimeError("driver bug")
        with pytest.raises(lanes.StorageError, match="driver bug") as caught:
            await system.submit("work", Job("lost"))
        assert isinstance(caught.value.__cause__, lanes.StorageError)
        assert isinstance(caught.value.__cause__.__cause__, RuntimeError)
        assert system.statistics().lanes["work"].submitted == 0
        kept = await system.submit("work", Job("kept"))  # the writer carries on
        assert [row.id for row in store.batches[-1].save] == [kept.id]
        await system.dead_letters.pop()
    with pytest.raises(lanes.StorageError, match="is closed"):
        await system.dead_letters.pop()  # used to wait forever


class GatedMemory(MemoryStorage):
    """A MemoryStorage whose writes wait for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()

    async def write(self, batch: WriteBatch) -> None:
        await self.gate.wait()
        self.apply(batch)


def stored_row(name: str) -> lanes.storage.StoredCommand:
    return lanes.storage.StoredCommand(
        name, 1, "work", "job", "{}", None, "pending", 0, None, None, 0.0
    )


async def test_commits_waiting_when_the_writer_is_cancelled_are_written() -> None:
    storage = GatedMemory()
    journal = Journal(storage)
    done: list[str] = []

    async def commit_one(name: str) -> None:
        journal.save(stored_row(name))
        await journal.commit()
        done.append(name)

    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as writer:
            await writer.start(journal.run)
            nursery.start_soon(commit_one, "first")
            await trio.testing.wait_all_tasks_blocked()  # "first" is being written
            nursery.start_soon(commit_one, "second")
            await trio.testing.wait_all_tasks_blocked()  # "second" waits for the next batch
            writer.cancel_scope.cancel()
            storage.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        written = sorted(done)
        await journal.close()  # (before, only this freed the second commit)
    assert written == ["first", "second"]
    assert sorted(storage.commands) == ["first", "second"]


async def test_a_commit_after_the_writer_stopped_writes_its_own_batch() -> None:
    storage = MemoryStorage()
    journal = Journal(storage)
    async with trio.open_nursery() as writer:
        await writer.start(journal.run)
        writer.cancel_scope.cancel()
    written: list[str] = []

    async def commit_one() -> None:
        journal.save(stored_row("late"))
        await journal.commit()
        written.extend(storage.commands)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit_one)
        await trio.testing.wait_all_tasks_blocked()
        seen = list(written)
        await journal.close()  # (before, only this freed the commit)
    assert seen == ["late"]


async def test_sqlite_writes_run_in_a_worker_thread(tmp_path: pathlib.Path) -> None:
    threads: list[int] = []

    class Watched(SqliteStorage):
        def write_blocking(self, batch: WriteBatch) -> None:
            threads.append(threading.get_ident())
            super().write_blocking(batch)

    async with lanes.open_lane_system(
        ONE, storage=Watched(tmp_path / "q.db"), commands=[Job], drain_timeout=0
    ) as system:
        system.pause("work")
        await system.submit("work", Job("a"))
    assert threads
    assert threading.get_ident() not in threads  # never the Trio thread
