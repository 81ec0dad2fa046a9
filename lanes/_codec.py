"""Serialising durable commands: one cattrs converter, JSON only (never pickle)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

import attrs
import trio
from cattrs.preconf.json import JsonConverter, make_converter

from ._command import command_name, is_command
from ._errors import LaneConfigError, NotDurableError, PayloadError, StorageError

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFERRED",
    "MAX_NESTING",
    "OFF_LOOP_BYTES",
    "CommandRegistry",
]

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
"""Largest JSON payload a durable command may have by default (1 MiB)."""
MAX_NESTING = 100
"""Deepest nesting of lists and dicts a durable command's fields may have."""
OFF_LOOP_BYTES = 256 * 1024
"""Commands whose strings add up to more than this are encoded off the event loop."""
DEFERRED = ""
"""``submit_payload`` of a big command: encode it with ``encode_off_loop`` (no JSON is
empty, so this never stands for a real payload)."""
_SLICE = 256 * 1024  # characters escaped per step of a long string


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
        # Classes whose structure hooks exist, with their plain fields (name, types) when
        # every field is a str, int, float or bool (maybe None): their values are checked
        # by type, cheaper than the round trip (which then only explains a mismatch).
        self._checked: dict[type, tuple[tuple[str, tuple[type, ...]], ...] | None] = {}
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
        name, cls = self._registered(obj)
        return name, self._encode(name, cls, self._unstructure(name, obj))

    def submit_payload(self, obj: object) -> str:
        """The payload for ``submit``: its JSON, or :data:`DEFERRED` for a command whose
        text is longer than :data:`OFF_LOOP_BYTES`: :meth:`encode_off_loop` encodes it.

        What is cheap is checked now (registration, nesting, a size that is surely above
        the cap), so most bad commands fail before ``submit`` waits for anything.

        Raises:
            NotDurableError, PayloadError: as :meth:`encode`.
        """
        name, cls = self._registered(obj)
        data = self._unstructure(name, obj)
        plain = _plain_values(self._checked.get(cls), data)
        sizes = _flat_sizes(data) if plain else _text_size(name, data)
        if sizes[0] > OFF_LOOP_BYTES:
            self._check_size(name, sizes[0], at_least=True)
            return DEFERRED
        return self._encode(name, cls, data, sizes, plain=plain)

    async def encode_off_loop(self, obj: object) -> str:
        """The payload of a big command, encoded in a worker thread in slices (so the
        Trio thread gets the GIL between them). Cancellation waits for the encoding.

        Raises:
            NotDurableError, PayloadError: as :meth:`encode`.
        """
        if not is_command(obj):  # defensive: submit found no command object to encode
            msg = f"cannot encode {type(obj).__qualname__}: not a @lanes.command object"
            raise NotDurableError(msg)
        return (await trio.to_thread.run_sync(self.encode, obj))[1]

    def _registered(self, obj: object) -> tuple[str, type]:
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
        return name, cls

    def _unstructure(self, name: str, obj: object) -> Any:
        try:
            return self.converter.unstructure(obj)
        except RecursionError:
            raise PayloadError(_too_deep(name)) from None
        except Exception as exc:
            msg = f"command {name!r} cannot be stored as JSON: {_short(exc)}"
            raise PayloadError(msg) from exc

    def _encode(
        self,
        name: str,
        cls: type,
        data: Any,
        sizes: tuple[int, int] | None = None,
        *,
        plain: bool | None = None,
    ) -> str:
        """JSON of unstructured ``data``, checked; long strings are escaped in slices.
        ``sizes``: :func:`_text_size` of ``data`` and ``plain``: :func:`_plain_values`,
        if known."""
        total, longest = _text_size(name, data) if sizes is None else sizes
        self._check_size(name, total, at_least=True)
        skeleton, long_texts = _skeleton(data) if longest > _SLICE else (data, [])
        try:
            text = json.dumps(skeleton)  # ASCII: lone surrogates are escaped, not dropped
        except Exception as exc:
            msg = f"command {name!r} cannot be stored as JSON: {_short(exc)}"
            raise PayloadError(msg) from exc
        try:  # the long strings are strings in the skeleton too: the same check, cheaper
            if plain is None:
                plain = _plain_values(self._checked.get(cls), data)
            if not plain:
                self.converter.loads(text, cls)
        except Exception as exc:
            msg = (
                f"command {name!r} can be stored but not rebuilt from its JSON (recovery "
                f"would fail): {_short(exc)}; check the field values against their types"
            )
            raise PayloadError(msg) from None
        for token, value in long_texts:
            before, after = text.split(json.dumps(token), 1)
            text = "".join([before, '"', *_escaped_slices(value), '"', after])
        self._check_size(name, len(text))
        return text

    def _check_size(self, name: str, size: int, *, at_least: bool = False) -> None:
        if size <= self.max_payload_bytes:
            return
        what = "at least " if at_least else ""
        msg = (
            f"command {name!r}: its JSON payload is {what}{size:,} bytes, above the cap of "
            f"{self.max_payload_bytes:,} (open_lane_system(max_payload_bytes=...)); store "
            "big data elsewhere (a file, a blob store) and pass a reference"
        )
        raise PayloadError(msg)

    def _check_class(self, name: str, cls: type) -> None:
        """Every field's type has a structure hook (checked once per class).

        String annotations (``from __future__ import annotations``) are resolved first; a
        class whose annotations cannot be resolved is left to the round trip.
        """
        try:
            attrs.resolve_types(cls)
        except Exception:
            self._checked[cls] = None
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
        self._checked[cls] = _plain_fields(cls)

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


def _text_size(name: str, data: Any) -> tuple[int, int]:
    """The total and the longest length of the strings in ``data`` (the total is a lower
    bound of its JSON's); refuses lists and dicts nested deeper than :data:`MAX_NESTING`
    (walked iteratively: a deep value cannot exhaust the stack)."""
    if isinstance(data, str):
        return len(data), len(data)
    size = longest = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            raise PayloadError(_too_deep(name))
        children: Iterable[Any] = (
            [*value.keys(), *value.values()] if isinstance(value, dict) else value
        )
        for child in children:
            if isinstance(child, str):
                size += len(child)
                longest = max(longest, len(child))
            elif isinstance(child, dict | list | tuple):
                stack.append((child, depth + 1))
    return size, longest


def _skeleton(data: Any) -> tuple[Any, list[tuple[str, str]]]:
    """``data`` with each string longer than a slice replaced by a unique token; the
    tokens and their strings. Nesting is bounded (checked before), so recursion is safe."""
    long_texts: list[tuple[str, str]] = []
    prefix = f"lanes-long-text-{uuid.uuid4().hex}-"

    def walk(value: Any) -> Any:
        if isinstance(value, str) and len(value) > _SLICE:
            token = f"{prefix}{len(long_texts)}"
            long_texts.append((token, value))
            return token
        if isinstance(value, dict):
            return {key: walk(child) for key, child in value.items()}
        if isinstance(value, list | tuple):
            return [walk(child) for child in value]
        return value

    return walk(data), long_texts


def _escaped_slices(text: str) -> list[str]:
    """JSON escapes of ``text`` (without quotes), a slice at a time: each slice is one
    short C call, so a thread doing this lets others run in between. Slicing by code
    point is exact: JSON escapes each code point on its own."""
    return [json.dumps(text[i : i + _SLICE])[1:-1] for i in range(0, len(text), _SLICE)]


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


_PLAIN: dict[Any, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    float: (float, int),
    bool: (bool,),
    str | None: (str, type(None)),
    int | None: (int, type(None)),
    float | None: (float, int, type(None)),
    bool | None: (bool, type(None)),
}


def _plain_fields(cls: type) -> tuple[tuple[str, tuple[type, ...]], ...] | None:
    """(name, accepted value types) of each field, or None if one is not plain."""
    plain = []
    for field in attrs.fields(cls):
        try:
            accepted = _PLAIN.get(field.type)
        except TypeError:  # an unhashable annotation
            accepted = None
        if accepted is None:
            return None
        plain.append((field.name, accepted))
    return tuple(plain)


def _plain_values(fields: tuple[tuple[str, tuple[type, ...]], ...] | None, data: Any) -> bool:
    """Whether the unstructured ``data`` of a plain class holds values of exactly the
    field types (then JSON rebuilds it as it was: no round trip needed)."""
    if fields is None or not isinstance(data, dict):
        return False
    return all(type(data.get(name)) in accepted for name, accepted in fields)


def _flat_sizes(data: dict[str, Any]) -> tuple[int, int]:
    """:func:`_text_size` of a plain class's data (a flat dict of scalars)."""
    lengths = [len(value) for value in data.values() if isinstance(value, str)]
    lengths += [len(key) for key in data]
    return sum(lengths), max(lengths, default=0)
