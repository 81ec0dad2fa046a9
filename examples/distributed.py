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


TICKS: list[float] = []  # the workers below are tasks of this process: they share it


@lanes.command
@attrs.define
class Tick:
    """A scheduled command: notes when it ran."""

    async def execute(self) -> None:
        TICKS.append(trio.current_time())


async def schedule_on_two_replicas(backend: distributed.RedisBackend) -> None:
    """Two replicas schedule the same key: each slot fires once for the deployment."""
    async with (
        lanes.open_lane_system(LANES, backend=backend, commands=[Tick]) as one,
        lanes.open_lane_system(LANES, backend=backend, commands=[Tick]) as two,
    ):
        first = await one.schedule("interactive", Tick(), every=0.1, key="tick")
        second = await two.schedule("interactive", Tick(), every=0.1, key="tick")
        print(f"same slots on both replicas: {first.next_run == second.next_run}")
        await trio.sleep(1.0)
        first.cancel()  # deletes it for every replica (the other learns at its next slot)
        second.cancel()
    fired = first.fired + second.fired  # the blocks waited for the firings' outcomes
    print(f"fired once per slot: {fired == len(TICKS) and fired <= 11}")


async def deduplicate(system: distributed.RemoteLaneSystem) -> None:
    """The ``dedup=`` modes of an idempotency key, for the whole deployment."""
    hold = lanes.Dedup.hold(ttl=60)  # the key answers for 60 s after its command finished
    first = await system.run("interactive", Thumbnail("hook.png", 64), key="hook-7", dedup=hold)
    again = await system.submit("interactive", Thumbnail("hook.png", 64), key="hook-7")
    print(f"kept key, same result: {await again.result() == first}")  # the stored reply
    print(f"released: {await system.release_key('hook-7')}")
    replace = lanes.Dedup.replace()  # a command no worker has taken yet is replaced
    old = await system.submit("interactive", Thumbnail("v1.png", 64), key="doc", delay=5)
    new = await system.submit("interactive", Thumbnail("v2.png", 64), key="doc", dedup=replace)
    try:
        await old.result()
    except lanes.CommandCancelled as error:
        print(f"replaced: {'replaced by command ' + new.id in str(error)}")
    print(f"the newest ran: {(await new.result())['thumbnail']}")


async def share_a_limit(backend: distributed.RedisBackend) -> None:
    """Two processes' handles on one limit in Redis: 2 slots for everybody, fair per session."""
    running, most = 0, 0

    async def call_llm(limit: distributed.RedisSharedLimit, session: str) -> None:
        nonlocal running, most
        async with limit.slot(session=session):  # a lease in Redis, renewed while held
            running += 1
            most = max(most, running)
            await trio.sleep(0.05)
            running -= 1

    async with (
        distributed.open_shared_limit(backend, "llm", 2) as here,
        distributed.open_shared_limit(backend, "llm", 2) as there,  # another replica's
        trio.open_nursery() as nursery,
    ):
        for i in range(6):
            nursery.start_soon(call_llm, here if i % 2 else there, f"user{i % 3}")
    print(f"shared limit: at most {most} of 6 calls at once across both handles")


async def demo(url: str) -> None:
    backend = distributed.RedisBackend(url, prefix=f"example-{uuid.uuid4().hex[:6]}", lease=5)
    async with (
        distributed.open_lane_worker(LANES, backend=backend, commands=[Thumbnail, Tick]) as one,
        distributed.open_lane_worker(LANES, backend=backend, commands=[Thumbnail, Tick]) as two,
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
        letters = system.dead_letters.list()  # a synchronous snapshot, as in process
        print(f"dead letters: {[(d.lane, d.attempts) for d in letters]}")
        stats = await system.statistics()  # the whole deployment, read from Redis
        batch = stats.lanes["batch"]
        print(
            f"deployment: {batch.completed} completed, {batch.retried} retried, "
            f"{batch.dead_lettered} dead-lettered in batch; {stats.max_concurrency} slots"
        )
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
        kinds = (lanes.events.Submitted, lanes.events.Cancelled)
        async with system.subscribe(*kinds) as events:  # events of every process
            parked = [
                await system.submit("batch", Thumbnail(f"p{i}.png", 64), delay=30) for i in range(3)
            ]
            print(f"cancel_lane dropped: {await system.cancel_lane('batch', running=False)}")
            seen = [type(await events.receive()).__name__ for _ in range(6)]
        print(f"events: {seen.count('Submitted')} submitted, {seen.count('Cancelled')} cancelled")
        for handle in parked:
            with contextlib.suppress(lanes.CommandCancelled):
                await handle.result()
        print(f"parked: {[h.status.value for h in parked]}")
        await deduplicate(system)
        await schedule_on_two_replicas(backend)
        await share_a_limit(backend)
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
