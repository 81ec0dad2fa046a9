"""``lanes worker``: run commands from lanes on Redis (needs the ``redis`` extra)."""

from __future__ import annotations

import argparse
import functools
import importlib
import signal
import sys
from typing import Any

import trio

from ._config import DEFAULT_LANES
from ._errors import LaneConfigError, LaneError

__all__ = ["add_worker_arguments", "worker_command"]


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``lanes worker``."""
    parser.add_argument("--redis", required=True, metavar="URL", help="redis://host:port/db")
    parser.add_argument(
        "--commands",
        action="append",
        required=True,
        metavar="MODULE:CLASS",
        help="a @lanes.command class this worker runs (repeatable)",
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


def _load(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        msg = f"{spec!r} is invalid; expected MODULE:NAME such as myapp.tasks:Resize"
        raise LaneConfigError(msg)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"cannot import {module_name!r} (from {spec!r}): {exc}"
        raise LaneConfigError(msg) from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        msg = f"module {module_name!r} has no {attr!r} (from {spec!r})"
        raise LaneConfigError(msg) from None


async def _serve(args: argparse.Namespace) -> None:
    from .distributed import RedisBackend, open_lane_worker

    backend = RedisBackend(args.redis, prefix=args.prefix, lease=args.lease)
    lanes = _load(args.lanes) if args.lanes else DEFAULT_LANES
    commands = [_load(spec) for spec in args.commands]
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
    try:
        trio.run(functools.partial(_serve, args))
    except LaneError as error:
        print(f"lanes worker: {error}", file=sys.stderr)
        return 1
    except ImportError as error:  # the redis extra is missing
        print(f"lanes worker: {error}", file=sys.stderr)
        return 1
    return 0
