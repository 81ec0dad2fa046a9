"""``lanes web --storage PATH``: serve the console of a database until interrupted
(its options are parsed in ``lanes/__main__.py``)."""

from __future__ import annotations

import argparse
import secrets
import sys

import trio

from .._errors import LaneConfigError, StorageError
from ._app import check_token
from ._consoles import storage_console
from ._serve import serve_console

__all__ = ["web_command"]


async def _run(args: argparse.Namespace, token: str | None) -> None:
    console = storage_console(args.storage, prefix=args.prefix, token=token)
    await console.source.check()  # a missing or foreign file: refused before listening
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_console, console, args.port, args.host)
        if token is None:
            print(f"lanes web: {args.storage} at {server.url} (read-only)", flush=True)
        else:
            print(f"lanes web: {args.storage} at {server.url}", flush=True)
            print(f"lanes web: action token: {token}", flush=True)
            print(f"lanes web: open {server.url}#token={token}", flush=True)


def web_command(args: argparse.Namespace) -> int:
    """Run ``lanes web``; return the exit status."""
    token: str | None = args.token
    if args.actions:
        token = secrets.token_urlsafe(24)
    try:
        check_token(token)
        trio.run(_run, args, token)
    except (LaneConfigError, StorageError) as error:
        print(f"lanes web: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"lanes web: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
