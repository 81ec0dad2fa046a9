"""Lanes added to and retired from a running system (``LaneSystem.add_lane`` / ``retire_lane``).

Adding is synchronous: the lane's policy state, counters, metrics, inbox and worker pool are
made at once, so a submit right after it is accepted. Retiring closes the lane to submits,
waits for what it holds (or cancels that at a timeout, as a drain does), then forgets it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import trio

from ._command import Command, Reason
from ._config import LaneConfig, validate_lanes
from ._core import Core
from ._errors import LaneConfigError, LaneUsageError, UnknownLaneError
from ._process import require_trio_parallel
from ._schedule_handle import ScheduleHandle
from ._submission import shutdown_error, unknown_lane

__all__ = ["add_lane", "retire_lane"]


def add_lane(
    core: Core, config: object, nursery: trio.Nursery | None, waker: Callable[[], None]
) -> LaneConfig:
    """Check ``config`` against the system's lanes and make it one of them.

    Raises:
        LaneConfigError: not a LaneConfig, a name already used (also by a lane being
            retired), reservations above the global cap, a process lane without
            trio-parallel.
        ShutdownInProgress: the system no longer accepts commands.
    """
    if not isinstance(config, LaneConfig):
        msg = f"add_lane: config={config!r} is invalid; expected a lanes.LaneConfig"
        raise LaneConfigError(msg)
    if not core.accepting or nursery is None:
        raise shutdown_error()
    name = config.name
    if name in core.policy.lanes:
        where = "is being retired" if name not in core.configs else "already exists"
        msg = (
            f"add_lane: lane {name!r} {where}; lane names must be unique: pick another "
            "name (or await retire_lane first)"
        )
        raise LaneConfigError(msg)
    others = tuple(state.config for state in core.policy.lanes.values())
    try:
        validate_lanes((*others, config), core.policy.cap)
    except LaneConfigError as exc:
        msg = f"add_lane: lane {name!r} does not fit the running system: {exc}"
        raise LaneConfigError(msg) from None
    require_trio_parallel((config,))
    core.add_lane(config)  # its worker pool comes with its first command (Core.new_pool)
    if config.shared_limit is not None:
        core.policy.set_waker(waker)  # how its shared limit asks for a decision round
    return config


async def retire_lane(
    core: Core, name: object, timeout: float | None, schedules: Iterable[ScheduleHandle]
) -> int:
    """Close lane ``name`` to submits, let it empty (cancel what is left at ``timeout``),
    forget it; return how many of its commands were cancelled at the timeout.

    Cancelled while waiting: the retirement is undone (see ``LaneSystem.retire_lane``).
    """
    if not isinstance(name, str) or name not in core.configs:
        if isinstance(name, str) and name in core.policy.lanes:
            msg = (
                f"retire_lane: lane {name!r} is already being retired; await that call "
                "instead of retiring it twice"
            )
            raise UnknownLaneError(msg)
        raise unknown_lane(core.configs, name, "retire_lane")
    targeting = sorted(
        h.key for h in schedules if h.lane == name and not h.cancelled and not h.finished
    )
    if targeting:
        msg = (
            f"retire_lane: schedule(s) {', '.join(map(repr, targeting))} fire into lane "
            f"{name!r}; cancel them first (handle.cancel()), then retire the lane"
        )
        raise LaneUsageError(msg)
    order = list(core.configs.items())  # to put the lane back in its place if undone
    core.configs.pop(name)  # submits now raise UnknownLaneError
    state = core.lanes[name]
    room = state.room
    room.close()  # submits waiting for room (or storing) raise ShutdownInProgress
    counters = state.counters
    before: int | None = None
    try:
        with trio.move_on_after(math.inf if timeout is None else timeout):
            await _wait_empty(core, name, cancel=False)
        if _busy(core, name):  # the timeout passed: cancel what is left, as drain does
            before = counters.cancelled
            await _wait_empty(core, name, cancel=True)
    except BaseException:
        core.configs.clear()  # undone: the lane accepts commands again, in its place
        core.configs.update((n, c) for n, c in order if n in core.policy.lanes)
        room.closed = not core.accepting  # a closing system keeps its inboxes closed
        raise
    core.drop_lane(name)
    await trio.lowlevel.checkpoint()
    return 0 if before is None else counters.cancelled - before


def _busy(core: Core, name: str) -> bool:
    """Whether the lane holds a pending (queued, delayed, retrying) or running command."""
    state = core.policy.lanes[name]
    return bool(state.pending or state.active)


async def _wait_empty(core: Core, name: str, *, cancel: bool) -> None:
    """Wait until the lane holds no command; ``cancel``: cancel them (running ones first)."""
    while _busy(core, name):
        if cancel:
            for cmd in core.cancel_lane(name, Reason.CANCEL):
                await cmd.wait_done()
            continue
        mine: Command | None = next((cmd for cmd in core.live if cmd.lane == name), None)
        assert mine is not None, "a busy lane holds a live command"
        await mine.wait_done()
