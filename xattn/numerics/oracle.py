"""Float64 NumPy oracles: the exact answers every backend's output is measured against.

Inputs are taken as they are (already rounded to the run dtype) and promoted to float64, so the
oracle answers the question "what would exact arithmetic give on these very bits". :func:`reference`
given a run dtype is the naive computation in that dtype instead; it and
:func:`xattn.layer_reference` are one staged forward (:mod:`xattn.numerics.layer_oracle`).
"""

from __future__ import annotations

import numpy as np

from xattn.contract.shapes import attention_dims, default_scale
from xattn.numerics.layer_oracle import attention_probs, contract, host_array, key_mask_BTS, layer_reference
from xattn.numerics.stages import repeats_at_once


def _f64(array) -> np.ndarray:
    return host_array(array, np.float64)


def _exact(array) -> np.ndarray:
    return array


@repeats_at_once
def reference(x, wq, wk, wv, wo, *, kv=None, causal=False, key_lengths=None, scale=None, dtype=None,
              rounding_seed=None) -> np.ndarray:
    """Exact multi-head attention of the contract in float64 (``dtype=None``): out (B,T,E).

    ``dtype`` (``"float32"``, ``"float16"``, ``"bfloat16"``, or a NumPy/ml_dtypes dtype) gives the naive
    computation in that dtype instead, returned in it: every stage (the projections, Q·Kᵀ, the
    scaling, the softmax, P·V, the output projection) accumulated in float32 and rounded to
    ``dtype``, as an eager framework rounds every op's output; ``rounding_seed``: at random
    (:func:`xattn.numerics.stages.stage_rounding`; a tuple of seeds: the list of those runs, at
    once). :func:`xattn.layer_reference` without biases.
    """
    return layer_reference(x, wq, wk, wv, wo, kv=kv, causal=causal, key_lengths=key_lengths, scale=scale,
                           dtype=dtype, rounding_seed=rounding_seed)


def fullrank_reference(x, wq, wk, wh, *, kv=None, causal=False, key_lengths=None, scale=None) -> np.ndarray:
    """The seed's full-rank model (``attn_eins``) in float64: out = sum_h P_h · Y · WH_h, (B,T,E).

    A different model from :func:`reference`; never compare the two.
    """
    kv = x if kv is None else kv
    H, E, _ = wq.shape
    wh_shape = tuple(int(n) for n in wh.shape)
    if wh_shape != (H, E, E):
        raise ValueError(f"wh (H,E,E): expected shape {(H, E, E)}; got {wh_shape}")
    B, T, S, E, H, G, D = attention_dims(x, kv, wq, wk, None, None, causal=causal, key_lengths=key_lengths)
    X_BTE, Y_BSE = _f64(x), _f64(kv)
    Q_BTGRD = contract("BTE,HED->BTHD", X_BTE, _f64(wq)).reshape(B, T, G, H // G, D)
    K_BSGD = contract("BSE,GED->BSGD", Y_BSE, _f64(wk))
    mask_BTS = key_mask_BTS(B, T, S, causal, key_lengths)
    P_BHTS = attention_probs(Q_BTGRD, K_BSGD, default_scale(D, scale), mask_BTS, _exact).reshape(B, H, T, S)
    return contract("BHTS,BSE,HEF->BTF", P_BHTS, Y_BSE, _f64(wh))


BMM_LAYOUTS = {
    "leading": "abij,abjk->abik",  # batch axes first: seed mult_1
    "trailing": "ijab,jkab->ikab",  # batch axes last: seed mult_2
}


def check_bmm(m1, m2, layout: str) -> str:
    """Validate a batched-GEMM call; return its einsum equation."""
    if layout not in BMM_LAYOUTS:
        raise ValueError(f"layout: expected one of {', '.join(BMM_LAYOUTS)}; got {layout!r}")
    s1, s2 = tuple(m1.shape), tuple(m2.shape)
    if len(s1) != 4 or len(s2) != 4:
        raise ValueError(f"m1, m2: expected 4-d arrays; got shapes {s1} and {s2}")
    if layout == "leading":
        ok = s1[:2] == s2[:2] and s1[3] == s2[2]
        want = "m1 (A,B,I,J), m2 (A,B,J,K)"
    else:
        ok = s1[2:] == s2[2:] and s1[1] == s2[0]
        want = "m1 (I,J,A,B), m2 (J,K,A,B)"
    if not ok:
        raise ValueError(f"{layout} layout: expected {want}; got {s1} and {s2}")
    return BMM_LAYOUTS[layout]


def bmm_reference(m1, m2, *, layout: str = "leading") -> np.ndarray:
    """Float64 batched matrix product in the given batch-axis layout."""
    return contract(check_bmm(m1, m2, layout), _f64(m1), _f64(m2))
