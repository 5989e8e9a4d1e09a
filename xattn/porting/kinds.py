"""Module kinds, told by type: :func:`kind_of` and what a module of each kind says of itself.

=========  =========================================  ==========
kind       type                                       framework
=========  =========================================  ==========
torch      ``torch.nn.Module`` (any subclass)         torch
nnx        ``flax.nnx.Module``                        jax
linen      ``flax.linen.Module`` (bound to run)       jax
equinox    ``equinox.Module``                         jax
=========  =========================================  ==========

Never by name, and without importing anything: a framework that is not in ``sys.modules`` has no
modules (the bridge's rule for arrays, :mod:`xattn.bridge.convert`). Beside the kind: a module's
label for reports, its parameters' floating dtypes, and its active dropout.
:mod:`xattn.porting.modules` re-exports these and adds functions and float64 reruns.
"""

from __future__ import annotations

import sys

import numpy as np

from xattn import _compat

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


def floating_dtype_name(dtype) -> str | None:
    """``"float32"`` for any spelling of a floating dtype (NumPy, JAX scalar types, torch), else None."""
    if dtype is None:
        return None
    try:
        name = np.dtype(dtype).name
    except TypeError:  # a torch dtype
        name = str(dtype).replace("torch.", "")
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
    return tuple(sorted({name for name in (floating_dtype_name(getattr(a, "dtype", None)) for a in arrays) if name}))


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
