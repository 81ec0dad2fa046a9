"""Lanes on Redis: submit from one system, run the commands on workers.

Run it with a Redis URL (``python examples/distributed.py redis://127.0.0.1:6379/0``) or
without one: it then starts a private redis-server (Debian: ``apt-get install redis-server``)
on a free port of 127.0.0.1 and stops it at the end.

The two workers here are tasks of this process, to keep the example self-contained; in a
deployment each is a process of its own, on any machine that reaches Redis:

    lanes worker --redis redis://HOST:6379/0 --commands examples.distributed:Thumbnail \
        --lanes examples.distributed:LANES
"""

from __future__ import annotations

import contextlib
import sys
import uuid

import attrs
import trio

import lanes
from lanes import distributed

LANES = (
    lanes.LaneConfig("interactive", 0, max_concurrency=2),
    lanes.LaneConfig(
        "batch",
        1,
        max_concurrency=2,
        retry=lanes.RetryPolicy.fixed(1, 0.05),
        rate_limit=lanes.RateLimit.token_bucket(50, burst=5),  # cluster-wide
    ),
)


@lanes.command
@attrs.define
class Thumbnail:
    """Pretend to render a thumbnail; sizes above 4096 are rejected."""

    image: str
    size: int

    async def execute(self) -> dict[str, object]:
        await trio.sleep(0.01)
        if self.size > 4096:
            raise ValueError(f"size {self.size} is too large")
        return {"image": self.image, "thumbnail": f"{self.image}@{self.size}px"}


async def demo(url: str) -> None:
    backend = distributed.RedisBackend(url, prefix=f"example-{uuid.uuid4().hex[:6]}", lease=5)
    async with (
        distributed.open_lane_worker(LANES, backend=backend, commands=[Thumbnail]) as one,
        distributed.open_lane_worker(LANES, backend=backend, commands=[Thumbnail]) as two,
        lanes.open_lane_system(LANES, backend=backend, commands=[Thumbnail]) as system,
    ):
        first = await system.run("interactive", Thumbnail("cat.png", 128))
        print(f"interactive: {first['thumbnail']}")
        handles = [await system.submit("batch", Thumbnail(f"img{i}.png", 64)) for i in range(8)]
        same = await system.submit("batch", Thumbnail("img0.png", 64), key="img0")
        again = await system.submit("batch", Thumbnail("img0.png", 64), key="img0")
        print(f"same key, same command: {same.id == again.id}")
        results = [await handle.result() for handle in [*handles, same]]
        print(f"batch: {len(results)} thumbnails")
        try:
            await system.run("batch", Thumbnail("huge.png", 10_000))
        except lanes.CommandFailed as error:
            print(f"failed: {error.__cause__}")
        letters = await system.dead_letters()
        print(f"dead letters: {[(d.lane, d.attempts) for d in letters]}")
        later = await system.submit("interactive", Thumbnail("later.png", 32), delay=0.5)
        held = await distributed.unfinished_commands(url, prefix=backend.prefix)
        print(f"held in Redis: {[(c['lane'], c['status']) for c in held]}")  # (lanes inspect)
        await later.result()
        dropped = await system.submit("batch", Thumbnail("dropped.png", 64), delay=0.3)
        dropped.cancel()  # synchronous, as in process; every worker hears of it
        try:
            await dropped.result()
        except lanes.CommandCancelled as error:
            print(f"cancelled: {error}".replace(dropped.id, "ID"))
        system.pause("batch")  # every worker stops starting batch commands
        system.resume("batch")
        parked = [
            await system.submit("batch", Thumbnail(f"p{i}.png", 64), delay=30) for i in range(3)
        ]
        print(f"cancel_lane dropped: {await system.cancel_lane('batch', running=False)}")
        for handle in parked:
            with contextlib.suppress(lanes.CommandCancelled):
                await handle.result()
        print(f"parked: {[h.status.value for h in parked]}")
    done = sum(w.statistics().lanes["batch"].completed for w in (one, two))
    print(f"batch commands completed by the two workers: {done}")


async def main() -> None:
    """Use the URL given on the command line, or a private redis-server."""
    if len(sys.argv) > 1 and sys.argv[1].startswith("redis"):
        await demo(sys.argv[1])
        return
    with distributed.local_redis_server() as server:
        await demo(server.url)


if __name__ == "__main__":
    trio.run(main)
