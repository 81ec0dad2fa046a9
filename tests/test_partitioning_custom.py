"""``Partitioning.custom``: a partition function of your own, checked at the boundary."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

import lanes
from lanes import Partitioning, PartitionRequest

from .distributed_commands import LANES, Step


def by_tenant(request: PartitionRequest) -> int:
    """Tenant "vip" gets partition 0 to itself; the others share 1 and 2."""
    if request.partition_key == "vip":
        return 0
    return 1 + len(request.partition_key or "") % 2


def test_the_function_picks_the_partition() -> None:
    part = Partitioning.custom(3, by_tenant)
    assert [part.partition(k, lane="bulk") for k in ("vip", "ab", "abc", None)] == [0, 1, 2, 1]
    assert not part.ordered
    assert Partitioning.custom(3, by_tenant, ordered=True).ordered
    seen: list[PartitionRequest] = []

    def record(request: PartitionRequest) -> int:
        seen.append(request)
        return 0

    command = object()
    Partitioning.custom(2, record).partition("k", lane="bulk", command=command)
    assert seen == [PartitionRequest("bulk", "k", command)]


@pytest.mark.parametrize("bad", [3, -1, True, 1.0, "1", None])
def test_a_bad_result_is_refused_naming_it(bad: object) -> None:
    part = Partitioning.custom(3, lambda request: bad)  # type: ignore[arg-type, return-value]
    with pytest.raises(lanes.LaneConfigError, match="returned") as info:
        part.partition("k", lane="bulk")
    assert repr(bad) in str(info.value)
    assert "expected an int from 0 to 2" in str(info.value)
    assert "'bulk'" in str(info.value)


def test_a_function_that_raises_is_reported() -> None:
    def broken(request: PartitionRequest) -> int:
        raise KeyError(request.partition_key)

    with pytest.raises(lanes.LaneConfigError, match="raised KeyError") as info:
        Partitioning.custom(2, broken).partition("tenant-9", lane="bulk")
    assert isinstance(info.value.__cause__, KeyError)
    assert "'tenant-9'" in str(info.value)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(lanes.LaneConfigError, match=r"n=0 is invalid"):
        Partitioning.custom(0, by_tenant)
    with pytest.raises(lanes.LaneConfigError, match="fn=42 is invalid"):
        Partitioning.custom(2, 42)  # type: ignore[arg-type]
    with pytest.raises(lanes.LaneConfigError, match="ordered='yes' is invalid"):
        Partitioning.custom(2, by_tenant, ordered="yes")  # type: ignore[arg-type]
    with pytest.raises(lanes.LaneConfigError, match=r"only Partitioning\.custom"):
        Partitioning("hash", 2, fn=by_tenant)


# -- the distributed backend puts each command in the partition the function chose ---------------

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None and not os.environ.get("CI"),
    reason="redis-server is not installed (apt-get install -y redis-server); CI must have it",
)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    from lanes.distributed import local_redis_server

    with local_redis_server() as server:
        yield server.url


@needs_redis
async def test_the_distributed_submit_uses_the_function(redis_url: str) -> None:
    from lanes.distributed import RedisBackend
    from lanes.distributed._redis import connect

    backend = RedisBackend(
        redis_url,
        prefix=f"t{uuid.uuid4().hex[:8]}",
        partitions={"bulk": Partitioning.custom(3, by_tenant)},
    )
    async with lanes.open_lane_system(
        LANES, backend=backend, commands=[Step], drain_timeout=0
    ) as system:
        for tenant in ("vip", "vip", "ab", "abc", "abc", "abc"):
            await system.submit("bulk", Step("/dev/null", tenant), partition_key=tenant)
        with pytest.raises(lanes.LaneConfigError, match="returned 5"):
            bad = RedisBackend(
                redis_url, prefix=backend.prefix, partitions=Partitioning.custom(2, lambda r: 5)
            )
            async with lanes.open_lane_system(
                LANES, backend=bad, commands=[Step], drain_timeout=0
            ) as other:
                await other.submit("bulk", Step("/dev/null", "x"))
        async with connect(backend) as client:
            sizes = [await client.xlen(backend.stream("bulk", i)) for i in range(3)]
        assert sizes == [2, 1, 3]
