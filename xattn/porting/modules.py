"""What a user hands check_port: a module of some kind, or a plain function, and how to rerun it in float64.

Module kinds are recognised by type, never by name, and without importing anything: a framework
that is not in ``sys.modules`` has no modules (the bridge's rule for arrays, :mod:`xattn.bridge.convert`).

=========  =========================================  ==========
kind       type                                       framework
=========  =========================================  ==========
torch      ``torch.nn.Module`` (any subclass)         torch
nnx        ``flax.nnx.Module``                        jax
linen      ``flax.linen.Module`` (bound to run)       jax
equinox    ``equinox.Module``                         jax
=========  =========================================  ==========

A plain function is judged by what it refers to (:func:`references`): its closure, the globals its
code names, a ``functools.partial``'s function and arguments, a bound method's object, and one level
of the attributes of the objects found. :func:`float64_version` is the float64 rerun that
``check_port(..., reference="a")`` takes as the oracle: a float64 copy of a module (the caller's
module and JAX's global x64 flag untouched), or a function that holds no parameters of its own run
on float64 inputs.
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

#: Framework of each module kind.
FRAMEWORK_OF_KIND = {"torch": "torch", "nnx": "jax", "linen": "jax", "equinox": "jax"}
#: The base class of each kind, as ``(module in sys.modules, attribute)``.
_BASES = {"torch": ("torch.nn", "Module"), "nnx": ("flax.nnx", "Module"), "linen": ("flax.linen", "Module"),
          "equinox": ("equinox", "Module")}
#: What a caller can pass that xattn reruns in float64, for error messages.
MODULE_KINDS_TEXT = "a torch.nn.Module, a flax.nnx.Module, a bound flax.linen.Module or an equinox.Module"
#: Attribute names of a torch module that hold a dropout probability (torch's own and Hugging Face's).
_TORCH_DROPOUT_NAMES = ("dropout", "dropout_p", "attention_dropout", "hidden_dropout", "attn_dropout",
                        "hidden_dropout_prob", "attention_probs_dropout_prob")
#: How deep :func:`references` follows functions that call functions.
_DEPTH = 3
#: Libraries whose functions :func:`references` does not follow (what they refer to is their business).
_LIBRARIES = ("torch", "jax", "jaxlib", "flax", "equinox", "numpy", "xattn", "functools", "builtins")


def kind_of(obj) -> str | None:
    """``"torch"``, ``"nnx"``, ``"linen"``, ``"equinox"``, or None for anything that is not a module."""
    if isinstance(obj, type):
        return None
    for kind, (module_name, attribute) in _BASES.items():
        base = getattr(sys.modules.get(module_name), attribute, None)
        if isinstance(base, type) and isinstance(obj, base):
            return kind
    return None


def framework_of_module(obj) -> str | None:
    """``"torch"`` or ``"jax"`` for a module (:func:`kind_of`), None for anything else."""
    kind = kind_of(obj)
    return None if kind is None else FRAMEWORK_OF_KIND[kind]


def is_bound(obj) -> bool:
    """Whether a module can be called as it is: every kind but an unbound linen module."""
    return kind_of(obj) != "linen" or getattr(obj, "scope", None) is not None


def label(obj) -> str:
    """``"MyEncoder (torch.nn.Module)"``: a module's class and kind, for reports and errors."""
    kind = kind_of(obj)
    name = type(obj).__name__
    if kind is None:
        return getattr(obj, "__name__", None) or name
    module_name, attribute = _BASES[kind]
    return f"{name} ({module_name}.{attribute})"


def check_callable(obj, name: str = "module") -> None:
    """ValueError for an unbound linen module, which has no parameters to run with."""
    if not is_bound(obj):
        raise ValueError(f"{name}: expected a bound flax.linen.Module; got {type(obj).__name__} without variables."
                         " Pass module.bind(variables) (or functools.partial(module.apply, variables))")


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


# ------------------------------------------------------------------------------------- inspection


def _floating_name(dtype) -> str | None:
    name = getattr(dtype, "name", None) or str(dtype).replace("torch.", "")
    return name if name in ("float64", "float32", "float16", "bfloat16") else None


def parameter_dtypes(obj) -> tuple[str, ...]:
    """The floating dtypes of a module's parameters (sorted, no repeats); () for anything else."""
    kind = kind_of(obj)
    if kind == "torch":
        arrays = list(obj.parameters())
    elif kind == "nnx":
        arrays = [value for _, value in _compat.nnx_params(obj)]
        arrays = [_compat.nnx_value(value) for value in arrays]
    elif kind in ("linen", "equinox"):
        import jax

        tree = obj.variables if kind == "linen" and is_bound(obj) else (obj if kind == "equinox" else {})
        arrays = jax.tree_util.tree_leaves(tree)
    else:
        return ()
    return tuple(sorted({name for name in (_floating_name(getattr(a, "dtype", None)) for a in arrays) if name}))


def dropout_findings(obj) -> list[str]:
    """Why a module's outputs may be random (active dropout), in words for a report; [] where none is seen.

    torch: a submodule in training mode that is a ``Dropout`` with p > 0 or holds a dropout
    probability above 0 (``dropout``, ``dropout_p``, Hugging Face's ``*_dropout_prob``...). nnx: a
    submodule with a rate above 0 and ``deterministic`` not True. linen: a bound module given rngs,
    or with a ``deterministic=False`` field (submodules made inside a compact method cannot be seen
    before the call). equinox: a ``Dropout`` with p > 0 and ``inference`` False.
    """
    kind = kind_of(obj)
    finder = {"torch": _torch_dropouts, "nnx": _nnx_dropouts, "linen": _linen_dropouts,
              "equinox": _equinox_dropouts}.get(kind)
    found = finder(obj) if finder else []
    if not found:
        return []
    shown = "; ".join(found[:4]) + (" ..." if len(found) > 4 else "")
    return [f"{label(obj)} {_DROPOUT_TEXT[kind][0]}: {shown}; its outputs may be random. {_DROPOUT_TEXT[kind][1]}"]


_DROPOUT_TEXT = {
    "torch": ("is in training mode with active dropout", "Call .eval() on it first"),
    "nnx": ("runs non-deterministically", "Call .eval() on it (or set deterministic=True) first"),
    "linen": ("may run non-deterministically", "Bind it without rngs or with deterministic=True (dropout made"
                                               " inside a compact method cannot be seen before the call)"),
    "equinox": ("holds active dropout", "Use equinox.nn.inference_mode(module) first"),
}


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _torch_dropouts(obj) -> list[str]:
    found = []
    for path, sub in obj.named_modules():
        if not sub.training:
            continue
        rates = [("p", getattr(sub, "p", None))] if "Dropout" in type(sub).__name__ else []
        rates += [(name, getattr(sub, name, None)) for name in _TORCH_DROPOUT_NAMES]
        active = [f"{name}={value}" for name, value in rates if _positive(value)]
        if active:
            found.append(f"{path or type(sub).__name__} ({type(sub).__name__}, {', '.join(active)})")
    return found


def _nnx_dropouts(obj) -> list[str]:
    from flax import nnx

    found = []
    for path, sub in nnx.iter_graph(obj):
        if not isinstance(sub, nnx.Module):
            continue
        rate = next((getattr(sub, name) for name in ("rate", "dropout_rate") if _positive(getattr(sub, name, None))), 0)
        if rate and getattr(sub, "deterministic", None) is not True:
            where = "/".join(str(p) for p in path) or type(sub).__name__
            found.append(f"{where} ({type(sub).__name__}, rate={rate}, deterministic={sub.deterministic})")
    return found


def _linen_dropouts(obj) -> list[str]:
    found = []
    rngs = sorted(getattr(getattr(obj, "scope", None), "rngs", None) or ())
    if rngs:
        found.append(f"it was bound with rngs {rngs}")
    if getattr(obj, "deterministic", None) is False:
        found.append("its field deterministic is False")
    return found


def _equinox_dropouts(obj) -> list[str]:
    import equinox
    import jax

    def is_dropout(leaf):
        return isinstance(leaf, equinox.nn.Dropout)

    return [f"Dropout(p={leaf.p}, inference=False)" for leaf in jax.tree_util.tree_leaves(obj, is_leaf=is_dropout)
            if is_dropout(leaf) and _positive(leaf.p) and not leaf.inference]


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
    if kind is None or not _floating_name(getattr(value, "dtype", None)):
        return value
    if kind == "torch":
        return value.detach().to(dtype=sys.modules["torch"].float64)
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
        if isinstance(leaf, (jax.Array, np.ndarray)) and _floating_name(leaf.dtype):
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
            if _floating_name(getattr(value, "dtype", None)):
                _compat.nnx_set_value(node, jnp.asarray(value, dtype=jnp.float64))
        elif isinstance(node, nnx.Module):
            for name in ("dtype", "param_dtype"):  # a fixed compute dtype would keep the rerun narrow
                if _floating_name(getattr(node, name, None)):
                    object.__setattr__(node, name, jnp.float64)
    return clone


def _module_float64(module) -> tuple[Callable, object]:
    """``(callable, float64 module)`` for a module of any kind; the caller's module is left as it is."""
    kind = kind_of(module)
    if kind == "torch":
        copied = copy.deepcopy(module).double()
        return copied, copied
    with _compat.jax_x64(True):
        if kind == "nnx":
            copied = _nnx_float64(module)
            return copied, copied
        if kind == "linen":
            check_callable(module)
            unbound, variables = module.unbind()
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
