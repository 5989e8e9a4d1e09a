"""Shape checking of the attention contract, shared by the oracle and every backend.

Works on anything with a ``.shape`` (NumPy, JAX, torch) and imports no framework.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from xattn.bridge import framework_of
from xattn.contract.spec import check_key_lengths, check_scale


class Dims(NamedTuple):
    B: int
    T: int
    S: int
    E: int
    H: int
    G: int
    D: int


def _shape(name: str, array, ndim: int) -> tuple[int, ...]:
    shape = getattr(array, "shape", None)
    if shape is None:
        raise TypeError(f"{name}: expected an array (NumPy, JAX or torch); got {type(array).__name__}")
    shape = tuple(int(n) for n in shape)
    if len(shape) != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions; got shape {shape}")
    return shape


def attention_dims(x, kv, wq, wk, wv, wo, *, causal=False, key_lengths=None) -> Dims:
    """Check the shapes of one attention call; return its sizes or raise ValueError naming the mismatch.

    x (B,T,E), kv (B,S,E), wq (H,E,D), wk and wv (G,E,D), wo (H,D,E), key_lengths (B,).
    ``wv``/``wo`` may be ``None`` for models without them (the full-rank model).
    """
    B, T, E = _shape("x (B,T,E)", x, 3)
    kv_shape = _shape("kv (B,S,E)", kv, 3)
    S = kv_shape[1]
    H, _, D = _shape("wq (H,E,D)", wq, 3)
    G = _shape("wk (G,E,D)", wk, 3)[0]
    if H % G:
        raise ValueError(f"wk/wv: expected a number of kv heads G dividing H={H}; got G={G}")
    expected = {
        "kv (B,S,E)": ((B, S, E), kv_shape),
        "wq (H,E,D)": ((H, E, D), tuple(wq.shape)),
        "wk (G,E,D)": ((G, E, D), tuple(wk.shape)),
    }
    if wv is not None:
        expected["wv (G,E,D)"] = ((G, E, D), _shape("wv (G,E,D)", wv, 3))
    if wo is not None:
        expected["wo (H,D,E)"] = ((H, D, E), _shape("wo (H,D,E)", wo, 3))
    for name, (want, got) in expected.items():
        if tuple(want) != tuple(got):
            raise ValueError(
                f"{name}: expected shape {tuple(want)} from x (B={B},T={T},E={E}) and wq (H={H},D={D});"
                f" got {tuple(got)}"
            )
    if causal and T != S:
        raise ValueError(f"causal: expected q_len == kv_len; got T={T}, S={S}")
    if key_lengths is not None:
        check_key_lengths(_to_host_ints(key_lengths), B, S)
    return Dims(B, T, S, E, H, G, D)


def _to_host_ints(key_lengths) -> np.ndarray:
    if framework_of(key_lengths) == "torch":
        key_lengths = key_lengths.detach().cpu().numpy()
    lengths = np.asarray(key_lengths)
    if lengths.dtype.kind not in "iu":
        raise TypeError(f"key_lengths: expected integers; got dtype {lengths.dtype}")
    return lengths


def check_one_dtype(**arrays) -> str:
    """The dtype name every array shares (``None`` entries skipped), or a ValueError naming each one's.

    xattn computes in its inputs' dtype; where they differ, JAX would silently promote and torch
    raise a RuntimeError mid-computation, so both backends refuse up front with this one message.
    """
    names = {name: _dtype_name(array) for name, array in arrays.items() if array is not None}
    if len(set(names.values())) > 1:
        listed = ", ".join(f"{name} {dtype}" for name, dtype in names.items())
        raise ValueError(f"inputs: expected one dtype for every input; got {listed}. Cast them to one dtype first"
                         " (the computation runs in the inputs' dtype).")
    return next(iter(names.values()))


def _dtype_name(array) -> str:
    return str(getattr(array, "dtype", type(array).__name__)).removeprefix("torch.")


def default_scale(head_dim: int, scale: float | None) -> float:
    return 1.0 / float(np.sqrt(head_dim)) if scale is None else check_scale(scale)
