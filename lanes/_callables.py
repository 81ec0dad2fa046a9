"""What ``submit`` accepts as a command: async callables whose signature fits the arguments.

``_submission.validate`` handles the common case (an ``async def`` function) inline; the rest
comes here. Signatures are read once per function object (``inspect.signature`` costs
microseconds) and cached in a weak mapping, so the check never holds a callable alive.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable
from types import FunctionType, MethodType
from typing import Any

from ._command import command_name, is_command
from ._errors import LaneUsageError

__all__ = ["callable_name", "check_arity", "is_async", "submittable"]

_CO_COROUTINE = inspect.CO_COROUTINE


def submittable(fn: Any, args: tuple[Any, ...]) -> tuple[Callable[..., Awaitable[Any]], str]:
    """The callable to run for ``fn`` and its name, off ``_submission.validate``'s fast path.

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
    name = callable_name(fn)
    if not is_async(fn):
        msg = (
            f"submit: {name} is not an async function (it is {_kind(fn)}); pass an "
            "`async def` function (run blocking code with `await trio.to_thread.run_sync"
            "(...)` inside it), or submit a plain function to a lane with "
            "executor='process' (CPU-bound code)"
        )
        raise LaneUsageError(msg)
    check_arity(fn, args, name)
    return fn, name


def callable_name(fn: Any) -> str:
    if type(fn) is functools.partial:
        return f"partial({callable_name(fn.func)})"
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


def is_async(fn: Any) -> bool:
    """Whether calling ``fn`` runs an ``async def`` (seen through partials and methods)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if type(fn) is FunctionType:
        return bool(fn.__code__.co_flags & _CO_COROUTINE)
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isroutine(fn) or isinstance(fn, type):
        return False
    return inspect.iscoroutinefunction(getattr(type(fn), "__call__", None))  # noqa: B004


class _Shape:
    """How a callable takes arguments: its positional parameters (the first ``least`` of
    them required), whether it takes ``*args``, and its required keyword-only ones."""

    __slots__ = ("keywords", "least", "most", "names", "varargs")

    def __init__(
        self, names: tuple[str, ...], least: int, varargs: bool, keywords: tuple[str, ...]
    ) -> None:
        self.names = names
        self.least = least
        self.varargs = varargs
        self.most = None if varargs else len(names)
        self.keywords = keywords


_NOTHING: frozenset[str] = frozenset()
_SHAPES: weakref.WeakKeyDictionary[Any, _Shape | None] = weakref.WeakKeyDictionary()


def check_arity(fn: Any, args: tuple[Any, ...], name: str | None = None) -> None:
    """Check that ``fn(*args)`` fits ``fn``'s signature (read once per function object).

    Raises:
        LaneUsageError: too few or too many positional arguments, or a required parameter
            that only a keyword can fill (``submit`` passes positional arguments only).
    """
    if type(fn) is FunctionType:
        target, skip, bound = fn, 0, _NOTHING
    else:
        target, skip, bound = _unbound(fn)
    shape = _shape_of(target)
    if shape is None:  # no signature to read (some builtins, C extensions): trust it
        return
    given = len(args) + skip
    if (
        not bound
        and not shape.keywords
        and shape.least <= given
        and (shape.most is None or given <= shape.most)
    ):
        return  # the common case: it fits
    _refuse_misfit(fn, args, name, shape, skip, bound)


def _refuse_misfit(
    fn: Any,
    args: tuple[Any, ...],
    name: str | None,
    shape: _Shape,
    skip: int,
    bound: frozenset[str],
) -> None:
    """Raise unless ``args`` fit once partial keywords are taken into account."""
    least, most, keywords = _fit(shape, skip, bound)
    label = name or callable_name(fn)
    if keywords:
        needed = ", ".join(f"{k}=..." for k in keywords)
        msg = (
            f"submit: {label} needs the keyword argument(s) {', '.join(keywords)}; "
            "submit passes only positional arguments to the command, so bind them first: "
            f"submit(lane, functools.partial({callable_name(_unbound(fn)[0])}, {needed}), ...)"
        )
        raise LaneUsageError(msg)
    given = len(args)
    if given < least or (most is not None and given > most):
        if most is None:
            expected = f"at least {least}"
        else:
            expected = str(least) if least == most else f"{least} to {most}"
        msg = (
            f"submit: {label} takes {expected} positional argument(s) but {given} given; "
            "pass the arguments its signature expects (keyword arguments go through "
            "functools.partial)"
        )
        raise LaneUsageError(msg)


def _unbound(fn: Any) -> tuple[Any, int, frozenset[str]]:
    """What to read the signature of, how many leading positionals are already bound, and
    the names bound by keyword.

    Bound methods and partials (which flatten when nested) are read through to their
    function, whose shape is cached: a partial made for each submit costs no
    ``inspect.signature``.
    """
    skip = 0
    bound = _NOTHING
    if type(fn) is functools.partial:
        skip, fn, keywords = len(fn.args), fn.func, fn.keywords
        if keywords:
            bound = frozenset(keywords)
    if isinstance(fn, MethodType):
        skip, fn = skip + 1, fn.__func__
    return fn, skip, bound


def _fit(shape: _Shape, skip: int, bound: frozenset[str]) -> tuple[int, int | None, list[str]]:
    """(least, most or None, keyword-only names still needed) once ``skip`` leading
    positionals and the ``bound`` keywords are given."""
    names = shape.names
    most = shape.most
    least = shape.least
    needed = [k for k in shape.keywords if k not in bound]
    if bound:
        for index in range(skip, len(names)):
            if names[index] in bound:  # from here on, positionals would collide with it
                most = index
                needed += [n for n in names[index:least] if n not in bound]
                least = min(least, index)
                break
    least = max(least - skip, 0)
    return least, None if most is None else most - skip, needed


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
    names: list[str] = []
    least = 0
    varargs = False
    keywords = []
    for param in signature.parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            names.append(param.name)
            if param.default is param.empty:
                least = len(names)
        elif param.kind is param.VAR_POSITIONAL:
            varargs = True
        elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
            keywords.append(param.name)
    return _Shape(tuple(names), least, varargs, tuple(keywords))
