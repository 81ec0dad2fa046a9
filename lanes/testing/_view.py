"""What a :class:`~lanes.testing.PolicyStateMachine` run looks like from outside.

* :class:`SchedulerView`: a frozen snapshot of the scheduling state (lanes, commands, dead
  letters) for your own invariants and decision checks, so they never touch private state.
* :class:`TraceEntry`: one decision of the policy (time, started, preempted, queues); a failing
  run prints the last ones.
* :func:`source`: the Python source of a lane config (for replay scripts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = ["CommandView", "LaneView", "SchedulerView", "TraceEntry", "source"]


@attrs.frozen
class LaneView:
    """One lane: its config and the commands (ids) in each of its places.

    Attributes:
        name: the lane's name.
        config: its ``LaneConfig``.
        queued: its queued commands in the order they start, head first (by command
            priority, FIFO among equals).
        delayed: its commands waiting for a ``delay=`` or a retry backoff.
        running: its running commands, in start order.
        preempting: those of ``running`` the policy chose to preempt (still running).
        paused: whether it is paused.
    """

    name: str
    config: Any
    queued: tuple[int, ...]
    delayed: tuple[int, ...]
    running: tuple[int, ...]
    preempting: tuple[int, ...]
    paused: bool

    @property
    def active(self) -> int:
        """How many of its commands hold a slot."""
        return len(self.running)


@attrs.frozen
class CommandView:
    """One command: its lane, where it is, its attempts so far, how it ended, and its
    priority within its lane.

    ``state`` is ``"queued"``, ``"delayed"``, ``"running"`` or ``"gone"``; ``outcome`` is
    None until it ends, then ``"completed"``, ``"dead letter"`` or ``"cancelled"``;
    ``priority`` is its ``submit(priority=)``, or what ``reprioritize`` gave it since.
    """

    id: int
    lane: str
    state: str
    attempts: int
    outcome: str | None
    priority: int = 0


@attrs.frozen
class SchedulerView:
    """The scheduling state at ``now`` (see :meth:`PolicyStateMachine.view`).

    Attributes:
        now: the time, in seconds.
        max_concurrency: the global cap (None: none).
        lanes: every lane by name.
        commands: every command submitted so far, by id (ids count from 0).
        dead_letters: the dead-lettered commands, in order.
    """

    now: float
    max_concurrency: int | None
    lanes: Mapping[str, LaneView]
    commands: Mapping[int, CommandView]
    dead_letters: tuple[int, ...]

    @property
    def active_total(self) -> int:
        """Commands holding a slot, over all lanes."""
        return sum(lane.active for lane in self.lanes.values())


@attrs.frozen
class TraceEntry:
    """One decision: at ``time``, these commands started and these were chosen to preempt.

    ``queues`` maps each lane to its queued commands (head first) after the decision;
    ``kind`` is ``"round"`` (a decision round) or ``"fast path"`` (a start on submit or on a
    freed slot of a local lane).
    """

    time: float
    started: tuple[tuple[int, str], ...]
    preempted: tuple[tuple[int, str], ...]
    queues: tuple[tuple[str, tuple[int, ...]], ...]
    kind: str = "round"

    def __str__(self) -> str:
        def names(items: Sequence[tuple[int, str]]) -> str:
            return "[" + ", ".join(f"{c} ({lane})" for c, lane in items) + "]"

        queues = " ".join(f"{lane}={list(ids)}" for lane, ids in self.queues)
        return (
            f"t={self.time:<8g} {self.kind:9} started {names(self.started)} "
            f"preempted {names(self.preempted)} queues {queues}"
        )


_KEYWORD_ONLY = {"LaneConfig": 2}  # leading fields passed by position


def source(value: Any) -> str:
    """Python source that rebuilds ``value``: an attrs config (fields left at their default
    omitted), a tuple or list of them, or a plain value (its ``repr``)."""
    if isinstance(value, tuple | list):
        inner = ", ".join(source(item) for item in value)
        return f"({inner},)" if isinstance(value, tuple) and len(value) == 1 else f"({inner})"
    if not attrs.has(type(value)):
        return repr(value)
    name = type(value).__name__
    positional = _KEYWORD_ONLY.get(name, 0)
    parts = []
    for i, field in enumerate(attrs.fields(type(value))):
        current = getattr(value, field.name)
        if i < positional:
            parts.append(source(current))
            continue
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        if current != default:
            parts.append(f"{field.alias}={source(current)}")
    return f"{name}({', '.join(parts)})"
