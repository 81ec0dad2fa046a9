"""Generic Trio actor primitives: mailboxes, actors with refs, supervisors, worker pools.

This package knows nothing of lanes; ``lanes`` builds on it.
"""

from ._actor import Actor, ActorRef, run_actor, spawn
from ._context import resume_in_context, run_in_context
from ._groups import leaves, single_leaf
from ._mailbox import Mailbox
from ._pool import WorkerPool
from ._supervision import RestartIntensityExceeded, Strategy, Supervisor, open_supervisor

__all__ = [
    "Actor",
    "ActorRef",
    "Mailbox",
    "RestartIntensityExceeded",
    "Strategy",
    "Supervisor",
    "WorkerPool",
    "leaves",
    "open_supervisor",
    "resume_in_context",
    "run_actor",
    "run_in_context",
    "single_leaf",
    "spawn",
]
