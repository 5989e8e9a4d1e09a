"""What error an output may have and still count as the same computation. NumPy only.

Budget, in the FlashAttention manner: ``max_abs_err <= 2 * naive_max_abs_err + rounding_step``,
where the naive computation (:mod:`xattn.numerics.naive`) is the same math evaluated in the run
dtype, rounded to it after every stage, and the rounding step is one unit in the last place of the
run dtype at the oracle's largest magnitude. Where no naive computation exists (a user function
without a reference), torch.testing's per-dtype rtol/atol is the budget (:data:`TOLERANCES`).
"""

from __future__ import annotations

import dataclasses
import statistics

import numpy as np

from xattn.contract.spec import numpy_dtype
from xattn.numerics.drift import DriftMetrics, finite_pair, max_abs_error
from xattn.numerics.naive import NAIVE_DRAWS, naive_run_count

#: The budget's multiplier on the naive computation's error (FlashAttention's tests use 2).
NAIVE_FACTOR = 2.0
#: Rounding steps in the floor of every check_port (and locate) budget, per run dtype. A port's
#: naive run — a user's NumPy reference, or one side's own run with ``reference="a"`` — comes from one
#: library, and another library's elementary functions may be several ulps off where the first is
#: correctly rounded (float32 tanh on this CPU: NumPy and torch 0.5 ulp, jax.numpy 4.46 ulps, over
#: 10^6 draws of N(0, 4)); with one step, a correct ``jnp.tanh`` port against ``np.tanh`` failed 10
#: seeds of 10 (err/bud 1.13). Measured on tests/test_port_models.py's encoder (torch vs nnx,
#: float32, 100 seeds): the port's error reached 2× the oracle side's own + 4.9 steps; with 8, the
#: worst correct port used 0.70 of its budget, and a LayerNorm epsilon of 2e-5 for 1e-5 was still
#: caught in 100 of 100. Half-precision ops compute in float32 and round once to 16 bits, which hides
#: those float32 ulps: one step is the floor there (50 seeds each of float16 and bfloat16: no false
#: alarm, worst 0.65 of the budget; with 2 steps, an epsilon of 1e-2 for 1e-5 was caught 9 times of
#: 50 in bfloat16 instead of 21). ``xattn compare`` keeps one step: both sides are xattn's variants.
PORT_ULPS = {"float64": 8, "float32": 8, "float16": 1, "bfloat16": 1}


#: torch.testing.assert_close's default (rtol, atol) per dtype: the fallback budget.
TOLERANCES = {
    "float16": (1e-3, 1e-5),
    "bfloat16": (1.6e-2, 1e-5),
    "float32": (1.3e-6, 1e-5),
    "float64": (1e-7, 1e-7),
}


@dataclasses.dataclass(frozen=True)
class Budget:
    """What error an output may have and still count as the same computation.

    ``method`` is ``"naive"`` (``max_abs <= 2·naive_max_abs_err + rounding_step``),
    ``"tolerance"`` (elementwise ``|a-b| <= atol + rtol·|b|``, torch.testing's defaults) or
    ``"exact"`` (integer and boolean outputs: equal or not, ``max_abs`` 0).
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
    #: How many rounding steps the floor holds (:data:`PORT_ULPS` of the dtype for a side's own run, else 1).
    ulps: int = 1
    #: The factor ``naive_max_abs_err`` holds beyond the worst run's error: above 1 where a large
    #: problem made fewer repeats than its draws want (:func:`draws_scale`).
    naive_scale: float = 1.0

    def describe(self) -> str:
        if self.method == "naive":
            runs = f" (worst of {self.naive_runs} runs)" if (self.naive_runs or 1) > 1 else ""
            if self.naive_scale != 1.0:
                runs = (f" (worst of {self.naive_runs} runs ×{self.naive_scale:.2f}, extrapolated to"
                        f" {NAIVE_DRAWS} draws)")
            ulps = f"{self.ulps}×" if self.ulps != 1 else ""
            return (f"{NAIVE_FACTOR:g}×naive {self.naive_max_abs_err:.2g}{runs} + {ulps}ulp"
                    f" {self.rounding_step:.2g}")
        if self.method == "exact":
            return f"exact ({self.dtype} values)"
        return f"rtol {self.rtol:g}, atol {self.atol:g}"


def rounding_step(expected, dtype: str) -> float:
    """One unit in the last place of ``dtype`` at ``expected``'s largest finite magnitude."""
    values = np.abs(np.asarray(expected, dtype=np.float64))
    values = values[np.isfinite(values)]
    largest = float(values.max()) if values.size else 0.0
    return float(np.spacing(np.asarray(largest, dtype=numpy_dtype(dtype))))


def draws_scale(had: int, wanted: int) -> float:
    """How far the worst of ``wanted`` rounding-error draws lies beyond the worst of ``had``, for Gaussian errors.

    The ratio of the levels that one in ``wanted`` and one in ``had`` draws of ``|Z|`` exceed
    (Φ⁻¹(1 - 1/2n)); 1 where ``had`` is at least ``wanted``. A large problem's small outputs (the
    bias gradients of a big layer) are long sums of rounding errors, the case where that holds.
    """
    if had >= wanted:
        return 1.0
    normal = statistics.NormalDist()
    return normal.inv_cdf(1 - 1 / (2 * wanted)) / normal.inv_cdf(1 - 1 / (2 * max(had, 1)))


def naive_budget(naive_output, expected, dtype: str, ulps: int = 1) -> Budget:
    """The FlashAttention-style budget from a naive same-dtype computation's output.

    ``naive_output``: one run's output, or a list of runs (the deterministic one first, then its
    random-rounding repeats): the naive error is the worst of the first
    ``naive_run_count(expected.size)`` of them, about :data:`NAIVE_DRAWS` draws. Fewer runs than
    that, but more than one, come from a reference that capped its repeats (a large problem,
    :data:`~xattn.numerics.stages.MAX_REPEAT_ELEMENTS`): their worst is extrapolated to the draws
    wanted (:func:`draws_scale`). One run alone (a reference that cannot repeat) is taken as it is.
    ``ulps``: rounding steps in the floor (:data:`PORT_ULPS` of the dtype where the naive run is a
    side's own run).
    """
    runs = list(naive_output) if isinstance(naive_output, (list, tuple)) else [naive_output]
    size = np.asarray(expected).size
    wanted = naive_run_count(size)
    runs = runs[:wanted]
    if not runs:
        raise ValueError("naive_budget: expected at least one naive output; got an empty list")
    scale = draws_scale(len(runs) * size, wanted * size) if 1 < len(runs) < wanted else 1.0
    worst = scale * max(max_abs_error(run, expected) for run in runs)
    step = rounding_step(expected, dtype)
    return Budget(
        dtype=dtype,
        method="naive",
        max_abs=NAIVE_FACTOR * worst + ulps * step,
        naive_max_abs_err=worst,
        rounding_step=step,
        naive_runs=len(runs),
        ulps=ulps,
        naive_scale=scale,
    )


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


def exact_budget(dtype: str) -> Budget:
    """Integer or boolean values: the same or not (an error of 0 and nothing more)."""
    return Budget(dtype=dtype, method="exact", max_abs=0.0)


def tolerance_excess(actual, expected, budget: Budget) -> float:
    """max over finite elements of ``|a-e| / (atol + rtol·|e|)``: above 1 means over budget (NaN: none)."""
    a, e, _ = finite_pair(actual, expected)
    if a.size == 0:
        return float("nan")
    return float((np.abs(a - e) / (budget.atol + budget.rtol * np.abs(e))).max())


def budget_use(metrics: DriftMetrics, budget: Budget, excess: float | None = None) -> float:
    """How much of its budget an error uses (err / budget; a tolerance budget's ``excess``): above 1 is over.

    NaN where nothing finite was compared; inf for any error against an exact budget.
    """
    if budget.method == "tolerance":
        if excess is None:
            raise ValueError("budget_use: expected the tolerance excess for a tolerance budget; got None")
        return float(excess)
    err, limit = metrics.max_abs_err, budget.max_abs
    if limit > 0:
        return err / limit
    return 0.0 if err == 0 else (float("inf") if err > 0 else float("nan"))


def within_budget(metrics: DriftMetrics, budget: Budget, excess: float | None = None) -> bool:
    """True when ``metrics`` is within ``budget``.

    Never for a non-finite mismatch, nor for a non-empty value of which nothing finite was compared.
    """
    if metrics.nonfinite_mismatches or (metrics.size and not metrics.compared):
        return False
    return budget_use(metrics, budget, excess) <= 1.0


def reference_budget(naive_runs, expected, dtype, rtol=None, atol=None) -> Budget:
    """A port's budget (check_port, locate): the naive budget from ``naive_runs`` (deterministic run
    first) with :data:`PORT_ULPS` rounding steps, where the runs are in the run dtype.

    A reference that gave no naive run, or one in another dtype, leaves torch.testing's tolerance.
    """
    if naive_runs and str(np.asarray(naive_runs[0]).dtype) == dtype:
        return naive_budget([np.asarray(run) for run in naive_runs], expected, dtype, PORT_ULPS[dtype])
    return tolerance_budget(dtype, rtol, atol)


#: A gradient whose float64 oracle stays below this fraction of the largest one is zero in exact
#: arithmetic (float64 rounding leaves ~1e-16 of the terms), and gets that largest one's rounding step.
STRUCTURAL_ZERO = 1e-9


def floored(budget: Budget, expected, largest: float | None) -> Budget:
    """``budget``, with a rounding step that fits a gradient that is zero in exact arithmetic.

    Such a gradient is a sum whose terms cancel (the softmax ignores a shift of every logit, so
    d/d bk is 0): what it carries is the rounding of its terms, whose scale is that of the other
    gradients of the same loss (``largest``, the largest of their magnitudes), not its own (zero)
    one. Its floor is one rounding step at ``largest`` instead. Other budgets come back unchanged.
    """
    if budget.method != "naive" or not largest:
        return budget
    if float(np.abs(np.asarray(expected, np.float64)).max(initial=0.0)) > STRUCTURAL_ZERO * largest:
        return budget
    step = rounding_step(np.asarray(largest), budget.dtype)
    return dataclasses.replace(budget, rounding_step=step,
                               max_abs=NAIVE_FACTOR * budget.naive_max_abs_err + budget.ulps * step)
