"""Observability: one metrics endpoint for many sessions, alerts, traces, a ``lanes top`` frame.

Needs the extras ``prometheus``, ``otel`` and ``top``: ``pip install -e '.[prometheus,otel,top]'``
in a checkout, ``pip install 'trio-lanes[prometheus,otel,top]'`` otherwise.

Run it with ``python examples/observability.py``; add ``--hold 60`` to keep the system busy
and its endpoint up for a minute, and watch it with ``lanes top URL`` in another terminal.
"""

from __future__ import annotations

import argparse
from functools import partial

import trio

import lanes
from lanes import events as ev

try:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    import lanes.otel
    from lanes._top import run_top
    from lanes.prometheus import LaneCollector, serve_metrics
except ModuleNotFoundError as missing:  # one line saying what to install, not a traceback
    from lanes._extras import exit_missing_extra

    exit_missing_extra(missing, "examples/observability.py", "prometheus,otel,top")

RULES = [
    # An agent whose LLM calls pile up is falling behind the user.
    lanes.AlertRule.queue_depth("prompt", warning=3, critical=6),
    # Tool lookups should be quick; judge the p99 of the last 10 s.
    lanes.AlertRule.latency("query", of="run", percentile=99, warning=0.5, critical=2.0),
]


# Every session's LLM calls share one provider limit (exported as lanes_shared_limit_*).
LLM = lanes.SharedLimit(2, name="llm")
SESSION_LANES = [
    lanes.LaneConfig("prompt", 5, max_concurrency=2, shared_limit=LLM),
    lanes.LaneConfig("query", 2, max_concurrency=10),
]


async def llm_call(turn: int) -> str:
    await trio.sleep(0.1)
    return f"answer {turn}"


async def lookup(key: int) -> int:
    await trio.sleep(0.002 * (key % 5))
    return key


def report(event: ev.AlertRaised | ev.AlertCleared) -> None:
    verb = "raised" if isinstance(event, ev.AlertRaised) else "cleared"
    print(
        f"alert {verb}: {event.lane} {event.metric} {event.level} (threshold {event.threshold:g})"
    )


async def agent_turn(system: lanes.LaneSystem, monitor: lanes.AlertMonitor, url: str) -> None:
    """Eight LLM calls (two run at once, so six queue up) and twenty quick lookups."""
    prompts = [await system.submit("prompt", llm_call, turn) for turn in range(8)]
    monitor.check()  # sample now rather than at the next tick
    await run_top(url, once=True, interval=0)  # what `lanes top URL --once` prints
    async with trio.open_nursery() as nursery:
        for key in range(20):
            nursery.start_soon(partial(system.run, "query", lookup, key))
    for handle in prompts:
        await handle.result()


async def short_session(collector: LaneCollector, number: int) -> None:
    """A session that comes and goes: its counts stay in the exposition's totals."""
    async with lanes.open_lane_system(SESSION_LANES) as session:
        collector.add(session)
        await session.run("prompt", llm_call, number)
        await session.run("query", lookup, number)


def totals(collector: LaneCollector) -> dict[tuple[str, str], float]:
    """A scrape of the collector, as {(sample name, lane or limit): value}."""
    registry = CollectorRegistry()
    registry.register(collector)
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            where = sample.labels.get("lane", sample.labels.get("limit", ""))
            if sample.labels.get("outcome", "completed") == "completed":
                found[sample.name, where] = sample.value
    return found


async def busy(system: lanes.LaneSystem, seconds: float) -> None:
    """Keep the lanes busy for ``seconds``, so that ``lanes top`` has something to show."""
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            for key in range(1_000_000):
                if system.statistics().lanes["prompt"].pending < 4:
                    nursery.start_soon(partial(system.run, "prompt", llm_call, key))
                nursery.start_soon(partial(system.run, "query", lookup, key))
                await trio.sleep(0.01)


async def main(port: int = 0, hold: float = 0.0) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("example")
    collector = LaneCollector()  # one exposition for every lane system of the process
    async with lanes.open_lane_system() as system, trio.open_nursery() as nursery:
        collector.add(system)
        lanes.otel.instrument(system, tracer_provider=provider)
        async with lanes.open_alert_monitor(
            system, RULES, interval=0.05, window=10.0, callbacks=[report]
        ) as monitor:
            server = await nursery.start(partial(serve_metrics, collector, port, alerts=monitor))
            print(f"metrics: {server.url}")
            async with trio.open_nursery() as sessions:  # three sessions come and go
                for number in range(3):
                    sessions.start_soon(short_session, collector, number)
            with tracer.start_as_current_span("agent turn"):
                await agent_turn(system, monitor, server.url)
            monitor.check()  # the prompt queue has drained: its alerts clear
            await busy(system, hold)
        nursery.cancel_scope.cancel()
        counts = system.statistics().lanes
        scraped = totals(collector)
    spans = exporter.get_finished_spans()
    [turn] = [span for span in spans if span.name == "agent turn"]
    assert turn.context is not None
    children = [s for s in spans if s.parent and s.parent.span_id == turn.context.span_id]
    print(f"traced {len(children)} commands under 'agent turn'")
    print(f"completed: prompt={counts['prompt'].completed} query={counts['query'].completed}")
    print(
        f"exposition: {scraped['lanes_systems', '']:.0f} open system(s); completed in all "
        f"sessions: prompt={scraped['lanes_commands_total', 'prompt']:.0f} "
        f"query={scraped['lanes_commands_total', 'query']:.0f}; "
        f"llm: {scraped['lanes_shared_limit_in_use', 'llm']:.0f} in use, "
        f"{scraped['lanes_shared_limit_wait_duration_seconds_count', 'prompt']:.0f} waits measured"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="metrics port (default: any)")
    parser.add_argument("--hold", type=float, default=0.0, help="seconds to keep busy")
    args = parser.parse_args()
    trio.run(main, args.port, args.hold)
