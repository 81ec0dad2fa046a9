"""Commands and lanes shared by the distributed tests and their worker subprocesses."""

from __future__ import annotations

import os

import attrs
import trio

import lanes

LANES = (
    lanes.LaneConfig("urgent", 0, max_concurrency=2),
    lanes.LaneConfig("bulk", 1, max_concurrency=2, retry=lanes.RetryPolicy.fixed(2, 0.05)),
)


def note(log: str, line: str) -> None:
    """Append one line to a log file shared by processes (O_APPEND writes are atomic)."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@lanes.command
@attrs.define
class Step:
    """Logs its start and end (with the worker's pid), sleeps, maybe fails; returns its tag."""

    log: str
    tag: str
    seconds: float = 0.0
    fail: bool = False

    async def execute(self) -> str:
        note(self.log, f"start {self.tag} {os.getpid()}")
        await trio.sleep(self.seconds)
        if self.fail:
            raise RuntimeError(f"{self.tag} failed on purpose")
        note(self.log, f"done {self.tag} {os.getpid()}")
        return self.tag


@lanes.command
@attrs.define
class Echo:
    """Returns its data: for hostile payloads (deep, huge, odd strings, wrong types)."""

    data: list[int]
    label: str = ""

    async def execute(self) -> list[int]:
        return self.data


@lanes.command
@attrs.define
class Grouped:
    """Raises ``Permanent(ValueError)`` from a nursery (an ExceptionGroup), with a
    ``RuntimeError`` beside it when ``mixed``."""

    log: str
    tag: str
    mixed: bool = False

    async def execute(self) -> None:
        note(self.log, f"start {self.tag} {os.getpid()}")

        async def permanent() -> None:
            raise lanes.Permanent(ValueError(f"{self.tag} is wrong for good"))

        async def other() -> None:
            raise RuntimeError(f"{self.tag} failed too")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(permanent)
            if self.mixed:
                nursery.start_soon(other)


STARTED: dict[str, trio.Event] = {}  # workers in the test's process set these


@lanes.command
@attrs.define
class Hold:
    """Sets ``STARTED[tag]`` (if a test made it) and sleeps; returns its tag."""

    tag: str
    seconds: float = 30.0

    async def execute(self) -> str:
        if self.tag in STARTED:
            STARTED[self.tag].set()
        await trio.sleep(self.seconds)
        return self.tag
