"""The public functional API: one entry point per operation, dispatched to a backend by name."""

from __future__ import annotations

from xattn.backends.registry import build, check_variant, get_backend, variants  # noqa: F401  (public API)
from xattn.contract.shapes import attention_dims, check_one_dtype, default_scale
from xattn.numerics.oracle import check_bmm


def attention(x, wq, wk, wv, wo, *, kv=None, causal=False, key_lengths=None, scale=None, backend, variant):
    """Multi-head attention of the contract, computed by ``backend``'s ``variant``.

    Shapes: x (B,T,E), kv (B,S,E) defaulting to x, wq (H,E,D), wk and wv (G,E,D), wo (H,D,E),
    key_lengths (B,) integers in [1, S]. Inputs may be NumPy arrays or the backend's own arrays;
    the result is the backend's array (B,T,E) in the inputs' dtype, which all inputs must share.
    ``scale``: a positive finite number, or None for 1/sqrt(D). Bad shapes, dtypes and scales raise
    ValueError before any backend runs.
    """
    module = check_variant(backend, variant)
    kv = x if kv is None else kv
    dims = attention_dims(x, kv, wq, wk, wv, wo, causal=causal, key_lengths=key_lengths)
    check_one_dtype(x=x, kv=kv, wq=wq, wk=wk, wv=wv, wo=wo)
    fn = build(backend, variant, causal=causal, scale=scale, head_dim=dims.D, padded=key_lengths is not None)
    args = module.as_arrays(x, kv, wq, wk, wv, wo)
    lengths = None if key_lengths is None else module.as_lengths(key_lengths)
    return fn(*args, lengths)


def fullrank_attention(x, wq, wk, wh, *, kv=None, causal=False, key_lengths=None, scale=None, backend):
    """The seed's full-rank model (``attn_eins``, ``WH_HEE``): out = sum_h P_h · Y · WH_h.

    A different model from :func:`attention` with its own oracle, :func:`xattn.fullrank_reference`.
    """
    module = get_backend(backend)
    kv = x if kv is None else kv
    dims = attention_dims(x, kv, wq, wk, None, None, causal=causal, key_lengths=key_lengths)
    if tuple(wh.shape) != (dims.H, dims.E, dims.E):
        raise ValueError(f"wh (H,E,E): expected shape {(dims.H, dims.E, dims.E)}; got {tuple(wh.shape)}")
    check_one_dtype(x=x, kv=kv, wq=wq, wk=wk, wh=wh)
    fn = module.build_fullrank(causal=bool(causal), scale=default_scale(dims.D, scale), padded=key_lengths is not None)
    args = module.as_arrays(x, kv, wq, wk, wh)
    lengths = None if key_lengths is None else module.as_lengths(key_lengths)
    return fn(*args, lengths)


def batched_matmul(m1, m2, *, layout="leading", backend):
    """The seed's batched-GEMM layout experiment: batch axes ``leading`` (abij,abjk) or ``trailing`` (ijab,jkab)."""
    equation = check_bmm(m1, m2, layout)
    module = get_backend(backend)
    return module.build_bmm(equation)(*module.as_arrays(m1, m2))
