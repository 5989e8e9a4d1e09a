"""Which framework's arrays a user's function takes: :func:`infer_framework`.

A function or module answers for itself where its type belongs to a framework; a plain function
is judged by the modules and objects its code refers to (:data:`xattn.backends.frameworks.ROOTS`
says which top-level modules belong to which framework). ``frameworks=`` overrides the guess.
"""

from __future__ import annotations

import functools
import types
from typing import Callable

from xattn.backends.calls import FRAMEWORK_NAMES
from xattn.backends.frameworks import ROOTS


def _root(value) -> str | None:
    if isinstance(value, types.ModuleType):
        name = value.__name__
    else:
        name = getattr(value, "__module__", None) or type(value).__module__
    return ROOTS.get(str(name).split(".")[0])


def _codes(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _referenced(fn) -> list:
    """Global and closure values a plain function's code (nested functions included) refers to."""
    values = []
    code, globals_ = getattr(fn, "__code__", None), getattr(fn, "__globals__", {})
    if code is not None:
        for each in _codes(code):
            values += [globals_[name] for name in each.co_names if name in globals_]
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # an empty cell
            pass
    return values


def infer_framework(fn: Callable) -> str:
    """``"jax"``, ``"torch"`` or ``"numpy"``: what arrays ``fn`` expects, from what it is and refers to.

    A jitted function or torch module answers for itself; a plain function is judged by the modules
    and functions its code names (``jnp``, ``F``, ``torch``...). Pass ``frameworks=`` to be explicit.
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    if getattr(fn, "framework", None) in FRAMEWORK_NAMES:  # e.g. xattn.layers.check.LayerFunction
        return fn.framework
    own = _root(type(fn))
    if own is not None:
        return own
    fn = getattr(fn, "__wrapped__", fn)
    found = {root for root in map(_root, _referenced(fn)) if root is not None}
    if len(found) > 1:
        raise ValueError(
            f"check_port: expected {getattr(fn, '__name__', fn)!r} to use one framework; it refers to both"
            " jax and torch. Pass frameworks=('jax', 'torch') (one entry per function) to say which arrays it takes"
        )
    return found.pop() if found else "numpy"
