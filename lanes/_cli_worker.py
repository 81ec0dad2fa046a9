"""``lanes worker``: run commands from lanes on Redis (needs the ``redis`` extra)."""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import signal
import sys
from typing import Any

import trio

from ._config import DEFAULT_LANES, LaneConfig
from ._errors import LaneConfigError, LaneError

__all__ = ["add_worker_arguments", "load_commands", "load_lanes", "worker_command"]


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``lanes worker``."""
    parser.add_argument("--redis", required=True, metavar="URL", help="redis://host:port/db")
    parser.add_argument(
        "--commands",
        action="append",
        required=True,
        metavar="MODULE:NAME[,MODULE:NAME...]",
        help=(
            "the @lanes.command classes this worker runs: repeat the flag or separate them "
            "with commas; NAME may also be a list or tuple of classes"
        ),
    )
    parser.add_argument(
        "--lanes",
        metavar="MODULE:NAME",
        help="a tuple of LaneConfig (default: lanes.DEFAULT_LANES)",
    )
    parser.add_argument("--prefix", default="lanes", help="key prefix (default: lanes)")
    parser.add_argument("--lease", type=float, default=30.0, help="lease in seconds")
    parser.add_argument("--name", help="consumer name (default: host:pid:random)")
    parser.add_argument("--concurrency", type=int, help="cap on commands running at once")


def _load(flag: str, spec: str) -> Any:
    """The object ``MODULE:NAME`` names; errors name ``flag``."""
    module_name, _, attr = spec.strip().partition(":")
    if not module_name or not attr:
        msg = f"{flag} {spec!r} is invalid; expected MODULE:NAME such as myapp.tasks:Resize"
        raise LaneConfigError(msg)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = (
            f"{flag} {spec!r}: cannot import {module_name!r}: {exc} (the current directory "
            "and PYTHONPATH are searched)"
        )
        raise LaneConfigError(msg) from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        msg = f"{flag} {spec!r}: module {module_name!r} has no {attr!r}"
        raise LaneConfigError(msg) from None


def _is_command_class(obj: object) -> bool:
    return isinstance(obj, type) and hasattr(obj, "__lanes_command__")


def _describe(obj: object) -> str:
    """A short description of ``obj`` for an error message (reprs can be long)."""
    if isinstance(obj, type):
        return repr(obj)
    text = repr(obj)
    return text if len(text) <= 60 else f"a {type(obj).__name__} ({text[:50]}...)"


def load_commands(values: list[str]) -> list[type]:
    """The command classes of the ``--commands`` values (repeated, comma lists, or lists).

    Raises:
        LaneConfigError: a value that does not name a ``@lanes.command`` class or a list or
            tuple of them (the message names ``--commands``).
    """
    classes: list[type] = []
    for value in values:
        for spec in filter(None, (part.strip() for part in value.split(","))):
            obj = _load("--commands", spec)
            found = list(obj) if isinstance(obj, (list, tuple)) else [obj]
            for cls in found:
                if not _is_command_class(cls):
                    msg = (
                        f"--commands {spec!r} names {_describe(cls)}, which is not a "
                        "@lanes.command class (nor a list or tuple of them)"
                    )
                    raise LaneConfigError(msg)
                if cls not in classes:
                    classes.append(cls)
    if not classes:
        msg = "--commands names no command class; pass MODULE:NAME such as myapp.tasks:Resize"
        raise LaneConfigError(msg)
    return classes


def load_lanes(spec: str | None) -> tuple[LaneConfig, ...]:
    """The lanes ``--lanes`` names (default: ``DEFAULT_LANES``).

    Raises:
        LaneConfigError: the value does not name a list or tuple of ``LaneConfig``.
    """
    if spec is None:
        return DEFAULT_LANES
    obj = _load("--lanes", spec)
    if not isinstance(obj, (list, tuple)) or not all(isinstance(c, LaneConfig) for c in obj):
        msg = (
            f"--lanes {spec!r} names {_describe(obj)}; expected a list or tuple of lanes.LaneConfig"
        )
        raise LaneConfigError(msg)
    return tuple(obj)


def _cwd_on_path() -> None:
    """Import the user's modules from the current directory, as ``python -m`` would."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


async def _serve(
    args: argparse.Namespace, lanes: tuple[LaneConfig, ...], commands: list[type]
) -> None:
    from .distributed import RedisBackend, open_lane_worker

    backend = RedisBackend(args.redis, prefix=args.prefix, lease=args.lease)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_lane_worker(
            lanes,
            backend=backend,
            commands=commands,
            name=args.name,
            max_concurrency=args.concurrency,
        ) as worker:
            print(f"lanes worker {worker.name}: serving {backend.safe_url}", flush=True)
            async for _ in signals:  # stop fetching, let running commands finish
                break


def worker_command(args: argparse.Namespace) -> int:
    """Run ``lanes worker`` until SIGTERM or SIGINT; return the exit status."""
    _cwd_on_path()
    try:
        lanes = load_lanes(args.lanes)
        commands = load_commands(args.commands)
        trio.run(functools.partial(_serve, args, lanes, commands))
    except LaneError as error:
        print(f"lanes worker: {error}", file=sys.stderr)
        return 1
    except ImportError as error:  # the redis extra is missing
        print(f"lanes worker: {error}", file=sys.stderr)
        return 1
    return 0
