"""Every submodule's output during one call of a model, in execution order: :func:`capture`.

Each module kind is watched by the means its library offers, for the one call only:

=========  ==================================================================================
kind       how the outputs are seen
=========  ==================================================================================
torch      a global forward hook (``torch.nn.modules.module.register_module_forward_hook``):
           every ``nn.Module`` called, including ones called through ``functional_call``
nnx        ``__call__`` of every ``nnx.Module`` class in the model wrapped for the call (what
           ``nnx.capture(..., method_outputs=...)`` does, keeping the order of the calls)
linen      ``flax.linen.intercept_methods``: every ``__call__`` with its scope path (the hook
           ``capture_intermediates`` is built on, which keeps no order of the calls)
equinox    ``__call__`` of every ``equinox.Module`` class in the model wrapped for the call
=========  ==================================================================================

A call is recorded when it returns, so a submodule comes before the module that called it
(post-order), and a module called twice is recorded twice (``call`` 0, 1, ...). Outputs are copied
to NumPy at once, so an in-place op later in the forward cannot change them. Only methods named
``__call__`` (``forward`` for torch) are seen. Inside an eager ``jax.vmap`` (equinox's way to
batch) the tracer carries the whole batch, which is what is recorded; a value traced under
``jax.jit`` carries none, and raises an error that says to call the model without jit. The hooks
and wrappers are process-wide while the call runs: capture one model at a time, from one thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Any, Callable

import numpy as np

from xattn import _compat
from xattn.bridge import framework_of, to_numpy
from xattn.bridge.trees import leaves

#: Path separator each kind's own tools print (``named_modules``, flax's scope paths, attribute access).
SEPARATOR = {"torch": ".", "nnx": "/", "linen": "/", "equinox": "."}

#: How a model itself (its own call, its outputs) is named in pairs and tables.
ROOT = "(root)"


@dataclasses.dataclass(frozen=True)
class Call:
    """One submodule call: where the module sits, which call of it this was, and its output arrays."""

    #: The module's path as its framework writes it (``encoder.layer.1``, ``encoder/layer/1``); "" for the root.
    path: str
    #: The same path as its parts (``("encoder", "layer", "1")``).
    parts: tuple[str, ...]
    #: 0 for the module's first call in the forward, 1 for its second...
    call: int
    #: Position among all calls, in the order they returned.
    order: int
    #: The module's class name.
    type_name: str
    #: The output's array leaves by their path inside the output (``""`` for a lone array, ``[0]``...).
    outputs: tuple[tuple[str, np.ndarray], ...]

    @property
    def name(self) -> str:
        """The path, ``(root)`` for the model itself, with ``#n`` for a module's call after its first."""
        shown = self.path or ROOT
        return shown if self.call == 0 else f"{shown}#{self.call}"


def capture(root, kind: str, run: Callable[[], Any], *, jiggle: int | None = None) -> tuple[Any, list[Call]]:
    """``(output, calls)``: ``run()`` (a call of ``root``, or of a model holding it) with every call recorded.

    ``root``: the module whose submodules are named by their path from it (a call of a module
    outside it gets the path ``?<Class>``); ``kind``: its kind (see the module docstring).
    ``jiggle``: a seed; with it, every floating output is re-rounded at random before it flows on
    (:func:`jiggled`), so that the run is one more draw of rounding error (a naive run's repeat).
    """
    watchers = {"torch": _torch_watch, "nnx": _class_watch, "equinox": _class_watch, "linen": _linen_watch}
    if kind not in watchers:
        raise ValueError(f"capture: expected a module kind of {sorted(watchers)}; got {kind!r}")
    seen: list[tuple[Any, Any]] = []  # (module, or linen's (path, class name); output leaves on the host)
    made: dict[int, Any] = {}  # arrays jiggle made: a module passing one on as its output leaves it be

    def record(who, output):
        if jiggle is not None:
            output = _jiggled_output(output, np.random.default_rng([jiggle, len(seen)]), made)
        seen.append((who, _host_leaves(output, who)))
        return output

    with watchers[kind](root, kind, record):
        output = run()
    return output, _named(root, kind, seen)


# ---------------------------------------------------------------------------------------- watchers


@contextlib.contextmanager
def _torch_watch(root, kind, record):
    import torch

    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: record(module, out))
    # a forward hook's return value replaces the module's output: what record returns flows on
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def _linen_watch(root, kind, record):
    from flax import linen

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            out = record((tuple(str(p) for p in context.module.path), type(context.module).__name__), out)
        return out

    with linen.intercept_methods(interceptor):
        yield


_MISSING = object()


@contextlib.contextmanager
def _class_watch(root, kind, record):
    """Wrap ``__call__`` of every module class in ``root`` for the block (nnx and equinox modules)."""
    classes = list(dict.fromkeys(type(module) for _, module in _submodules(root, kind)))
    saved = [(cls, cls.__dict__.get("__call__", _MISSING)) for cls in classes]
    try:
        for cls in classes:
            type.__setattr__(cls, "__call__", _recording(cls, cls.__call__, record))
        yield
    finally:
        for cls, original in reversed(saved):
            if original is _MISSING:
                type.__delattr__(cls, "__call__")
            else:
                type.__setattr__(cls, "__call__", original)


def _recording(cls, inner, record):
    def __call__(self, *args, **kwargs):
        out = inner(self, *args, **kwargs)
        if type(self) is cls:  # a subclass's __call__ reaching its base's: one record, not two
            out = record(self, out)
        return out

    __call__.__wrapped__ = inner
    return __call__


# ------------------------------------------------------------------------------------------ naming


def _submodules(root, kind: str) -> list[tuple[tuple[str, ...], Any]]:
    """``[(path parts, module)]`` of every module inside ``root`` (itself first), each once."""
    if kind == "torch":
        return [(tuple(name.split(".")) if name else (), module) for name, module in root.named_modules()]
    if kind == "nnx":

        found = [(tuple(str(p) for p in path), module) for path, module in _compat.nnx_iter_modules(root)]
        return sorted(found, key=lambda item: len(item[0]))
    if kind == "equinox":
        return _equinox_modules(root)
    return []


def _equinox_modules(root) -> list[tuple[tuple[str, ...], Any]]:
    import equinox

    found, seen = [], set()

    def walk(value, parts):
        if isinstance(value, equinox.Module):
            if id(value) in seen:
                return
            seen.add(id(value))
            found.append((parts, value))
            for field in dataclasses.fields(value):
                walk(getattr(value, field.name, None), (*parts, field.name))
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(item, (*parts, str(index)))
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*parts, str(key)))

    walk(root, ())
    return found


def _named(root, kind: str, seen) -> list[Call]:
    paths = {} if kind == "linen" else {id(module): parts for parts, module in reversed(_submodules(root, kind))}
    calls, counts = [], {}
    for order, (who, outputs) in enumerate(seen):
        if kind == "linen":
            parts, type_name = who
        else:
            parts = paths.get(id(who))
            type_name = type(who).__name__
            if parts is None:
                parts = (f"?{type_name}",)
        count = counts[parts] = counts.get(parts, -1) + 1
        calls.append(Call(SEPARATOR[kind].join(parts), parts, count, order, type_name, outputs))
    return calls


def _host_leaves(output, who) -> tuple[tuple[str, np.ndarray], ...]:
    """The array leaves of a module's output as NumPy copies, by path (``""`` for a lone array)."""
    found = []
    for path, leaf in _array_leaves(output):
        if _is_tracer(leaf):
            leaf = _batched_value(leaf)
            if leaf is None:
                raise ValueError(
                    f"locate: expected concrete arrays from every submodule; got a traced value from {_who(who)},"
                    " which runs under jax.jit (or another transformation that hides values). Call the model"
                    " without jit to locate drift (jax.vmap is fine)")
        found.append((path, np.array(to_numpy(leaf.detach() if hasattr(leaf, "detach") else leaf), copy=True)))
    return tuple(found)


def _batched_value(tracer):
    """The whole batch an eager ``jax.vmap`` tracer carries, batch axis first (nested vmaps too); None under jit."""
    value, batch_dim = getattr(tracer, "val", None), getattr(tracer, "batch_dim", None)
    if value is None or not hasattr(tracer, "batch_dim"):
        return None
    if _is_tracer(value):
        value = _batched_value(value)
        if value is None:
            return None
    if isinstance(batch_dim, int) and not isinstance(batch_dim, bool):
        import jax.numpy as jnp

        value = jnp.moveaxis(value, batch_dim, 0)
    return value


def _array_leaves(output):
    """``[(path, array)]`` of a module output: nested containers, dataclass-like outputs and JAX pytrees."""
    if dataclasses.is_dataclass(output) and not isinstance(output, type) and framework_of(output) is None \
            and not hasattr(output, "items"):
        output = {field.name: getattr(output, field.name) for field in dataclasses.fields(output)}
    found = [(path, leaf) for path, leaf in leaves(output) if framework_of(leaf) is not None or _is_tracer(leaf)]
    return [(_short(path), leaf) for path, leaf in found]


def _short(path: str) -> str:
    return re.sub(r"\['([A-Za-z_][A-Za-z_0-9]*)'\]", r".\1", path)


def _is_tracer(value) -> bool:
    return type(value).__name__.endswith("Tracer") or "Tracer" in [c.__name__ for c in type(value).__mro__]


def _who(who) -> str:
    return "/".join(who[0]) or who[1] if isinstance(who, tuple) else type(who).__name__


# ------------------------------------------------------------------------------------- jiggling

#: A jiggled element's move in ulps: stay (½), one down (¼), one up (¼).
_STEPS = np.array([-1, 0, 0, 1])


def jiggled(array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``array`` re-rounded at random: each finite non-zero element stays (½) or moves one ulp up or down (¼ each).

    A stage's rounding error is up to half an ulp either way; moving an already rounded value by
    one ulp at random adds an error of that size, so a rerun so perturbed at every submodule is one
    more draw of what rounding does to the outputs after it (:mod:`xattn.numerics.naive` does the
    same to a NumPy reference's stages). Zeros, non-finite values and integers stay as they are.
    """
    array = np.asarray(array)
    if array.dtype.kind != "f" and array.dtype.name != "bfloat16":
        return array
    bits = array.view(f"u{array.dtype.itemsize}").astype(np.int64)
    step = _STEPS[rng.integers(0, 4, size=array.shape)]
    moved = (bits + step).astype(f"u{array.dtype.itemsize}").view(array.dtype)
    with np.errstate(invalid="ignore"):
        keep = ~np.isfinite(array) | (array == 0) | ~np.isfinite(moved)
    return np.where(keep, array, moved).astype(array.dtype)


def _jiggled_output(output, rng, made: dict):
    """A module's output with every floating array jiggled, in its own framework; other outputs as they are.

    An array that an inner module's jiggle made (``made``, by id) and the module returns as it is
    was rounded once already, and is not jiggled twice.
    """
    from xattn.bridge import to_jax, to_torch
    from xattn.bridge.trees import map_leaves

    def jiggle(path, leaf):
        framework = framework_of(leaf)
        if framework not in ("torch", "jax") or _is_tracer(leaf) or id(leaf) in made:
            return leaf
        moved = jiggled(np.asarray(to_numpy(leaf.detach() if framework == "torch" else leaf)), rng)
        if framework == "torch":
            moved = to_torch(moved, copy=True).to(leaf.device)
        else:
            moved = to_jax(moved, copy=True, device=next(iter(leaf.devices())))
        made[id(moved)] = moved
        return moved

    return map_leaves(output, jiggle)
