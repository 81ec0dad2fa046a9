"""OpenTelemetry tracing: spans, parentage and attributes, in the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio
import trio.testing
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import lanes
from lanes import LaneConfig, RetryPolicy
from lanes.otel import instrument

from .helpers import boom, noop, sleeper

CONFIGS = [
    LaneConfig("control", 1),
    LaneConfig("query", 2, max_concurrency=4, retry=RetryPolicy.fixed(2, 1.0), timeout=5.0),
    LaneConfig("prompt", 5, max_concurrency=2, preemptible=True),
]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


async def test_spans_nest_under_the_submitter_and_the_command_nests_under_execute(
    autojump_clock: trio.abc.Clock, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    tracer = provider.get_tracer("test")

    async def traced_work() -> str:
        with tracer.start_as_current_span("inner"):
            await trio.sleep(2)
        return "ok"

    async with lanes.open_lane_system(CONFIGS) as system:
        instrument(system, tracer_provider=provider)
        system.pause("query")
        with tracer.start_as_current_span("request"):
            handle = await system.submit("query", traced_work)
        await trio.sleep(1)  # it waits 1 s
        system.resume("query")
        assert await handle.result() == "ok"
    [request] = named(exporter, "request")
    [command] = named(exporter, "lanes.command")
    [execute] = named(exporter, "lanes.execute")
    [inner] = named(exporter, "inner")
    assert parent_id(command) == span_id(request)
    assert parent_id(execute) == span_id(command)
    assert parent_id(inner) == span_id(execute)
    assert len({s.context.trace_id for s in (request, command, execute, inner) if s.context}) == 1
    assert command.attributes is not None and execute.attributes is not None
    assert dict(command.attributes) == {
        "lanes.lane": "query",
        "lanes.priority": 2,
        "lanes.command.id": handle.id,
        "lanes.command.type": traced_work.__qualname__,
        "lanes.outcome": "completed",
        "lanes.attempts": 1,
    }
    assert execute.attributes["lanes.attempt"] == 1
    assert execute.attributes["lanes.priority"] == 2
    assert execute.attributes["lanes.wait_seconds"] == pytest.approx(1)
    assert execute.attributes["lanes.execution_seconds"] == pytest.approx(2)
    assert execute.attributes["lanes.outcome"] == "completed"


async def test_each_submitter_parents_its_own_commands(
    autojump_clock: trio.abc.Clock, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    tracer = provider.get_tracer("test")
    ids: dict[str, str] = {}

    async def client(name: str, system: lanes.LaneSystem) -> None:
        with tracer.start_as_current_span(name):
            handle = await system.submit("prompt", sleeper, 1.0)  # both run in one worker pool
            ids[handle.id] = name
            await handle.result()

    async with lanes.open_lane_system(CONFIGS) as system, trio.open_nursery() as nursery:
        instrument(system, tracer_provider=provider)
        for name in ("alice", "bob", "carol"):
            nursery.start_soon(client, name, system)
    clients = {span_id(s): s.name for s in exporter.get_finished_spans() if s.parent is None}
    commands = named(exporter, "lanes.command")
    assert len(commands) == 3
    for command in commands:
        assert command.attributes is not None
        assert clients[parent_id(command)] == ids[str(command.attributes["lanes.command.id"])]  # type: ignore[index]


async def test_retries_give_one_execute_span_per_attempt(
    autojump_clock: trio.abc.Clock, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    calls = []

    async def flaky() -> str:
        calls.append(trio.current_time())
        if len(calls) == 1:
            raise RuntimeError("first try fails")
        if len(calls) == 2:
            await trio.sleep(10)  # the lane's timeout is 5 s
        return "third time"

    async with lanes.open_lane_system(CONFIGS) as system:
        instrument(system, tracer_provider=provider)
        assert await system.run("query", flaky) == "third time"
    [command] = named(exporter, "lanes.command")
    attempts = sorted(named(exporter, "lanes.execute"), key=lambda s: s.attributes["lanes.attempt"])  # type: ignore[index]
    assert [s.attributes["lanes.outcome"] for s in attempts] == [  # type: ignore[index]
        "retrying",
        "timed_out",
        "completed",
    ]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert attempts[1].attributes["lanes.execution_seconds"] == pytest.approx(5)  # type: ignore[index]
    assert all(parent_id(s) == span_id(command) for s in attempts)
    assert [e.name for e in command.events] == ["retrying", "timed_out", "retrying"]
    assert command.attributes is not None
    assert command.attributes["lanes.attempts"] == 3
    assert command.status.status_code is StatusCode.UNSET


async def test_a_failed_command_marks_its_span(
    autojump_clock: trio.abc.Clock, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    async with lanes.open_lane_system(CONFIGS) as system:
        instrument(system, tracer_provider=provider)
        with pytest.raises(lanes.CommandFailed):
            await system.run("control", boom, "kaput")
    [command] = named(exporter, "lanes.command")
    [execute] = named(exporter, "lanes.execute")
    for span in (command, execute):
        assert span.status.status_code is StatusCode.ERROR
        assert "kaput" in (span.status.description or "")
        assert span.attributes is not None
        assert span.attributes["lanes.outcome"] == "failed"


async def test_cancelled_commands_end_their_spans_and_restore_the_worker_context(
    autojump_clock: trio.abc.Clock, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    seen: list[trace.Span] = []

    async def look() -> None:
        seen.append(trace.get_current_span())

    async with lanes.open_lane_system(CONFIGS) as system:
        instrument(system, tracer_provider=provider)
        running = await system.submit("control", sleeper, 10)
        queued = await system.submit("control", sleeper, 10)
        after = await system.submit("control", look)  # the same worker runs it next
        await trio.testing.wait_all_tasks_blocked()
        queued.cancel()
        running.cancel()
        await after.result()
    commands = {s.attributes["lanes.command.id"]: s for s in named(exporter, "lanes.command")}  # type: ignore[index]
    for handle in (running, queued):
        assert commands[handle.id].attributes["lanes.outcome"] == "cancelled"  # type: ignore[index]
    executes = {s.attributes["lanes.command.id"]: s for s in named(exporter, "lanes.execute")}  # type: ignore[index]
    assert set(executes) == {running.id, after.id}  # the queued one never ran
    assert executes[running.id].attributes["lanes.outcome"] == "cancelled"  # type: ignore[index]
    [current] = seen
    assert current.get_span_context().span_id == span_id(executes[after.id])
    assert parent_id(executes[after.id]) == span_id(commands[after.id])


async def test_preempted_attempts(
    autojump_clock: trio.abc.Clock, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    async with lanes.open_lane_system(CONFIGS, max_concurrency=1) as system:
        instrument(system, tracer_provider=provider)
        victim = await system.submit("prompt", sleeper, 10)
        await trio.sleep(1)
        await system.run("control", noop)
        await victim.result()
    executes = [
        s
        for s in named(exporter, "lanes.execute")
        if s.attributes["lanes.command.id"] == victim.id  # type: ignore[index]
    ]
    assert sorted(s.attributes["lanes.outcome"] for s in executes) == ["completed", "preempted"]  # type: ignore[index]
    [command] = [
        s for s in named(exporter, "lanes.command") if s.attributes["lanes.command.id"] == victim.id
    ]  # type: ignore[index]
    assert command.attributes["lanes.attempts"] == 1  # type: ignore[index]
    assert [e.name for e in command.events] == ["preempted"]


async def test_uninstrument_ends_open_spans_and_stops_tracing(
    autojump_clock: trio.abc.Clock, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    async with lanes.open_lane_system(CONFIGS) as system:
        uninstrument = instrument(system, tracer_provider=provider)
        running = await system.submit("query", sleeper, 3)
        await trio.testing.wait_all_tasks_blocked()
        uninstrument()
        assert {s.name for s in exporter.get_finished_spans()} == {
            "lanes.command",
            "lanes.execute",
        }
        exporter.clear()
        await running.result()
        await system.run("query", noop)
    assert exporter.get_finished_spans() == ()


async def test_without_a_parent_the_command_span_is_a_root(
    autojump_clock: trio.abc.Clock, exporter: InMemorySpanExporter, provider: TracerProvider
) -> None:
    async with lanes.open_lane_system(CONFIGS) as system:
        instrument(system, tracer_provider=provider)
        await system.run("query", noop)
        # Events of other kinds (alerts) are ignored by the tracer.
        lanes.AlertMonitor(system, [lanes.AlertRule.queue_depth("query", warning=1)]).check()
    [command] = named(exporter, "lanes.command")
    assert command.parent is None


async def test_two_sessions_on_one_worker_each_parent_their_own_command(
    autojump_clock: trio.abc.Clock,
    exporter: InMemorySpanExporter,
    provider: TracerProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One worker runs both commands back to back; each sees only its own spans."""
    tracer = provider.get_tracer("test")
    current: dict[str, int] = {}

    async def turn(session: str) -> None:
        current[session] = trace.get_current_span().get_span_context().span_id
        with tracer.start_as_current_span(f"{session} inner"):
            await trio.sleep(1)

    async def session(name: str, system: lanes.LaneSystem, started: trio.Event) -> None:
        with tracer.start_as_current_span(name):
            handle = await system.submit("control", turn, name)  # max_concurrency=1
            started.set()
            await handle.result()

    async with lanes.open_lane_system(CONFIGS) as system, trio.open_nursery() as nursery:
        instrument(system, tracer_provider=provider)
        first = trio.Event()
        nursery.start_soon(session, "alice", system, first)
        await first.wait()
        nursery.start_soon(session, "bob", system, trio.Event())
    assert "Failed to detach context" not in caplog.text
    spans = {s.name: s for s in exporter.get_finished_spans() if s.name != "lanes.execute"}
    commands = {s.attributes["lanes.command.id"]: s for s in named(exporter, "lanes.command")}  # type: ignore[index]
    executes = {s.attributes["lanes.command.id"]: s for s in named(exporter, "lanes.execute")}  # type: ignore[index]
    assert len(commands) == len(executes) == 2
    for command_id, command in commands.items():
        execute = executes[command_id]
        owner = next(n for n in ("alice", "bob") if parent_id(command) == span_id(spans[n]))
        assert parent_id(execute) == span_id(command)
        assert current[owner] == span_id(execute)  # current inside the body
        assert parent_id(spans[f"{owner} inner"]) == span_id(execute)
        assert spans[owner].parent is None


async def test_the_worker_never_tries_to_detach_a_command_context(
    autojump_clock: trio.abc.Clock,
    exporter: InMemorySpanExporter,
    provider: TracerProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each attempt's span is attached in the command's own context, which dies with it:
    detaching it from the worker task raised (and OpenTelemetry logged) before."""
    async with lanes.open_lane_system(CONFIGS) as system:
        instrument(system, tracer_provider=provider)
        for _ in range(3):
            await system.run("control", noop)
        with pytest.raises(lanes.CommandFailed):
            await system.run("control", boom, "kaput")
        outside = trace.get_current_span()
    assert "Failed to detach context" not in caplog.text
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]
    assert outside is trace.INVALID_SPAN  # nothing leaked into the caller's context
    assert len(named(exporter, "lanes.execute")) == 4


async def test_each_retry_runs_under_its_own_attempt_span(
    autojump_clock: trio.abc.Clock,
    exporter: InMemorySpanExporter,
    provider: TracerProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracer = provider.get_tracer("test")
    seen: list[int] = []

    async def flaky() -> str:
        seen.append(trace.get_current_span().get_span_context().span_id)
        with tracer.start_as_current_span(f"try {len(seen)}"):
            if len(seen) < 3:
                raise RuntimeError("not yet")
        return "done"

    async with lanes.open_lane_system(CONFIGS) as system:
        instrument(system, tracer_provider=provider)
        with tracer.start_as_current_span("request"):
            assert await system.run("query", flaky) == "done"
    assert "Failed to detach context" not in caplog.text
    [request] = named(exporter, "request")
    [command] = named(exporter, "lanes.command")
    attempts = sorted(named(exporter, "lanes.execute"), key=lambda s: s.attributes["lanes.attempt"])  # type: ignore[index]
    assert parent_id(command) == span_id(request)
    assert [parent_id(s) for s in attempts] == [span_id(command)] * 3
    assert seen == [span_id(s) for s in attempts]  # the attempt's span is current in it
    for number, attempt in enumerate(attempts, 1):
        [inner] = named(exporter, f"try {number}")
        assert parent_id(inner) == span_id(attempt)
