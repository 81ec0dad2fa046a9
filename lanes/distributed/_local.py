"""A throwaway redis-server on 127.0.0.1 for development, examples, tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .._errors import StorageError

__all__ = ["LocalRedis", "local_redis_server"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalRedis:
    """A redis-server child process bound to 127.0.0.1 (see :func:`local_redis_server`)."""

    def __init__(self, binary: str, port: int, directory: str, persistent: bool) -> None:
        self.binary = binary
        self.port = port
        self.directory = directory
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts connections.

        Raises:
            StorageError: it did not start within ``timeout`` seconds.
        """
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
            if self.persistent
            else ["--appendonly", "no", "--save", ""]
        )
        command = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--dir", self.directory, *persistence]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.01)
        self.stop()
        msg = f"redis-server ({self.binary}) did not start on 127.0.0.1:{self.port}"
        raise StorageError(msg)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server by its pid (``signal.SIGKILL`` simulates a crash) and reap it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung server
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def local_redis_server(*, persistent: bool = False) -> Iterator[LocalRedis]:
    """Run a private redis-server on a free port of 127.0.0.1 for the ``with`` block.

    Args:
        persistent: write an append-only file with an fsync per write (so a server killed
            and started again keeps every acknowledged write); default: no persistence.

    Raises:
        StorageError: no ``redis-server`` on PATH, or it did not start.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        msg = "redis-server is not installed (Debian: apt-get install -y redis-server)"
        raise StorageError(msg)
    with tempfile.TemporaryDirectory(prefix="lanes-redis-") as directory:
        server = LocalRedis(binary, _free_port(), directory, persistent)
        server.start()
        try:
            yield server
        finally:
            server.stop()
