"""The staged forward of xattn's attention, its float64 oracles and naive runs, and its backward. NumPy only.

One forward (:func:`layer_reference`) serves every part: with ``dtype=None`` it is the float64
oracle of the contract's attention plus the layers' biases (bq, bk, bv inside the projections, bo
after the output projection), and :func:`xattn.reference` is it without biases; given a run dtype it
is the naive computation behind the budget, every stage accumulated in float32 (float64 for
float64) and rounded to the run dtype (:func:`xattn.numerics.stages.stage_rounding`), as
:func:`xattn.numerics.naive.naive_attention` asks of it. :func:`reference_vjp` is its backward,
written out, the oracle of every gradient xattn compares (:mod:`xattn.porting.gradients`).

The oracle's contractions go through :func:`contract` (``np.einsum`` with ``optimize=True``), so
that NumPy hands them to BLAS; a naive run's are summed in NumPy's own loops (:func:`contraction_for`).
"""

from __future__ import annotations

import numpy as np

from xattn.bridge import framework_of
from xattn.contract.shapes import attention_dims, default_scale
from xattn.numerics.stages import run_dtype, stage_rounding


def contract(equation: str, *operands) -> np.ndarray:
    """``np.einsum(equation, *operands)`` through BLAS: ``optimize=True`` makes NumPy contract pairwise by matmul."""
    return np.einsum(equation, *operands, optimize=True)


def contract_in_loops(equation: str, *operands) -> np.ndarray:
    """``np.einsum(equation, *operands)`` in NumPy's own loops: another summation order than :func:`contract`'s."""
    return np.einsum(equation, *operands)


def contraction_for(run: np.dtype | None):
    """How the forward contracts: the oracle (``run`` None) by :func:`contract`, a naive run in its loops.

    The oracle goes through BLAS for speed; float64 is exact enough for it in any summation order.
    A naive run sums in NumPy's own loops, as xattn's naive runs always have (the budgets of the
    tests were measured on those bits), and for a float64 run another order than the oracle's is
    the only way its rounding shows: computed as the oracle is, it would equal it bit for bit and
    leave a budget of one ulp that float64 kernels exceed.
    """
    return contract if run is None else contract_in_loops


def host_array(array, dtype) -> np.ndarray:
    """``array`` (NumPy, JAX or torch) as a NumPy array of ``dtype``; a torch tensor goes through float64, exactly."""
    if framework_of(array) == "torch":
        array = array.detach().cpu().double().numpy()
    return np.asarray(array).astype(dtype, copy=False)


def key_mask_BTS(B: int, T: int, S: int, causal: bool, key_lengths) -> np.ndarray | None:
    """Boolean mask (B,T,S), True where a query may attend a key; ``None`` when nothing is masked."""
    if not causal and key_lengths is None:
        return None
    mask = np.ones((B, T, S), dtype=bool)
    if causal:
        mask &= np.tril(np.ones((T, S), dtype=bool))[None]
    if key_lengths is not None:
        lengths = host_array(key_lengths, np.int64)
        mask &= (np.arange(S)[None, :] < lengths[:, None])[:, None, :]
    return mask


def attention_probs(Q_BTGRD, K_BSGD, scale: float, mask_BTS, stage, einsum=contract) -> np.ndarray:
    """P (B,G,R,T,S): softmax over keys of Q·Kᵀ·scale, masked keys at 0; ``stage`` rounds Q·Kᵀ, the scaling and P.

    The softmax itself runs in the accumulation dtype (Q's) on the rounded logits, as torch does
    for 16-bit inputs. ``einsum``: the contraction, as :func:`contraction_for` says.
    """
    logits_BGRTS = stage(stage(einsum("BTGRD,BSGD->BGRTS", Q_BTGRD, K_BSGD)) * Q_BTGRD.dtype.type(scale))
    if mask_BTS is not None:
        logits_BGRTS = np.where(mask_BTS[:, None, None], logits_BGRTS, -np.inf)
    exp_BGRTS = np.exp(logits_BGRTS - logits_BGRTS.max(axis=-1, keepdims=True))
    return stage(exp_BGRTS / exp_BGRTS.sum(axis=-1, keepdims=True))


def _forward(x, kv, wq, wk, wv, wo, biases, causal, key_lengths, scale, run, rounding_seed):
    """Every intermediate of the layer's forward in run dtype ``run`` (``None``: the oracle), and how it computed."""
    acc, stage = stage_rounding(run, rounding_seed)
    einsum = contraction_for(run)
    B, T, S, E, H, G, D = attention_dims(x, kv, wq, wk, wv, wo, causal=causal, key_lengths=key_lengths)
    X_BTE, Y_BSE = host_array(x, acc), host_array(kv, acc)
    WQ, WK, WV, WO = (host_array(w, acc) for w in (wq, wk, wv, wo))
    bq, bk, bv, bo = (None if b is None else host_array(b, acc) for b in biases)

    def project(source, weight, bias, equation):
        projected = stage(einsum(equation, source, weight))
        return projected if bias is None else stage(projected + bias)

    Q_BTHD = project(X_BTE, WQ, bq, "BTE,HED->BTHD")
    K_BSGD = project(Y_BSE, WK, bk, "BSE,GED->BSGD")
    V_BSGD = project(Y_BSE, WV, bv, "BSE,GED->BSGD")
    Q_BTGRD = Q_BTHD.reshape(B, T, G, H // G, D)
    mask_BTS = key_mask_BTS(B, T, S, causal, key_lengths)
    P_BGRTS = attention_probs(Q_BTGRD, K_BSGD, default_scale(D, scale), mask_BTS, stage, einsum)
    O_BTGRD = stage(einsum("BGRTS,BSGD->BTGRD", P_BGRTS, V_BSGD))
    out_BTE = stage(einsum("BTHD,HDE->BTE", O_BTGRD.reshape(B, T, H, D), WO))
    if bo is not None:
        out_BTE = stage(out_BTE + bo)
    return {
        "acc": acc, "stage": stage, "einsum": einsum,
        "dims": (B, T, S, E, H, G, D), "X_BTE": X_BTE, "Y_BSE": Y_BSE, "WQ": WQ, "WK": WK, "WV": WV, "WO": WO,
        "Q_BTGRD": Q_BTGRD, "K_BSGD": K_BSGD, "V_BSGD": V_BSGD, "P_BGRTS": P_BGRTS, "O_BTGRD": O_BTGRD,
        "out_BTE": out_BTE,
    }


def layer_reference(x, wq, wk, wv, wo, bq=None, bk=None, bv=None, bo=None, *, kv=None, causal=False,
                    key_lengths=None, scale=None, dtype=None, rounding_seed=None) -> np.ndarray:
    """The contract's attention plus the layers' projection biases, in float64 (``dtype=None``).

    With every bias ``None`` this is :func:`xattn.reference`. ``dtype`` (e.g. ``"float32"``) gives
    the naive computation instead: each stage rounded to that dtype, as an eager framework would
    (``rounding_seed``: randomly, :func:`xattn.numerics.stages.stage_rounding`).
    """
    kv = x if kv is None else kv
    run = run_dtype(dtype)
    state = _forward(x, kv, wq, wk, wv, wo, (bq, bk, bv, bo), causal, key_lengths, scale, run, rounding_seed)
    return state["out_BTE"] if run is None else state["out_BTE"].astype(run)


def reference_vjp(x, wq, wk, wv, wo, bq=None, bk=None, bv=None, bo=None, *, cotangent, kv=None, causal=False,
                  key_lengths=None, scale=None, dtype=None, rounding_seed=None) -> dict[str, np.ndarray]:
    """Gradients of ⟨out, cotangent⟩ for :func:`layer_reference`, in float64 (``dtype=None``).

    Returns ``{"x", "kv" (only when kv is given), "wq", "wk", "wv", "wo", and "bq".."bo" for the
    biases given}``. ``dtype`` gives the naive same-dtype backward (every stage rounded), the
    budget's yardstick (``rounding_seed``: with random rounding, :func:`xattn.numerics.stages.stage_rounding`).
    Shapes as in :func:`xattn.reference`; cotangent (B,T,E).
    """
    cross = kv is not None
    kv = x if kv is None else kv
    dtype = run_dtype(dtype)
    f = _forward(x, kv, wq, wk, wv, wo, (bq, bk, bv, bo), causal, key_lengths, scale, dtype, rounding_seed)
    acc, stage, einsum = f["acc"], f["stage"], f["einsum"]
    B, T, S, E, H, G, D = f["dims"]
    P_BGRTS, Q_BTGRD, K_BSGD, V_BSGD = f["P_BGRTS"], f["Q_BTGRD"], f["K_BSGD"], f["V_BSGD"]
    scale = acc.type(default_scale(D, scale))
    dout_BTE = host_array(cotangent, acc)
    if dout_BTE.shape != (B, T, E):
        raise ValueError(f"cotangent: expected the output's shape {(B, T, E)}; got {dout_BTE.shape}")
    grads = {"wo": stage(einsum("BTGRD,BTE->GRDE", f["O_BTGRD"], dout_BTE).reshape(H, D, E))}
    dO_BTGRD = stage(einsum("BTE,HDE->BTHD", dout_BTE, f["WO"])).reshape(B, T, G, H // G, D)
    dP_BGRTS = stage(einsum("BTGRD,BSGD->BGRTS", dO_BTGRD, V_BSGD))
    dV_BSGD = stage(einsum("BGRTS,BTGRD->BSGD", P_BGRTS, dO_BTGRD))
    dlogits_BGRTS = stage(P_BGRTS * (dP_BGRTS - (P_BGRTS * dP_BGRTS).sum(axis=-1, keepdims=True)))
    dlogits_BGRTS = stage(dlogits_BGRTS * scale)
    dQ_BTHD = stage(einsum("BGRTS,BSGD->BTGRD", dlogits_BGRTS, K_BSGD)).reshape(B, T, H, D)
    dK_BSGD = stage(einsum("BGRTS,BTGRD->BSGD", dlogits_BGRTS, Q_BTGRD))
    dX_BTE = stage(einsum("BTHD,HED->BTE", dQ_BTHD, f["WQ"]))
    dY_from_K = stage(einsum("BSGD,GED->BSE", dK_BSGD, f["WK"]))
    dY_BSE = stage(dY_from_K + stage(einsum("BSGD,GED->BSE", dV_BSGD, f["WV"])))
    grads["wq"] = stage(einsum("BTE,BTHD->HED", f["X_BTE"], dQ_BTHD))
    grads["wk"] = stage(einsum("BSE,BSGD->GED", f["Y_BSE"], dK_BSGD))
    grads["wv"] = stage(einsum("BSE,BSGD->GED", f["Y_BSE"], dV_BSGD))
    if cross:
        grads["x"], grads["kv"] = dX_BTE, dY_BSE
    else:
        grads["x"] = stage(dX_BTE + dY_BSE)
    given = {"bq": (bq, dQ_BTHD), "bk": (bk, dK_BSGD), "bv": (bv, dV_BSGD), "bo": (bo, dout_BTE)}
    grads.update({name: stage(d.sum(axis=(0, 1))) for name, (b, d) in given.items() if b is not None})
    order = ["x", "kv", "wq", "wk", "wv", "wo", "bq", "bk", "bv", "bo"]
    run = np.float64 if dtype is None else dtype
    return {name: grads[name].astype(run) for name in order if name in grads}
