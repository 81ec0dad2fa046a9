"""Serialising durable commands: one cattrs converter, JSON only (never pickle)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cattrs.preconf.json import JsonConverter, make_converter

from ._command import command_name
from ._errors import LaneConfigError, NotDurableError, StorageError

__all__ = ["CommandRegistry"]


class CommandRegistry:
    """The ``@lanes.command`` classes a system may store and rebuild, by name."""

    def __init__(self, classes: Iterable[type]) -> None:
        self._converter: JsonConverter | None = None
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
        """(type name, JSON payload) of a command object.

        Raises:
            NotDurableError: its class is not registered, or it cannot be turned into JSON.
        """
        name = command_name(obj)
        if self.classes.get(name) is not type(obj):
            msg = (
                f"command type {name!r} is not listed in open_lane_system(commands=[...]); "
                "list its class there so recovery can rebuild it"
            )
            raise NotDurableError(msg)
        try:
            return name, self.converter.dumps(obj)
        except Exception as exc:
            msg = f"command {obj!r} cannot be stored as JSON: {exc!r}"
            raise NotDurableError(msg) from exc

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
