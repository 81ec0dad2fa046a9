"""What a storage can hold: a row is checked when it is built, before it joins a batch."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["row_problem", "storable"]

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def storable(values: Iterable[object]) -> bool:
    """Whether every value can surely be stored (the fast path of :func:`row_problem`:
    ASCII text, 64-bit integers, floats, booleans, None)."""
    for value in values:
        kind = type(value)
        if kind is str:
            if not value.isascii():  # type: ignore[attr-defined]
                return False
        elif kind is int:
            if not _INT_MIN <= value <= _INT_MAX:  # type: ignore[operator]
                return False
        elif value is not None and kind is not float and kind is not bool:
            return False
    return True


def row_problem(kind: str, values: Iterable[tuple[str, object]]) -> str | None:
    """Why a row cannot be stored (``None``: it can).

    Every text must be strict UTF-8 (no lone surrogate), every integer fit in 64 bits,
    and every value be text, a number, a boolean or None: what SQLite (and JSON) keep
    exactly. Cheap for the common case: ASCII text is checked without encoding it.
    """
    for name, value in values:
        problem = _value_problem(value)
        if problem is not None:
            return f"{kind} field {name!r} cannot be stored: {problem}"
    return None


def _value_problem(value: object) -> str | None:
    if value is None or isinstance(value, float | bool):
        return None
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"text is not valid Unicode ({exc.reason} at index {exc.start}: "
                f"{value[exc.start : exc.end]!r}); remove lone surrogates"
            )
        return None
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return None
        return f"integer {value} does not fit in 64 bits"
    return f"a {type(value).__qualname__} is not text, a number or None"
