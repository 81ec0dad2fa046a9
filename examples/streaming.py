"""Streaming partial results: a command sends tokens as it makes them, its caller reads them.

``submit_streaming`` gives the command a bounded stream: ``lanes.send_partial(item)`` waits
while ``buffer`` items are unread, so a slow reader slows the command instead of growing
memory. The caller reads with ``async for item in handle``, then the outcome with
``await handle.result()``. Run it with ``python examples/streaming.py``.
"""

from __future__ import annotations

import trio

import lanes


async def generate(prompt: str, tokens: int) -> int:
    """A stand-in for a streaming model call: one partial result per token."""
    for i in range(tokens):
        await trio.sleep(0.01)  # the model thinks
        await lanes.send_partial(f"{prompt}-{i}")  # waits while the reader is behind
    return tokens


async def main() -> None:
    async with lanes.open_lane_system() as system:
        handle = await system.submit_streaming("prompt", generate, "hello", 5, buffer=2)
        async for token in handle:  # as they arrive
            print("token:", token)
            await trio.sleep(0.05)  # a slow reader: the command waits for it
        print("result:", await handle.result())

        # A reader that stops early drops the rest of the stream; the command goes on.
        handle = await system.submit_streaming("prompt", generate, "bye", 5, buffer=2)
        async for token in handle:
            print("first token only:", token)
            break
        print("result after an early stop:", await handle.result())


if __name__ == "__main__":
    trio.run(main)
