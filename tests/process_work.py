"""Functions the process-lane tests run in worker processes (importable by the workers).

Worker processes share no memory with the test, so state between attempts lives in files,
and a worker tells the test it is running (and its pid) over a TCP connection to 127.0.0.1.
"""

from __future__ import annotations

import os
import pathlib
import socket
import time
from collections.abc import Iterator


def square(x: int) -> tuple[int, int]:
    """Return ``x * x`` and the worker's pid."""
    return x * x, os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


def numbers(n: int) -> Iterator[int]:
    yield from range(n)


def announce(port: int) -> None:
    """Tell the test (listening on ``port``) that this worker runs, and which pid it has."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(str(os.getpid()).encode())


def spin_forever(port: int) -> None:
    """Announce, then keep the CPU busy forever (only killing the worker stops it)."""
    announce(port)
    while True:
        pass


def spin_once(port: int, marker: str) -> str:
    """The first call (no ``marker`` file yet) announces and spins forever; later ones return."""
    path = pathlib.Path(marker)
    if path.exists():
        return "done"
    path.touch()
    spin_forever(port)
    return "unreachable"


def fail_once(marker: str) -> str:
    """Raise the first time (no ``marker`` file yet); return ``"ok"`` afterwards."""
    path = pathlib.Path(marker)
    if not path.exists():
        path.touch()
        raise RuntimeError("first attempt fails")
    return "ok"


def interval(seconds: float) -> tuple[float, float]:
    """Busy for ``seconds``; return when it started and ended (system-wide monotonic clock)."""
    start = time.monotonic()
    time.sleep(seconds)
    return start, time.monotonic()


SCOPE = ["default"]


def mark_scoped() -> bool:
    """A worker ``init`` for ``trio_parallel.cache_scope``: marks the worker as the scope's."""
    SCOPE[0] = "scoped"
    return True


def scope_label() -> tuple[str, int]:
    return SCOPE[0], os.getpid()
