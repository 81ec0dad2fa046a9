"""Shared test configuration: Hypothesis profiles, and a redis-server per test module.

Neither profile runs Hypothesis's explain phase: on a state machine it replays the failing run
once per step to explain it, which took minutes per failure; the replay script and decision
trace that ``PolicyStateMachine`` attaches to a failure explain it instead.
"""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, Phase, settings

from lanes.distributed import LocalRedis, RedisBackend, local_redis_server

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


# A real redis-server (started once per module that asks for it), and a backend on a prefix
# of its own per test. Modules that need other settings define their own fixtures.


@pytest.fixture(scope="module")
def redis_server() -> Iterator[LocalRedis]:
    with local_redis_server() as server:
        yield server


@pytest.fixture
def backend(redis_server: LocalRedis) -> RedisBackend:
    return RedisBackend(redis_server.url, prefix=f"t{uuid.uuid4().hex[:8]}", lease=0.6)


@pytest.fixture
def log(tmp_path: pathlib.Path) -> str:
    return str(tmp_path / "log.txt")
