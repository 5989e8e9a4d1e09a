"""``xattn.locate``'s table: a :class:`xattn.porting.locate.LocateReport` as text (``str(report)``).

The header names both models with their kinds, the run dtype with what decided it, and whose
float64 rerun is the oracle. Then one line per pair of intermediates, in the port's execution
order: the path on each side, the shape, each side's error against the oracle, the budget, the
share of the budget the worse side uses (err/bud: above 1 is over) and the verdict (``ok``, or who
is over budget). Then where drift starts, the outputs that paired with nothing, the pairs that
could not be compared, and the notes.
"""

from __future__ import annotations

from xattn.numerics.judge import ROUNDING_NOISE
from xattn.render.text import _sci, _wrap, share, tabulate

#: Pairs found by name are the rule; the others are marked in the table.
_HOW_MARK = {"name": "", "match": " (match)", "plural": " (plural)", "order": " (order)"}


def _budget_cell(budget) -> str:
    return "rtol/atol" if budget.method == "tolerance" else _sci(budget.max_abs)


def render_locate_report(report) -> str:
    """A :class:`xattn.porting.locate.LocateReport` as its table."""
    (name_a, name_b), (model_a, model_b) = report.names, report.models
    oracle = report.names[0 if report.reference == "a" else 1]
    runs = f", worst of {report.naive_runs} runs where an intermediate is small" if report.naive_runs > 1 else ""
    lines = [_wrap("xattn locate: ", f"{name_a} = {model_a} vs {name_b} = {model_b}; run dtype {report.dtype_reason};"
                                     f" oracle: {oracle}'s float64 rerun, budget from {oracle}'s {report.dtype} run"
                                     f"{runs}"), ""]
    first = report.first
    cells = []
    for index, pair in enumerate(report.pairs, 1):
        row_a, row_b = pair.rows
        attribution = pair.difference.attribution
        verdict = "ok" if attribution == ROUNDING_NOISE and not pair.over else attribution
        if pair is first:
            verdict += "  <- first"
        cells.append([str(index), pair.names[0] + _HOW_MARK.get(pair.how, f" ({pair.how})"), pair.names[1],
                      "×".join(map(str, pair.shape)) or "()", _sci(row_a.drift.max_abs_err),
                      _sci(row_b.drift.max_abs_err), _budget_cell(row_a.budget), share(pair.budget_use), verdict])
    lines.append(tabulate(cells, ("#", name_a, name_b, "shape", f"err {name_a}", f"err {name_b}", "budget", "err/bud",
                                  "verdict")))
    lines.append("")
    if first is None:
        lines.append(f"first over budget: none of {len(report.pairs)} pairs")
    else:
        at = report.pairs.index(first) + 1
        lines.append(_wrap("first over budget: ", f"#{at} {first.names[0]} ≙ {first.names[1]} (err/bud"
                                                  f" {share(first.budget_use)}; {first.difference.attribution})"))
        for row in first.rows:
            lines += [_wrap(f"{row.name} {row.output}: ", note) for note in row.notes]
    for name, left in zip(report.names, report.unmatched):
        if left:
            lines.append(_wrap(f"unmatched in {name} ({len(left)}): ", ", ".join(left)))
    lines += [_wrap("not compared: ", line) for line in report.not_compared]
    lines += [_wrap("", note) for note in report.notes]
    if first is None and report.unjudged:
        lines.append(_wrap("verdict: NOT OK, proves nothing: ", "; ".join(report.unjudged)))
    return "\n".join(lines) + "\n"
