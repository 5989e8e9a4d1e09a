"""What a user hands check_port: a module of some kind, or a plain function, and how to rerun it in float64.

Module kinds are recognised by type: :func:`kind_of`, :func:`framework_of_module` and the rest of
what a module says of itself live in :mod:`xattn.porting.kinds` and are re-exported here, the
names other parts use. A plain function is judged by what it refers to (:func:`references`): its
closure, the globals its code names, a ``functools.partial``'s function and arguments, a bound
method's object, and one level of the attributes of the objects found. :func:`float64_version` is
the float64 rerun that ``check_port(..., reference="a")`` takes as the oracle: a float64 copy of a
module (the caller's module and JAX's global x64 flag untouched), or a function that holds no
parameters of its own run on float64 inputs.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import sys
import types
from typing import Callable

import numpy as np

from xattn import _compat
from xattn.bridge import framework_of
from xattn.bridge.trees import map_leaves
from xattn.porting.kinds import (  # noqa: F401 - re-exported: the names xattn.locate and check_port use
    FRAMEWORK_OF_KIND,
    MODULE_KINDS_TEXT,
    check_callable,
    dropout_findings,
    floating_dtype_name,
    framework_of_module,
    is_bound,
    kind_of,
    label,
    parameter_dtypes,
)

#: How deep :func:`references` follows functions that call functions.
_DEPTH = 3
#: Libraries whose functions :func:`references` does not follow (what they refer to is their business).
_LIBRARIES = ("torch", "jax", "jaxlib", "flax", "equinox", "numpy", "xattn", "functools", "builtins")

# ------------------------------------------------------------------------------------ references


def _codes(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _direct(fn) -> list[tuple[str, object]]:
    """``[(where, value)]`` one step from ``fn``: partial parts, a bound method's object, closure, globals."""
    found = []
    if isinstance(fn, functools.partial):
        found.append(("partial function", fn.func))
        found += [(f"partial argument {i}", value) for i, value in enumerate(fn.args)]
        found += [(f"partial keyword {key!r}", value) for key, value in fn.keywords.items()]
        return found
    if isinstance(fn, types.MethodType):
        return [("bound object", fn.__self__), ("method", fn.__func__)]
    wrapped = getattr(fn, "__wrapped__", None)
    if wrapped is not None and wrapped is not fn:
        found.append(("wrapped function", wrapped))
    code, globals_ = getattr(fn, "__code__", None), getattr(fn, "__globals__", {})
    if code is not None:
        names = dict.fromkeys(name for each in _codes(code) for name in each.co_names if name in globals_)
        found += [(f"global {name!r}", globals_[name]) for name in names]
    for variable, cell in zip(getattr(code, "co_freevars", ()), getattr(fn, "__closure__", None) or ()):
        try:
            found.append((f"closure {variable!r}", cell.cell_contents))
        except ValueError:  # an empty cell
            pass
    return found


def _is_plain_object(value) -> bool:
    """An instance of a user's class (neither a module, a function, a type nor a builtin value)."""
    return (hasattr(value, "__dict__") and not isinstance(value, (type, types.ModuleType, types.FunctionType,
                                                                   types.BuiltinFunctionType, functools.partial))
            and kind_of(value) is None and type(value).__module__ != "builtins")


def references(fn) -> list[tuple[str, object]]:
    """Everything ``fn`` refers to, ``[(where, value)]``: see the module docstring for where it looks.

    Functions found are followed (helpers calling helpers, to a small depth); containers (lists,
    tuples, dicts) are looked into one level; a plain object's attributes and its class's
    ``__call__`` are looked into one level. Modules and arrays are not looked into: they answer for
    themselves.
    """
    found, seen = [], {id(fn)}
    frontier = [(None, fn, 0)]
    if _is_plain_object(fn):  # a callable object: its attributes and its class's __call__
        found += [(f"attribute {name!r}", item) for name, item in list(vars(fn).items())[:64]]
        call = vars(type(fn)).get("__call__")
        frontier = [("__call__", call, 1)] if isinstance(call, types.FunctionType) else []
    while frontier:
        where_from, current, depth = frontier.pop(0)
        for where, value in _direct(current):
            where = where if where_from is None else f"{where_from} -> {where}"
            if id(value) in seen:
                continue
            seen.add(id(value))
            found.append((where, value))
            if depth + 1 >= _DEPTH:
                continue
            if isinstance(value, (types.FunctionType, functools.partial, types.MethodType)):
                if str(getattr(value, "__module__", None)).split(".")[0] not in _LIBRARIES:
                    frontier.append((where, value, depth + 1))
            elif isinstance(value, (list, tuple)):
                found += [(f"{where}[{i}]", item) for i, item in enumerate(value[:64])]
            elif isinstance(value, dict) and not framework_of(value):
                found += [(f"{where}[{key!r}]", item) for key, item in list(value.items())[:64]]
            elif _is_plain_object(value):
                found += [(f"{where}.{name}", item) for name, item in list(vars(value).items())[:64]]
                call = vars(type(value)).get("__call__")
                if isinstance(call, types.FunctionType):
                    frontier.append((f"{where}.__call__", call, depth + 1))
    return found


def held_modules(fn) -> list[tuple[str, object]]:
    """``[(where, module)]``: the modules a plain function refers to (:func:`references`)."""
    return [(where, value) for where, value in references(fn) if kind_of(value) is not None]


def _held_parameters(fn) -> list[tuple[str, object]]:
    """Modules and JAX or torch arrays a plain function holds, outside a partial's arguments."""
    held = []
    for where, value in references(fn):
        if where.startswith("partial argument") or where.startswith("partial keyword"):
            continue
        if kind_of(value) is not None and is_bound(value):
            held.append((where, value))
        elif framework_of(value) in ("jax", "torch"):
            held.append((where, value))
    return held

# ----------------------------------------------------------------------------------- float64 rerun


@contextlib.contextmanager
def float64_scope(framework: str | None):
    """Where a JAX float64 run may compute in float64: jax_enable_x64 on for the block, restored after.

    Nothing for torch or NumPy. JAX's global flag is the caller's again when the block ends.
    """
    if framework == "jax" or (framework is None and "jax" in sys.modules):
        with _compat.jax_x64(True):
            yield
    else:
        yield


def _to_float64(value):
    """A floating array (NumPy, JAX, torch) as float64 in its own framework; anything else as it is."""
    kind = framework_of(value)
    if kind is None or floating_dtype_name(getattr(value, "dtype", None)) in (None, "float64"):
        return value  # float64 already: as it is, so that a gradient still flows through it
    if kind == "torch":
        return value.to(dtype=sys.modules["torch"].float64)
    if kind == "jax":
        import jax.numpy as jnp

        return jnp.asarray(value, dtype=jnp.float64)
    return np.asarray(value, dtype=np.float64)


def as_float64_tree(tree):
    """``tree`` with every floating leaf in float64 (JAX ones need :func:`float64_scope` around this)."""
    return map_leaves(tree, lambda path, leaf: _to_float64(leaf))


class Float64Run:
    """A callable that runs ``module`` (a float64 copy) or a parameter-free function on float64 inputs.

    Floating inputs (leaves of trees too) are cast to float64 in their framework; a JAX run has x64
    on for the call only. ``module`` is the float64 copy (for hooks); ``framework`` its framework.
    """

    def __init__(self, run: Callable, framework: str | None, module=None, original=None):
        self.run, self.framework, self.module, self.original = run, framework, module, original
        self.__name__ = f"{getattr(original, '__name__', None) or type(original).__name__} (float64)"

    def __call__(self, *args, **kwargs):
        with float64_scope(self.framework):
            return self.run(*as_float64_tree(list(args)), **as_float64_tree(dict(kwargs)))

    def __repr__(self) -> str:
        return f"<float64 rerun of {label(self.original)}>"


def _cast_jax_tree(tree):
    import jax
    import jax.numpy as jnp

    def cast(leaf):
        if isinstance(leaf, (jax.Array, np.ndarray)) and floating_dtype_name(leaf.dtype):
            return jnp.asarray(leaf, dtype=jnp.float64)
        return leaf

    return jax.tree_util.tree_map(cast, tree)


def _nnx_float64(module):
    import jax.numpy as jnp
    from flax import nnx

    clone = _compat.nnx_fresh_copy(module)
    for _, node in nnx.iter_graph(clone):
        if isinstance(node, nnx.Variable):
            value = _compat.nnx_value(node)
            if floating_dtype_name(getattr(value, "dtype", None)):
                _compat.nnx_set_value(node, jnp.asarray(value, dtype=jnp.float64))
        elif isinstance(node, nnx.Module):
            for name in ("dtype", "param_dtype"):  # a fixed compute dtype would keep the rerun narrow
                if floating_dtype_name(getattr(node, name, None)):
                    object.__setattr__(node, name, jnp.float64)
    return clone


def _module_float64(module) -> tuple[Callable, object]:
    """``(callable, float64 module)`` for a module of any kind; the caller's module is left as it is."""
    kind = kind_of(module)
    if kind == "torch":
        copied = copy.deepcopy(module).double()
        return copied, copied
    import jax.numpy as jnp

    with _compat.jax_x64(True):
        if kind == "nnx":
            copied = _nnx_float64(module)
            return copied, copied
        if kind == "linen":
            check_callable(module)
            unbound, variables = module.unbind()
            fixed = {name: jnp.float64 for name in ("dtype", "param_dtype")
                     if floating_dtype_name(getattr(unbound, name, None))}
            if fixed:  # a compute dtype field (submodules made with dtype=self.dtype follow it)
                unbound = unbound.clone(**fixed)
            copied = unbound.bind(_cast_jax_tree(variables))
            return copied, copied
        copied = _cast_jax_tree(module)  # equinox: a module is a pytree of its arrays
        return copied, copied


def float64_version(obj) -> Float64Run:
    """A callable that reruns ``obj`` in float64 on float64 inputs: check_port's ``reference="a"`` oracle.

    A module (any kind of :func:`kind_of`): a float64 copy (torch: ``deepcopy(module).double()``;
    JAX kinds: every floating parameter cast under x64), the caller's module untouched. A bound
    method of a module: the same method of that copy. A ``functools.partial``: its function's
    float64 version with its floating arguments cast (``partial(model.apply, variables)`` works).
    Any other function that holds no module or JAX/torch array of its own (everything it computes
    with comes in as inputs): itself on float64 inputs. A function that holds one raises
    ValueError saying what to pass instead. JAX runs compute under x64 for the call only.
    """
    kind = kind_of(obj)
    if kind is not None:
        run, module = _module_float64(obj)
        return Float64Run(run, FRAMEWORK_OF_KIND[kind], module, obj)
    if isinstance(obj, types.MethodType) and kind_of(obj.__self__) is not None and is_bound(obj.__self__):
        inner = float64_version(obj.__self__)
        return Float64Run(getattr(inner.module, obj.__name__), inner.framework, inner.module, obj)
    if isinstance(obj, functools.partial):
        inner = float64_version(obj.func)
        framework = inner.framework or _framework_of_values([*obj.args, *obj.keywords.values()])
        with float64_scope(framework):
            args, keywords = as_float64_tree(list(obj.args)), as_float64_tree(dict(obj.keywords))
        return Float64Run(functools.partial(inner.run, *args, **keywords), framework, inner.module, obj)
    if not callable(obj):
        raise TypeError(f"float64_version: expected {MODULE_KINDS_TEXT} or a function; got {type(obj).__name__}")
    held = _held_parameters(obj)
    if held:
        where, value = held[0]
        what = label(value) if kind_of(value) else f"a {framework_of(value)} array of shape {tuple(value.shape)}"
        name = getattr(obj, "__name__", type(obj).__name__)
        raise ValueError(
            f"float64 rerun: expected {MODULE_KINDS_TEXT}, or a function whose parameters come in as inputs;"
            f" got {name!r}, which holds {what} ({where}), and xattn cannot cast parameters a function holds."
            " Pass the module itself (check_port(model, ...)), make the parameters an input (fn(params, x)),"
            " or pass reference= a NumPy float64 function")
    return Float64Run(obj, None, None, obj)


def _framework_of_values(values) -> str | None:
    from xattn.bridge.trees import leaves

    found = {framework_of(leaf) for value in values for _, leaf in leaves(value)} & {"jax", "torch"}
    return found.pop() if len(found) == 1 else None
