"""Drift of a computed output against the float64 oracle, its budget, and attribution. NumPy only.

Metrics are measured where both arrays are finite; a NaN or Inf that the oracle does not have is
counted apart (``nonfinite_mismatches``) and always fails, however small the finite errors are.

Budget, in the FlashAttention manner: ``max_abs_err <= 2 * naive_max_abs_err + rounding_step``,
where the naive computation (:func:`naive_attention`) is plain attention evaluated in the run
dtype, rounded to it after every stage, and the rounding step is one unit in the last place of the
run dtype at the oracle's largest magnitude. Where no naive computation exists (a user function
without a reference), torch.testing's per-dtype rtol/atol is the budget (:data:`TOLERANCES`).

One naive run is one draw of rounding error per element, and the largest of a few draws is a poor
estimate of what rounding can do: a 4-element bias gradient's naive error can land at half its
typical size. So a naive output with fewer than :data:`NAIVE_DRAWS` elements is recomputed with
*random rounding* (Monte Carlo arithmetic: each stage's result is perturbed by a random relative
amount of at most half an ulp before it is rounded, :func:`stage_rounding`) until the runs hold
about that many draws, and ``naive_max_abs_err`` is the worst of all runs (:func:`naive_run_count`).
"""

from __future__ import annotations

import dataclasses
import inspect

import ml_dtypes
import numpy as np

from xattn.contract.shapes import default_scale
from xattn.contract.spec import numpy_dtype
from xattn.numerics.oracle import key_mask_BTS

#: The budget's multiplier on the naive computation's error (FlashAttention's tests use 2).
NAIVE_FACTOR = 2.0

#: Rounding-error draws (elements x runs) the naive error is the worst of; see :func:`naive_run_count`.
NAIVE_DRAWS = 4096

#: The most naive runs one budget takes (the deterministic run included).
MAX_NAIVE_RUNS = 64

#: torch.testing.assert_close's default (rtol, atol) per dtype: the fallback budget.
TOLERANCES = {
    "float16": (1e-3, 1e-5),
    "bfloat16": (1.6e-2, 1e-5),
    "float32": (1.3e-6, 1e-5),
    "float64": (1e-7, 1e-7),
}

#: Attribution of a pair whose sides are both within budget.
ROUNDING_NOISE = "rounding noise"


@dataclasses.dataclass(frozen=True)
class DriftMetrics:
    """How far ``actual`` is from ``expected`` (errors measured where both are finite)."""

    max_abs_err: float
    mean_abs_err: float
    rel_l2_err: float
    max_ulp: float
    #: ``1 - 2Σxy/(Σx²+Σy²)``: 0 for identical arrays, 1 for orthogonal, 2 for opposite.
    dissimilarity: float
    #: Elements where one side is finite and the other not (or NaN against Inf).
    nonfinite_mismatches: int
    size: int


@dataclasses.dataclass(frozen=True)
class Budget:
    """What error an output may have and still count as the same computation.

    ``method`` is ``"naive"`` (``max_abs <= 2·naive_max_abs_err + rounding_step``) or
    ``"tolerance"`` (elementwise ``|a-b| <= atol + rtol·|b|``, torch.testing's defaults).
    """

    dtype: str
    method: str
    max_abs: float | None
    naive_max_abs_err: float | None = None
    rounding_step: float | None = None
    rtol: float | None = None
    atol: float | None = None
    #: How many naive runs ``naive_max_abs_err`` is the worst of (1: the deterministic run alone).
    naive_runs: int | None = None

    def describe(self) -> str:
        if self.method == "naive":
            runs = f" (worst of {self.naive_runs} runs)" if (self.naive_runs or 1) > 1 else ""
            return f"{NAIVE_FACTOR:g}×naive {self.naive_max_abs_err:.2g}{runs} + ulp {self.rounding_step:.2g}"
        return f"rtol {self.rtol:g}, atol {self.atol:g}"


def _finite_pair(actual, expected):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"drift: expected the shape of the reference {expected.shape}; got {actual.shape}")
    finite_a, finite_e = np.isfinite(actual), np.isfinite(expected)
    same_nonfinite = ~finite_a & ~finite_e & ((actual == expected) | (np.isnan(actual) & np.isnan(expected)))
    mismatches = int(np.count_nonzero(~(finite_a & finite_e) & ~same_nonfinite))
    both = finite_a & finite_e
    return actual[both], expected[both], mismatches


def ulp_distance(actual, expected, dtype: str) -> np.ndarray:
    """Units in the last place of ``dtype`` between ``actual`` and ``expected`` rounded to ``dtype``.

    Finite inputs only. Counts representable numbers between the two (+0 and -0 are 0 apart).
    """
    run = numpy_dtype(dtype)
    bits_type = {2: np.uint16, 4: np.uint32, 8: np.uint64}[run.itemsize]
    sign = bits_type(1) << bits_type(8 * run.itemsize - 1)
    a_bits = np.asarray(actual).astype(run).view(bits_type)
    e_bits = np.asarray(expected).astype(run).view(bits_type)
    a_mag, e_mag = (a_bits & ~sign).astype(np.int64), (e_bits & ~sign).astype(np.int64)
    same_sign = (a_bits & sign) == (e_bits & sign)
    # Magnitudes stay below 2**63, so a same-sign difference is exact in int64; a sign-crossing
    # sum is exact in float64 below 2**53 and beyond that so large that rounding it does not matter.
    return np.where(same_sign, np.abs(a_mag - e_mag).astype(np.float64), a_mag.astype(np.float64) + e_mag)


def drift_metrics(actual, expected, dtype: str) -> DriftMetrics:
    """Metrics of ``actual`` (any float array) against ``expected`` (float64), ULPs in ``dtype``."""
    a, e, mismatches = _finite_pair(actual, expected)
    size = int(np.asarray(expected).size)
    if a.size == 0:
        return DriftMetrics(0.0, 0.0, 0.0, 0.0, 0.0, mismatches, size)
    error = np.abs(a - e)
    norm_e = float(np.linalg.norm(e))
    norm_err = float(np.linalg.norm(a - e))
    energy = float(np.dot(a, a) + np.dot(e, e))
    return DriftMetrics(
        max_abs_err=float(error.max()),
        mean_abs_err=float(error.mean()),
        rel_l2_err=norm_err / norm_e if norm_e else norm_err,
        max_ulp=float(ulp_distance(a, e, dtype).max()),
        dissimilarity=1.0 - 2.0 * float(np.dot(a, e)) / energy if energy else 0.0,
        nonfinite_mismatches=mismatches,
        size=size,
    )


def rounding_step(expected, dtype: str) -> float:
    """One unit in the last place of ``dtype`` at ``expected``'s largest finite magnitude."""
    values = np.abs(np.asarray(expected, dtype=np.float64))
    values = values[np.isfinite(values)]
    largest = float(values.max()) if values.size else 0.0
    return float(np.spacing(np.asarray(largest, dtype=numpy_dtype(dtype))))


def naive_budget(naive_output, expected, dtype: str) -> Budget:
    """The FlashAttention-style budget from a naive same-dtype computation's output.

    ``naive_output``: one run's output, or a list of runs (the deterministic one first, then its
    random-rounding repeats): the naive error is the worst of the first
    ``naive_run_count(expected.size)`` of them, about :data:`NAIVE_DRAWS` draws.
    """
    runs = list(naive_output) if isinstance(naive_output, (list, tuple)) else [naive_output]
    runs = runs[:naive_run_count(np.asarray(expected).size)]
    if not runs:
        raise ValueError("naive_budget: expected at least one naive output; got an empty list")
    worst = max(drift_metrics(run, expected, dtype).max_abs_err for run in runs)
    step = rounding_step(expected, dtype)
    return Budget(
        dtype=dtype,
        method="naive",
        max_abs=NAIVE_FACTOR * worst + step,
        naive_max_abs_err=worst,
        rounding_step=step,
        naive_runs=len(runs),
    )


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


def tolerance_budget(dtype: str, rtol: float | None = None, atol: float | None = None) -> Budget:
    """torch.testing's default rtol/atol for ``dtype`` (each overridable)."""
    default_rtol, default_atol = TOLERANCES.get(dtype, TOLERANCES["float32"])
    return Budget(
        dtype=dtype,
        method="tolerance",
        max_abs=None,
        rtol=default_rtol if rtol is None else float(rtol),
        atol=default_atol if atol is None else float(atol),
    )


def tolerance_excess(actual, expected, budget: Budget) -> float:
    """max over finite elements of ``|a-e| / (atol + rtol·|e|)``: above 1 means over budget."""
    a, e, _ = _finite_pair(actual, expected)
    if a.size == 0:
        return 0.0
    return float((np.abs(a - e) / (budget.atol + budget.rtol * np.abs(e))).max())


def within_budget(metrics: DriftMetrics, budget: Budget, excess: float | None = None) -> bool:
    """True when ``metrics`` is within ``budget`` (a non-finite mismatch never is)."""
    if metrics.nonfinite_mismatches:
        return False
    if budget.method == "naive":
        return metrics.max_abs_err <= budget.max_abs
    if excess is None:
        raise ValueError("within_budget: expected the tolerance excess for a tolerance budget; got None")
    return excess <= 1.0


def attribute(a_label: str, a_ok: bool, b_label: str, b_ok: bool) -> tuple[tuple[str, ...], str]:
    """Which side of a pair is over budget, and the pair's attribution line."""
    over = tuple(label for label, ok in ((a_label, a_ok), (b_label, b_ok)) if not ok)
    if not over:
        return over, ROUNDING_NOISE
    if len(over) == 2:
        return over, "both over budget"
    return over, f"{over[0]} over budget"


# --- the naive same-dtype computation ----------------------------------------------------------


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
