"""What travels through Redis: command messages, replies and dead letters (strings only)."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from .._errors import StorageError

__all__ = ["Envelope", "RemoteDeadLetter", "Reply"]


def _get(fields: Mapping[str, str], name: str, what: str) -> str:
    try:
        return fields[name]
    except KeyError:
        msg = f"a {what} in Redis lacks its {name!r} field; was it written by trio-lanes?"
        raise StorageError(msg) from None


def _optional_float(text: str) -> float | None:
    return float(text) if text else None


@attrs.frozen
class Envelope:
    """One attempt of a command, as stored in a lane stream."""

    id: str
    lane: str
    type: str
    payload: str
    reply: str
    key: str | None
    attempt: int
    timeout: float | None
    submitted: float

    def fields(self) -> dict[str, str]:
        """The stream entry's fields."""
        return {
            "id": self.id,
            "lane": self.lane,
            "type": self.type,
            "payload": self.payload,
            "reply": self.reply,
            "key": self.key or "",
            "attempt": str(self.attempt),
            "timeout": "" if self.timeout is None else repr(self.timeout),
            "submitted": repr(self.submitted),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Envelope:
        """Read an entry back.

        Raises:
            StorageError: a field is missing or malformed.
        """
        try:
            return cls(
                id=_get(fields, "id", "command"),
                lane=_get(fields, "lane", "command"),
                type=_get(fields, "type", "command"),
                payload=_get(fields, "payload", "command"),
                reply=_get(fields, "reply", "command"),
                key=_get(fields, "key", "command") or None,
                attempt=int(_get(fields, "attempt", "command")),
                timeout=_optional_float(_get(fields, "timeout", "command")),
                submitted=float(_get(fields, "submitted", "command")),
            )
        except ValueError as exc:
            msg = f"a command in Redis has a malformed field: {exc}"
            raise StorageError(msg) from exc


@attrs.frozen
class Reply:
    """The outcome of a command, sent to its submitter's reply stream."""

    id: str
    outcome: str  # "done", "failed" or "timeout"
    value: str  # JSON of the result ("null" unless done)
    error: str  # "ExceptionType: message" of the last error ("" when done)
    attempts: int

    def fields(self) -> dict[str, str]:
        """The reply entry's fields."""
        return {
            "id": self.id,
            "outcome": self.outcome,
            "value": self.value,
            "error": self.error,
            "attempts": str(self.attempts),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Reply:
        """Read a reply back.

        Raises:
            StorageError: a field is missing or malformed.
        """
        try:
            return cls(
                id=_get(fields, "id", "reply"),
                outcome=_get(fields, "outcome", "reply"),
                value=_get(fields, "value", "reply"),
                error=_get(fields, "error", "reply"),
                attempts=int(_get(fields, "attempts", "reply")),
            )
        except ValueError as exc:
            msg = f"a reply in Redis has a malformed field: {exc}"
            raise StorageError(msg) from exc


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

    @classmethod
    def build(
        cls, envelope: Envelope, stream: str, error: str, attempts: int, failed_at: float
    ) -> dict[str, str]:
        """The dead-letter entry's fields for a failed command."""
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
            )
        except ValueError as exc:
            msg = f"a dead letter in Redis has a malformed field: {exc}"
            raise StorageError(msg) from exc
