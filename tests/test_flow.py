"""Flows: ``lanes.open_flow`` owns child commands in any lanes, like a nursery."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

import lanes
from lanes import LaneConfig
from lanes.storage import MemoryStorage

LANES = [
    LaneConfig("agent", 0, max_concurrency=2),
    LaneConfig("tools", 1, max_concurrency=4),
    LaneConfig("llm", 2, max_concurrency=1),
]


async def tool(name: str, seconds: float, fail: bool = False) -> str:
    await trio.sleep(seconds)
    if fail:
        raise ValueError(f"{name} broke")
    return name


async def test_the_block_waits_for_every_child(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(LANES) as system:
        async with lanes.open_flow(system) as flow:
            a = await flow.submit("tools", tool, "a", 3)
            b = await flow.submit("llm", tool, "b", 1)
        assert trio.current_time() == 3
        assert flow.children == [a, b]
        assert [await a.result(), await b.result()] == ["a", "b"]


async def test_a_commands_result_waits_for_its_children(autojump_clock: trio.abc.Clock) -> None:
    async def turn(system: lanes.LaneSystem) -> list[str]:
        async with lanes.open_flow(system) as flow:
            calls = [await flow.submit("tools", tool, n, s) for n, s in [("x", 2), ("y", 4)]]
        return [await c.result() for c in calls]

    async with lanes.open_lane_system(LANES) as system:
        parent = await system.submit("agent", turn, system)
        assert await parent.result() == ["x", "y"]
        assert trio.current_time() == 4


async def test_fail_cancels_the_others_and_raises_the_childs_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(LANES) as system:
        with pytest.raises(lanes.CommandFailed, match="bad broke"):
            async with lanes.open_flow(system) as flow:
                slow = await flow.submit("tools", tool, "slow", 100)
                queued = await flow.submit("llm", tool, "queued", 50)
                later = await flow.submit("llm", tool, "later", 1)
                await flow.submit("tools", tool, "bad", 2, True)
        assert trio.current_time() == 2  # not 100: the failure ended the flow at once
        for handle in (slow, queued, later):
            assert handle.status == lanes.CommandStatus.CANCELLED


async def test_ignore_and_collect(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(LANES) as system:
        async with lanes.open_flow(system, on_failure="ignore") as flow:
            ok = await flow.submit("tools", tool, "ok", 5)
            bad = await flow.submit("tools", tool, "bad", 1, True)
        assert await ok.result() == "ok"
        assert bad.status == lanes.CommandStatus.FAILED
        assert flow.errors == []
        async with lanes.open_flow(system, on_failure="collect") as flow:
            ok = await flow.submit("tools", tool, "ok", 5)
            bad1 = await flow.submit("tools", tool, "one", 2, True)
            bad2 = await flow.submit("tools", tool, "two", 1, True)
        assert await ok.result() == "ok"
        assert [(h, type(e)) for h, e in flow.errors] == [
            (bad2, lanes.CommandFailed),
            (bad1, lanes.CommandFailed),
        ]


async def test_cancelling_the_parent_cancels_its_children(
    autojump_clock: trio.abc.Clock,
) -> None:
    children: list[lanes.CommandHandle[str]] = []

    async def turn(system: lanes.LaneSystem) -> None:
        async with lanes.open_flow(system) as flow:
            children.append(await flow.submit("tools", tool, "running", 100))
            children.append(await flow.submit("llm", tool, "llm", 100))
            children.append(await flow.submit("llm", tool, "queued", 100))

    async with lanes.open_lane_system(LANES) as system:
        parent = await system.submit("agent", turn, system)
        await trio.sleep(5)
        parent.cancel()
        with pytest.raises(lanes.CommandCancelled):
            await parent.result()
        assert trio.current_time() == 5
        assert [c.status for c in children] == [lanes.CommandStatus.CANCELLED] * 3


async def test_a_timeout_of_the_parent_cancels_its_children(
    autojump_clock: trio.abc.Clock,
) -> None:
    children: list[lanes.CommandHandle[str]] = []

    async def turn(system: lanes.LaneSystem) -> None:
        async with lanes.open_flow(system) as flow:
            children.append(await flow.submit("tools", tool, "slow", 100))

    async with lanes.open_lane_system(LANES) as system:
        parent = await system.submit("agent", turn, system, timeout=10)
        with pytest.raises(lanes.CommandTimeout):
            await parent.result()
        assert children[0].status == lanes.CommandStatus.CANCELLED
        assert trio.current_time() == 10


async def test_a_block_that_raises_cancels_the_children_first(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(LANES) as system:
        with pytest.raises(KeyError):
            async with lanes.open_flow(system) as flow:
                child = await flow.submit("tools", tool, "child", 100)
                await trio.sleep(1)
                raise KeyError("oops")
        assert child.status == lanes.CommandStatus.CANCELLED
        with pytest.raises(lanes.LaneUsageError, match="block has ended"):
            await flow.submit("tools", tool, "late", 1)


async def test_a_child_that_ignores_cancellation_for_a_while_is_waited_for(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def stubborn() -> str:
        with trio.CancelScope(shield=True):
            await trio.sleep(3)  # cleanup that must finish
        await trio.sleep(100)
        return "never"

    async with lanes.open_lane_system(LANES) as system:
        with trio.move_on_after(1):
            async with lanes.open_flow(system) as flow:
                child = await flow.submit("tools", stubborn)
        # the flow's exit waited for the child to resolve: nothing outlives it
        assert trio.current_time() == 3
        assert child.status == lanes.CommandStatus.CANCELLED


async def test_bad_arguments() -> None:
    async with lanes.open_lane_system(LANES) as system:
        with pytest.raises(lanes.LaneConfigError, match="on_failure='sometimes' is invalid"):
            async with lanes.open_flow(system, on_failure="sometimes"):  # type: ignore[arg-type]
                pytest.fail("must not open")
        with pytest.raises(lanes.LaneUsageError, match="is not a lane system"):
            async with lanes.open_flow("system"):  # type: ignore[arg-type]
                pytest.fail("must not open")
        with pytest.raises(lanes.UnknownLaneError):
            async with lanes.open_flow(system) as flow:
                await flow.submit("nope", tool, "x", 1)
        assert flow.children == []


# -- durable: a flow survives a restart ------------------------------------------------------


@lanes.command(name="flow-child")
@attrs.define
class Child:
    name: str

    async def execute(self) -> str:
        await trio.sleep(10)
        return self.name


@lanes.command(name="flow-parent")
@attrs.define
class Parent:
    names: list[str]

    async def execute(self) -> list[str]:
        system = SYSTEMS[-1]
        async with lanes.open_flow(system) as flow:
            handles = [await flow.submit("tools", Child(n)) for n in self.names]
        return [await h.result() for h in handles]


SYSTEMS: list[lanes.LaneSystem] = []


async def test_a_durable_parent_finds_its_recovered_children(
    autojump_clock: trio.abc.Clock,
) -> None:
    path = MemoryStorage(clock=trio.current_time)  # no SQLite thread for autojump to skip
    kinds = [Parent, Child]
    async with lanes.open_lane_system(
        LANES, storage=path, commands=kinds, drain_timeout=0
    ) as system:
        SYSTEMS.append(system)
        await system.submit("agent", Parent(["a", "b"]))
        await trio.sleep(1)  # the parent started its two children at once
        assert len(system.commands()) == 3
        keys = sorted(c.key or "" for c in system.commands("tools"))
        await system._core.commit()
        system.close_now()  # a crash, as far as storage knows: all three stay stored
    assert [k.rsplit(":", 1)[1] for k in keys] == ["0", "1"]
    async with lanes.open_lane_system(LANES, storage=path, commands=kinds) as system:
        SYSTEMS.append(system)
        recovered = {type(h.command).__name__: h for h in system.recovered}
        assert set(recovered) == {"Parent", "Child"}
        parent = next(h for h in system.recovered if isinstance(h.command, Parent))
        assert await parent.result() == ["a", "b"]
        # the parent ran again and found the recovered children by their keys: two
        # children in all, not four
        assert system.statistics().lanes["tools"].submitted == 2
