"""What travels through Redis: command messages, replies and dead letters (strings only)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TypeVar

import attrs
from cattrs.errors import ClassValidationError
from cattrs.preconf.json import JsonConverter
from cattrs.v import transform_error

from .._errors import StorageError

__all__ = ["FIELD", "Envelope", "KeptKey", "RemoteDeadLetter", "Reply", "salvage"]

T = TypeVar("T")


def _get(fields: Mapping[str, str], name: str, what: str) -> str:
    try:
        return fields[name]
    except KeyError:
        msg = f"a {what} in Redis lacks its {name!r} field; was it written by trio-lanes?"
        raise StorageError(msg) from None


def _optional_float(text: str) -> float | None:
    return float(text) if text else None


FIELD = "c"  # the one field of a command or reply entry: its JSON


def _load(converter: JsonConverter, fields: Mapping[str, str], cls: type[T], what: str) -> T:
    text = fields.get(FIELD)
    if text is None:
        names = ", ".join(sorted(fields)) or "none"
        msg = (
            f"a {what} in Redis lacks its {FIELD!r} field (it has: {names}); was it written "
            "by this version of trio-lanes?"
        )
        raise StorageError(msg)
    try:
        return converter.loads(text, cls)
    except Exception as exc:
        detail = "; ".join(transform_error(exc)) if isinstance(exc, ClassValidationError) else exc
        msg = f"a {what} in Redis is malformed ({detail}): {text[:200]!r}"
        raise StorageError(msg) from None


def salvage(fields: Mapping[str, str]) -> dict[str, str]:
    """The string members of a malformed command's JSON (its id and reply stream, if any)."""
    try:
        data = json.loads(fields.get(FIELD, ""))
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


@attrs.frozen
class Envelope:
    """One attempt of a command, as stored in a lane stream (one JSON field)."""

    id: str
    lane: str
    type: str
    payload: str
    reply: str
    key: str | None
    attempt: int
    timeout: float | None
    submitted: float

    def fields(self, converter: JsonConverter) -> dict[str, str]:
        """The stream entry's fields: ``{"c": JSON}``."""
        return {FIELD: converter.dumps(self)}

    @classmethod
    def from_fields(cls, converter: JsonConverter, fields: Mapping[str, str]) -> Envelope:
        """Read an entry back.

        Raises:
            StorageError: the field is missing or does not hold a command.
        """
        envelope = _load(converter, fields, cls, "command")
        if envelope.attempt < 1:
            msg = f"a command in Redis is malformed: attempt={envelope.attempt!r} (expected >= 1)"
            raise StorageError(msg)
        return envelope


@attrs.frozen
class Reply:
    """The outcome of a command, sent to its submitter's reply stream (one JSON field)."""

    id: str
    outcome: str  # "done", "failed", "timeout" or "cancelled"
    value: str  # JSON of the result ("null" unless done)
    error: str  # "ExceptionType: message" of the last error ("" when done); cancelled:
    # why, when not by its handle or lane ("replaced by command ...")
    attempts: int

    def fields(self, converter: JsonConverter) -> dict[str, str]:
        """The reply entry's fields: ``{"c": JSON}``."""
        return {FIELD: converter.dumps(self)}

    @classmethod
    def from_fields(cls, converter: JsonConverter, fields: Mapping[str, str]) -> Reply:
        """Read a reply back.

        Raises:
            StorageError: the field is missing or does not hold a reply.
        """
        return _load(converter, fields, cls, "reply")


@attrs.frozen
class KeptKey:
    """A finished command whose idempotency key is kept (``Dedup.hold(ttl=...)``), as the
    FINISH script stores it: its id, lane, type and the reply its worker sent (JSON)."""

    id: str
    lane: str
    type: str
    reply: str

    @classmethod
    def load(cls, converter: JsonConverter, text: str) -> tuple[KeptKey, Reply]:
        """Read a kept key's record and its reply.

        Raises:
            StorageError: the record or its reply is malformed.
        """
        kept = _load(converter, {FIELD: text}, cls, "kept idempotency key")
        return kept, Reply.from_fields(converter, {FIELD: kept.reply})


@attrs.frozen
class RemoteDeadLetter:
    """A command that failed for good on some worker, as kept in the dead-letter stream.

    Attributes:
        id: the letter's id (its dead-letter stream entry id); pass it to ``requeue``.
        command_id: the failed command's id.
        lane: its lane.
        command_type: its ``@lanes.command`` name.
        error: ``"ExceptionType: message"`` of the last error.
        attempts: attempts made.
        failed_at: wall-clock time (seconds since the epoch) of the failure.
        traceback: the last error's formatted traceback as the worker printed it, chained
            causes included, cut to its last 8,000 characters (the end, with the error, is
            kept), as ``DeadLetter.traceback`` in process. None for a letter
            written without one (by an older version).
    """

    id: str
    command_id: str
    lane: str
    command_type: str
    error: str
    attempts: int
    failed_at: float
    stream: str = attrs.field(repr=False)
    payload: str = attrs.field(repr=False)
    timeout: float | None = attrs.field(repr=False)
    traceback: str | None = attrs.field(repr=False, eq=False, default=None)

    @classmethod
    def build(
        cls,
        envelope: Envelope,
        stream: str,
        error: str,
        attempts: int,
        failed_at: float,
        traceback: str,
    ) -> dict[str, str]:
        """The dead-letter entry's fields for a failed command (``traceback`` already cut
        to its bounded length)."""
        return {
            "command_id": envelope.id,
            "lane": envelope.lane,
            "stream": stream,
            "type": envelope.type,
            "payload": envelope.payload,
            "timeout": "" if envelope.timeout is None else repr(envelope.timeout),
            "error": error,
            "attempts": str(attempts),
            "failed_at": repr(failed_at),
            "traceback": traceback,
        }

    @classmethod
    def from_entry(cls, letter_id: str, fields: Mapping[str, str]) -> RemoteDeadLetter:
        """Read a dead-letter entry back.

        Raises:
            StorageError: a field is missing or malformed.
        """
        try:
            return cls(
                id=letter_id,
                command_id=_get(fields, "command_id", "dead letter"),
                lane=_get(fields, "lane", "dead letter"),
                command_type=_get(fields, "type", "dead letter"),
                error=_get(fields, "error", "dead letter"),
                attempts=int(_get(fields, "attempts", "dead letter")),
                failed_at=float(_get(fields, "failed_at", "dead letter")),
                stream=_get(fields, "stream", "dead letter"),
                payload=_get(fields, "payload", "dead letter"),
                timeout=_optional_float(_get(fields, "timeout", "dead letter")),
                traceback=fields.get("traceback") or None,
            )
        except ValueError as exc:
            msg = f"a dead letter in Redis has a malformed field: {exc}"
            raise StorageError(msg) from exc
