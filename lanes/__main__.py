"""The ``lanes`` command line: ``demo``, ``top``, ``inspect``, ``dead-letters``, ``schedules``,
``worker``."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence

import trio

from ._cli_worker import add_worker_arguments, worker_command
from ._demo import run_demo


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lanes", description="trio-lanes command line")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="an agent session in miniature on the default lanes")
    demo.add_argument("--seed", type=int, default=1, help="random seed of the workload")
    top = commands.add_parser("top", help="a live view of a running system's lanes")
    top.add_argument(
        "url",
        nargs="?",
        default="http://127.0.0.1:9464/metrics",
        help="the system's /metrics URL (lanes.prometheus.serve_metrics)",
    )
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    inspect = commands.add_parser(
        "inspect",
        help="unfinished commands and dead letters (read-only)",
        description=(
            "List a lane system's unfinished commands (id, type, key, lane, status, attempts, "
            "next due) and dead letters, without writing to the database."
        ),
    )
    inspect.add_argument("path", metavar="PATH|URL", help="the SQLite database, or a redis:// URL")
    inspect.add_argument("--json", action="store_true", help="print JSON (times: epoch seconds)")
    inspect.add_argument("--prefix", default="lanes", help="Redis key prefix (default: lanes)")
    letters = commands.add_parser("dead-letters", help="list, requeue or clear dead letters")
    letters.add_argument("path", help="the lane system's SQLite database")
    action = letters.add_mutually_exclusive_group()
    action.add_argument("--requeue", metavar="ID", help="move a letter back to its lane")
    action.add_argument("--clear", action="store_true", help="delete every dead letter")
    schedules = commands.add_parser("schedules", help="list, pause, resume or cancel schedules")
    schedules.add_argument("path", help="the lane system's SQLite database")
    change = schedules.add_mutually_exclusive_group()
    for verb in ("pause", "resume", "cancel"):
        change.add_argument(f"--{verb}", metavar="KEY", help=f"{verb} the schedule KEY")
    worker = commands.add_parser("worker", help="run commands from lanes on Redis")
    add_worker_arguments(worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        trio.run(run_demo, args.seed)
    elif args.command == "top":
        return _top(args.url, args.once, args.interval)
    elif args.command in ("inspect", "dead-letters", "schedules"):
        return _storage_command(args)
    elif args.command == "worker":
        return worker_command(args)
    return 0


def _storage_command(args: argparse.Namespace) -> int:
    from ._cli_schedules import schedules_command
    from ._cli_storage import dead_letters_command, inspect_command
    from ._errors import StorageError

    try:
        if args.command == "schedules":
            verbs = [v for v in ("pause", "resume", "cancel") if getattr(args, v) is not None]
            verb = verbs[0] if verbs else None
            print(schedules_command(args.path, verb, getattr(args, verb) if verb else None))
        elif args.command == "inspect":
            print(inspect_command(args.path, as_json=args.json, prefix=args.prefix))
        else:
            print(dead_letters_command(args.path, args.requeue, args.clear))
    except StorageError as error:
        print(f"lanes {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


def _top(url: str, once: bool, interval: float) -> int:
    from ._errors import LaneConfigError

    try:
        from ._top import ScrapeError, run_top
    except ModuleNotFoundError as error:  # rich or prometheus_client: one line, no traceback
        print(error, file=sys.stderr)
        return 1

    try:
        trio.run(functools.partial(run_top, url, once=once, interval=interval))
    except LaneConfigError as error:  # its message names "lanes top" already
        print(error, file=sys.stderr)
        return 1
    except ScrapeError as error:
        print(f"lanes top: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
