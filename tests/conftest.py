"""Shared test configuration: Hypothesis profiles.

Neither profile runs Hypothesis's explain phase: on a state machine it replays the failing run
once per step to explain it, which took minutes per failure; the replay script and decision
trace that ``PolicyStateMachine`` attaches to a failure explain it instead.
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=_PHASES,
)
settings.register_profile(
    "thorough",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=_PHASES,
)
settings.load_profile("ci")
