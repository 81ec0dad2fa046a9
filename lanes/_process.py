"""Process lanes: synchronous, CPU-bound commands run in worker processes (trio-parallel).

A lane with ``executor="process"`` runs each attempt as
``trio_parallel.run_sync(fn, *args, kill_on_cancel=True, limiter=...)``. Everything else (the
policy, timeouts, retries, cancellation, preemption, drain) is the lane machinery every lane
uses: the attempt is one awaited call under the command's cancel scope, and cancelling that
scope kills the worker process (``kill_on_cancel=True``), so an endless loop can be timed
out or cancelled and its slot is free once the worker is dead.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._command import Command, command_name, is_command
from ._config import LaneConfig
from ._errors import LaneConfigError, LaneUsageError, Permanent
from ._extras import install_hint

__all__ = ["process_callable", "process_caller", "require_trio_parallel"]


def require_trio_parallel(configs: tuple[LaneConfig, ...]) -> None:
    """Check that trio-parallel can be imported when some lane runs in worker processes.

    Raises:
        LaneConfigError: a lane has ``executor="process"`` but trio-parallel is missing.
    """
    process_lanes = [c.name for c in configs if c.executor == "process"]
    if not process_lanes:
        return
    try:
        importlib.import_module("trio_parallel")
    except ImportError as exc:
        msg = (
            f"lanes {process_lanes!r} have executor='process', which needs trio-parallel; "
            f"install it with {install_hint('process')}"
        )
        raise LaneConfigError(msg) from exc


def process_callable(lane: str, fn: Any) -> tuple[Callable[..., Any], str]:
    """Check that ``fn`` can run in a worker process of ``lane``; return it and its name.

    Called at submit time, so a command that could never run is refused at once.

    Raises:
        LaneUsageError: ``fn`` is a ``@lanes.command`` object, an async callable, a
            generator function, not callable, or cannot be pickled by reference (a lambda or
            a local function).
    """
    if is_command(fn):
        msg = (
            f"submit: lane {lane!r} runs synchronous functions in worker processes; the "
            f"@lanes.command object {command_name(fn)} (async execute) cannot run there. Submit "
            "it to an ordinary lane (its execute may `await trio_parallel.run_sync(...)`), or "
            "submit a plain function"
        )
        raise LaneUsageError(msg)
    if not callable(fn):
        msg = f"submit: {fn!r} is not a synchronous function (lane {lane!r} is a process lane)"
        raise LaneUsageError(msg)
    if _is_async(fn):
        msg = (
            f"submit: {_name(fn)} is an async callable, but lane {lane!r} runs synchronous "
            "functions in worker processes; submit a plain `def` function, or use a lane "
            "with executor='async'"
        )
        raise LaneUsageError(msg)
    if inspect.isgeneratorfunction(_call_of(fn)):
        msg = (
            f"submit: {_name(fn)} is a generator function; a generator cannot come back from "
            f"a worker process of lane {lane!r}: return a list instead"
        )
        raise LaneUsageError(msg)
    try:
        pickle.dumps(fn)
    except Exception as exc:  # pickle raises several kinds (PicklingError, AttributeError...)
        msg = (
            f"submit: {_name(fn)} cannot be sent to a worker process of lane {lane!r} "
            f"({exc}); use a function defined at module level of an importable module"
        )
        raise LaneUsageError(msg) from exc
    return fn, _name(fn)


def _call_of(fn: Any) -> Any:
    """What calling ``fn`` runs: the function itself, or a callable object's ``__call__``."""
    return fn if inspect.isroutine(fn) else getattr(fn, "__call__", None)  # noqa: B004


def _is_async(fn: Any) -> bool:
    call = _call_of(fn)
    return inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def process_caller(config: LaneConfig) -> Callable[[Command], Awaitable[Any]]:
    """The attempt body of a process lane: run the command's function in a worker process.

    Each lane has its own ``trio.CapacityLimiter`` of ``max_concurrency`` tokens instead of
    trio-parallel's process-wide default (CPU count): the lane's slots are its worker
    processes, so a running command never waits behind another lane's workers while its
    timeout runs. Workers come from trio-parallel's current worker context (its default
    cache, or the one of an enclosing ``trio_parallel.cache_scope()``).

    Cancellation (timeout, cancel, preemption, shutdown) kills the worker process and returns
    once it is dead; nothing of the attempt is left running.
    """
    import trio_parallel  # an optional dependency: checked by require_trio_parallel

    limiter = trio.CapacityLimiter(config.max_concurrency)
    run_sync = trio_parallel.run_sync

    async def call(cmd: Command) -> Any:
        if cmd.payload is not None:  # stored by an earlier run, when the lane was async
            raise Permanent(LaneUsageError(_recovered_message(cmd, config.name)))
        return await run_sync(cmd.fn, *cmd.args, kill_on_cancel=True, limiter=limiter)

    return call


def _recovered_message(cmd: Command, lane: str) -> str:
    return (
        f"durable command {cmd.id} ({cmd.type_name}) was stored for lane {lane!r}, which is "
        "now a process lane; durable commands run on ordinary lanes: open the system with "
        "executor='async' for this lane to run it"
    )
