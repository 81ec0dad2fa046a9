"""A small RESP2 connection on Trio streams for the hot path (pipelines and blocking reads).

coredis costs about 100 µs of CPU per pipelined call and 700 µs per lone one on the
development machine; encoding a command and parsing its reply here costs a few µs. Only
what the lanes need: send commands, read their replies in order; replies are ``str``,
``int``, ``None``, lists, or :class:`ReplyError` values (not raised, so one failed call
of a pipeline does not hide the others' results).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import trio

__all__ = ["Connection", "ReplyError", "encode", "open_connection"]

_CRLF = b"\r\n"


class ReplyError(Exception):
    """An error reply of the server (``-ERR ...``, ``-NOSCRIPT ...``)."""


class _Incomplete(Exception):
    pass


_CACHED = 4096  # short strings kept encoded (key names, script hashes, group names)
_SHORT = 64
_encoded: dict[str, bytes] = {}


def encode(commands: Sequence[Sequence[Any]]) -> bytes:
    """Commands as RESP arrays of bulk strings (``str`` is UTF-8, numbers in decimal).

    Short strings (key names, hashes) are encoded once and kept, up to a bound.
    """
    out: list[bytes] = []
    add = out.append
    cache = _encoded
    for command in commands:
        add(b"*%d\r\n" % len(command))
        for arg in command:
            kind = type(arg)
            if kind is str:
                chunk = cache.get(arg)
                if chunk is None:
                    data = arg.encode()
                    chunk = b"$%d\r\n%b\r\n" % (len(data), data)
                    if len(data) <= _SHORT and len(cache) < _CACHED:
                        cache[arg] = chunk
                add(chunk)
                continue
            if kind is int:
                data = b"%d" % arg
            elif kind is float:
                data = repr(arg).encode()
            elif kind is bytes:
                data = arg
            else:
                msg = f"a Redis argument must be str, bytes, int or float, not {arg!r}"
                raise TypeError(msg)
            add(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def _parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """One reply starting at ``pos``: (value, position after it)."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete
    kind, line = buf[pos], bytes(buf[pos + 1 : end])
    pos = end + 2
    if kind == 43:  # +
        return line.decode(), pos
    if kind == 45:  # -
        return ReplyError(line.decode(errors="replace")), pos
    if kind == 58:  # :
        return int(line), pos
    if kind == 36:  # $
        size = int(line)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise _Incomplete
        return bytes(buf[pos : pos + size]).decode(errors="surrogateescape"), pos + size + 2
    if kind == 42:  # *
        count = int(line)
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    msg = f"unexpected RESP reply type {chr(kind)!r}"
    raise ReplyError(msg)


class Connection:
    """One connection; one task at a time may use it (its owner serialises the calls)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buf = bytearray()
        self.broken = False

    async def execute(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` in one write and return their replies, in order.

        A failure or a cancellation midway leaves the connection ``broken`` (its replies
        would be out of step): close it and open another.

        Raises:
            OSError, trio.BrokenResourceError, trio.ClosedResourceError: the connection
                failed (``EOFError`` when the server closed it).
        """
        self.broken = True
        await self._stream.send_all(encode(commands))
        replies = [await self._reply() for _ in commands]
        self.broken = False
        return replies

    async def _reply(self) -> Any:
        while True:
            try:
                value, pos = _parse(self._buf, 0)
            except _Incomplete:
                data = await self._stream.receive_some(65536)
                if not data:
                    raise EOFError("the Redis server closed the connection") from None
                self._buf += data
                continue
            del self._buf[:pos]
            return value

    async def aclose(self) -> None:
        """Close the connection (at once: a cancelled close still closes)."""
        self.broken = True
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self._stream)


async def open_connection(url: str) -> Connection:
    """Connect to ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL; AUTH and SELECT
    as the URL says.

    Raises:
        OSError: the server cannot be reached; ReplyError: AUTH or SELECT was refused.
    """
    parts = urlsplit(url)
    stream: trio.abc.Stream
    if parts.scheme == "unix":
        stream = await trio.open_unix_socket(parts.path)
    elif parts.scheme == "rediss":
        context = ssl.create_default_context()
        stream = await trio.open_ssl_over_tcp_stream(
            parts.hostname or "127.0.0.1", parts.port or 6379, ssl_context=context
        )
    else:
        stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 6379)
    connection = Connection(stream)
    setup: list[list[str]] = []
    if parts.password is not None:
        user = unquote(parts.username or "default")
        setup.append(["AUTH", user, unquote(parts.password)])
    db = parts.path.strip("/") if parts.scheme != "unix" else ""
    if db and db != "0":
        setup.append(["SELECT", db])
    try:
        for reply in await connection.execute(setup) if setup else ():
            if isinstance(reply, ReplyError):
                raise reply
    except BaseException:
        await connection.aclose()
        raise
    return connection
