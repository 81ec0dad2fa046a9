"""The trio-lanes pytest plugin (registered as the ``lanes`` entry point of ``pytest11``).

Fixtures:

* ``lane_system``: a :class:`~lanes.testing.LaneSystemFactory`. Each
  ``async with lane_system(lanes, max_concurrency=...) as system:`` opens a lane system that
  records its events and, when the block exits normally, drains and checks the scheduling
  rules with :func:`~lanes.testing.check_invariants`. The test must also take pytest-trio's
  ``autojump_clock`` fixture, so waits cost no real time.

No pytest configuration is needed: an ``async def`` test that takes ``lane_system`` is run
by pytest-trio as a Trio test (it gets the ``trio`` marker at collection) even without
``trio_mode = true``. pytest-trio itself must be installed (the ``test`` extra has it).

This module imports neither Hypothesis nor pytest-trio at import time, so installing
trio-lanes never breaks a pytest run that lacks them.
"""

from __future__ import annotations

import inspect

import pytest
import trio.testing

from ._fixtures import LaneSystemFactory

__all__ = ["lane_system", "pytest_collection_modifyitems"]

FIXTURES = frozenset({"lane_system"})
"""The fixtures of this plugin: async tests that take one run as Trio tests."""


@pytest.fixture
def lane_system(autojump_clock: trio.testing.MockClock) -> LaneSystemFactory:
    """A factory of lane systems under the autojump mock clock, checked when they close."""
    return LaneSystemFactory(clock=autojump_clock)


def _is_async_test(item: pytest.Item) -> bool:
    test = getattr(item, "obj", None)
    hypothesis = getattr(test, "hypothesis", None)
    if hypothesis is not None:  # a Hypothesis @given test: its inner test is the async one
        test = hypothesis.inner_test
    return inspect.iscoroutinefunction(test)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark async tests that take a trio-lanes fixture as Trio tests (pytest-trio's
    ``trio`` marker), so they run without ``trio_mode = true`` in the project's config."""
    if not config.pluginmanager.has_plugin("trio"):
        return  # without pytest-trio, pytest reports the missing autojump_clock fixture
    for item in items:
        uses_ours = FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses_ours and item.get_closest_marker("trio") is None and _is_async_test(item):
            item.add_marker(pytest.mark.trio)
