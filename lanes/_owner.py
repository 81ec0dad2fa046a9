"""What a command needs from the core that owns it, so that commands never import the core.

The core (``lanes._core.Core``) makes commands and resolves them; a command only asks its
owner for the id prefix, the owning run's token and to be cancelled. That is this protocol:
it keeps the import graph one way (the core imports commands, never the reverse).
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import trio

__all__ = ["CommandOwner"]

C = TypeVar("C", contravariant=True)
R = TypeVar("R", contravariant=True)


class CommandOwner(Protocol[C, R]):
    """The owner of commands of type ``C``, cancelled for reasons of type ``R``."""

    @property
    def prefix(self) -> str:
        """The system's id prefix (command ids are ``<prefix>-<n>``)."""

    @property
    def token(self) -> trio.lowlevel.TrioToken:
        """The token of the ``trio.run`` that owns the commands."""

    def cancel(self, cmd: C, reason: R, /) -> None:
        """Cancel ``cmd`` wherever it is (a no-op once it is terminal)."""
