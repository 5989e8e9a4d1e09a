"""The one judge: a verdict for every judged quantity, and an attribution for every pair. NumPy only.

Every report of xattn (``xattn.compare`` rows and pairs, their gradient rows, ``xattn.check_port``
outputs and gradients, sweeps) says what it found in these words and no others:

- a quantity's :class:`Verdict`: ``ok`` (within its budget), ``drift`` (over it, or a NaN/Inf the
  oracle does not have), ``error`` (the code raised), ``unsupported`` (the variant declined the case);
- a pair's attribution: :data:`ROUNDING_NOISE` when both sides are within budget, else which side
  is over (``"<side> over budget"``, :data:`BOTH_OVER`), or ``"n/a: ..."`` when a side did not run.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

from xattn.numerics.budget import Budget, budget_use, tolerance_excess, within_budget
from xattn.numerics.drift import DriftMetrics, drift_metrics


class Verdict(enum.StrEnum):
    """What was found of one quantity; a ``str``, so it compares, prints and serialises as its value."""

    OK = "ok"
    DRIFT = "drift"
    ERROR = "error"
    UNSUPPORTED = "unsupported"


OK, DRIFT, ERROR, UNSUPPORTED = Verdict.OK, Verdict.DRIFT, Verdict.ERROR, Verdict.UNSUPPORTED
VERDICTS = tuple(Verdict)
#: Verdicts of a quantity that produced no value (no drift, no timing, no pair).
NOT_RUN = (ERROR, UNSUPPORTED)
#: Verdicts that do not fail a run: within budget, or an honest refusal.
PASSING = (OK, UNSUPPORTED)

#: Attribution of a pair whose sides are both within budget.
ROUNDING_NOISE = "rounding noise"
#: Attribution of a pair whose sides are both over budget.
BOTH_OVER = "both over budget"
#: Prefix of the attribution of a pair one of whose sides produced nothing to compare.
NOT_COMPARED = "n/a: "


def over_budget(label: str) -> str:
    """The attribution of a pair whose one side ``label`` is over budget."""
    return f"{label} over budget"


def is_disagreement(attribution: str) -> bool:
    """Whether a pair's attribution blames a side (neither rounding noise nor a pair not compared)."""
    return attribution != ROUNDING_NOISE and not attribution.startswith(NOT_COMPARED)


@dataclasses.dataclass(frozen=True)
class Judgement:
    """One value judged: its metrics, its verdict, and how much of its budget it uses (err / budget)."""

    metrics: DriftMetrics
    verdict: Verdict
    budget_use: float


def judge(actual, expected, dtype: str, budget: Budget, *, equal_nan: bool = True) -> Judgement:
    """``actual`` against the float64 ``expected`` under ``budget``: a :class:`Judgement` (OK or DRIFT).

    ``equal_nan``: whether a NaN on both sides agrees (True against an oracle; between two functions
    without one, two NaNs prove nothing unless the caller says they should be equal).
    """
    metrics = at_budget_scale(drift_metrics(actual, expected, dtype, equal_nan=equal_nan), budget)
    excess = tolerance_excess(actual, expected, budget) if budget.method == "tolerance" else None
    verdict = OK if within_budget(metrics, budget, excess) else DRIFT
    return Judgement(metrics, verdict, budget_use(metrics, budget, excess))


def at_budget_scale(metrics: DriftMetrics, budget: Budget) -> DriftMetrics:
    """``metrics`` with ``ulp_at_scale`` counted in the budget's rounding step where that is coarser.

    A structurally zero gradient (:func:`~xattn.numerics.budget.floored`) has an oracle of ~0, where
    one ulp is tiny; its rounding step, and so its ULP figure, is taken at the scale of the other
    gradients of the same loss, as its budget is.
    """
    step = budget.rounding_step
    if not step or not metrics.compared or not metrics.max_abs_err:  # nothing to rescale
        return metrics
    if step <= metrics.max_abs_err / metrics.ulp_at_scale:  # the output's own step is the coarser
        return metrics
    return dataclasses.replace(metrics, ulp_at_scale=metrics.max_abs_err / step)


def attribute(a_label: str, a_ok: bool, b_label: str, b_ok: bool) -> tuple[tuple[str, ...], str]:
    """Which side of a pair is over budget, and the pair's attribution line."""
    over = tuple(label for label, ok in ((a_label, a_ok), (b_label, b_ok)) if not ok)
    if not over:
        return over, ROUNDING_NOISE
    if len(over) == 2:
        return over, BOTH_OVER
    return over, over_budget(over[0])


@dataclasses.dataclass(frozen=True)
class Difference:
    """Two sides of one quantity side by side: |a-b| and who is to blame for it."""

    max_abs_diff: float | None
    rel_l2_diff: float | None
    over_budget: tuple[str, ...]
    attribution: str


def difference(a_label: str, a, a_ok: bool, b_label: str, b, b_ok: bool, dtype: str) -> Difference:
    """The :class:`Difference` of two sides' values (each judged ok or not against the oracle)."""
    between = drift_metrics(a, np.asarray(b, dtype=np.float64), dtype)
    over, attribution = attribute(a_label, a_ok, b_label, b_ok)
    return Difference(between.max_abs_err, between.rel_l2_err, over, attribution)


def not_compared(a_label: str, a_verdict: str, b_label: str, b_verdict: str) -> Difference:
    """The :class:`Difference` of a pair one or both of whose sides produced nothing (error, unsupported)."""
    sides = [(label, verdict) for label, verdict in ((a_label, a_verdict), (b_label, b_verdict)) if verdict in NOT_RUN]
    why = " and ".join(f"{label} {verdict}" for label, verdict in sides)
    failed = tuple(label for label, verdict in sides if verdict == ERROR)
    return Difference(None, None, failed, f"{NOT_COMPARED}{why}")
