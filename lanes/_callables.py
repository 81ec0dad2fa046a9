"""What ``submit`` accepts as a command: async callables whose signature fits the arguments.

``LaneSystem._prepare`` handles the common case (an ``async def`` function) inline; the rest
comes here. Signatures are read once per function object (``inspect.signature`` costs
microseconds) and cached in a weak mapping, so the check never holds a callable alive.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable
from types import MethodType
from typing import Any

from ._command import command_name, is_command
from ._errors import LaneUsageError

__all__ = ["check_arity", "submittable"]


def submittable(fn: Any, args: tuple[Any, ...]) -> tuple[Callable[..., Awaitable[Any]], str]:
    """The callable to run for ``fn`` and its name, off ``_prepare``'s fast path.

    Accepts a ``@lanes.command`` object (no extra arguments), or an async callable: an
    ``async def`` function, a ``functools.partial`` of one, a bound async method, an object
    whose ``__call__`` is ``async def``. The arguments must fit its signature.

    Raises:
        LaneUsageError: anything else, or arguments that do not fit.
    """
    if is_command(fn):
        if args:
            msg = (
                f"submit: a @lanes.command object ({command_name(fn)}) takes no extra "
                "arguments; put them in its fields"
            )
            raise LaneUsageError(msg)
        return fn.execute, command_name(fn)
    if not callable(fn):
        msg = f"submit: {fn!r} is not an async callable or a @lanes.command object"
        raise LaneUsageError(msg)
    name = _name(fn)
    if not _is_async(fn):
        msg = (
            f"submit: {name} is not an async function (it is {_kind(fn)}); pass an "
            "`async def` function (run blocking code with `await trio.to_thread.run_sync"
            "(...)` inside it), or submit a plain function to a lane with "
            "executor='process' (CPU-bound code)"
        )
        raise LaneUsageError(msg)
    check_arity(fn, args, name)
    return fn, name


def _name(fn: Any) -> str:
    if isinstance(fn, functools.partial):
        return f"functools.partial({_name(fn.func)}, ...)"
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


def _kind(fn: Any) -> str:
    if isinstance(fn, type):
        return "a class"
    if inspect.isbuiltin(fn):
        return "a builtin"
    if isinstance(fn, functools.partial):
        return "a partial of a synchronous callable"
    if inspect.isroutine(fn):
        return "a synchronous function"
    return "an object whose __call__ is synchronous"


def _is_async(fn: Any) -> bool:
    """Whether calling ``fn`` runs an ``async def`` (seen through partials and methods)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isroutine(fn) or isinstance(fn, type):
        return False
    return inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))  # noqa: B004


class _Shape:
    """How many positional arguments a callable takes, and its required keyword-only ones."""

    __slots__ = ("keywords", "least", "most")

    def __init__(self, least: int, most: int | None, keywords: tuple[str, ...]) -> None:
        self.least = least
        self.most = most  # None: *args
        self.keywords = keywords


_SHAPES: weakref.WeakKeyDictionary[Any, _Shape | None] = weakref.WeakKeyDictionary()


def check_arity(fn: Any, args: tuple[Any, ...], name: str | None = None) -> None:
    """Check that ``fn(*args)`` fits ``fn``'s signature (cached per function object).

    Raises:
        LaneUsageError: too few or too many positional arguments, or a keyword-only
            parameter without a default (which ``submit`` cannot fill).
    """
    target, skip = (fn.__func__, 1) if isinstance(fn, MethodType) else (fn, 0)
    shape = _shape_of(target)
    if shape is None:  # no signature to read (some builtins, C extensions): trust it
        return
    given = len(args) + skip
    label = name or _name(fn)
    if shape.keywords:
        needed = ", ".join(f"{k}=..." for k in shape.keywords)
        msg = (
            f"submit: {label} needs the keyword argument(s) {', '.join(shape.keywords)}; "
            "submit passes only positional arguments to the command, so bind them first: "
            f"submit(lane, functools.partial({label}, {needed}), ...)"
        )
        raise LaneUsageError(msg)
    if given < shape.least or (shape.most is not None and given > shape.most):
        msg = (
            f"submit: {label} takes {_expected(shape, skip)} positional argument(s) but "
            f"{len(args)} given; pass the arguments its signature expects (keyword "
            "arguments go through functools.partial)"
        )
        raise LaneUsageError(msg)


def _expected(shape: _Shape, skip: int) -> str:
    least = shape.least - skip
    if shape.most is None:
        return f"at least {least}"
    most = shape.most - skip
    return str(least) if least == most else f"{least} to {most}"


def _shape_of(fn: Any) -> _Shape | None:
    try:
        return _SHAPES[fn]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable or not hashable: not cached
        return _read_shape(fn)
    shape = _SHAPES[fn] = _read_shape(fn)
    return shape


def _read_shape(fn: Any) -> _Shape | None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    least = most = 0
    varargs = False
    keywords = []
    for param in signature.parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            most += 1
            if param.default is param.empty:
                least = most
        elif param.kind is param.VAR_POSITIONAL:
            varargs = True
        elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
            keywords.append(param.name)
    return _Shape(least, None if varargs else most, tuple(keywords))
