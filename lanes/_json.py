"""Lane configuration, statistics, metrics, events and dead letters as JSON, with cattrs.

``to_json(obj)`` writes one of them (or a list, tuple or str-keyed dict of them);
``from_json(text, type)`` reads it back. Events carry their ``key`` under ``"event"``, so a
list of mixed events reads back as the same classes. Each call builds its own converter (a
few milliseconds): export snapshots, not every command. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, get_origin, overload

import attrs
from cattrs import BaseValidationError, transform_error
from cattrs.gen import make_dict_unstructure_fn
from cattrs.preconf.json import JsonConverter, make_converter
from cattrs.v import format_exception

from . import events as ev
from ._dlq import DeadLetter
from ._errors import JsonError, LaneError
from ._limiters import RateLimit
from ._shared import SharedLimit

__all__ = ["from_json", "to_json"]

T = TypeVar("T")
EVENT_TAG = "event"
_BUILT_IN: tuple[type[ev.Event], ...] = tuple(
    cls
    for cls in vars(ev).values()
    if isinstance(cls, type) and issubclass(cls, ev.Event) and cls is not ev.Event
)
_LETTER_FIELDS = ("id", "lane", "command_type", "error", "attempts", "failed_at")


def to_json(obj: object, *, indent: int | None = None) -> str:
    """``obj`` as JSON text.

    ``obj`` is a ``LaneConfig`` (its retry policy, rate limit, boost and shared limit
    included), ``SystemStatistics``, ``LaneStatistics``, ``MetricsSnapshot`` (metrics of
    your own included), an event (``lanes.events``, yours too), a ``DeadLetter`` (its record:
    id, lane, type, error, attempts, failure time; not the command itself), or a list,
    tuple or str-keyed dict of them (``system.lanes``, ``system.dead_letters.list()``).

    Raises:
        JsonError: ``obj`` holds something that has no JSON form here (a function, a lane
            system...); the message names it.
    """
    converter = _converter(())
    try:
        return json.dumps(converter.unstructure(obj), indent=indent, allow_nan=True)
    except (TypeError, ValueError) as exc:
        msg = (
            f"to_json: {_short(obj)} cannot be exported ({exc}); export lane configs, "
            "statistics, metrics snapshots, events or dead letters (or lists of them)"
        )
        raise JsonError(msg) from exc


@overload
def from_json(text: str | bytes, kind: type[T], *, events: Iterable[type[ev.Event]] = ()) -> T: ...
@overload
def from_json(text: str | bytes, kind: Any, *, events: Iterable[type[ev.Event]] = ()) -> Any: ...
def from_json(text: str | bytes, kind: Any, *, events: Iterable[type[ev.Event]] = ()) -> Any:
    """Read back what :func:`to_json` wrote, as ``kind``.

    ``kind`` is the type written, or a ``list[...]`` / ``dict[str, ...]`` of it: for example
    ``list[lanes.LaneConfig]`` for ``to_json(system.lanes)``, ``lanes.events.Event`` or
    ``list[lanes.events.Event]`` for events of any type (each read back as the class its
    ``"event"`` key names). Configurations are validated as when made in code; lanes that
    shared one ``SharedLimit`` share one new ``SharedLimit`` (one per name and call). A
    ``DeadLetter`` read back is a record: ``fn`` and ``args`` are empty.

    Args:
        text: the JSON text.
        kind: the type to read.
        events: your own event classes, so that their ``"event"`` keys are known.

    Raises:
        JsonError: the text is not JSON, does not fit ``kind`` (the message names each
            field at fault, like ``$.lanes[1].priority``), names an unknown event key, or
            holds an invalid configuration (the message says which rule it breaks).
    """
    converter = _converter(_check_events(events))
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        msg = f"from_json: the text is not JSON ({exc})"
        raise JsonError(msg) from exc
    try:
        return converter.structure(data, kind)
    except BaseValidationError as exc:
        problems = "; ".join(transform_error(exc, format_exception=_problem))
        msg = f"from_json: the JSON does not fit {_name(kind)}: {problems}"
        raise JsonError(msg) from exc
    except LaneError as exc:  # raised by a hook of ours, or a config's own validation
        msg = f"from_json: the JSON does not fit {_name(kind)}: {exc}"
        raise JsonError(msg) from exc
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        msg = f"from_json: the JSON does not fit {_name(kind)}: {type(exc).__name__}: {exc}"
        raise JsonError(msg) from exc


def _check_events(events: Iterable[type[ev.Event]]) -> dict[str, type[ev.Event]]:
    if isinstance(events, type) or not isinstance(events, Iterable):
        msg = f"from_json: events={events!r} is invalid; expected a list of event classes"
        raise JsonError(msg)
    known: dict[str, type[ev.Event]] = {cls.key: cls for cls in _BUILT_IN}
    for cls in events:
        if not (isinstance(cls, type) and issubclass(cls, ev.Event)) or cls is ev.Event:
            msg = f"from_json: events= holds {cls!r}; expected your lanes.events.Event classes"
            raise JsonError(msg)
        other = known.get(cls.key)
        if other is not None and other is not cls:
            msg = (
                f"from_json: {cls.__qualname__} and {other.__qualname__} have the same key "
                f"{cls.key!r}; each event class needs a key of its own"
            )
            raise JsonError(msg)
        known[cls.key] = cls
    return known


def _converter(known: dict[str, type[ev.Event]] | tuple[()]) -> JsonConverter:
    converter = make_converter()
    by_key = dict(known) if known else {cls.key: cls for cls in _BUILT_IN}
    converter.register_unstructure_hook_factory(
        _is_event, lambda cls: _event_unstructure(converter, cls)
    )
    converter.register_structure_hook_func(
        lambda cls: cls is ev.Event, lambda data, _: _event(converter, by_key, data)
    )
    converter.register_unstructure_hook(DeadLetter, _letter_data)
    converter.register_structure_hook(DeadLetter, lambda data, _: _letter(converter, data))
    limits: dict[str, SharedLimit] = {}
    converter.register_unstructure_hook(SharedLimit, lambda s: _limit_data(converter, s))
    converter.register_structure_hook(SharedLimit, lambda data, _: _limit(converter, limits, data))
    return converter


def _is_event(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, ev.Event)


def _event_unstructure(converter: JsonConverter, cls: type[ev.Event]) -> Callable[[Any], Any]:
    fields = make_dict_unstructure_fn(cls, converter)
    key = cls.key

    def unstructure(event: ev.Event) -> dict[str, Any]:
        return {EVENT_TAG: key, **fields(event)}

    return unstructure


def _event(converter: JsonConverter, by_key: dict[str, type[ev.Event]], data: Any) -> ev.Event:
    if not isinstance(data, dict) or not isinstance(data.get(EVENT_TAG), str):
        msg = f"an event needs its key under {EVENT_TAG!r}, got {_short(data)}"
        raise JsonError(msg)
    cls = by_key.get(data[EVENT_TAG])
    if cls is None:
        msg = (
            f"unknown event key {data[EVENT_TAG]!r}; pass your event classes as "
            "from_json(..., events=[YourEvent])"
        )
        raise JsonError(msg)
    fields = {k: v for k, v in data.items() if k != EVENT_TAG}
    return converter.structure(fields, cls)


def _letter_data(letter: DeadLetter) -> dict[str, Any]:
    return {name: getattr(letter, name) for name in _LETTER_FIELDS}


def _letter(converter: JsonConverter, data: Any) -> DeadLetter:
    record = converter.structure(data, _LetterRecord)
    return DeadLetter(**attrs.asdict(record), fn=None, args=())


@attrs.frozen
class _LetterRecord:
    id: str
    lane: str
    command_type: str
    error: str
    attempts: int
    failed_at: float


def _limit_data(converter: JsonConverter, limit: SharedLimit) -> dict[str, Any]:
    rate = None if limit.rate_limit is None else converter.unstructure(limit.rate_limit)
    return {"name": limit.name, "max_concurrency": limit.max_concurrency, "rate_limit": rate}


def _limit(converter: JsonConverter, made: dict[str, SharedLimit], data: Any) -> SharedLimit:
    record = converter.structure(data, _LimitRecord)
    known = made.get(record.name)
    if known is None:
        made[record.name] = known = SharedLimit(
            record.max_concurrency, rate_limit=record.rate_limit, name=record.name
        )
    elif (known.max_concurrency, known.rate_limit) != (record.max_concurrency, record.rate_limit):
        msg = f"two different shared limits are named {record.name!r}; give each its own name"
        raise JsonError(msg)
    return known


@attrs.frozen
class _LimitRecord:
    name: str
    max_concurrency: int | None = None
    rate_limit: RateLimit | None = None


def _problem(exc: BaseException, kind: Any) -> str:
    """A field's fault: our own errors say it best (a config's rule, an event key)."""
    if isinstance(exc, LaneError):
        return str(exc)
    return format_exception(exc, kind)


def _name(kind: Any) -> str:
    if get_origin(kind) is not None:
        return re.sub(r"\blanes\._\w+\.", "lanes.", repr(kind)).replace("typing.", "")
    return getattr(kind, "__qualname__", None) or repr(kind)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."
