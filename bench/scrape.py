"""scrape: one Prometheus scrape of a process holding many idle lane systems.

Opens ``SYSTEMS`` lane systems (the six default lanes; each ran one command, so its sketches
are not empty) and adds them all to one ``lanes.prometheus.LaneCollector``. Each figure is
the median of several scrapes (``generate_latest`` on a registry holding the collector):
summed series (the default), and with a system label capped at 100 and at 1,000, each
rendered by ``serve_metrics``'s text encoder and by ``prometheus_client.generate_latest``. The
baseline, measured in the same run, is what any exporter of one system at a time pays
before rendering anything: ``system.metrics.snapshot()`` of every system.

Run: ``python -m bench --only scrape [--quick]`` (or ``python -m bench.scrape [--quick]``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack

import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest

import lanes
from lanes.prometheus import LaneCollector, _encode_text

from ._harness import Options, Result, median, print_table

NAME = "scrape"
SYSTEMS = 10_000
QUICK_SYSTEMS = 500
REPEAT = 3


async def _noop() -> None:
    pass


def _timed(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return median(times), out


def _scrape(
    collector: LaneCollector, encode: Callable[[CollectorRegistry], bytes]
) -> Callable[[], bytes]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return lambda: encode(registry)


async def _measure(count: int, repeat: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    async with AsyncExitStack() as stack:
        opened = []
        for _ in range(count):
            system = await stack.enter_async_context(lanes.open_lane_system())
            await system.run("query", _noop)
            opened.append(system)
        await trio.testing.wait_all_tasks_blocked()
        baseline, _ = _timed(repeat, lambda: [s.metrics.snapshot() for s in opened])
        rows.append({"figure": f"baseline: {count} x metrics.snapshot()", "seconds": baseline})
        for cap in (0, 100, 1000):
            collector = LaneCollector(max_system_labels=cap)
            for index, system in enumerate(opened):
                collector.add(system, label=f"session-{index}" if cap else None)
            label = "summed" if not cap else f"system label, cap {cap}"
            for encoder, encode in (
                ("serve_metrics", _encode_text),
                ("generate_latest", generate_latest),
            ):
                seconds, body = _timed(repeat, _scrape(collector, encode))
                assert isinstance(body, bytes)
                rows.append(
                    {
                        "figure": f"scrape of {count} systems, {label} ({encoder})",
                        "seconds": seconds,
                        "ratio": seconds / baseline,
                        "bytes": len(body),
                    }
                )
            for system in opened:
                collector.remove(system)
        one = LaneCollector()
        one.add(opened[0])
        seconds, body = _timed(repeat, _scrape(one, _encode_text))
        assert isinstance(body, bytes)
        rows.append(
            {
                "figure": "scrape of 1 system",
                "seconds": seconds,
                "ratio": seconds / baseline,
                "bytes": len(body),
            }
        )
    return rows


def run(options: Options) -> Result:
    count = QUICK_SYSTEMS if options.quick else SYSTEMS
    rows = trio.run(_measure, count, REPEAT)
    result = Result(NAME, rows)
    print_table(
        f"one scrape over {count} idle lane systems (median of {REPEAT})",
        ["figure", "ms", "x baseline", "KiB"],
        [
            [
                row["figure"],
                f"{float(row['seconds']) * 1000:.1f}",  # type: ignore[arg-type]
                f"{row['ratio']:.2f}" if "ratio" in row else "1",
                f"{int(row['bytes']) / 1024:.1f}" if "bytes" in row else "-",  # type: ignore[call-overload]
            ]
            for row in rows
        ],
    )
    return result


if __name__ == "__main__":
    run(Options(quick="--quick" in sys.argv[1:]))
