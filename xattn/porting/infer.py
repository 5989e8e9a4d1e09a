"""Which framework's arrays a user's function takes: :func:`guess_framework`, :func:`infer_framework`.

A module answers by its type (:func:`xattn.porting.modules.kind_of`: torch, nnx, linen, equinox),
as does any object whose type belongs to a framework (a jitted function). A plain function is judged
by what it refers to (:func:`xattn.porting.modules.references`: closures, globals, partials, bound
methods' objects, the attributes of plain objects found): modules, arrays, and functions or modules
of a framework (:data:`xattn.backends.frameworks.ROOTS` says which top-level modules belong to
which). ``frameworks=`` overrides the guess, and check_port says what it guessed when a function
raises on the arrays it was given.
"""

from __future__ import annotations

import types
from typing import Callable

from xattn.backends.calls import FRAMEWORK_NAMES
from xattn.backends.frameworks import ROOTS
from xattn.bridge import framework_of
from xattn.porting.modules import framework_of_module, kind_of, label, references


def _root(name) -> str | None:
    return ROOTS.get(str(name).split(".")[0])


def _framework_of_type(cls: type) -> str | None:
    """The framework of the first class in ``cls``'s MRO that belongs to one (a user's subclass of nn.Module)."""
    for base in getattr(cls, "__mro__", (cls,)):
        found = _root(base.__module__)
        if found is not None:
            return found
    return None


def _framework_of_value(value) -> tuple[str | None, str]:
    """``(framework, what it is)`` of one referenced value, or ``(None, "")``."""
    found = framework_of_module(value)
    if found is not None:
        return found, label(value)
    array = framework_of(value)
    if array in ("jax", "torch"):
        return array, f"a {array} array"
    if isinstance(value, types.ModuleType):
        return _root(value.__name__), f"the module {value.__name__}"
    if isinstance(value, type):
        return _framework_of_type(value), f"the class {value.__qualname__}"
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
        return _root(getattr(value, "__module__", None)), f"{getattr(value, '__module__', '')}.{value.__name__}"
    return _framework_of_type(type(value)), f"a {type(value).__qualname__}"


def guess_framework(fn: Callable) -> tuple[str, str]:
    """``(framework, why)``: ``"jax"``, ``"torch"`` or ``"numpy"`` for ``fn``, and the reason in words.

    ValueError when what ``fn`` refers to belongs to both frameworks.
    """
    if getattr(fn, "framework", None) in FRAMEWORK_NAMES:  # e.g. xattn.layers.check.LayerFunction
        return fn.framework, f"it says so (its framework is {fn.framework!r})"
    if kind_of(fn) is not None:
        return framework_of_module(fn), f"it is a {label(fn)}"
    own = _framework_of_type(type(fn))
    if own is not None and not isinstance(fn, types.FunctionType):
        return own, f"it is a {type(fn).__qualname__} of {own}"
    found: dict[str, str] = {}
    for where, value in references(fn):
        framework, what = _framework_of_value(value)
        if framework is not None:
            found.setdefault(framework, f"it refers to {what} ({where})")
    name = getattr(fn, "__name__", None) or type(fn).__name__
    if len(found) > 1:
        raise ValueError(
            f"check_port: expected {name!r} to use one framework; it refers to both jax ({found['jax']}) and torch"
            f" ({found['torch']}). Pass frameworks=('jax', 'torch') (one entry per function) to say which arrays it"
            " takes")
    if found:
        framework, why = found.popitem()
        return framework, why
    return "numpy", "it refers to no module, array or function of jax or torch"


def infer_framework(fn: Callable) -> str:
    """``"jax"``, ``"torch"`` or ``"numpy"``: what arrays ``fn`` expects (:func:`guess_framework` without the why)."""
    return guess_framework(fn)[0]
