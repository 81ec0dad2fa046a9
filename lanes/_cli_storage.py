"""``lanes inspect`` and ``lanes dead-letters``: look into a database file from a shell.

Listing reads the file read-only (:mod:`lanes._inspect`); ``--requeue`` and ``--clear``
write through :class:`~lanes.storage.SqliteStorage`, and are meant for a database whose lane
system is stopped.
"""

from __future__ import annotations

import time

import trio

from ._errors import StorageError
from ._inspect import inspect_target, letter_table, read_sqlite, render_json, render_text
from .storage import Recovered, SqliteStorage, StoredCommand, StoredLetter, WriteBatch

__all__ = ["dead_letters_command", "inspect_command", "requeue_batch", "stored_letter"]


def inspect_command(target: str, *, as_json: bool = False, prefix: str = "lanes") -> str:
    """The text ``lanes inspect TARGET [--json] [--prefix P]`` prints (never writes).

    Raises:
        StorageError: a missing, empty or foreign file; Redis that cannot be read.
    """
    found = inspect_target(target, prefix)
    return render_json(found) if as_json else render_text(found)


def stored_letter(recovered: Recovered, letter_id: str) -> StoredLetter:
    """The stored dead letter ``letter_id``.

    Raises:
        StorageError: no dead letter has that id (the message names the first few).
    """
    for letter in recovered.letters:
        if letter.id == letter_id:
            return letter
    known = ", ".join(letter.id for letter in recovered.letters[:5]) or "none"
    raise StorageError(f"no dead letter with id {letter_id!r} (first ids: {known})")


def requeue_batch(recovered: Recovered, letter: StoredLetter) -> WriteBatch:
    """The write that turns a stored dead letter back into a pending command (one
    transaction: the command row saved, the letter deleted), for a stopped system."""
    seqs = [c.seq for c in recovered.commands] + [lt.seq for lt in recovered.letters]
    row = StoredCommand(
        letter.id,
        max(seqs) + 1,
        letter.lane,
        letter.type,
        letter.payload,
        letter.key,
        "pending",
        0,
        None,
        letter.timeout,
        time.time(),
    )
    return WriteBatch(save=(row,), delete_letters=(letter.id,))


async def _change(path: str, requeue: str | None, clear: bool) -> str:
    storage = SqliteStorage(path)
    await storage.open()
    try:
        recovered = await storage.recover()
        by_id = {letter.id: letter for letter in recovered.letters}
        if clear:
            await storage.write(WriteBatch(delete_letters=tuple(by_id)))
            return f"cleared {len(by_id)} dead letter(s)"
        letter = stored_letter(recovered, requeue or "")
        await storage.write(requeue_batch(recovered, letter))
        return f"requeued {letter.id}: it runs at the next start of the lane system"
    finally:
        await storage.close()


def dead_letters_command(path: str, requeue: str | None = None, clear: bool = False) -> str:
    """The text ``lanes dead-letters PATH [--requeue ID | --clear]`` prints.

    The listing is in the order ``system.dead_letters.list()`` gives (oldest failure first).

    Raises:
        StorageError: a missing, empty or foreign file, or an unknown id.
    """
    letters = read_sqlite(path).letters or ()  # checks the file without writing to it
    if requeue is None and not clear:
        return "\n".join(letter_table(letters)) if letters else "no dead letters"
    return trio.run(_change, path, requeue, clear)
