"""Misuse faults: calls from other threads and other runs, hostile input through submit.

Every public entry point of a lane system called from a thread with its own ``trio.run``, from
a later run, or from a plain thread must fail with ``LaneUsageError`` in the caller, and the
owner's run must go on untouched. Hostile arguments must be refused with a ``LaneError``
before anything is accepted.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

import lanes
from lanes import LaneConfig, LaneSystem

from .helpers import boom, noop

ONE = [LaneConfig("work", 0, max_concurrency=1)]


def _entry_points(
    system: LaneSystem, handle: lanes.CommandHandle[Any], letter_id: str
) -> dict[str, Callable[[], Any]]:
    """Every public entry point, as a call that returns a value or an awaitable."""
    return {
        "submit": lambda: system.submit("work", noop),
        "submit_nowait": lambda: system.submit_nowait("work", noop),
        "run": lambda: system.run("work", noop),
        "handle.result": lambda: handle.result(),
        "handle.cancel": lambda: handle.cancel(),
        "pause": lambda: system.pause("work"),
        "resume": lambda: system.resume("work"),
        "cancel_lane": lambda: system.cancel_lane("work"),
        "drain": lambda: system.drain(1),
        "shutdown": lambda: system.shutdown(),
        "schedule": lambda: system.schedule("work", noop, every=10),
        "dead_letters.pop": lambda: system.dead_letters.pop(),
        "dead_letters.requeue": lambda: system.dead_letters.requeue(letter_id),
        "dead_letters.clear": lambda: system.dead_letters.clear(),
        "subscribe": lambda: system.subscribe(),
        "listen": lambda: system.listen(lambda event: None),
        "handle_for": lambda: system.handle_for("k"),
        "statistics": lambda: system.statistics(),
    }


async def _call_async(call: Callable[[], Any]) -> None:
    result = call()
    if isinstance(result, Awaitable):
        await result


def _call_without_a_run(call: Callable[[], Any]) -> None:
    """Call from a plain thread: a coroutine is stepped once (its first check raises)."""
    result = call()
    if hasattr(result, "send"):
        try:
            result.send(None)
        finally:
            result.close()


GATES: dict[int, trio.Event] = {}


async def _owner_with_history(system: LaneSystem) -> tuple[lanes.CommandHandle[Any], str]:
    """A dead letter, and a command that runs until :func:`_owner_still_works` ends it."""
    with pytest.raises(lanes.CommandFailed):
        await system.run("work", boom)
    letter_id = system.dead_letters.list()[0].id
    gate = GATES[id(system)] = trio.Event()
    handle = await system.submit("work", gate.wait, key="k")
    await trio.testing.wait_all_tasks_blocked()
    return handle, letter_id


def _refusals(
    calls: dict[str, Callable[[], Any]], run: Callable[[Callable[[], Any]], Any]
) -> dict[str, str]:
    outcome = {}
    for name, call in calls.items():
        try:
            run(call)
        except lanes.LaneUsageError as exc:
            outcome[name] = str(exc)
        except BaseException as exc:  # anything else is a defect: report it by name
            outcome[name] = f"NOT REFUSED: {exc!r}"
        else:
            outcome[name] = "NOT REFUSED: returned"
    return outcome


async def _owner_still_works(system: LaneSystem, handle: lanes.CommandHandle[Any]) -> None:
    assert handle.status == "running"  # the foreign cancel did not reach it
    GATES.pop(id(system)).set()
    await handle.result()
    assert handle.status == "done"
    assert await system.run("work", noop, key="after") == 1
    stats = system.statistics()
    assert stats.lanes["work"].completed == 2
    assert stats.lanes["work"].cancelled == 0
    assert len(system.dead_letters) == 1
    assert not system.schedules


async def test_calls_from_another_trio_run_are_refused(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle, letter_id = await _owner_with_history(system)
        calls = _entry_points(system, handle, letter_id)

        def foreign() -> dict[str, str]:
            async def attack() -> dict[str, str]:
                outcome = {}
                for name, call in calls.items():
                    try:
                        await _call_async(call)
                    except lanes.LaneUsageError as exc:
                        outcome[name] = str(exc)
                    except BaseException as exc:
                        outcome[name] = f"NOT REFUSED: {exc!r}"
                    else:
                        outcome[name] = "NOT REFUSED: returned"
                return outcome

            return trio.run(attack)

        outcome = await trio.to_thread.run_sync(foreign)
        assert set(outcome) == set(calls)
        for name, message in outcome.items():
            assert "belongs to another trio.run" in message, (name, message)
        await _owner_still_works(system, handle)


async def test_calls_from_a_plain_thread_are_refused(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle, letter_id = await _owner_with_history(system)
        calls = _entry_points(system, handle, letter_id)
        outcome = await trio.to_thread.run_sync(_refusals, calls, _call_without_a_run)
        assert set(outcome) == set(calls)
        for name, message in outcome.items():
            assert "outside any Trio run" in message, (name, message)
            assert "trio.from_thread.run" in message
        await _owner_still_works(system, handle)


async def test_calls_from_a_thread_of_the_owner_work_through_from_thread() -> None:
    async with lanes.open_lane_system(ONE) as system:

        def worker() -> int:
            return trio.from_thread.run(system.run, "work", noop)

        assert await trio.to_thread.run_sync(worker) == 1


async def test_a_system_from_an_earlier_run_is_refused_in_a_later_one() -> None:
    def earlier() -> tuple[LaneSystem, lanes.CommandHandle[Any], str]:
        async def main() -> tuple[LaneSystem, lanes.CommandHandle[Any], str]:
            async with lanes.open_lane_system(ONE, drain_timeout=0) as system:
                handle, letter_id = await _owner_with_history(system)
            return system, handle, letter_id

        return trio.run(main)

    system, handle, letter_id = await trio.to_thread.run_sync(earlier)
    calls = _entry_points(system, handle, letter_id)
    for name, call in calls.items():
        with pytest.raises(lanes.LaneUsageError, match=r"belongs to another trio\.run"):
            await _call_async(call)
        assert name  # every entry point refused


async def test_many_foreign_threads_at_once_leave_the_owner_untouched(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with lanes.open_lane_system(ONE) as system:
        handle, _ = await _owner_with_history(system)
        refused = []
        lock = threading.Lock()

        def foreign() -> None:
            async def attack() -> None:
                for _ in range(20):
                    with pytest.raises(lanes.LaneUsageError):
                        system.submit_nowait("work", noop)
                    with pytest.raises(lanes.LaneUsageError):
                        handle.cancel()
                with lock:
                    refused.append(40)

            trio.run(attack)

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(trio.to_thread.run_sync, foreign)
        assert sum(refused) == 160
        await _owner_still_works(system, handle)


# -- hostile input through submit -----------------------------------------------------------------


class Unhashable:
    __hash__ = None  # type: ignore[assignment]

    async def __call__(self) -> int:
        return 1


HOSTILE: list[tuple[str, dict[str, Any], type[Exception]]] = [
    ("lane None", {"lane": None}, lanes.UnknownLaneError),
    ("lane list", {"lane": ["work"]}, lanes.UnknownLaneError),
    ("lane unknown", {"lane": "nope"}, lanes.UnknownLaneError),
    ("fn None", {"fn": None}, lanes.LaneUsageError),
    ("fn int", {"fn": 42}, lanes.LaneUsageError),
    ("fn string", {"fn": "noop"}, lanes.LaneUsageError),
    ("fn class", {"fn": LaneConfig}, lanes.LaneUsageError),
    ("fn sync builtin", {"fn": sorted, "args": ([],)}, lanes.LaneUsageError),
    ("too many args", {"fn": noop, "args": (1, 2, 3)}, lanes.LaneUsageError),
    ("key int", {"key": 1}, lanes.LaneConfigError),
    ("key bytes", {"key": b"k"}, lanes.LaneConfigError),
    ("key blank", {"key": "\u2003"}, lanes.LaneConfigError),
    ("key surrogate", {"key": "x\udc80"}, lanes.LaneConfigError),
    ("delay nan", {"delay": math.nan}, lanes.LaneConfigError),
    ("delay negative", {"delay": -1}, lanes.LaneConfigError),
    ("delay string", {"delay": "1"}, lanes.LaneConfigError),
    ("delay bool", {"delay": True}, lanes.LaneConfigError),
    ("timeout zero", {"timeout": 0}, lanes.LaneConfigError),
    ("timeout nan", {"timeout": math.nan}, lanes.LaneConfigError),
    ("durable string", {"durable": "yes"}, lanes.LaneConfigError),
    ("durable without storage", {"durable": True}, lanes.LaneConfigError),
]


@pytest.mark.parametrize(("what", "override", "error"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_hostile_arguments_are_refused_before_anything_is_accepted(
    what: str, override: dict[str, Any], error: type[Exception]
) -> None:
    call: dict[str, Any] = {"lane": "work", "fn": noop, "args": ()} | override
    lane, fn, args = call.pop("lane"), call.pop("fn"), call.pop("args")
    async with lanes.open_lane_system(ONE) as system:
        with pytest.raises(error) as info:
            await system.submit(lane, fn, *args, **call)
        assert isinstance(info.value, lanes.LaneError)
        with pytest.raises(error):
            system.submit_nowait(lane, fn, *args, **call)
        with pytest.raises(error):
            await system.run(lane, fn, *args, **call)
        assert system.statistics().lanes["work"].submitted == 0
        assert await system.run("work", noop) == 1  # and the system still serves


async def test_a_coroutine_object_is_refused_with_a_hint() -> None:
    coroutine = noop()
    try:
        async with lanes.open_lane_system(ONE) as system:
            with pytest.raises(lanes.LaneUsageError, match="not an async callable"):
                await system.submit("work", coroutine)  # type: ignore[call-overload]
    finally:
        coroutine.close()


async def test_an_unhashable_async_callable_is_accepted() -> None:
    async with lanes.open_lane_system(ONE) as system:
        assert await system.run("work", Unhashable()) == 1


async def test_hostile_keys_never_merge_commands(autojump_clock: trio.abc.Clock) -> None:
    async with lanes.open_lane_system(ONE) as system:
        system.pause("work")
        for key in ["", " ", "\n", "\u00a0"]:
            with pytest.raises(lanes.LaneConfigError):
                await system.submit("work", noop, key=key)
        first = await system.submit("work", noop, key="a ")
        second = await system.submit("work", noop, key="a")  # not blank: a different key
        assert first is not second
        assert system.handle_for("a ") is first
        system.resume("work")
