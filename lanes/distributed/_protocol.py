"""What the parts of a submitting system (dead letters, schedules, events) need from it.

A protocol, so that those modules do not import the system's module (``_submitter``), which
imports them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from .._codec import CommandRegistry
from ._handle import RemoteHandle
from ._redis import Batcher, RedisBackend

__all__ = ["Submitting"]


class Submitting(Protocol):
    """The members of ``RemoteLaneSystem`` its parts use."""

    reply_stream: str
    _batcher: Batcher
    _registry: CommandRegistry
    _nursery: trio.Nursery | None
    _accepting: bool
    _events_keys: list[str]
    _events_dropped: int

    @property
    def backend(self) -> RedisBackend:
        """The Redis backend."""

    def _register(self, command_id: str, lane: str, type_name: str) -> RemoteHandle[Any]: ...

    def _unregister(self, handle: RemoteHandle[Any]) -> None: ...

    def _check_lane(self, lane: object, what: str) -> None: ...

    def _encode(self, command: Any) -> tuple[str, str]: ...

    def _stream(self, lane: object, partition_key: str | None) -> str: ...

    async def _until_taken(self, call: Callable[[], Awaitable[Any]]) -> None: ...

    def _open_nursery(self, what: str) -> trio.Nursery: ...
