"""OpenTelemetry tracing and metrics of a lane system (the ``otel`` extra).

Metrics: :func:`instrument_metrics` (see ``lanes/_otel_metrics.py``) exports the lanes'
depth, active commands, counters and wait/run durations as OpenTelemetry instruments.
Tracing: :func:`instrument`, below.

.. code-block:: python

    async with lanes.open_lane_system() as system:
        uninstrument = lanes.otel.instrument(system)
        with tracer.start_as_current_span("request"):
            await system.run("query", fetch_page, url)  # traced under "request"

Each command gets a ``lanes.command`` span from ``submit`` to its final outcome, a child of
the span that was current in the submitting task. Each attempt gets a ``lanes.execute``
span, a child of the command's span, which is the current span while the command runs: spans
the command makes itself nest under it, in whichever lane worker runs it. A command runs in
a copy of its submitter's context variables (taken at submit), and the attempt's span is
made current in that copy only, so two sessions whose commands one worker runs back to back
never see each other's spans. Retries, timeouts and preemptions appear as span events on the
command's span.

Attributes: ``lanes.lane``, ``lanes.priority`` (configured), ``lanes.command.id``,
``lanes.command.type``; on attempts ``lanes.attempt``, ``lanes.wait_seconds`` (pending
before this attempt) and ``lanes.execution_seconds``; ``lanes.outcome`` on both (completed,
retrying, timed_out, preempted, failed or cancelled) and ``lanes.attempts`` on the command.
Durations are measured on the Trio clock, as the lane system's events are; span start and
end times are OpenTelemetry's (wall clock).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Span, Status, StatusCode, TracerProvider
except ImportError as error:  # pragma: no cover - depends on the environment
    from ._extras import missing_extra

    msg = missing_extra("lanes.otel", "OpenTelemetry", "otel")
    raise ModuleNotFoundError(msg, name=error.name) from error

from . import events as ev
from ._otel_metrics import instrument_metrics

if TYPE_CHECKING:
    from ._system import LaneSystem

__all__ = ["instrument", "instrument_metrics"]

TRACER_NAME = "lanes"


def instrument(
    system: LaneSystem, *, tracer_provider: TracerProvider | None = None
) -> Callable[[], None]:
    """Trace every command of ``system`` from now on; return a function that stops it.

    Args:
        system: the lane system to trace.
        tracer_provider: where spans go (default: the global tracer provider).

    Stopping (calling the returned function) ends the spans of commands still in flight
    without an outcome; the commands themselves are not affected.
    """
    from . import __version__

    tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider=tracer_provider)
    tracing = _Tracing(tracer, {config.name: config.priority for config in system.lanes})
    unlisten = system.listen(tracing.on_event)
    unlisten_entering = system._core.bus.listen_entering(tracing.entering)

    def uninstrument() -> None:
        unlisten()
        unlisten_entering()
        tracing.close()

    return uninstrument


class _Spans:
    """The open spans of one command."""

    __slots__ = ("attempt", "attempts", "command", "started_at")

    def __init__(self, command: Span) -> None:
        self.command = command
        self.attempt: Span | None = None
        self.attempts = 0
        self.started_at = 0.0


class _Tracing:
    """The listener: opens and ends spans as the system's events arrive."""

    def __init__(self, tracer: trace.Tracer, priorities: dict[str, int]) -> None:
        self._tracer = tracer
        self._priorities = priorities
        self._open: dict[str, _Spans] = {}
        self._handlers: dict[type[ev.Event], Callable[[ev.Event], None]] = {
            ev.Submitted: self._submitted,
            ev.Started: self._started,
            ev.Completed: self._completed,
            ev.Retrying: self._retrying,
            ev.TimedOut: self._timed_out,
            ev.Preempted: self._preempted,
            ev.Failed: self._failed,
            ev.Cancelled: self._cancelled,
        }

    def on_event(self, event: ev.Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _submitted(self, event: ev.Event) -> None:
        """In the submitter's task: the current context is the command span's parent."""
        assert isinstance(event, ev.Submitted)
        span = self._tracer.start_span(
            "lanes.command",
            context=otel_context.get_current(),
            attributes={
                "lanes.lane": event.lane,
                "lanes.priority": self._priorities.get(event.lane, -1),
                "lanes.command.id": event.command_id,
                "lanes.command.type": event.command_type,
            },
        )
        self._open[event.command_id] = _Spans(span)

    def entering(self, command_id: str) -> None:
        """As an attempt's body starts, in the command's own context: make its span current.

        The lane runs this hook inside the copy of the submitter's context variables that
        the command runs in, so the span is current for the body and nowhere else. Nothing
        detaches it: that context belongs to this command alone and is dropped with it, and
        the next attempt (a retry) attaches its own span over this one.
        """
        spans = self._open.get(command_id)
        if spans is None or spans.attempt is None:
            return
        otel_context.attach(trace.set_span_in_context(spans.attempt))

    def _started(self, event: ev.Event) -> None:
        """When the slot is granted: open the attempt's span (made current by ``entering``)."""
        assert isinstance(event, ev.Started)
        spans = self._open.get(event.command_id)
        if spans is None:
            return  # submitted before tracing started
        span = self._tracer.start_span(
            "lanes.execute",
            context=trace.set_span_in_context(spans.command),
            attributes={
                "lanes.lane": event.lane,
                "lanes.priority": self._priorities.get(event.lane, -1),
                "lanes.command.id": event.command_id,
                "lanes.attempt": event.attempt,
                "lanes.wait_seconds": event.waited,
            },
        )
        spans.attempt, spans.attempts, spans.started_at = span, event.attempt, event.timestamp

    def _end_attempt(self, event: ev.Event, outcome: str, error: str = "") -> _Spans | None:
        spans = self._open.get(event.command_id)
        if spans is None or spans.attempt is None:
            return spans
        span = spans.attempt
        span.set_attribute("lanes.execution_seconds", event.timestamp - spans.started_at)
        span.set_attribute("lanes.outcome", outcome)
        if error:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()
        spans.attempt = None
        return spans

    def _end_command(self, event: ev.Event, outcome: str, attempts: int, error: str = "") -> None:
        spans = self._open.pop(event.command_id, None)
        if spans is None:
            return
        spans.command.set_attribute("lanes.outcome", outcome)
        spans.command.set_attribute("lanes.attempts", attempts)
        if error:
            spans.command.set_status(Status(StatusCode.ERROR, error))
        spans.command.end()

    def _completed(self, event: ev.Event) -> None:
        assert isinstance(event, ev.Completed)
        self._end_attempt(event, "completed")
        self._end_command(event, "completed", event.attempt)

    def _retrying(self, event: ev.Event) -> None:
        assert isinstance(event, ev.Retrying)
        spans = self._end_attempt(event, "retrying", event.error)
        if spans is not None:
            attributes = {"lanes.attempt": event.attempt, "lanes.delay_seconds": event.delay}
            spans.command.add_event("retrying", {**attributes, "lanes.error": event.error})

    def _timed_out(self, event: ev.Event) -> None:
        assert isinstance(event, ev.TimedOut)
        text = f"attempt timed out after {event.timeout} s"
        spans = self._end_attempt(event, "timed_out", text)
        if spans is not None:
            spans.command.add_event("timed_out", {"lanes.attempt": event.attempt})

    def _preempted(self, event: ev.Event) -> None:
        assert isinstance(event, ev.Preempted)
        spans = self._end_attempt(event, "preempted")
        if spans is not None:
            spans.attempts = event.attempt - 1  # a preemption is not an attempt
            spans.command.add_event("preempted", {"lanes.attempt": event.attempt})

    def _failed(self, event: ev.Event) -> None:
        assert isinstance(event, ev.Failed)
        self._end_attempt(event, "failed", event.error)
        self._end_command(event, "failed", event.attempts, event.error)

    def _cancelled(self, event: ev.Event) -> None:
        spans = self._end_attempt(event, "cancelled")
        self._end_command(event, "cancelled", 0 if spans is None else spans.attempts)

    def close(self) -> None:
        """End every span still open (tracing stops; the commands go on untraced)."""
        for spans in self._open.values():
            if spans.attempt is not None:
                spans.attempt.end()
            spans.command.end()
        self._open.clear()
