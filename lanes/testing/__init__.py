"""Testing tools for trio-lanes: property tests for the scheduler and for your lanes.

* :class:`ReferenceModel`: a plain model of the scheduling rules of docs/architecture.md
  (rules 1-4, retries, timeouts, dead letters).
* :class:`PolicyStateMachine`: a Hypothesis state machine that drives the real scheduling
  policy and outcome code against the model; subclass it with your own ``lane_configs``,
  rules and checks (:class:`SchedulerView`, :class:`TraceEntry`); a failure prints a
  replayable script of its schedule.
* Strategies: :func:`lane_configs`, :func:`max_concurrencies`, :func:`lane_systems`,
  :func:`retry_policies`, :func:`rate_limits`, :func:`priority_boosts`, :func:`workloads`.
* :func:`run_workload`: run a drawn workload on a real system (with a time limit and a
  livelock guard: :class:`WorkloadHang`); :func:`check_results` checks how each item ended
  (and what each ``reprioritize`` call answered: :class:`Reprioritized`, not to be confused
  with the event ``lanes.events.Reprioritized``); :func:`priorities` gives each command's
  submitted priority.
* :func:`record_events` and :func:`check_invariants`: record a real system's events and check
  them against the rules (raising :class:`InvariantViolation`).
* The ``lane_system`` pytest fixture (:class:`LaneSystemFactory`), from the plugin
  ``lanes.testing.pytest_plugin``.

The strategies and the state machine need Hypothesis (the ``test`` extra); they
are imported on first use, so the rest works without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._checker import InvariantViolation, check_invariants
from ._fixtures import EventLog, LaneSystemFactory, record_events
from ._model import ModelStep, ModelViolation, ReferenceModel, retry_delay_bounds
from ._view import CommandView, LaneView, SchedulerView, TraceEntry
from ._workload import (
    Outcome,
    Reprioritized,
    WorkItem,
    WorkloadError,
    WorkloadHang,
    WorkloadResult,
    check_results,
    expected_attempts,
    expected_outcomes,
    expected_reprioritize,
    priorities,
    run_workload,
)

if TYPE_CHECKING:
    from ._machine import PolicyStateMachine
    from ._strategies import (
        lane_configs,
        lane_systems,
        max_concurrencies,
        priority_boosts,
        rate_limits,
        retry_policies,
        seconds,
        workloads,
    )

__all__ = [
    "CommandView",
    "EventLog",
    "InvariantViolation",
    "LaneSystemFactory",
    "LaneView",
    "ModelStep",
    "ModelViolation",
    "Outcome",
    "PolicyStateMachine",
    "ReferenceModel",
    "Reprioritized",
    "SchedulerView",
    "TraceEntry",
    "WorkItem",
    "WorkloadError",
    "WorkloadHang",
    "WorkloadResult",
    "check_invariants",
    "check_results",
    "expected_attempts",
    "expected_outcomes",
    "expected_reprioritize",
    "lane_configs",
    "lane_systems",
    "max_concurrencies",
    "priorities",
    "priority_boosts",
    "rate_limits",
    "record_events",
    "retry_delay_bounds",
    "retry_policies",
    "run_workload",
    "seconds",
    "workloads",
]

_LAZY = {
    "PolicyStateMachine": "._machine",
    "lane_configs": "._strategies",
    "lane_systems": "._strategies",
    "max_concurrencies": "._strategies",
    "priority_boosts": "._strategies",
    "rate_limits": "._strategies",
    "retry_policies": "._strategies",
    "seconds": "._strategies",
    "workloads": "._strategies",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
