"""``xattn.check_port``'s table: a :class:`xattn.porting.check.DriftReport` as text (``str(report)``).

The header names both functions with the framework each ran in (and a module's class and kind), and
the run dtype with what decided it. Then one line per (function, output leaf): its verdict, its
error beside its budget and the share of the budget it uses (err/bud: above 1 is over), the error
in ulps at the output's own scale, the relative L2 error, the non-finite mismatches and the
elements left uncompared. Then each output's budget, findings against a side, each pair's
difference and attribution, and the overall verdict.
"""

from __future__ import annotations

from xattn.numerics.judge import OK
from xattn.render.text import _count, _sci, _wrap, share, tabulate

PORT_HEADERS = ("function", "output", "verdict", "max err", "budget", "err/bud", "ULP", "rel L2", "non-finite",
                "uncompared")


def _budget_cell(budget) -> str:
    return "rtol/atol" if budget.method == "tolerance" else _sci(budget.max_abs)


def render_drift_report(report) -> str:
    """A :class:`xattn.porting.check.DriftReport` as its table."""
    (a, b), (framework_a, framework_b) = report.names, report.frameworks
    kind_a, kind_b = (f", {kind}" if kind and kind != "function" else "" for kind in report.kinds)
    reason = report.dtype_reason or report.dtype
    lines = [_wrap("xattn check_port: ", f"{a} ({framework_a}{kind_a}) vs {b} ({framework_b}{kind_b}); run dtype"
                                         f" {reason}; {report.basis}"), ""]
    cells, budgets, findings = [], {}, []
    for side in report.sides:
        m, budget = side.drift, side.budget
        budgets.setdefault(side.output, budget)
        cells.append([side.name, side.output, side.verdict, _sci(m.max_abs_err), _budget_cell(budget),
                      share(side.budget_use), _count(m.ulp_at_scale), _sci(m.rel_l2_err),
                      str(m.nonfinite_mismatches), str(m.uncompared)])
        findings += [_wrap(f"{side.name} {side.output}: ", note) for note in side.notes]
        if m.size and not m.compared:
            findings.append(_wrap(f"{side.name} {side.output}: ", "no finite element to compare, so it is not ok"))
    lines += [tabulate(cells, PORT_HEADERS), ""]
    for output, budget in budgets.items():
        lines.append(_wrap(f"budget {output}: ", f"{budget.describe()} ({budget.dtype})"))
    lines += [_wrap("", note) for note in report.notes]
    lines += findings
    for pair in report.pairs:
        difference = f"max diff |a-b| {_sci(pair.max_abs_diff)}, rel L2 {_sci(pair.rel_l2_diff)}"
        lines.append(_wrap(f"{pair.output}: ", f"{difference}; {pair.attribution}"))
    lines.append(f"verdict: {OK if report.ok else 'NOT OK'}")
    return "\n".join(lines) + "\n"
