"""OpenTelemetry metrics of a lane system (``lanes.otel.instrument_metrics``; the ``otel`` extra).

The same figures as the Prometheus exporter, as OpenTelemetry instruments of the meter
``"lanes"``, each with the attribute ``lanes.lane``:

- observable gauges ``lanes.queue.depth`` (pending commands) and ``lanes.active``
  (running commands), read when the meter provider's reader collects;
- observable counters, cumulative, read likewise: ``lanes.commands.submitted``,
  ``lanes.commands`` (finished, with ``lanes.outcome`` = completed, failed or cancelled),
  ``lanes.retries``, ``lanes.attempts.timed_out``, ``lanes.preemptions`` and
  ``lanes.dead_letters``;
- histograms (unit ``s``) ``lanes.wait.duration`` (pending before each attempt) and
  ``lanes.command.duration`` (how long each attempt ran, whatever its outcome), recorded as
  attempts start and end.

The observable instruments cost nothing per command: their callbacks read the system's
counters when the reader collects (possibly from the reader's own thread, e.g. a
``PeriodicExportingMetricReader``: each number is read whole, without a lock, so numbers of
one collection may be a few commands apart). The histograms are fed by a listener of the
system's events (like the tracing of ``lanes.otel.instrument``): about a microsecond or
two per attempt, paid only while instrumented (``histograms=False`` leaves them out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from . import events as ev
from ._boundary import check_run

if TYPE_CHECKING:
    from ._system import LaneSystem

__all__ = ["instrument_metrics"]

METER_NAME = "lanes"

# counter field -> (instrument, description, extra attributes)
_FINISHED = "Commands finished, by outcome."
_COUNTERS: dict[str, tuple[str, str, dict[str, str]]] = {
    "submitted": ("lanes.commands.submitted", "Commands accepted.", {}),
    "completed": ("lanes.commands", _FINISHED, {"lanes.outcome": "completed"}),
    "failed": ("lanes.commands", _FINISHED, {"lanes.outcome": "failed"}),
    "cancelled": ("lanes.commands", _FINISHED, {"lanes.outcome": "cancelled"}),
    "retried": ("lanes.retries", "Attempts that failed and were retried.", {}),
    "timed_out": ("lanes.attempts.timed_out", "Attempts that hit their timeout.", {}),
    "preempted": ("lanes.preemptions", "Running commands preempted and requeued.", {}),
    "dead_lettered": ("lanes.dead_letters", "Commands recorded as dead letters.", {}),
}
_GAUGES = {
    "pending": ("lanes.queue.depth", "Commands pending (queued, delayed or between retries)."),
    "active": ("lanes.active", "Commands running."),
}
_ENDS = (ev.Completed, ev.Retrying, ev.Failed, ev.Preempted, ev.Cancelled)


def instrument_metrics(
    system: LaneSystem,
    *,
    meter_provider: MeterProvider | None = None,
    histograms: bool = True,
) -> Callable[[], None]:
    """Export ``system``'s metrics as OpenTelemetry instruments; return a function that stops.

    Args:
        system: the lane system (a local one: ``open_lane_system()`` without ``backend``).
        meter_provider: where the instruments are made (default: the global provider).
        histograms: also record the wait and run durations of every attempt.

    Raises:
        LaneUsageError: called outside the ``trio.run`` that owns the system.

    Stopping (calling the returned function) ends the recording and makes the observable
    instruments report nothing more (OpenTelemetry's API cannot unregister them).
    """
    from . import __version__

    check_run(system._core.token, "lanes.otel.instrument_metrics")
    meter = metrics.get_meter(METER_NAME, __version__, meter_provider=meter_provider)
    reading = _Reading(system)
    for name in dict.fromkeys(spec[0] for spec in _COUNTERS.values()):
        fields = [field for field, spec in _COUNTERS.items() if spec[0] == name]
        meter.create_observable_counter(
            name,
            callbacks=[reading.counters(fields)],
            unit="{command}",
            description=_COUNTERS[fields[0]][1],
        )
    for field, (name, description) in _GAUGES.items():
        meter.create_observable_gauge(
            name, callbacks=[reading.gauge(field)], unit="{command}", description=description
        )
    unlisten: Callable[[], None] = _nothing
    if histograms:
        durations = _Durations(
            meter.create_histogram(
                "lanes.wait.duration", unit="s", description="Time pending before each attempt."
            ),
            meter.create_histogram(
                "lanes.command.duration", unit="s", description="Run time of each attempt."
            ),
        )
        unlisten = system.listen(durations.on_event)

    def stop() -> None:
        reading.closed = True
        unlisten()

    return stop


def _nothing() -> None:
    return None


class _Reading:
    """The callbacks of the observable instruments: read the system's plain counters."""

    def __init__(self, system: LaneSystem) -> None:
        core = system._core
        self.lanes = core.policy.lanes
        self.closed = False

    def counters(self, fields: list[str]) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            if self.closed:
                return []
            return [
                Observation(
                    getattr(state.counters, field), {"lanes.lane": lane, **_COUNTERS[field][2]}
                )
                for field in fields
                for lane, state in list(self.lanes.items())
            ]

        return observe

    def gauge(self, field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            if self.closed:
                return []
            return [
                Observation(getattr(state, field), {"lanes.lane": lane})
                for lane, state in list(self.lanes.items())
            ]

        return observe


class _Durations:
    """Records each attempt's wait (at ``Started``) and run time (when it ends)."""

    def __init__(self, wait: metrics.Histogram, run: metrics.Histogram) -> None:
        self.wait = wait
        self.run = run
        self.started: dict[str, float] = {}  # command id -> its attempt's start (event time)

    def on_event(self, event: ev.Event) -> None:
        if type(event) is ev.Started:
            self.started[event.command_id] = event.timestamp
            self.wait.record(event.waited, {"lanes.lane": event.lane})
        elif isinstance(event, _ENDS):
            began = self.started.pop(event.command_id, None)
            if began is not None:  # it was running (a pending command cancelled was not)
                self.run.record(max(0.0, event.timestamp - began), {"lanes.lane": event.lane})
