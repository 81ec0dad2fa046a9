"""Value checks shared by the configuration objects: each raises a :class:`LaneConfigError`
that names the owner, the field, the bad value and what would be accepted."""

from __future__ import annotations

import math

from ._errors import LaneConfigError

__all__ = [
    "check_int",
    "check_non_negative",
    "check_number",
    "check_positive",
    "check_seconds",
    "check_type",
    "fail",
]


def fail(owner: str, field: str, value: object, expected: str) -> LaneConfigError:
    """The error for ``owner``'s ``field=value``; ``expected`` says what would do."""
    return LaneConfigError(f"{owner}: {field}={value!r} is invalid; {expected}")


def check_number(owner: str, field: str, value: object) -> float:
    """``value`` as a float, if it is a real number (not a bool, not NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise fail(owner, field, value, "expected a number")
    return float(value)


def check_int(owner: str, field: str, value: object, minimum: int) -> int:
    """``value``, if it is an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise fail(owner, field, value, f"expected an integer >= {minimum}")
    return value


def check_positive(owner: str, field: str, value: object, *, allow_inf: bool = False) -> float:
    """``value`` as a float, if it is > 0 (and finite unless ``allow_inf``)."""
    number = check_number(owner, field, value)
    if number <= 0 or (math.isinf(number) and not allow_inf):
        raise fail(owner, field, value, "expected a finite number > 0")
    return number


def check_non_negative(owner: str, field: str, value: object) -> float:
    """``value`` as a float, if it is finite and >= 0."""
    number = check_number(owner, field, value)
    if number < 0 or math.isinf(number):
        raise fail(owner, field, value, "expected a finite number >= 0")
    return number


def check_type(owner: str, field: str, value: object, cls: type, *, optional: bool = False) -> None:
    """Refuse ``value`` unless it is a ``cls`` (or None, if ``optional``)."""
    if (value is None and optional) or isinstance(value, cls):
        return
    expected = f"expected a {cls.__name__}" + (" or None" if optional else "")
    raise fail(owner, field, value, expected)


def check_seconds(where: str, field: str, value: object, *, zero_ok: bool) -> float | None:
    """An optional duration argument of ``where`` (``submit``, ``drain``...) as a float.

    Raises:
        LaneConfigError: not None and not a number of seconds > 0 (>= 0 if ``zero_ok``).
    """
    if value is None:
        return None
    number = -1.0  # anything that is not a number is reported as invalid
    if isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value):
        number = float(value)
    if number < 0 or (number == 0 and not zero_ok):
        expected = "a number of seconds >= 0" if zero_ok else "a number of seconds > 0"
        msg = f"{where}: {field}={value!r} is invalid; expected {expected} or None"
        raise LaneConfigError(msg)
    return number
