"""A preemption-focused run of ``PolicyStateMachine``: contended systems only.

The default machine rarely builds the situation that tells victim choices apart (a cap full
of several running commands of less urgent, preemptible lanes while a more urgent head
waits): the mutation check of issue 5 found "preempt the earliest started victim" caught in
only 3 of 15 seeds by it. This machine only draws such systems (one or two urgent lanes, one
or two preemptible background lanes that run two or three commands, a cap of 2-4, no boosts
or rate limits), and catches that mutation within 6-16 examples. Everything else (rules,
model, invariants) is the stock machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import settings
from hypothesis import strategies as st

from lanes import LaneConfig
from lanes.testing import PolicyStateMachine, retry_policies


@st.composite
def _contended_lanes(draw: st.DrawFn) -> tuple[LaneConfig, ...]:
    urgent = [
        LaneConfig(
            f"urgent{i}",
            draw(st.integers(0, 2)),
            max_concurrency=draw(st.integers(1, 2)),
            retry=draw(retry_policies(1)),
        )
        for i in range(draw(st.integers(1, 2)))
    ]
    background = [
        LaneConfig(
            f"background{i}",
            draw(st.integers(3, 5)),
            max_concurrency=draw(st.integers(2, 3)),
            min_concurrency=draw(st.sampled_from([0, 0, 1])),
            retry=draw(retry_policies(1)),
            preemptible=True,
        )
        for i in range(draw(st.integers(1, 2)))
    ]
    lanes = [*urgent, *background]
    return tuple(draw(st.permutations(lanes)))  # lane order must not matter


class PreemptionMachine(PolicyStateMachine):
    """``PolicyStateMachine`` on systems where preemption, with several victims, is common."""

    lane_configs = _contended_lanes()

    @classmethod
    def max_concurrency(cls, configs: Sequence[LaneConfig]) -> st.SearchStrategy[int | None]:
        reserved = sum(c.min_concurrency for c in configs)
        return st.integers(max(2, reserved + 1), max(4, reserved + 2))


TestPreemption = pytest.mark.property(PreemptionMachine.TestCase)
TestPreemption.settings = settings(TestPreemption.settings, stateful_step_count=30)
