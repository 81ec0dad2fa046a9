"""Basic usage: submit work to lanes, await results, cancel, pause, and read statistics.

Run it with ``python examples/basic_usage.py``.
"""

from __future__ import annotations

import trio

import lanes


async def fetch_page(url: str) -> str:
    await trio.sleep(0.2)  # stands in for an HTTP request
    return f"<html>{url}</html>"


async def llm_call(prompt: str) -> str:
    await trio.sleep(5)  # stands in for a slow model call
    return f"completion of {prompt!r}"


async def main() -> None:
    async with lanes.open_lane_system() as system:  # the six default lanes
        # submit returns once the command is accepted; result() waits for it.
        handle = await system.submit("query", fetch_page, "https://example.org")
        print("query:", await handle.result())

        # run() = submit + result.
        print("run:", await system.run("query", fetch_page, "https://example.com"))

        # A slow prompt command can be cancelled at any time.
        slow = await system.submit("prompt", llm_call, "write a poem")
        await trio.sleep(0.1)
        slow.cancel()
        try:
            await slow.result()
        except lanes.CommandCancelled as exc:
            print("prompt:", exc)

        # A per-submit timeout cancels the attempt and raises CommandTimeout.
        try:
            await system.run("prompt", llm_call, "too slow", timeout=0.5)
        except lanes.CommandTimeout:
            print("prompt: timed out after 0.5 s")

        # Pausing a lane stops dispatching (running work continues; submits queue up).
        system.pause("session")
        queued = await system.submit("session", fetch_page, "later")
        print("session while paused:", queued.status)
        system.resume("session")
        print("session after resume:", await queued.result())

        stats = system.statistics()
        for name, lane in stats.lanes.items():
            print(
                f"{name:<8} completed={lane.completed} cancelled={lane.cancelled} "
                f"failed={lane.failed} timed_out={lane.timed_out}"
            )


if __name__ == "__main__":
    trio.run(main)
