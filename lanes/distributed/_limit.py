"""A concurrency limit in Redis shared by every process: ``open_shared_limit``.

The in-process :class:`lanes.SharedLimit` counts the slots of one event loop. An LLM
provider's limit is per API key, across every replica and worker: this one keeps its slots
in Redis as leases (a sorted set of holders with their expiry), handed out by scripts
(:mod:`._scripts_limit`). A process renews the leases of its holders every ``lease / 3``
seconds; a process that dies stops renewing, and its slots come back within one lease.
Waiters are served fairly between sessions, as in process: the waiter whose session holds
the fewest slots first, ties in arrival order. A waiter learns of its grant from a stream
each process reads with one blocking ``XREAD`` (no polling); it looks again when the first
lease could expire, so a dead holder's slot is handed on then.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from actors import leaves

from .._errors import LaneConfigError, StorageError
from .._shared import SharedLimitStatistics
from . import _scripts_limit
from ._redis import _LINK_FAILURES, Batcher, Lua, RedisBackend, xread
from ._resp import Connection, open_connection

__all__ = ["RedisSharedLimit", "open_shared_limit"]

_BACKOFF = (0.05, 2.0)
_NAMES = ("leases", "owners", "held", "queue", "waiting", "alive", "seq", "grants", "stats")


@attrs.frozen
class _Settings:
    name: str
    max_concurrency: int
    lease: float


class RedisSharedLimit:
    """A slot limit shared by every process that opens it with the same backend and name.

    Made by :func:`open_shared_limit`. Use ``async with limit.slot(session="alice"):``
    around the work the limit guards (an LLM call, say), in commands of any lane system,
    worker or plain Trio program.
    """

    def __init__(self, backend: RedisBackend, settings: _Settings) -> None:
        self._backend = backend
        self._settings = settings
        self._keys = [backend.key(f"limit:{settings.name}:{n}") for n in _NAMES]
        self._batcher = Batcher(backend)
        self._scripts = {
            name: Lua(getattr(_scripts_limit, name))
            for name in ("ACQUIRE", "RELEASE", "RENEW", "LIMIT_STATS")
        }
        self._waiters: dict[str, trio.Event] = {}  # tokens waiting here -> their wake-up
        self._holders: set[str] = set()  # tokens holding a slot here
        self.lost = 0
        """Slots this process held past their lease (not renewed in time: it stalled or lost
        Redis for a lease); another process may have been given them meanwhile."""

    @property
    def name(self) -> str:
        """The limit's name (the same in every process that shares it)."""
        return self._settings.name

    @property
    def max_concurrency(self) -> int:
        """How many slots the whole deployment has."""
        return self._settings.max_concurrency

    def _args(self, *more: object) -> list[object]:
        return [self._settings.max_concurrency, self._ms(self._settings.lease), *more]

    @staticmethod
    def _ms(seconds: float) -> int:
        return max(1, math.ceil(seconds * 1000))

    @asynccontextmanager
    async def slot(self, session: str = "") -> AsyncIterator[None]:
        """Hold one slot for the block; wait for one first when none is free.

        Args:
            session: who asks (a user, an agent session): free slots go first to the
                waiter whose session holds the fewest, then in arrival order.

        Cancelled while waiting, the wait is withdrawn (a slot granted in that instant
        is given back). Leaving the block, by any means, gives the slot back at once
        (else it expires after the lease).

        Raises:
            LaneConfigError: ``session`` is not a string.
            StorageError: Redis cannot be reached while asking (nothing is held).
        """
        if not isinstance(session, str):
            msg = f"slot: session={session!r} is invalid; expected a string"
            raise LaneConfigError(msg)
        token = uuid.uuid4().hex
        try:
            await self._acquire(token, session)
            self._holders.add(token)
            yield
        finally:
            self._waiters.pop(token, None)
            self._holders.discard(token)
            with trio.move_on_after(1.0) as scope:  # best effort: else the lease expires
                scope.shield = True
                with contextlib.suppress(StorageError):
                    await self._batcher.call(
                        self._scripts["RELEASE"], self._keys, self._args(token)
                    )

    async def _acquire(self, token: str, session: str) -> None:
        wait_ttl = self._ms(self._settings.lease)
        while True:
            self._waiters[token] = wake = trio.Event()
            args = self._args(token, session, wait_ttl)
            granted, hint = await self._batcher.call(self._scripts["ACQUIRE"], self._keys, args)
            if int(granted):
                del self._waiters[token]
                return
            with trio.move_on_after(int(hint) / 1000):  # a lease may expire then
                await wake.wait()

    async def statistics(self) -> SharedLimitStatistics:
        """The in-process snapshot type, for the whole deployment: ``in_use`` slots held,
        ``waiting`` waiters, ``members`` sessions holding slots, ``granted`` slots handed
        to waiters so far.

        Raises:
            StorageError: Redis cannot be reached.
        """
        used, waiting, sessions, granted = await self._batcher.call(
            self._scripts["LIMIT_STATS"], self._keys, self._args()
        )
        return SharedLimitStatistics(
            self.name, self.max_concurrency, int(used), int(waiting), int(sessions), int(granted)
        )

    # -- background ----------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        """Renew this process's leases and waits every ``lease / 3`` seconds."""
        while True:
            await trio.sleep(self._settings.lease / 3)
            tokens = [*self._holders, *self._waiters]
            if not tokens:
                continue
            args = self._args(self._ms(self._settings.lease), *tokens)
            try:
                lost = await self._batcher.call(self._scripts["RENEW"], self._keys, args)
            except StorageError:
                continue
            for token in lost:
                if str(token) in self._holders:
                    self.lost += 1
                wake = self._waiters.get(str(token))
                if wake is not None:  # its wait expired: ask again at once
                    wake.set()

    async def _grants_loop(self, task_status: trio.TaskStatus[None]) -> None:
        """Wake the local waiters that were granted a slot (one blocking read)."""
        grants = self._keys[7]
        last = "$"
        connection: Connection | None = None
        pause = _BACKOFF[0]
        try:
            connection = await open_connection(self._backend.url)
            [newest] = await connection.execute([["XREVRANGE", grants, "+", "-", "COUNT", 1]])
            last = str(newest[0][0]) if newest else "0-0"
            task_status.started()
            while True:
                try:
                    if connection is None or connection.broken:
                        if connection is not None:
                            await connection.aclose()
                        connection = None
                        connection = await open_connection(self._backend.url)
                    answer = await xread(connection, {grants: last}, 500, 1000)
                except (StorageError, *_LINK_FAILURES):
                    await trio.sleep(pause)
                    pause = min(pause * 2, _BACKOFF[1])
                    for wake in self._waiters.values():  # look again once Redis is back
                        wake.set()
                    continue
                pause = _BACKOFF[0]
                for entry_id, fields in answer.get(grants, ()):
                    last = entry_id
                    granted = self._waiters.get(fields.get("granted", ""))
                    if granted is not None:
                        granted.set()
        finally:
            if connection is not None:
                await connection.aclose()


def _settings(name: object, max_concurrency: object, lease: object) -> _Settings:
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        msg = f"open_shared_limit: name={name!r} is invalid; expected a non-empty word"
        raise LaneConfigError(msg)
    if (
        isinstance(max_concurrency, bool)
        or not isinstance(max_concurrency, int)
        or max_concurrency < 1
    ):
        msg = (
            f"open_shared_limit: max_concurrency={max_concurrency!r} is invalid; expected "
            "an integer >= 1"
        )
        raise LaneConfigError(msg)
    ok = isinstance(lease, int | float) and not isinstance(lease, bool) and math.isfinite(lease)
    if not ok or lease <= 0:  # type: ignore[operator]
        msg = f"open_shared_limit: lease={lease!r} is invalid; expected a number of seconds > 0"
        raise LaneConfigError(msg)
    return _Settings(name, max_concurrency, float(lease))  # type: ignore[arg-type]


@asynccontextmanager
async def open_shared_limit(
    backend: RedisBackend, name: str, max_concurrency: int, *, lease: float | None = None
) -> AsyncIterator[RedisSharedLimit]:
    """Open this process's handle on the limit ``name`` in Redis (shared by every process
    that opens the same name on the same backend, with the same ``max_concurrency``).

    Args:
        backend: the :class:`RedisBackend` (its ``prefix`` scopes the name).
        name: the limit's name, e.g. ``"llm"``.
        max_concurrency: slots for the whole deployment.
        lease: seconds a slot stays held without a renewal (default: the backend's
            ``lease``); a process that dies gives its slots back within this time.

    Leaving the block gives back every slot and wait of this process (the blocks using
    them are cancelled first, with the body).

    Raises:
        LaneConfigError: a bad argument (before connecting).
        StorageError: Redis cannot be reached at start.
    """
    if not isinstance(backend, RedisBackend):
        msg = f"open_shared_limit: backend={backend!r} is invalid; expected a RedisBackend"
        raise LaneConfigError(msg)
    settings = _settings(name, max_concurrency, backend.lease if lease is None else lease)
    limit = RedisSharedLimit(backend, settings)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(limit._batcher.run)
            try:
                await nursery.start(limit._grants_loop)
            except _LINK_FAILURES as exc:
                msg = f"cannot connect: Redis at {backend.safe_url} failed: {exc}"
                raise StorageError(msg) from exc
            nursery.start_soon(limit._renew_loop)
            try:
                yield limit
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        real = [e for e in leaves(group) if not isinstance(e, trio.Cancelled)]
        if len(real) == 1:
            raise real[0] from real[0].__cause__
        raise
