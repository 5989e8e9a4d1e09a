"""check_port's rows and pairs, outputs and gradients alike: judged by :mod:`xattn.numerics.judge`."""

from __future__ import annotations

import dataclasses

import numpy as np

from xattn.numerics.budget import Budget, tolerance_budget
from xattn.numerics.drift import DriftMetrics
from xattn.numerics.judge import OK, Difference, Verdict, difference, judge


@dataclasses.dataclass(frozen=True)
class PortRow:
    """One function's (or, without a reference, one pair's) drift on one output leaf."""

    name: str
    output: str
    verdict: Verdict
    drift: DriftMetrics
    budget: Budget


@dataclasses.dataclass(frozen=True)
class PortPair(Difference):
    """The two functions' values of one output leaf side by side (:class:`~xattn.numerics.judge.Difference`)."""

    output: str



def run_dtype(array) -> str:
    """The dtype a value is judged in: its own floating dtype, else float64."""
    name = np.asarray(array).dtype.name
    return name if name in ("float16", "bfloat16", "float32", "float64") else "float64"


def unattributed(names, quantity: str, a, b, rtol, atol) -> PortRow:
    """``a`` held to torch.testing's tolerance around ``b`` (no oracle): one row for the pair, no attribution."""
    dtype = run_dtype(a)
    budget = tolerance_budget(dtype, rtol, atol)
    metrics, verdict = judge(a, np.asarray(b, np.float64), dtype, budget)
    return PortRow(f"{names[0]} vs {names[1]}", quantity, verdict, metrics, budget)


def judge_pair(quantity, names, a, b, expected, dtype, budget):
    """Both sides of one quantity against the float64 ``expected``, and their difference: (rows, pair)."""
    rows = []
    for name, actual in ((names[0], a), (names[1], b)):
        metrics, verdict = judge(actual, expected, dtype, budget)
        rows.append(PortRow(name, quantity, verdict, metrics, budget))
    found = difference(names[0], a, rows[0].verdict == OK, names[1], b, rows[1].verdict == OK, dtype)
    return rows, PortPair(**dataclasses.asdict(found), output=quantity)
