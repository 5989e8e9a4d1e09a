"""The naive same-dtype computation behind every budget, and its random-rounding repeats. NumPy only.

A naive computation evaluates the math in the run dtype and rounds every stage's result to it, as
an eager framework would (:func:`stage_rounding`, :func:`naive_attention`).

One naive run is one draw of rounding error per element, and the largest of a few draws is a poor
estimate of what rounding can do: a 4-element bias gradient's naive error can land at half its
typical size. So a naive output with fewer than :data:`NAIVE_DRAWS` elements is recomputed with
*random rounding* (Monte Carlo arithmetic: each stage's result is perturbed by a random relative
amount of at most half an ulp before it is rounded, :func:`stage_rounding`) until the runs hold
about that many draws, and the budget's naive error is the worst of all runs (:func:`naive_run_count`).
"""

from __future__ import annotations

import inspect

import ml_dtypes
import numpy as np

from xattn.contract.shapes import default_scale
from xattn.contract.spec import numpy_dtype
from xattn.numerics.oracle import key_mask_BTS

#: Rounding-error draws (elements x runs) the naive error is the worst of; see :func:`naive_run_count`.
NAIVE_DRAWS = 4096


#: The most naive runs one budget takes (the deterministic run included).
MAX_NAIVE_RUNS = 64


def naive_run_count(size: int) -> int:
    """Naive runs for an output of ``size`` elements: :data:`NAIVE_DRAWS` draws, 1 to :data:`MAX_NAIVE_RUNS` runs."""
    return max(1, min(MAX_NAIVE_RUNS, -(-NAIVE_DRAWS // max(int(size), 1))))


def naive_runs(naive, size: int, dtype: str | None = None) -> list:
    """``[naive(None), naive(1), ...]``: the deterministic naive run and its random-rounding repeats.

    ``naive(seed)`` computes the naive output with ``rounding_seed=seed``; ``size`` is the number
    of elements of the smallest output that will be judged (:func:`naive_run_count`). A float64 run
    is never perturbed, so it gets one run.
    """
    count = 1 if dtype == "float64" else naive_run_count(size)
    return [naive(None)] + [naive(seed) for seed in range(1, count)]


def naive_repeats(reference, first, repeat) -> list:
    """The random-rounding repeats of a naive run ``first`` (its output arrays) by a user's ``reference``.

    ``repeat(seed)`` calls the reference with ``rounding_seed=seed``, for seeds 1, 2...: as many as
    the smallest output needs (:func:`naive_run_count`). None for a reference without that keyword
    (:func:`takes_rounding_seed`) or for a float64 run, which is never perturbed.
    """
    arrays = [np.asarray(array) for array in first]
    if not arrays or not takes_rounding_seed(reference) or all(a.dtype == np.float64 for a in arrays):
        return []
    return [repeat(seed) for seed in range(1, naive_run_count(min(a.size for a in arrays)))]


def takes_rounding_seed(fn) -> bool:
    """Whether ``fn`` (a user's reference) names a ``rounding_seed`` keyword, and so can be repeated."""
    try:
        return "rounding_seed" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def stage_rounding(dtype, seed: int | None = None):
    """``(accumulation dtype, stage)``: how a naive computation in ``dtype`` rounds each stage's result.

    ``stage(array)`` rounds to ``dtype`` and returns the value in the accumulation dtype (float32,
    or float64 for float64 runs and for ``dtype=None``, the oracle, where it is the identity). With
    a ``seed`` it is random rounding instead: the result times ``1 + δ``, δ uniform in ±½ ulp
    (``eps/2``) and drawn afresh per element, then rounded; float64 runs are never perturbed (their
    naive run is the oracle itself).
    """
    run = None if dtype is None else numpy_dtype(dtype) if isinstance(dtype, str) else np.dtype(dtype)
    if run is None or run == np.float64:
        return np.dtype(np.float64), lambda array: np.asarray(array, np.float64)
    acc = np.dtype(np.float32)
    if seed is None:
        return acc, lambda array: np.asarray(array).astype(run).astype(acc)
    rng = np.random.default_rng([NAIVE_DRAWS, int(seed)])
    half_ulp = float(ml_dtypes.finfo(run).eps) / 2

    def stage(array):
        array = np.asarray(array, np.float64)
        return (array * (1.0 + rng.uniform(-half_ulp, half_ulp, array.shape))).astype(run).astype(acc)

    return acc, stage


def naive_attention(inputs, *, causal: bool = False, scale: float | None = None, dtype: str,
                    rounding_seed: int | None = None) -> np.ndarray:
    """Plain multi-head attention as a naive framework program would compute it in ``dtype``.

    Each stage (the three projections, Q·Kᵀ, the scaling, the softmax, P·V, the output projection)
    is computed with accumulation in float32 (float64 for float64 runs) and its result rounded to
    ``dtype``, as an eager framework rounds every op's output; the softmax runs in float32 on the
    rounded logits, as torch does for 16-bit inputs. ``inputs`` is an :class:`xattn.contract.spec.AttentionInputs`.
    ``rounding_seed``: random rounding instead of round-to-nearest (:func:`stage_rounding`).
    """
    run = numpy_dtype(dtype)
    acc, stage = stage_rounding(run, rounding_seed)

    x, kv = inputs.x.astype(acc), inputs.kv.astype(acc)
    wq, wk, wv, wo = (w.astype(acc) for w in inputs.weights())
    B, T, E = x.shape
    S = kv.shape[1]
    H, _, D = wq.shape
    G = wk.shape[0]
    R = H // G
    Q_BHTD = stage(np.matmul(x[:, None], wq[None]))  # (B,1,T,E) @ (1,H,E,D)
    K_BGSD = stage(np.matmul(kv[:, None], wk[None]))
    V_BGSD = stage(np.matmul(kv[:, None], wv[None]))
    Q_BGRTD = Q_BHTD.reshape(B, G, R, T, D)
    logits_BGRTS = stage(np.matmul(Q_BGRTD, np.swapaxes(K_BGSD, -1, -2)[:, :, None]))
    logits_BGRTS = stage(logits_BGRTS * acc.type(default_scale(D, scale)))
    mask_BTS = key_mask_BTS(B, T, S, causal, inputs.key_lengths)
    if mask_BTS is not None:
        logits_BGRTS = np.where(mask_BTS[:, None, None], logits_BGRTS, -np.inf)
    shifted_BGRTS = logits_BGRTS - logits_BGRTS.max(axis=-1, keepdims=True)
    exp_BGRTS = np.exp(shifted_BGRTS)
    P_BGRTS = stage(exp_BGRTS / exp_BGRTS.sum(axis=-1, keepdims=True))
    O_BGRTD = stage(np.matmul(P_BGRTS, V_BGSD[:, :, None]))
    O_BTHD = np.moveaxis(O_BGRTD.reshape(B, H, T, D), 1, 2)
    out_BTE = stage(np.matmul(O_BTHD.reshape(B, T, H * D), wo.reshape(H * D, E)))
    return out_BTE.astype(run)
