"""Flows: an agent turn fans out tool calls to other lanes and owns them.

Each turn is a command on the ``session`` lane whose body opens a flow and submits its tool
calls as children (searches on ``query``, a calculation on ``skill``). The turn's result
waits for them; one failing tool cancels its siblings (``on_failure="fail"``); a user's
"stop" cancels the turn and, with it, every tool call it started.

Run it with ``python examples/flows.py``.
"""

from __future__ import annotations

import trio

import lanes


async def search(query: str, seconds: float) -> str:
    await trio.sleep(seconds)
    if "forbidden" in query:
        raise PermissionError(f"search for {query!r} refused")
    return f"results for {query!r}"


async def turn(system: lanes.LaneSystem, queries: list[str]) -> list[str]:
    async with lanes.open_flow(system) as flow:
        calls = [await flow.submit("query", search, q, 1 + i) for i, q in enumerate(queries)]
    return [await call.result() for call in calls]


async def main() -> None:
    async with lanes.open_lane_system() as system:
        ok = await system.submit("session", turn, system, ["trio", "lanes"])
        print(f"turn 1: {await ok.result()} after {trio.current_time():.0f} s")

        bad = await system.submit("session", turn, system, ["weather", "forbidden", "news"])
        try:
            await bad.result()
        except lanes.CommandFailed:
            queries = system.statistics().lanes["query"]
            print(
                f"turn 2 failed: searches done {queries.completed}, failed {queries.failed}, "
                f"cancelled {queries.cancelled}"
            )

        stopped = await system.submit("session", turn, system, ["a", "b", "c"])
        await trio.sleep(1.5)
        stopped.cancel()  # the user hits "stop"
        try:
            await stopped.result()
        except lanes.CommandCancelled:
            queries = system.statistics().lanes["query"]
            print(f"turn 3 stopped: query lane cancelled {queries.cancelled} searches in all")


if __name__ == "__main__":
    trio.run(main)
