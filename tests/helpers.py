"""Small helpers shared by the lane tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio


class Recorder:
    """Async commands that record when they start and finish, and track concurrency."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.finished: list[Any] = []
        self.active = 0
        self.peak = 0
        self.peak_by_group: dict[str, int] = {}
        self._active_by_group: dict[str, int] = {}

    def job(self, tag: Any, seconds: float = 1.0, group: str = "") -> Callable[[], Any]:
        async def run() -> Any:
            self.started.append(tag)
            self.active += 1
            self.peak = max(self.peak, self.active)
            count = self._active_by_group.get(group, 0) + 1
            self._active_by_group[group] = count
            self.peak_by_group[group] = max(self.peak_by_group.get(group, 0), count)
            try:
                await trio.sleep(seconds)
            finally:
                self.active -= 1
                self._active_by_group[group] -= 1
            self.finished.append(tag)
            return tag

        run.__qualname__ = f"job[{tag}]"
        return run


async def noop() -> int:
    return 1


async def sleeper(seconds: float) -> float:
    await trio.sleep(seconds)
    return seconds


async def boom(message: str = "boom") -> None:
    raise RuntimeError(message)
