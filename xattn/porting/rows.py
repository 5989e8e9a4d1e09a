"""check_port's rows and pairs, outputs and gradients alike: judged by :mod:`xattn.numerics.judge`.

Every value is judged in the *run dtype*, the inputs' (:func:`run_dtype_of`), never in what a side
happened to return: a side whose value comes back in another dtype (a float16 output from float32
inputs, an int32 where the other side gives floats) has a finding against it, named in its row,
and its verdict is drift whatever its error. Two sides that both return the same integer or
boolean dtype are compared exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from xattn.bridge.trees import leaves
from xattn.contract.spec import DTYPES
from xattn.numerics.budget import Budget, exact_budget, tolerance_budget
from xattn.numerics.drift import DriftMetrics
from xattn.numerics.judge import DRIFT, OK, Difference, Verdict, difference, judge

#: The run dtype where no floating input decides it.
DEFAULT_RUN_DTYPE = "float32"
#: Run dtypes from the most precise down: mixed floating inputs run in the most precise of theirs.
_PRECISION_ORDER = ("float64", "float32", "float16", "bfloat16")


@dataclasses.dataclass(frozen=True)
class PortRow:
    """One function's (or, without a reference, one pair's) drift on one output leaf."""

    name: str
    output: str
    verdict: Verdict
    drift: DriftMetrics
    budget: Budget
    #: err / budget: how much of its budget the error uses (above 1: over; NaN: nothing compared).
    budget_use: float = float("nan")
    #: Findings against this side beyond its error (a value in another dtype than the run's).
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class PortPair(Difference):
    """The two functions' values of one output leaf side by side (:class:`~xattn.numerics.judge.Difference`)."""

    output: str


def is_floating(value) -> bool:
    """A NumPy array of one of the run dtypes (bfloat16 included)."""
    return isinstance(value, np.ndarray) and value.dtype.name in DTYPES


def run_dtype_of(inputs, parameters=()) -> tuple[str, str]:
    """``(dtype, why)``: the run dtype of these inputs, and what decided it, in words for the report.

    The floating inputs' dtype (leaves of trees included); where they mix dtypes, the most precise
    of them (what a framework promotes to). Where no input is floating (token ids, masks), the
    floating dtype of the modules' parameters: ``parameters`` is ``[(who, dtypes)]``, one per side
    whose parameters xattn can see. Where neither decides, :data:`DEFAULT_RUN_DTYPE`.
    """
    found = {leaf.dtype.name for value in inputs for _, leaf in leaves(value) if is_floating(leaf)}
    if found:
        return _most_precise(found, "the inputs' dtype", "the inputs' dtypes")
    seen = [(who, dtypes) for who, dtypes in parameters if dtypes]
    if seen:
        found = {dtype for _, dtypes in seen for dtype in dtypes}
        whose = " and ".join(f"{who}'s" for who, _ in seen)
        dtype, why = _most_precise(found, f"the dtype of {whose} floating parameters",
                                   f"the dtypes of {whose} floating parameters")
        return dtype, f"{why}; no input is floating"
    return DEFAULT_RUN_DTYPE, f"{DEFAULT_RUN_DTYPE}: no floating input or module parameter decides it"


def _most_precise(found: set, one: str, several: str) -> tuple[str, str]:
    dtype = next(name for name in _PRECISION_ORDER if name in found)
    if len(found) == 1:
        return dtype, f"{dtype}, {one}"
    mixed = ", ".join(name for name in _PRECISION_ORDER if name in found)
    return dtype, f"{dtype}, the most precise of {several} ({mixed})"


def dtype_findings(a, b, dtype: str) -> tuple[str | None, str | None]:
    """Each side's finding when its value is not in the run ``dtype`` (None for a side that is)."""
    a_dtype, b_dtype = np.asarray(a).dtype.name, np.asarray(b).dtype.name
    if a_dtype == b_dtype and not is_floating(np.asarray(a)):
        return None, None  # both the same integer or boolean dtype: compared exactly
    return tuple(None if found == dtype else f"returned {found}; expected {dtype}, the run dtype"
                 for found in (a_dtype, b_dtype))


def budget_for(a, b, dtype: str, budget: Budget) -> Budget:
    """``budget``, or an exact one where both sides return the same integer or boolean dtype."""
    a = np.asarray(a)
    if a.dtype == np.asarray(b).dtype and not is_floating(a):
        return exact_budget(a.dtype.name)
    return budget


def _row(name, quantity, actual, expected, dtype, budget, finding, equal_nan) -> PortRow:
    found = judge(actual, expected, dtype, budget, equal_nan=equal_nan)
    notes = () if finding is None else (finding,)
    return PortRow(name, quantity, DRIFT if finding else found.verdict, found.metrics, budget, found.budget_use,
                   notes)


def unattributed(names, quantity: str, a, b, dtype: str, rtol, atol, *, equal_nan: bool = False) -> PortRow:
    """``a`` held to torch.testing's tolerance around ``b`` (no oracle): one row for the pair, no attribution.

    A NaN on both sides is drift unless ``equal_nan``: with no oracle, two NaNs prove nothing.
    """
    budget = budget_for(a, b, dtype, tolerance_budget(dtype, rtol, atol))
    findings = [f"{name} {finding}" for name, finding in zip(names, dtype_findings(a, b, dtype)) if finding]
    row = _row(f"{names[0]} vs {names[1]}", quantity, a, np.asarray(b, np.float64), dtype, budget, None, equal_nan)
    return dataclasses.replace(row, verdict=DRIFT, notes=tuple(findings)) if findings else row


def judge_pair(quantity, names, a, b, expected, dtype, budget):
    """Both sides of one quantity against the float64 ``expected``, and their difference: (rows, pair)."""
    budget = budget_for(a, b, dtype, budget)
    findings = dtype_findings(a, b, dtype)
    rows = [_row(name, quantity, actual, expected, dtype, budget, finding, True)
            for name, actual, finding in zip(names, (a, b), findings)]
    found = difference(names[0], a, rows[0].verdict == OK, names[1], b, rows[1].verdict == OK, dtype)
    return rows, PortPair(**dataclasses.asdict(found), output=quantity)
