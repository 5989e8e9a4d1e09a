"""Call a function, and its vector-Jacobian product, in its own framework, on NumPy inputs.

The two features that check user code, ``xattn.check_port`` (:mod:`xattn.porting`) and
``xattn.compare(..., grad=True)`` (:mod:`xattn.comparison.gradients`), both run code through here: inputs go
in through the bridge (zero-copy where possible), outputs come back to NumPy leaf by leaf, each
named by its path in the output tree (``out``, ``out[0]``, ``out['logits']``; :mod:`xattn.bridge.trees`).
The framework-specific part is each side's ``call``/``vjp`` (:mod:`xattn.backends.frameworks`).

The scalar loss of a VJP is ⟨out, C⟩ = Σ out·C for a fixed cotangent C ~ N(0, 1)
(:func:`cotangent_like`), so each gradient is d⟨out, C⟩ / d input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xattn.backends.frameworks import FRAMEWORKS, side
from xattn.bridge import framework_of, to_jax, to_numpy, to_torch
from xattn.bridge.trees import leaves, map_leaves

#: What a function may take: one of the frameworks, or NumPy.
FRAMEWORK_NAMES = (*FRAMEWORKS, "numpy")
#: The root of every output path: ``out``, ``out[0]``, ``out['key']``.
OUTPUT = "out"
#: Seed of the cotangent C in the loss ⟨out, C⟩ (apart from the inputs' seed, so C is not x).
COTANGENT_SEED = 20240917
_CONVERT = {"jax": to_jax, "torch": to_torch, "numpy": lambda value, device=None: to_numpy(value)}


def is_array(value) -> bool:
    """A NumPy, JAX or torch array, or a NumPy scalar."""
    return framework_of(value) is not None or isinstance(value, np.generic)


def differentiable(value) -> bool:
    """Whether an input gets a gradient: a floating-point NumPy array (bfloat16 included)."""
    return isinstance(value, np.ndarray) and (value.dtype.kind == "f" or value.dtype.name in ("bfloat16", "float16"))


def cotangent_like(output, seed: int = COTANGENT_SEED, index: int = 0) -> np.ndarray:
    """C ~ N(0, 1) shaped like ``output`` and rounded to its dtype: the same bits for every framework."""
    rng = np.random.default_rng([seed, index])
    output = np.asarray(output)
    return rng.standard_normal(output.shape).astype(output.dtype)


def arguments(framework: str, inputs, device=None, *, convert_if=is_array) -> list:
    """``inputs`` with every array in ``framework``'s arrays (on ``device``), leaf by leaf through trees.

    An input may be a tree (dicts, lists, tuples, dataclasses of arrays: a params pytree); its
    containers keep their type, and values that are not arrays pass as they are.
    """
    convert = _CONVERT[framework]
    if framework == "jax":
        convert = _narrowing_exact_integers(convert)
    return [map_leaves(value, lambda path, leaf: convert(leaf, device=device) if convert_if(leaf) else leaf)
            for value in inputs]


def _narrowing_exact_integers(convert):
    """``convert`` that first narrows 64-bit NumPy integers (token ids) to 32 bits where every value fits
    and JAX's x64 is off: the same values, in the integers JAX holds without x64 (the bridge refuses
    int64 there rather than truncate). Values that do not fit still go to the bridge, which refuses them.
    """
    from xattn import _compat

    if _compat.jax_x64_enabled():
        return convert

    def narrowed(value, device=None):
        if isinstance(value, np.ndarray) and value.dtype in (np.int64, np.uint64) and value.size:
            small = value.astype(np.int32 if value.dtype == np.int64 else np.uint32)
            if np.array_equal(small, value):
                value = small
        return convert(value, device=device)

    return narrowed


def output_leaves(output) -> list[tuple[str, Any]]:
    """The leaves of a function's output by path (``out['logits']``), ``None`` fields left out."""
    return [(path, leaf) for path, leaf in leaves(output, OUTPUT) if leaf is not None and not isinstance(leaf, str)]


def call(fn, framework: str, inputs) -> list[tuple[str, np.ndarray]]:
    """``fn(*inputs)`` run in ``framework`` (a forward pass: no autograd); its output leaves as NumPy, by path."""
    args = arguments(framework, inputs)
    output = fn(*args) if framework == "numpy" else side(framework).call(fn, args)
    return [(path, np.asarray(to_numpy(leaf))) for path, leaf in output_leaves(output)]


def differentiable_leaves(inputs) -> list[tuple[int, str]]:
    """``(input index, path)`` of every floating-point leaf of every input (path ``""`` for an array input)."""
    return [(index, path) for index, value in enumerate(inputs) for path, leaf in leaves(value) if differentiable(leaf)]


def _is_differentiable_output(leaf) -> bool:
    name = str(getattr(leaf, "dtype", "")).replace("torch.", "")
    return name in ("float64", "float32", "float16", "bfloat16") and getattr(leaf, "requires_grad", True)


def vjp(fn, framework: str, inputs, cotangents: dict[str, Any], wrt, device=None) -> list[np.ndarray]:
    """Gradients of ⟨fn(*inputs), C⟩ for the inputs (or input leaves) in ``wrt``, as NumPy arrays.

    ``framework``: ``"jax"`` (jax.vjp) or ``"torch"`` (torch.autograd.grad); ``inputs`` are NumPy
    arrays or trees of them (other values pass as they are) bridged zero-copy; ``wrt``: input
    positions (a whole array input) or ``(position, path)`` pairs naming a leaf of a tree input
    (:func:`differentiable_leaves`); ``cotangents`` maps each output leaf's path to its C. Only
    floating output leaves enter the loss. An input the output does not depend on gets zeros.
    ``device``: where the inputs go (the bridge's ``device=``; default the host).
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"grad: expected a jax or torch function to differentiate; got framework {framework!r}")
    convert = _CONVERT[framework]
    args = arguments(framework, inputs, device, convert_if=lambda value: isinstance(value, np.ndarray))
    addresses = [(address, "") if isinstance(address, int) else tuple(address) for address in wrt]
    found = {(index, path): leaf for index, value in enumerate(args) for path, leaf in leaves(value)}
    paths: list[str] = []

    def of_leaves(*values):
        replaced = dict(zip(addresses, values))
        full = [map_leaves(value, lambda path, leaf, i=index: replaced.get((i, path), leaf))
                for index, value in enumerate(args)]
        outputs = [(path, leaf) for path, leaf in output_leaves(fn(*full)) if _is_differentiable_output(leaf)]
        paths[:] = [path for path, _ in outputs]
        return [leaf for _, leaf in outputs]

    def cotangent(out):
        return [convert(cotangents[path], device=device) for path in paths]

    grads = side(framework).vjp(of_leaves, [found[address] for address in addresses], list(range(len(addresses))),
                                cotangent)
    return [np.array(to_numpy(g), copy=True) for g in grads]


def float64_vjp(fn, framework: str, inputs, cotangents: dict, wrt) -> list[np.ndarray] | None:
    """``fn``'s gradients with every floating input and C in float64; None if ``fn`` cannot run so."""
    as_f64 = [map_leaves(v, lambda path, leaf: np.asarray(leaf, np.float64) if differentiable(leaf) else leaf)
              for v in inputs]
    cots = {path: np.asarray(c, np.float64) for path, c in cotangents.items()}
    try:
        with side(framework).float64():
            grads = vjp(fn, framework, as_f64, cots, wrt)
    except Exception:  # a function that cannot run in float64 leaves the tolerance as the budget
        return None
    if any(np.asarray(g).dtype != np.float64 for g in grads):
        return None  # it computed in a narrower dtype after all: no oracle
    return grads
