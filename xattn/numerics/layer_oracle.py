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
from xattn.numerics.parallel import run_chunks, split_contraction
from xattn.numerics.stages import naive_run_count, repeat_cap, repeats_at_once, run_dtype, stage_rounding


def contract(equation: str, *operands) -> np.ndarray:
    """``np.einsum(equation, *operands)`` through BLAS: ``optimize=True`` makes NumPy contract pairwise by matmul."""
    return np.einsum(equation, *operands, optimize=True)


def contract_in_loops(equation: str, *operands) -> np.ndarray:
    """``np.einsum(equation, *operands)`` in NumPy's own loops: another summation order than :func:`contract`'s.

    Cut along an output axis over the cores (:func:`~xattn.numerics.parallel.split_contraction`), the same bits.
    """
    return split_contraction(np.einsum, equation, *operands)


def contract_repeats(equation: str, *operands) -> np.ndarray:
    """:func:`contract` over a leading axis of runs (length 1 or the run count), broadcast: the repeats' contraction."""
    terms, output = equation.split("->")
    leading = ",".join("..." + term for term in terms.split(",")) + "->..." + output
    return np.einsum(leading, *operands, optimize=True)


def contraction_for(run: np.dtype | None, repeats: bool = False):
    """How the forward contracts: the oracle (``run`` None) by :func:`contract`, a naive run in its loops.

    The oracle goes through BLAS for speed; float64 is exact enough for it in any summation order.
    A naive run sums in NumPy's own loops, as xattn's naive runs always have (the budgets of the
    tests were measured on those bits), and for a float64 run another order than the oracle's is
    the only way its rounding shows: computed as the oracle is, it would equal it bit for bit and
    leave a budget of one ulp that float64 kernels exceed. The random-rounding ``repeats`` of
    several seeds at once go through BLAS (:func:`contract_repeats`): their random rounding, not
    the summation order, makes their spread (:func:`xattn.numerics.stages.repeats_rounding`).
    """
    if repeats:
        return contract_repeats
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


def layer_forward(x, wq, wk, wv, wo, bq=None, bk=None, bv=None, bo=None, *, kv=None, causal=False,
                  key_lengths=None, scale=None, dtype=None, rounding_seed=None, output=True, exact=None) -> dict:
    """Every intermediate of :func:`layer_reference`'s forward, for :func:`layer_backward` to go on from.

    Arguments as :func:`layer_reference`'s. With a tuple of seeds every intermediate carries a
    leading axis, one slice per seed (:func:`~xattn.numerics.stages.repeats_rounding`).
    ``output=False`` stops at the attention probabilities and values (what the input and bias
    gradients need), leaving out P·V and the output projection. ``exact``: a dict that keeps the
    contractions of the inputs themselves (X·WQ, ..., and the backward's C·WOᵀ), which are the same
    for every chunk of repeats of the same arguments, before any stage rounds them.
    """
    kv = x if kv is None else kv
    run = run_dtype(dtype)
    repeats = isinstance(rounding_seed, tuple)
    acc, stage = stage_rounding(run, rounding_seed)
    einsum = contraction_for(run, repeats)
    B, T, S, E, H, G, D = attention_dims(x, kv, wq, wk, wv, wo, causal=causal, key_lengths=key_lengths)
    lead = (1,) if repeats else ()  # the repeats' axis of runs, broadcast until a stage rounds it
    X_BTE, Y_BSE = (host_array(a, acc) for a in (x, kv))
    X_BTE, Y_BSE = X_BTE.reshape(lead + X_BTE.shape), Y_BSE.reshape(lead + Y_BSE.shape)
    WQ, WK, WV, WO = (host_array(w, acc) for w in (wq, wk, wv, wo))
    biases = {name: None if b is None else host_array(b, acc) for name, b in zip(BIAS_NAMES, (bq, bk, bv, bo))}

    def product(key, equation, *operands):
        if exact is None:
            return einsum(equation, *operands)
        if key not in exact:
            exact[key] = einsum(equation, *operands)
        return exact[key]

    def project(key, source, weight, bias, equation):
        projected = stage(product(key, equation, source, weight))
        return projected if bias is None else stage(projected + bias)

    Q_BTHD = project("XWQ", X_BTE, WQ, biases["bq"], "BTE,HED->BTHD")
    K_BSGD = project("YWK", Y_BSE, WK, biases["bk"], "BSE,GED->BSGD")
    V_BSGD = project("YWV", Y_BSE, WV, biases["bv"], "BSE,GED->BSGD")
    Q_BTGRD = Q_BTHD.reshape(Q_BTHD.shape[:-2] + (G, H // G, D))
    mask_BTS = key_mask_BTS(B, T, S, causal, key_lengths)
    P_BGRTS = attention_probs(Q_BTGRD, K_BSGD, default_scale(D, scale), mask_BTS, stage, einsum)
    state = {
        "run": run, "acc": acc, "stage": stage, "einsum": einsum, "lead": lead, "scale": default_scale(D, scale),
        "dims": (B, T, S, E, H, G, D), "X_BTE": X_BTE, "Y_BSE": Y_BSE, "WQ": WQ, "WK": WK, "WV": WV, "WO": WO,
        "biases": biases, "product": product,
        "Q_BTGRD": Q_BTGRD, "K_BSGD": K_BSGD, "V_BSGD": V_BSGD, "P_BGRTS": P_BGRTS,
    }
    if output:
        O_BTGRD = stage(einsum("BGRTS,BSGD->BTGRD", P_BGRTS, V_BSGD))
        out_BTE = stage(einsum("BTHD,HDE->BTE", O_BTGRD.reshape(O_BTGRD.shape[:-3] + (H, D)), WO))
        if biases["bo"] is not None:
            out_BTE = stage(out_BTE + biases["bo"])
        state.update(O_BTGRD=O_BTGRD, out_BTE=out_BTE)
    return state


#: The projection biases' names, in argument order.
BIAS_NAMES = ("bq", "bk", "bv", "bo")
#: Every gradient :func:`reference_vjp` can give, in its order.
GRADIENT_NAMES = ("x", "kv", "wq", "wk", "wv", "wo", *BIAS_NAMES)


def forward_output(state: dict):
    """The output of a :func:`layer_forward` state in its run dtype (float64: the oracle); repeats: a list per seed."""
    run = np.float64 if state["run"] is None else state["run"]
    out = state["out_BTE"].astype(run)
    return list(out) if state["lead"] else out


@repeats_at_once
def layer_reference(x, wq, wk, wv, wo, bq=None, bk=None, bv=None, bo=None, *, kv=None, causal=False,
                    key_lengths=None, scale=None, dtype=None, rounding_seed=None):
    """The contract's attention plus the layers' projection biases, in float64 (``dtype=None``).

    With every bias ``None`` this is :func:`xattn.reference`. ``dtype`` (e.g. ``"float32"``) gives
    the naive computation instead: each stage rounded to that dtype, as an eager framework would
    (``rounding_seed``: randomly, :func:`xattn.numerics.stages.stage_rounding`; a tuple of seeds:
    the list of those runs, computed at once on BLAS, for the budget's repeats).
    """
    exact = {} if isinstance(rounding_seed, tuple) else None  # the chunks' shared products

    def run(seed):
        return forward_output(layer_forward(x, wq, wk, wv, wo, bq, bk, bv, bo, kv=kv, causal=causal, exact=exact,
                                            key_lengths=key_lengths, scale=scale, dtype=dtype, rounding_seed=seed))

    if isinstance(rounding_seed, tuple):
        return [out for outs in run_chunks(run, seed_chunks(rounding_seed, x, kv, wq)) for out in outs]
    return run(rounding_seed)


#: Elements of the largest intermediate (the logits) one chunk of repeats may hold: beyond a few
#: MiB the passes over the runs' axis leave the caches, and one seed at a time is faster.
REPEATS_ELEMENTS = 1 << 20


def seed_chunks(seeds: tuple[int, ...], x, kv, wq) -> list[tuple[int, ...]]:
    """The ``seeds`` this problem makes repeats for, in chunks whose logits hold at most :data:`REPEATS_ELEMENTS`.

    A large problem makes only the first :func:`~xattn.numerics.stages.repeat_cap` of them (its
    budgets extrapolate, :func:`xattn.numerics.budget.draws_scale`).
    """
    B, T = np.shape(x)[:2]
    S = T if kv is None else np.shape(kv)[1]
    per_seed = B * np.shape(wq)[0] * T * S
    seeds = seeds[:repeat_cap(per_seed)]
    size = max(1, REPEATS_ELEMENTS // max(per_seed, 1))
    return [seeds[i:i + size] for i in range(0, len(seeds), size)]


def _sum_BT(d, base_ndim: int):
    """Sum over the two leading base axes (B and T or S) of ``d``, after any axis of runs."""
    first = d.ndim - base_ndim
    return d.sum(axis=(first, first + 1))


def layer_backward(state: dict, cotangent, *, cross: bool, wanted=None) -> dict[str, np.ndarray]:
    """Gradients of ⟨out, cotangent⟩ from a :func:`layer_forward` ``state`` (see :func:`reference_vjp`).

    ``cross``: kv is an input of its own (else its gradient adds into x's). ``wanted``: the names
    to compute (default every one); the contractions nothing wanted needs are skipped.
    """
    acc, stage, einsum = state["acc"], state["stage"], state["einsum"]
    B, T, S, E, H, G, D = state["dims"]
    P_BGRTS, Q_BTGRD, K_BSGD, V_BSGD = state["P_BGRTS"], state["Q_BTGRD"], state["K_BSGD"], state["V_BSGD"]
    biases = state["biases"]
    scale = acc.type(state["scale"])
    dout_BTE = host_array(cotangent, acc)
    if dout_BTE.shape != (B, T, E):
        raise ValueError(f"cotangent: expected the output's shape {(B, T, E)}; got {dout_BTE.shape}")
    dout_BTE = dout_BTE.reshape(state["lead"] + dout_BTE.shape)
    names = [n for n in GRADIENT_NAMES if (n != "kv" or cross) and (n not in BIAS_NAMES or biases[n] is not None)]
    wanted = set(names if wanted is None else wanted) & set(names)
    needs_dQ = wanted & {"x", "kv", "wq", "bq"}  # x's and kv's gradients take all three
    needs_dK = wanted & {"x", "kv", "wk", "bk"}
    needs_dV = wanted & {"x", "kv", "wv", "bv"}
    grads = {}
    if "wo" in wanted:
        grads["wo"] = stage(einsum("BTGRD,BTE->GRDE", state["O_BTGRD"], dout_BTE))
        grads["wo"] = grads["wo"].reshape(grads["wo"].shape[:-4] + (H, D, E))
    dQ_BTHD = dK_BSGD = dV_BSGD = None
    if needs_dQ or needs_dK or needs_dV:  # stages in the order a seeded run always drew them
        dO_BTHD = stage(state["product"]("CWO", "BTE,HDE->BTHD", dout_BTE, state["WO"]))
        dO_BTGRD = dO_BTHD.reshape(dO_BTHD.shape[:-2] + (G, H // G, D))
    if needs_dQ or needs_dK:
        dP_BGRTS = stage(einsum("BTGRD,BSGD->BGRTS", dO_BTGRD, V_BSGD))
    if needs_dV:
        dV_BSGD = stage(einsum("BGRTS,BTGRD->BSGD", P_BGRTS, dO_BTGRD))
    if needs_dQ or needs_dK:
        dlogits_BGRTS = stage(P_BGRTS * (dP_BGRTS - (P_BGRTS * dP_BGRTS).sum(axis=-1, keepdims=True)))
        dlogits_BGRTS = stage(dlogits_BGRTS * scale)
    if needs_dQ:
        dQ_BTGRD = stage(einsum("BGRTS,BSGD->BTGRD", dlogits_BGRTS, K_BSGD))
        dQ_BTHD = dQ_BTGRD.reshape(dQ_BTGRD.shape[:-3] + (H, D))
    if needs_dK:
        dK_BSGD = stage(einsum("BGRTS,BTGRD->BSGD", dlogits_BGRTS, Q_BTGRD))
    if wanted & {"x", "kv"}:
        dX_BTE = stage(einsum("BTHD,HED->BTE", dQ_BTHD, state["WQ"]))
        dY_from_K = stage(einsum("BSGD,GED->BSE", dK_BSGD, state["WK"]))
        dY_BSE = stage(dY_from_K + stage(einsum("BSGD,GED->BSE", dV_BSGD, state["WV"])))
    if "wq" in wanted:
        grads["wq"] = stage(einsum("BTE,BTHD->HED", state["X_BTE"], dQ_BTHD))
    if "wk" in wanted:
        grads["wk"] = stage(einsum("BSE,BSGD->GED", state["Y_BSE"], dK_BSGD))
    if "wv" in wanted:
        grads["wv"] = stage(einsum("BSE,BSGD->GED", state["Y_BSE"], dV_BSGD))
    if wanted & {"x", "kv"}:
        if cross:
            grads["x"], grads["kv"] = dX_BTE, dY_BSE
        else:
            grads["x"] = stage(dX_BTE + dY_BSE)
    of_bias = {"bq": (dQ_BTHD, 4), "bk": (dK_BSGD, 4), "bv": (dV_BSGD, 4), "bo": (dout_BTE, 3)}
    grads.update({name: stage(_sum_BT(*of_bias[name])) for name in BIAS_NAMES if name in wanted})
    run = np.float64 if state["run"] is None else state["run"]
    return {name: grads[name].astype(run) for name in names if name in wanted}


@repeats_at_once
def reference_vjp(x, wq, wk, wv, wo, bq=None, bk=None, bv=None, bo=None, *, cotangent, kv=None, causal=False,
                  key_lengths=None, scale=None, dtype=None, rounding_seed=None, wanted=None):
    """Gradients of ⟨out, cotangent⟩ for :func:`layer_reference`, in float64 (``dtype=None``).

    Returns ``{"x", "kv" (only when kv is given), "wq", "wk", "wv", "wo", and "bq".."bo" for the
    biases given}``. ``dtype`` gives the naive same-dtype backward (every stage rounded), the
    budget's yardstick (``rounding_seed``: with random rounding, :func:`xattn.numerics.stages.stage_rounding`).
    A tuple of seeds gives the budget's repeats, a list of one dict per seed, computed together on
    BLAS (in chunks, :func:`seed_chunks`) and holding only the gradients small enough to need them
    (:func:`~xattn.numerics.stages.naive_run_count`). ``wanted``: the names to compute (default all).
    Shapes as in :func:`xattn.reference`; cotangent (B,T,E).
    """
    cross = kv is not None
    biases = (bq, bk, bv, bo)
    if isinstance(rounding_seed, tuple) and wanted is None:
        wanted = repeated_gradients(x, kv, (wq, wk, wv, wo), biases)

    exact = {} if isinstance(rounding_seed, tuple) else None  # the chunks' shared products

    def run(seed):
        state = layer_forward(x, wq, wk, wv, wo, *biases, kv=kv, causal=causal, key_lengths=key_lengths, scale=scale,
                              dtype=dtype, rounding_seed=seed, output=wanted is None or "wo" in wanted, exact=exact)
        return layer_backward(state, cotangent, cross=cross, wanted=wanted)

    if not isinstance(rounding_seed, tuple):
        return run(rounding_seed)
    runs = []
    chunks = seed_chunks(rounding_seed, x, kv, wq)
    for chunk, grads in zip(chunks, run_chunks(run, chunks)):
        runs += [{name: grad[index] for name, grad in grads.items()} for index in range(len(chunk))]
    return runs


def repeated_gradients(x, kv, weights, biases) -> tuple[str, ...]:
    """The gradients small enough to need random-rounding repeats: fewer than NAIVE_DRAWS elements."""
    shapes = {"x": np.shape(x), "kv": None if kv is None else np.shape(kv)}
    shapes.update(zip(("wq", "wk", "wv", "wo"), (np.shape(w) for w in weights)))
    shapes.update((name, None if b is None else np.shape(b)) for name, b in zip(BIAS_NAMES, biases))
    return tuple(name for name, shape in shapes.items()
                 if shape is not None and naive_run_count(int(np.prod(shape))) > 1)
