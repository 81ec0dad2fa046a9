"""A lane system observed and retuned while it runs: events and metrics of your own, alert
thresholds changed on a running monitor, and snapshots exported as JSON.

Run it with ``python examples/live_system.py`` (about 12 seconds; the tests run it under a
mock clock).
"""

from __future__ import annotations

import json
from typing import ClassVar

import attrs
import trio

import lanes
from lanes import AlertRule, LaneConfig

LANES = (LaneConfig("orders", 1, max_concurrency=2), LaneConfig("reports", 4))


@attrs.frozen
class OrderShipped(lanes.events.Event):
    """An event of this program's own, delivered with the system's events."""

    key: ClassVar[str] = "shop.order.shipped"
    order: str = ""
    shop: str = ""


async def ship(system: lanes.LaneSystem, order: str, shop: str) -> None:
    await trio.sleep(1)
    system.metrics.counter("orders_shipped", "Orders shipped.", labels=["shop"]).inc(shop=shop)
    system.metrics.histogram("ship_seconds", "Time to ship.").observe(1.0)
    system.emit(OrderShipped("orders", "", system.wall_time(), order=order, shop=shop))


def alert(event: lanes.events.AlertRaised | lanes.events.AlertCleared) -> None:
    print(f"  alert: {event.key} {event.level} depth={event.value:g} at {event.threshold:g}")


async def main() -> None:
    async with lanes.open_lane_system(LANES) as system:
        backlog = system.metrics.gauge("report_backlog", "Reports not yet written.")
        rule = AlertRule.queue_depth("reports", warning=10)
        async with (
            system.subscribe(OrderShipped) as shipped,
            lanes.open_alert_monitor(system, [rule], callbacks=[alert]) as monitor,
        ):
            system.pause("reports")  # reports pile up
            for _ in range(6):
                await system.submit("reports", trio.sleep, 0.1)
                backlog.inc()
            print("six reports pending; the warning is at 10")
            await trio.sleep(1.5)
            print("lowering the warning to 5 on the running monitor")
            monitor.set_rule(AlertRule.queue_depth("reports", warning=5))
            await trio.sleep(1)
            async with trio.open_nursery() as nursery:
                for n, shop in enumerate(["eu", "eu", "us"]):
                    nursery.start_soon(system.run, "orders", ship, system, f"A-{n}", shop)
            received = [await shipped.receive() for _ in range(3)]
            orders = sorted(e.order for e in received if isinstance(e, OrderShipped))
            print(f"  shipped events received: {', '.join(orders)}")
            system.resume("reports")
            await system.drain()
            backlog.set(0)
            await trio.sleep(1.5)  # the next sample clears the warning
            statistics = system.statistics()
            snapshot = system.metrics.snapshot()
    counted = snapshot.user["orders_shipped"]
    print("shipped by shop:", dict(sorted((s.labels[0], s.value) for s in counted.series)))
    data = json.loads(lanes.to_json({"statistics": statistics, "layout": LANES}))
    print(f"exported: lanes {sorted(data['statistics']['lanes'])}, {len(data['layout'])} configs")
    back = lanes.from_json(lanes.to_json(statistics), lanes.SystemStatistics)
    print(f"read back equal: {back == statistics}")


if __name__ == "__main__":
    trio.run(main)
