"""``xattn.check_port``'s table: a :class:`xattn.porting.check.DriftReport` as text (``str(report)``).

One line per (function, output leaf) with its verdict and drift beside the budget, then each
output's budget, each pair's difference and attribution, and the overall verdict.
"""

from __future__ import annotations

from xattn.numerics.judge import OK
from xattn.render.text import _count, _sci, _wrap, tabulate

PORT_HEADERS = ("function", "output", "verdict", "max err", "budget", "rel L2", "ULP", "1-cos", "non-finite")


def render_drift_report(report) -> str:
    """A :class:`xattn.porting.check.DriftReport` as its table."""
    lines = [f"xattn check_port: {report.names[0]} vs {report.names[1]} ({report.dtype}; {report.basis})", ""]
    cells, budgets = [], {}
    for side in report.sides:
        m, budget = side.drift, side.budget
        budgets.setdefault(side.output, budget)
        cells.append([side.name, side.output, side.verdict, _sci(m.max_abs_err),
                      _sci(budget.max_abs) if budget.max_abs is not None else "rtol/atol", _sci(m.rel_l2_err),
                      _count(m.max_ulp), _sci(m.dissimilarity), str(m.nonfinite_mismatches)])
    lines += [tabulate(cells, PORT_HEADERS), ""]
    for output, budget in budgets.items():
        lines.append(_wrap(f"budget {output}: ", f"{budget.describe()} ({budget.dtype})"))
    for pair in report.pairs:
        difference = f"max diff |a-b| {_sci(pair.max_abs_diff)}, rel L2 {_sci(pair.rel_l2_diff)}"
        lines.append(_wrap(f"{pair.output}: ", f"{difference}; {pair.attribution}"))
    lines.append(f"verdict: {OK if report.ok else 'NOT OK'}")
    return "\n".join(lines) + "\n"
