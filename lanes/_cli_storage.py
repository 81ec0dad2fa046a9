"""``lanes inspect`` and ``lanes dead-letters``: look into a database file from a shell."""

from __future__ import annotations

import collections
import time

import trio

from ._errors import StorageError
from .storage import SqliteStorage, StoredCommand, StoredLetter, WriteBatch

__all__ = ["dead_letters_command", "inspect_command"]


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    out = [line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return out


async def _load(path: str) -> tuple[SqliteStorage, list[StoredCommand], list[StoredLetter]]:
    if not await trio.Path(path).is_file():
        raise StorageError(f"{path!r} does not exist (or is not a file)")
    storage = SqliteStorage(path)
    await storage.open()
    recovered = await storage.recover()
    return storage, list(recovered.commands), list(recovered.letters)


async def _inspect(path: str) -> str:
    storage, commands, letters = await _load(path)
    await storage.close()
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for row in commands:
        counts[row.lane][row.status] += 1
    lines = [f"{path}: {len(commands)} unfinished command(s), {len(letters)} dead letter(s)", ""]
    rows = [[lane, str(c["pending"]), str(c["running"])] for lane, c in sorted(counts.items())]
    lines += _table(["lane", "pending", "running (at last stop)"], rows)
    if letters:
        lines += ["", *_letter_table(letters)]
    return "\n".join(lines)


def _letter_table(letters: list[StoredLetter]) -> list[str]:
    rows = []
    for letter in letters:
        failed = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter.failed_at))
        rows.append(
            [letter.id, letter.lane, letter.type, str(letter.attempts), failed, letter.error[:60]]
        )
    return _table(["id", "lane", "type", "attempts", "failed at", "error"], rows)


async def _dead_letters(path: str, requeue: str | None, clear: bool) -> str:
    storage, commands, letters = await _load(path)
    try:
        by_id = {letter.id: letter for letter in letters}
        if clear:
            await storage.write(WriteBatch(delete_letters=tuple(by_id)))
            return f"cleared {len(by_id)} dead letter(s)"
        if requeue is not None:
            letter = by_id.get(requeue)
            if letter is None:
                known = ", ".join(list(by_id)[:5]) or "none"
                raise StorageError(f"no dead letter with id {requeue!r} (first ids: {known})")
            seq = max([c.seq for c in commands] + [lt.seq for lt in by_id.values()]) + 1
            row = StoredCommand(
                letter.id,
                seq,
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
            await storage.write(WriteBatch(save=(row,), delete_letters=(letter.id,)))
            return f"requeued {letter.id}: it runs at the next start of the lane system"
        if not letters:
            return "no dead letters"
        return "\n".join(_letter_table(letters))
    finally:
        await storage.close()


def inspect_command(path: str) -> str:
    """The text ``lanes inspect PATH`` prints."""
    return trio.run(_inspect, path)


def dead_letters_command(path: str, requeue: str | None = None, clear: bool = False) -> str:
    """The text ``lanes dead-letters PATH [--requeue ID | --clear]`` prints."""
    return trio.run(_dead_letters, path, requeue, clear)
