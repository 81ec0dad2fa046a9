"""Deduplication modes: one idempotency key, four behaviours.

- ``Dedup.hold(ttl=60)``: a payment webhook delivered twice, the second time after the
  first charge finished, is still answered by the first charge.
- ``Dedup.replace()``: a search box sends a query per keystroke; a newer query replaces the
  one still waiting, a running one is left alone.
- ``Dedup.keep_last()``: a document is re-indexed on every save; one indexing runs at a
  time, and the newest save is indexed right after it.
- ``system.release_key(key)`` / ``system.extend_key(key, ttl)``: by hand.

Run it with ``python examples/dedup_modes.py``.
"""

from __future__ import annotations

import trio

import lanes
from lanes import Dedup, LaneConfig

LANES = [
    LaneConfig("payments", 0),
    LaneConfig("search", 1),
    LaneConfig("index", 2, max_concurrency=4),
]


async def charge(order: str) -> str:
    await trio.sleep(1)
    print(f"charged {order}")
    return f"receipt for {order}"


async def search(text: str) -> str:
    await trio.sleep(0.5)
    return f"results for {text!r}"


async def index(version: int) -> int:
    await trio.sleep(2)
    print(f"indexed version {version}")
    return version


async def main() -> None:
    async with lanes.open_lane_system(LANES) as system:
        # 1. A time to live: the key outlives its command by 60 s.
        first = await system.submit(
            "payments", charge, "order-42", key="order-42", dedup=Dedup.hold(ttl=60)
        )
        print(await first.result())
        retry = await system.submit("payments", charge, "order-42", key="order-42")
        print(f"webhook retried: same charge? {retry is first}")

        # 2. Replace the waiting one: keystrokes while the lane is busy.
        await system.submit("search", search, "warm-up")  # keeps the lane busy
        handles = [
            await system.submit("search", search, text, key="box", dedup=Dedup.replace())
            for text in ("t", "tr", "tri", "trio")
        ]
        print(await handles[-1].result())
        print(f"replaced: {[h.status.value for h in handles[:-1]]}")

        # 3. Keep the last: saves while an indexing runs.
        versions = []
        for version in range(1, 5):
            versions.append(
                await system.submit("index", index, version, key="doc", dedup=Dedup.keep_last())
            )
            await trio.sleep(0.1)
        print(f"last indexed: {await versions[-1].result()}")
        print(f"statuses: {[h.status.value for h in versions]}")

        # 4. By hand: release the payment key to charge again (a new order of the same id).
        print(f"extended: {system.extend_key('order-42', 3600)}")
        print(f"released: {system.release_key('order-42')}")
        again = await system.submit("payments", charge, "order-42", key="order-42")
        print(f"new charge: {again is not first}, {await again.result()}")


if __name__ == "__main__":
    trio.run(main)
