"""Priority across workers on Redis: the most urgent command takes a free slot anywhere,
preemption of preemptible lanes across workers, and reserved minimum slots per worker."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

import lanes
from lanes.distributed import RedisBackend, open_lane_worker, unfinished_commands
from lanes.distributed._resp import open_connection
from lanes.distributed._scripts import FETCH
from tests.distributed_commands import Step

PREEMPTIBLE = (
    lanes.LaneConfig("urgent", 0, max_concurrency=2),
    lanes.LaneConfig("bulk", 1, max_concurrency=2, preemptible=True),
)


def starts(log: str) -> list[str]:
    path = pathlib.Path(log)
    text = path.read_text() if path.exists() else ""
    return [line.split()[1] for line in text.splitlines() if line.startswith("start ")]


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll the shared log (the workers write it; there is no event to wait on)."""
    with trio.fail_after(timeout):
        while True:
            if check():
                return
            await trio.sleep(0.01)


@asynccontextmanager
async def system_on(backend: RedisBackend, configs: Any) -> AsyncIterator[Any]:
    async with lanes.open_lane_system(
        configs, backend=backend, commands=[Step], drain_timeout=10
    ) as system:
        yield system


def worker(backend: RedisBackend, configs: Any, name: str, slots: int) -> Any:
    return open_lane_worker(
        configs,
        backend=backend,
        commands=[Step],
        name=name,
        max_concurrency=slots,
        drain_timeout=10,
    )


async def test_a_freed_slot_takes_the_urgent_command_not_the_older_batch(
    backend: RedisBackend, log: str
) -> None:
    configs = tuple(attrs.evolve(c, preemptible=False) for c in PREEMPTIBLE)
    async with system_on(backend, configs) as system, worker(backend, configs, "A", 2) as busy:
        held = [await system.submit("bulk", Step(log, f"b{i}", seconds=1.5)) for i in range(2)]
        await until(lambda: starts(log) == ["b0", "b1"])  # the busy worker is full of batch
        async with worker(backend, configs, "B", 1) as other:
            short = await system.submit("bulk", Step(log, "s", seconds=0.3))
            await until(lambda: "s" in starts(log))
            queued = [await system.submit("bulk", Step(log, f"q{i}")) for i in range(2)]
            urgent = await system.submit("urgent", Step(log, "u"))
            assert await urgent.result() == "u"
            for handle in (*held, short, *queued):
                await handle.result()
        assert starts(log)[:4] == ["b0", "b1", "s", "u"]  # before the older batch
        assert other.statistics().lanes["urgent"].completed == 1
        assert busy.statistics().lanes["urgent"].completed == 0
        assert sum(w.statistics().lanes["bulk"].preempted for w in (busy, other)) == 0


async def test_an_idle_worker_takes_the_urgent_command_at_once(
    backend: RedisBackend, log: str
) -> None:
    async with (
        system_on(backend, PREEMPTIBLE) as system,
        worker(backend, PREEMPTIBLE, "A", 2) as busy,
    ):
        held = [await system.submit("bulk", Step(log, f"b{i}", seconds=1.0)) for i in range(2)]
        await until(lambda: starts(log) == ["b0", "b1"])
        async with worker(backend, PREEMPTIBLE, "B", 1) as idle:
            began = trio.current_time()
            assert await (await system.submit("urgent", Step(log, "u"))).result() == "u"
            assert trio.current_time() - began < 0.5  # not after the batch (1 s)
            for handle in held:
                await handle.result()
        assert idle.statistics().lanes["urgent"].completed == 1
        assert busy.statistics().lanes["bulk"].preempted == 0  # a free slot was there


async def test_a_full_worker_preempts_batch_for_a_waiting_urgent_command(
    backend: RedisBackend, log: str
) -> None:
    async with (
        system_on(backend, PREEMPTIBLE) as system,
        worker(backend, PREEMPTIBLE, "A", 1) as one,
        worker(backend, PREEMPTIBLE, "B", 1) as two,
    ):
        held = [await system.submit("bulk", Step(log, f"b{i}", seconds=1.0)) for i in range(2)]
        await until(lambda: sorted(starts(log)) == ["b0", "b1"])
        later = await system.submit("bulk", Step(log, "later"))
        began = trio.current_time()
        assert await (await system.submit("urgent", Step(log, "u"))).result() == "u"
        assert trio.current_time() - began < 0.6  # a preemption, not a batch finishing (1 s)
        assert [await h.result() for h in held] == ["b0", "b1"]
        assert await later.result() == "later"
        stats = await system.statistics()
    order = starts(log)
    preempted = [tag for tag in ("b0", "b1") if order.count(tag) == 2]
    assert len(preempted) == 1  # one waiting command made one worker preempt, not both
    assert order.index("u") < order.index("later")
    # back at the front of its lane: it restarts before the later batch command
    assert [t for t in order if t in (*preempted, "later")] == [*preempted * 2, "later"]
    assert sum(w.statistics().lanes["bulk"].preempted for w in (one, two)) == 1
    bulk = stats.lanes["bulk"]
    assert (bulk.preempted, bulk.retried, bulk.failed, bulk.completed) == (1, 0, 0, 3)


async def test_a_lane_that_is_not_preemptible_keeps_its_slot(
    backend: RedisBackend, log: str
) -> None:
    configs = tuple(attrs.evolve(c, preemptible=False) for c in PREEMPTIBLE)
    async with system_on(backend, configs) as system, worker(backend, configs, "A", 1) as one:
        held = await system.submit("bulk", Step(log, "b", seconds=0.5))
        await until(lambda: starts(log) == ["b"])
        assert await (await system.submit("urgent", Step(log, "u"))).result() == "u"
        assert await held.result() == "b"
    assert starts(log) == ["b", "u"]
    assert one.statistics().lanes["bulk"].preempted == 0


RESERVING = (
    lanes.LaneConfig("urgent", 0, max_concurrency=2),
    lanes.LaneConfig("bulk", 1, max_concurrency=2, min_concurrency=1),
)


async def test_a_reserved_slot_holds_on_each_worker(backend: RedisBackend, log: str) -> None:
    async with system_on(backend, RESERVING) as system:
        handles = [await system.submit("urgent", Step(log, f"u{i}", seconds=0.3)) for i in range(3)]
        handles.append(await system.submit("bulk", Step(log, "b", seconds=0.3)))
        async with worker(backend, RESERVING, "A", 2) as one:
            await until(lambda: len(starts(log)) >= 2)
            for handle in handles:
                await handle.result()
    # the bulk lane's reserved slot: it starts at once although urgent commands wait
    assert sorted(starts(log)[:2]) == ["b", "u0"]
    assert one.statistics().lanes["bulk"].completed == 1


async def test_without_a_reservation_urgent_commands_take_every_slot(
    backend: RedisBackend, log: str
) -> None:
    configs = tuple(attrs.evolve(c, min_concurrency=0) for c in RESERVING)
    async with system_on(backend, configs) as system:
        handles = [await system.submit("urgent", Step(log, f"u{i}", seconds=0.3)) for i in range(3)]
        handles.append(await system.submit("bulk", Step(log, "b", seconds=0.3)))
        async with worker(backend, configs, "A", 2):
            for handle in handles:
                await handle.result()
    assert sorted(starts(log)[:2]) == ["u0", "u1"]  # the bulk command waited for a slot


async def test_a_worker_rejects_reservations_above_its_slots(backend: RedisBackend) -> None:
    both = tuple(attrs.evolve(c, min_concurrency=1) for c in RESERVING)
    with pytest.raises(lanes.LaneConfigError, match=r"max_concurrency=1 is below the 2 slots"):
        async with worker(backend, both, "A", 1):
            pass


def boosting(boost: lanes.PriorityBoost | None) -> tuple[lanes.LaneConfig, ...]:
    return (
        lanes.LaneConfig("urgent", 0),
        lanes.LaneConfig("normal", 2),
        lanes.LaneConfig("bulk", 3, boost=boost),
    )


@pytest.mark.parametrize(("boost", "expected"), [(True, "bnn"), (False, "nnb")])
async def test_a_boosted_head_is_fetched_before_a_more_urgent_lane(
    backend: RedisBackend, log: str, boost: bool, expected: str
) -> None:
    configs = boosting(lanes.PriorityBoost.custom(10, [0.1, 0.2]) if boost else None)
    async with system_on(backend, configs) as system:
        handles = [await system.submit("bulk", Step(log, "b"))]
        handles += [await system.submit("normal", Step(log, f"n{i}")) for i in range(2)]
        await trio.sleep(0.3)  # the bulk head ages past both points (Redis' clock)
        async with worker(backend, configs, "A", 1):
            for handle in handles:
                await handle.result()
    assert "".join(tag[0] for tag in starts(log)) == expected


@pytest.mark.parametrize(("boost", "expected"), [(True, "bbnn"), (False, "nnbb")])
async def test_a_stream_is_boosted_by_its_oldest_preempted_command_not_its_newest(
    backend: RedisBackend, log: str, boost: bool, expected: str
) -> None:
    configs = boosting(lanes.PriorityBoost.custom(10, [0.1, 0.2]) if boost else None)
    async with system_on(backend, configs) as system:
        handles = [await system.submit("bulk", Step(log, "b-old"))]
        await trio.sleep(0.3)  # it ages past both points (Redis' clock)
        handles.append(await system.submit("bulk", Step(log, "b-young")))
        handles += [await system.submit("normal", Step(log, f"n{i}")) for i in range(2)]
        # both bulk commands preempted back to the front of their lane, the older one first
        # (two workers preempt in any order): the front list's first item is the younger
        [stream] = system.backend.streams("bulk")
        connection = await open_connection(backend.url)
        try:
            create = ["XGROUP", "CREATE", stream, "workers", "0", "MKSTREAM"]
            read = ["XREADGROUP", "GROUP", "workers", "gone", "COUNT", "2", "STREAMS", stream]
            [_, [[_, entries]]] = await connection.execute([create, [*read, ">"]])
            old, young = (str(entry[0]) for entry in entries)
            front = f"{stream}:front"
            await connection.execute([["LPUSH", front, f"{old} gone", f"{young} gone"]])
        finally:
            await connection.aclose()
        async with worker(backend, configs, "A", 1):
            for handle in handles:
                await handle.result()
    assert "".join(tag[0] for tag in starts(log)) == expected


async def test_of_a_boosted_lane_the_stream_that_waited_longest_is_fetched_first(
    backend: RedisBackend,
) -> None:
    """The fetch script alone (a worker rotates a lane's streams between fetches): two
    streams of a boosted lane whose heads passed the same boost points, the younger one
    given first; the older head is fetched."""
    young, old = backend.stream("bulk", 0), backend.stream("bulk", 1)
    connection = await open_connection(backend.url)
    try:
        [[seconds, _]] = await connection.execute([["TIME"]])
        now = int(seconds) * 1000
        setup = [["XADD", young, f"{now - 1000}-1", "c", "young"]]
        setup += [["XADD", old, f"{now - 5000}-1", "c", "old"]]
        setup += [["XGROUP", "CREATE", stream, "workers", "0"] for stream in (young, old)]
        await connection.execute(setup)
        keys = [backend.key("delayed"), young, old, backend.key("paused")]
        args: list[Any] = ["workers", "me", 1, 0, 50, 1]
        for _ in (young, old):
            args += ["bulk", 1, "0", 0, "0", 0, backend.key("bucket:bulk"), 0, 3, "100 200"]
        [[entries, _, _]] = await connection.execute([["EVAL", FETCH, len(keys), *keys, *args]])
    finally:
        await connection.aclose()
    assert [(stream, fields) for stream, _, fields, _ in entries] == [(old, ["c", "old"])]


async def preempt_one(system: Any, log: str) -> tuple[list[Any], Any]:
    """Two full workers run b0 and b1; an urgent command preempts one of them."""
    held = [await system.submit("bulk", Step(log, f"b{i}", seconds=3.0)) for i in range(2)]
    await until(lambda: sorted(starts(log)) == ["b0", "b1"])
    urgent = await system.submit("urgent", Step(log, "u", seconds=0.5))
    await until(lambda: "u" in starts(log))
    stats = await system.statistics()
    assert (stats.lanes["bulk"].preempted, stats.lanes["bulk"].pending) == (1, 1)
    assert stats.lanes["bulk"].active == 1  # the preempted one counts as queued, not running
    rows = await unfinished_commands(system.backend.url, prefix=system.backend.prefix)
    bulk = sorted((row["status"], row["attempts"]) for row in rows if row["lane"] == "bulk")
    assert bulk == [("pending", 0), ("running", 1)]  # a preemption is not an attempt
    return held, urgent


@pytest.mark.parametrize("queued", [True, False])
async def test_cancel_lane_reaches_a_preempted_command_as_a_queued_one(
    backend: RedisBackend, log: str, queued: bool
) -> None:
    async with (
        system_on(backend, PREEMPTIBLE) as system,
        worker(backend, PREEMPTIBLE, "A", 1),
        worker(backend, PREEMPTIBLE, "B", 1),
    ):
        held, urgent = await preempt_one(system, log)
        with trio.fail_after(2):  # not after the preempted command ran again (3 s)
            assert await system.cancel_lane("bulk", queued=queued, running=True) == 1 + queued
        outcomes = []
        for handle in held:
            try:
                outcomes.append(await handle.result())
            except lanes.CommandCancelled:
                outcomes.append("cancelled")
        assert await urgent.result() == "u"
    if queued:
        assert outcomes == ["cancelled", "cancelled"]
    else:  # the preempted one is queued: it runs again, after the urgent command
        assert sorted(outcomes)[1] == "cancelled" and sorted(outcomes)[0] in ("b0", "b1")


async def test_cancelling_a_preempted_command_deletes_it_in_redis(
    backend: RedisBackend, log: str
) -> None:
    async with (
        system_on(backend, PREEMPTIBLE) as system,
        worker(backend, PREEMPTIBLE, "A", 1) as one,
        worker(backend, PREEMPTIBLE, "B", 1) as two,
    ):
        held, urgent = await preempt_one(system, log)
        for handle in held:
            handle.cancel()
        for handle in held:
            with pytest.raises(lanes.CommandCancelled):
                await handle.result()
        assert await urgent.result() == "u"
        stats = await system.statistics()
    assert sorted(starts(log)) == ["b0", "b1", "u"]  # neither batch command ran again
    # the running one was stopped by its worker; the preempted one by the cancel script
    assert sum(w.statistics().lanes["bulk"].cancelled for w in (one, two)) == 1
    assert (stats.lanes["bulk"].cancelled, stats.lanes["bulk"].pending) == (2, 0)


async def test_a_subscriber_sees_the_preemption(backend: RedisBackend, log: str) -> None:
    from lanes import events as ev

    async with (
        system_on(backend, PREEMPTIBLE) as system,
        system.subscribe() as events,
        worker(backend, PREEMPTIBLE, "A", 1),
        worker(backend, PREEMPTIBLE, "B", 1),
    ):
        held, urgent = await preempt_one(system, log)
        seen: list[Any] = []
        with trio.fail_after(10):
            async for event in events:
                seen.append(event)
                if isinstance(event, ev.Preempted):
                    break
        [preempted] = [e for e in seen if isinstance(e, ev.Preempted)]
        assert preempted.lane == "bulk" and preempted.attempt == 1
        assert preempted.command_id in {h.id for h in held}
        assert await urgent.result() == "u"
        for handle in held:
            handle.cancel()


async def test_a_rate_limited_lane_does_not_preempt(backend: RedisBackend, log: str) -> None:
    limited = (
        attrs.evolve(PREEMPTIBLE[0], rate_limit=lanes.RateLimit.per_second(1000)),
        PREEMPTIBLE[1],
    )
    async with (
        system_on(backend, limited) as system,
        worker(backend, limited, "A", 1) as one,
    ):
        held = await system.submit("bulk", Step(log, "b", seconds=0.5))
        await until(lambda: starts(log) == ["b"])
        assert await (await system.submit("urgent", Step(log, "u"))).result() == "u"
        assert await held.result() == "b"
    assert starts(log) == ["b", "u"]  # the batch command kept its slot
    assert one.statistics().lanes["bulk"].preempted == 0


async def test_a_draining_worker_does_not_preempt(backend: RedisBackend, log: str) -> None:
    async with system_on(backend, PREEMPTIBLE) as system:
        async with worker(backend, PREEMPTIBLE, "A", 1) as leaving:
            held = await system.submit("bulk", Step(log, "b", seconds=0.5))
            await until(lambda: starts(log) == ["b"])
            urgent = await system.submit("urgent", Step(log, "u"))
        # the block's exit drained the batch command: no fetch would have used a freed slot
        assert leaving.statistics().lanes["bulk"].preempted == 0
        assert await held.result() == "b"
        async with worker(backend, PREEMPTIBLE, "B", 1):
            assert await urgent.result() == "u"
    assert starts(log) == ["b", "u"]
