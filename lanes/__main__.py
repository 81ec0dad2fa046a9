"""The ``lanes`` command line: ``python -m lanes demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

from ._demo import run_demo


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lanes", description="trio-lanes command line")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="an agent session in miniature on the default lanes")
    demo.add_argument("--seed", type=int, default=1, help="random seed of the workload")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        trio.run(run_demo, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
