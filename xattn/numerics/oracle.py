"""Float64 NumPy oracles: the exact answers every backend's output is measured against.

Inputs are taken as they are (already rounded to the run dtype) and promoted to float64, so the
oracle answers the question "what would exact arithmetic give on these very bits".
"""

from __future__ import annotations

import numpy as np

from xattn.bridge import framework_of
from xattn.contract.shapes import attention_dims, default_scale


def _f64(array) -> np.ndarray:
    if framework_of(array) == "torch":
        return array.detach().cpu().double().numpy()
    return np.asarray(array).astype(np.float64)


def key_mask_BTS(B: int, T: int, S: int, causal: bool, key_lengths) -> np.ndarray | None:
    """Boolean mask (B,T,S), True where a query may attend a key; ``None`` when nothing is masked."""
    if not causal and key_lengths is None:
        return None
    mask = np.ones((B, T, S), dtype=bool)
    if causal:
        mask &= np.tril(np.ones((T, S), dtype=bool))[None]
    if key_lengths is not None:
        lengths = np.asarray(_f64(key_lengths), dtype=np.int64)
        mask &= (np.arange(S)[None, :] < lengths[:, None])[:, None, :]
    return mask


def _softmax_probs(Q_BTHD, K_BSGD, H, G, scale, mask_BTS):
    B, T, _, D = Q_BTHD.shape
    Q_BTGRD = Q_BTHD.reshape(B, T, G, H // G, D)
    logits_BGRTS = np.einsum("BTGRD,BSGD->BGRTS", Q_BTGRD, K_BSGD) * scale
    if mask_BTS is not None:
        logits_BGRTS = np.where(mask_BTS[:, None, None], logits_BGRTS, -np.inf)
    logits_BGRTS -= logits_BGRTS.max(axis=-1, keepdims=True)
    P_BGRTS = np.exp(logits_BGRTS)
    return P_BGRTS / P_BGRTS.sum(axis=-1, keepdims=True)


def reference(x, wq, wk, wv, wo, *, kv=None, causal=False, key_lengths=None, scale=None) -> np.ndarray:
    """Exact multi-head attention of the contract in float64: out (B,T,E)."""
    kv = x if kv is None else kv
    B, T, S, E, H, G, D = attention_dims(x, kv, wq, wk, wv, wo, causal=causal, key_lengths=key_lengths)
    X_BTE, Y_BSE = _f64(x), _f64(kv)
    Q_BTHD = np.einsum("BTE,HED->BTHD", X_BTE, _f64(wq))
    K_BSGD = np.einsum("BSE,GED->BSGD", Y_BSE, _f64(wk))
    V_BSGD = np.einsum("BSE,GED->BSGD", Y_BSE, _f64(wv))
    P_BGRTS = _softmax_probs(Q_BTHD, K_BSGD, H, G, default_scale(D, scale), key_mask_BTS(B, T, S, causal, key_lengths))
    O_BTHD = np.einsum("BGRTS,BSGD->BTGRD", P_BGRTS, V_BSGD).reshape(B, T, H, D)
    return np.einsum("BTHD,HDE->BTE", O_BTHD, _f64(wo))


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
    Q_BTHD = np.einsum("BTE,HED->BTHD", X_BTE, _f64(wq))
    K_BSGD = np.einsum("BSE,GED->BSGD", Y_BSE, _f64(wk))
    P_BGRTS = _softmax_probs(Q_BTHD, K_BSGD, H, G, default_scale(D, scale), key_mask_BTS(B, T, S, causal, key_lengths))
    P_BHTS = P_BGRTS.reshape(B, H, T, S)
    return np.einsum("BHTS,BSE,HEF->BTF", P_BHTS, Y_BSE, _f64(wh))


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
    return np.einsum(check_bmm(m1, m2, layout), _f64(m1), _f64(m2))
