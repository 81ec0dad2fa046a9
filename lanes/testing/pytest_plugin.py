"""The trio-lanes pytest plugin (registered as the ``lanes`` entry point of ``pytest11``).

Fixtures:

* ``lane_system``: a :class:`~lanes.testing.LaneSystemFactory`. Each
  ``async with lane_system(lanes, max_concurrency=...) as system:`` opens a lane system that
  records its events and, when the block exits normally, drains and checks the scheduling
  rules with :func:`~lanes.testing.check_invariants`. The test must also take pytest-trio's
  ``autojump_clock`` fixture, so waits cost no real time.

This module imports neither Hypothesis nor pytest-trio at import time, so installing
trio-lanes never breaks a pytest run that lacks them.
"""

from __future__ import annotations

import pytest
import trio.testing

from ._fixtures import LaneSystemFactory

__all__ = ["lane_system"]


@pytest.fixture
def lane_system(autojump_clock: trio.testing.MockClock) -> LaneSystemFactory:
    """A factory of lane systems under the autojump mock clock, checked when they close."""
    return LaneSystemFactory(clock=autojump_clock)
