"""Lanes added to and retired from a running system: a tenant gets its own lane while it is
active, and gives it back when it leaves (its work finishes first, or is cancelled at a
timeout).

Run it with ``python examples/lanes_at_runtime.py`` (about 4 seconds; the tests run it
under a mock clock).
"""

from __future__ import annotations

import trio

import lanes
from lanes import LaneConfig


async def job(tenant: str, seconds: float) -> str:
    await trio.sleep(seconds)
    return f"{tenant} done after {seconds:g} s"


async def main() -> None:
    async with lanes.open_lane_system([LaneConfig("shared", 2)], max_concurrency=4) as system:
        # A tenant arrives: a lane of its own, usable at once.
        system.add_lane(LaneConfig("tenant-a", 1, max_concurrency=1))
        print("lanes:", [lane.name for lane in system.lanes])
        handles = [await system.submit("tenant-a", job, "tenant-a", s) for s in (1, 1)]
        try:
            system.add_lane(LaneConfig("tenant-a", 1))
        except lanes.LaneConfigError as exc:
            print("again:", type(exc).__name__)
        # The tenant leaves: no new work, but what it queued still runs.
        cancelled = await system.retire_lane("tenant-a")
        print("retired tenant-a:", [await h.result() for h in handles], "cancelled", cancelled)
        try:
            await system.submit("tenant-a", job, "tenant-a", 1)
        except lanes.UnknownLaneError:
            print("tenant-a is gone:", [lane.name for lane in system.lanes])
        # A tenant that leaves in a hurry: what is left after 1.5 s is cancelled.
        system.add_lane(LaneConfig("tenant-b", 1, max_concurrency=1))
        slow = [await system.submit("tenant-b", job, "tenant-b", s) for s in (1, 10)]
        cancelled = await system.retire_lane("tenant-b", timeout=1.5)
        print("retired tenant-b: first", await slow[0].result(), "| cancelled", cancelled)
        print("lanes in statistics:", list(system.statistics().lanes))


if __name__ == "__main__":
    trio.run(main)
