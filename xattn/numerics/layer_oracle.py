"""Float64 oracles of xattn's layers: outputs with projection biases, and gradients. NumPy only.

:func:`layer_reference` is :func:`xattn.reference` plus the layers' biases (bq, bk, bv inside the
projections, bo after the output projection); :func:`reference_vjp` is its backward, written out,
the oracle of every gradient xattn compares (:mod:`xattn.porting.gradients`). Given a run dtype instead of
``None``, each is the naive computation behind the budget: every stage accumulated in float32
(float64 for float64) and rounded to the run dtype, as :func:`xattn.numerics.naive.naive_attention` does.
"""

from __future__ import annotations

import numpy as np

from xattn.contract.shapes import attention_dims, default_scale
from xattn.contract.spec import numpy_dtype
from xattn.numerics.naive import stage_rounding
from xattn.numerics.oracle import key_mask_BTS


def _forward(x, kv, wq, wk, wv, wo, biases, causal, key_lengths, scale, stages):
    """Every intermediate of the layer's forward, accumulated and rounded as ``stages`` says."""
    acc, stage = stages
    B, T, S, E, H, G, D = attention_dims(x, kv, wq, wk, wv, wo, causal=causal, key_lengths=key_lengths)
    X_BTE, Y_BSE = np.asarray(x, acc), np.asarray(kv, acc)
    WQ, WK, WV, WO = (np.asarray(w, acc) for w in (wq, wk, wv, wo))
    bq, bk, bv, bo = (None if b is None else np.asarray(b, acc) for b in biases)

    def project(source, weight, bias, equation):
        projected = stage(np.einsum(equation, source, weight))
        return projected if bias is None else stage(projected + bias)

    Q_BTHD = project(X_BTE, WQ, bq, "BTE,HED->BTHD")
    K_BSGD = project(Y_BSE, WK, bk, "BSE,GED->BSGD")
    V_BSGD = project(Y_BSE, WV, bv, "BSE,GED->BSGD")
    Q_BTGRD = Q_BTHD.reshape(B, T, G, H // G, D)
    logits_BGRTS = stage(stage(np.einsum("BTGRD,BSGD->BGRTS", Q_BTGRD, K_BSGD)) * acc.type(default_scale(D, scale)))
    mask_BTS = key_mask_BTS(B, T, S, causal, key_lengths)
    if mask_BTS is not None:
        logits_BGRTS = np.where(mask_BTS[:, None, None], logits_BGRTS, -np.inf)
    exp_BGRTS = np.exp(logits_BGRTS - logits_BGRTS.max(axis=-1, keepdims=True))
    P_BGRTS = stage(exp_BGRTS / exp_BGRTS.sum(axis=-1, keepdims=True))
    O_BTGRD = stage(np.einsum("BGRTS,BSGD->BTGRD", P_BGRTS, V_BSGD))
    out_BTE = stage(np.einsum("BTHD,HDE->BTE", O_BTGRD.reshape(B, T, H, D), WO))
    if bo is not None:
        out_BTE = stage(out_BTE + bo)
    return {
        "dims": (B, T, S, E, H, G, D), "X_BTE": X_BTE, "Y_BSE": Y_BSE, "WQ": WQ, "WK": WK, "WV": WV, "WO": WO,
        "Q_BTGRD": Q_BTGRD, "K_BSGD": K_BSGD, "V_BSGD": V_BSGD, "P_BGRTS": P_BGRTS, "O_BTGRD": O_BTGRD,
        "out_BTE": out_BTE,
    }


def layer_reference(x, wq, wk, wv, wo, bq=None, bk=None, bv=None, bo=None, *, kv=None, causal=False,
                    key_lengths=None, scale=None, dtype=None, rounding_seed=None) -> np.ndarray:
    """The contract's attention plus the layers' projection biases, in float64 (``dtype=None``).

    With every bias ``None`` this is :func:`xattn.reference`. ``dtype`` (e.g. ``"float32"``) gives
    the naive computation instead: each stage rounded to that dtype, as an eager framework would
    (``rounding_seed``: randomly, :func:`xattn.numerics.naive.stage_rounding`).
    """
    kv = x if kv is None else kv
    dtype = None if dtype is None else numpy_dtype(dtype) if isinstance(dtype, str) else dtype
    stages = stage_rounding(dtype, rounding_seed)
    state = _forward(x, kv, wq, wk, wv, wo, (bq, bk, bv, bo), causal, key_lengths, scale, stages)
    return state["out_BTE"] if dtype is None else state["out_BTE"].astype(dtype)


def reference_vjp(x, wq, wk, wv, wo, bq=None, bk=None, bv=None, bo=None, *, cotangent, kv=None, causal=False,
                  key_lengths=None, scale=None, dtype=None, rounding_seed=None) -> dict[str, np.ndarray]:
    """Gradients of ⟨out, cotangent⟩ for :func:`layer_reference`, in float64 (``dtype=None``).

    Returns ``{"x", "kv" (only when kv is given), "wq", "wk", "wv", "wo", and "bq".."bo" for the
    biases given}``. ``dtype`` gives the naive same-dtype backward (every stage rounded), the
    budget's yardstick (``rounding_seed``: with random rounding, :func:`xattn.numerics.naive.stage_rounding`).
    Shapes as in :func:`xattn.reference`; cotangent (B,T,E).
    """
    cross = kv is not None
    kv = x if kv is None else kv
    dtype = None if dtype is None else numpy_dtype(dtype) if isinstance(dtype, str) else dtype
    acc, stage = stages = stage_rounding(dtype, rounding_seed)
    f = _forward(x, kv, wq, wk, wv, wo, (bq, bk, bv, bo), causal, key_lengths, scale, stages)
    B, T, S, E, H, G, D = f["dims"]
    P_BGRTS, Q_BTGRD, K_BSGD, V_BSGD = f["P_BGRTS"], f["Q_BTGRD"], f["K_BSGD"], f["V_BSGD"]
    scale = acc.type(default_scale(D, scale))
    dout_BTE = np.asarray(cotangent, acc)
    if dout_BTE.shape != (B, T, E):
        raise ValueError(f"cotangent: expected the output's shape {(B, T, E)}; got {dout_BTE.shape}")
    grads = {"wo": stage(np.einsum("BTGRD,BTE->GRDE", f["O_BTGRD"], dout_BTE).reshape(H, D, E))}
    dO_BTGRD = stage(np.einsum("BTE,HDE->BTHD", dout_BTE, f["WO"])).reshape(B, T, G, H // G, D)
    dP_BGRTS = stage(np.einsum("BTGRD,BSGD->BGRTS", dO_BTGRD, V_BSGD))
    dV_BSGD = stage(np.einsum("BGRTS,BTGRD->BSGD", P_BGRTS, dO_BTGRD))
    dlogits_BGRTS = stage(P_BGRTS * (dP_BGRTS - (P_BGRTS * dP_BGRTS).sum(axis=-1, keepdims=True)))
    dlogits_BGRTS = stage(dlogits_BGRTS * scale)
    dQ_BTHD = stage(np.einsum("BGRTS,BSGD->BTGRD", dlogits_BGRTS, K_BSGD)).reshape(B, T, H, D)
    dK_BSGD = stage(np.einsum("BGRTS,BTGRD->BSGD", dlogits_BGRTS, Q_BTGRD))
    dX_BTE = stage(np.einsum("BTHD,HED->BTE", dQ_BTHD, f["WQ"]))
    dY_from_K = stage(np.einsum("BSGD,GED->BSE", dK_BSGD, f["WK"]))
    dY_BSE = stage(dY_from_K + stage(np.einsum("BSGD,GED->BSE", dV_BSGD, f["WV"])))
    grads["wq"] = stage(np.einsum("BTE,BTHD->HED", f["X_BTE"], dQ_BTHD))
    grads["wk"] = stage(np.einsum("BSE,BSGD->GED", f["Y_BSE"], dK_BSGD))
    grads["wv"] = stage(np.einsum("BSE,BSGD->GED", f["Y_BSE"], dV_BSGD))
    if cross:
        grads["x"], grads["kv"] = dX_BTE, dY_BSE
    else:
        grads["x"] = stage(dX_BTE + dY_BSE)
    given = {"bq": (bq, dQ_BTHD), "bk": (bk, dK_BSGD), "bv": (bv, dV_BSGD), "bo": (bo, dout_BTE)}
    grads.update({name: stage(d.sum(axis=(0, 1))) for name, (b, d) in given.items() if b is not None})
    order = ["x", "kv", "wq", "wk", "wv", "wo", "bq", "bk", "bv", "bo"]
    run = np.float64 if dtype is None else dtype
    return {name: grads[name].astype(run) for name in order if name in grads}
