"""Child process of the crash test: submits durable commands until it is killed.

Usage: python crash_child.py DB LOG FIRST COUNT
Prints ``ack KEY`` after each submit returned (the command is on disk by then). Each command
appends its key to LOG when it runs. COUNT=0 only recovers and drains.
"""

from __future__ import annotations

import sys

import attrs
import trio

import lanes

LOG = sys.argv[2]


@lanes.command(name="record")
@attrs.define
class Record:
    key: str

    async def execute(self) -> None:
        await trio.sleep(0.002)
        with open(LOG, "a") as log:  # noqa: ASYNC230 - a tiny append, kept synchronous
            log.write(self.key + "\n")


async def main(db: str, first: int, count: int) -> None:
    # A small inbox bounds the backlog each kill leaves for the final drain.
    config = [lanes.LaneConfig("work", 0, max_concurrency=8, inbox_size=2000)]
    async with lanes.open_lane_system(
        config, storage=db, commands=[Record], drain_timeout=None
    ) as system:
        print(f"recovered {len(system.recovered)}", flush=True)

        async def submitter(offset: int) -> None:
            for i in range(first + offset, first + count, 50):
                key = f"k{i}"
                await system.submit("work", Record(key), key=key)
                print(f"ack {key}", flush=True)

        async with trio.open_nursery() as nursery:
            for offset in range(50):
                nursery.start_soon(submitter, offset)
    print("drained", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[3]), int(sys.argv[4]))
