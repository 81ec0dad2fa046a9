"""Reliability: timeouts, retries with backoff, Permanent failures and the dead-letter queue.

Run it with ``python examples/reliability.py``.
"""

from __future__ import annotations

import trio

import lanes
from lanes import LaneConfig, RetryPolicy
from lanes import events as ev

calls = {"flaky": 0}


async def flaky_api() -> str:
    """Fails twice (a transient error), then answers."""
    calls["flaky"] += 1
    if calls["flaky"] <= 2:
        raise ConnectionError(f"connection reset (call {calls['flaky']})")
    return "200 OK"


async def bad_request() -> str:
    """A failure that retrying cannot fix: skip the retries with lanes.Permanent."""
    raise lanes.Permanent(ValueError("400 Bad Request"))


async def hanging_call() -> str:
    await trio.sleep(60)  # never answers in time
    return "too late"


LANES = (
    LaneConfig("control", 0, max_concurrency=2),
    LaneConfig(
        "api",
        1,
        max_concurrency=4,
        timeout=2.0,  # each attempt is cancelled after 2 s
        retry=RetryPolicy.exponential(3, initial_delay=0.5, max_delay=4.0),
    ),
)


async def main() -> None:
    async with lanes.open_lane_system(LANES) as system:
        async with system.subscribe(ev.Retrying, ev.DeadLettered) as stream:
            print("flaky:", await system.run("api", flaky_api))
            for call in (bad_request, hanging_call):
                try:
                    await system.run("api", call)
                except lanes.CommandTimeout as exc:
                    print("timeout:", exc)
                except lanes.CommandFailed as exc:
                    print("failed:", exc.__cause__)
            while True:
                try:
                    event = stream.receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(event, ev.Retrying):
                    print(f"  retry of attempt {event.attempt} in {event.delay:.1f} s")
                else:
                    print(f"  dead-lettered {event.command_id}")

        print("dead letters:")
        for letter in system.dead_letters.list():
            print(f"  {letter.command_type:<12} attempts={letter.attempts} error={letter.error}")
        stats = system.statistics().lanes["api"]
        print(
            f"api: completed={stats.completed} failed={stats.failed} retried={stats.retried} "
            f"timed_out={stats.timed_out} dead_lettered={stats.dead_lettered}"
        )

        # Fixed what was wrong? Requeue a letter: it runs again with a fresh attempt count.
        letter = system.dead_letters.list()[0]
        handle = await system.dead_letters.requeue(letter.id)
        try:
            await handle.result()
        except lanes.CommandFailed:
            print(
                f"requeued {letter.command_type} failed again; letters: {len(system.dead_letters)}"
            )


if __name__ == "__main__":
    trio.run(main)
