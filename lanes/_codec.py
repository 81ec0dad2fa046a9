"""Serialising durable commands: one cattrs converter, JSON only (never pickle)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs
from cattrs.preconf.json import JsonConverter, make_converter

from ._command import command_name
from ._errors import LaneConfigError, LaneUsageError, NotDurableError, StorageError

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "MAX_NESTING", "CommandRegistry", "PayloadError"]

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
"""Largest JSON payload a durable command may have by default (1 MiB)."""
MAX_NESTING = 100
"""Deepest nesting of lists and dicts a durable command's fields may have."""


class PayloadError(NotDurableError, LaneUsageError):
    """A command's fields cannot be stored and rebuilt (too deep, too big, a type or value
    JSON cannot carry back). Nothing was stored; the storage is fine: fix the value.

    A :class:`~lanes.LaneUsageError` (the caller's value is wrong, retrying cannot help)
    and a :class:`~lanes.NotDurableError` (the command cannot be stored).
    """


class CommandRegistry:
    """The ``@lanes.command`` classes a system may store and rebuild, by name."""

    def __init__(
        self, classes: Iterable[type], max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    ) -> None:
        if (
            isinstance(max_payload_bytes, bool)
            or not isinstance(max_payload_bytes, int)
            or max_payload_bytes < 1
        ):
            msg = (
                f"open_lane_system: max_payload_bytes={max_payload_bytes!r} is invalid; "
                "expected an integer >= 1 (bytes of a command's JSON payload)"
            )
            raise LaneConfigError(msg)
        self.max_payload_bytes = max_payload_bytes
        self._converter: JsonConverter | None = None
        self._checked: set[type] = set()  # classes whose structure hooks exist
        self.classes: dict[str, type] = {}
        for cls in classes:
            name = getattr(cls, "__lanes_command__", None)
            if not isinstance(cls, type) or name is None:
                msg = (
                    f"open_lane_system: commands contains {cls!r}, which is not a "
                    "@lanes.command class"
                )
                raise LaneConfigError(msg)
            if name in self.classes and self.classes[name] is not cls:
                msg = f"open_lane_system: two command classes are named {name!r}; rename one"
                raise LaneConfigError(msg)
            self.classes[name] = cls

    @property
    def converter(self) -> JsonConverter:
        """The cattrs JSON converter, built on first use: most lane systems never store a
        command, and building one costs more than the rest of a system together."""
        if self._converter is None:
            self._converter = make_converter()
        return self._converter

    def encode(self, obj: object) -> tuple[str, str]:
        """(type name, JSON payload) of a command object, checked to rebuild.

        The payload is turned back into the class (as recovery will) before anything is
        stored, so a command that could be stored but not rebuilt is refused now.

        Raises:
            NotDurableError: its class is not registered.
            PayloadError: it cannot be turned into JSON, nests deeper than
                :data:`MAX_NESTING`, is larger than ``max_payload_bytes``, or its JSON does
                not rebuild the class (a field type cattrs cannot structure, a wrong value).
        """
        name = command_name(obj)
        cls = type(obj)
        if self.classes.get(name) is not cls:
            msg = (
                f"command type {name!r} is not listed in open_lane_system(commands=[...]); "
                "list its class there so recovery can rebuild it"
            )
            raise NotDurableError(msg)
        if cls not in self._checked:
            self._check_class(name, cls)
        text = self._dumps(name, obj)
        if len(text) > self.max_payload_bytes:  # ASCII JSON: one byte per character
            msg = (
                f"command {name!r}: its JSON payload is {len(text):,} bytes, above the cap "
                f"of {self.max_payload_bytes:,} (open_lane_system(max_payload_bytes=...)); "
                "store big data elsewhere (a file, a blob store) and pass a reference"
            )
            raise PayloadError(msg)
        try:
            self.converter.loads(text, cls)
        except Exception as exc:
            msg = (
                f"command {name!r} can be stored but not rebuilt from its JSON (recovery "
                f"would fail): {_short(exc)}; check the field values against their types"
            )
            raise PayloadError(msg) from None
        return name, text

    def _dumps(self, name: str, obj: object) -> str:
        try:
            data = self.converter.unstructure(obj)
            _check_depth(name, data)
            return json.dumps(data)  # ASCII: lone surrogates are escaped, not dropped
        except PayloadError:
            raise
        except RecursionError:
            raise PayloadError(_too_deep(name)) from None
        except Exception as exc:
            msg = f"command {name!r} cannot be stored as JSON: {_short(exc)}"
            raise PayloadError(msg) from exc

    def _check_class(self, name: str, cls: type) -> None:
        """Every field's type has a structure hook (checked once per class).

        String annotations (``from __future__ import annotations``) are resolved first; a
        class whose annotations cannot be resolved is left to the round trip.
        """
        try:
            attrs.resolve_types(cls)
        except Exception:
            self._checked.add(cls)
            return
        for field in attrs.fields(cls):
            kind = field.type
            try:
                self.converter.get_structure_hook(kind)
            except Exception as exc:
                msg = (
                    f"command {name!r}: field {field.name!r} has type {kind!r}, which cannot "
                    f"be rebuilt from JSON ({_short(exc)}); use a concrete type (str, int, "
                    "a list of them, an attrs class...) or register a cattrs hook"
                )
                raise PayloadError(msg) from None
        self._checked.add(cls)

    def decode(self, name: str, payload: str) -> Any:
        """Rebuild a command object.

        Raises:
            StorageError: unknown type name, or a payload that does not fit the class.
        """
        cls = self.classes.get(name)
        if cls is None:
            known = ", ".join(self.classes) or "none"
            msg = (
                f"stored command type {name!r} is unknown (registered: {known}); pass its "
                "class in open_lane_system(commands=[...])"
            )
            raise StorageError(msg)
        try:
            return self.converter.loads(payload, cls)
        except Exception as exc:
            msg = f"stored {name!r} command does not fit its class: {exc!r}"
            raise StorageError(msg) from exc


def _check_depth(name: str, data: Any) -> None:
    """Refuse lists and dicts nested deeper than :data:`MAX_NESTING` (iteratively)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Iterable[Any] = value.values()
        elif isinstance(value, list | tuple):
            children = value
        else:
            continue
        if depth > MAX_NESTING:
            raise PayloadError(_too_deep(name))
        stack.extend((child, depth + 1) for child in children)


def _too_deep(name: str) -> str:
    return (
        f"command {name!r}: its fields nest lists or dicts deeper than the limit of "
        f"{MAX_NESTING} levels; flatten the data"
    )


def _short(exc: BaseException) -> str:
    """An error's type and message, cut short (a message may quote a huge value)."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:
        text = type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."
