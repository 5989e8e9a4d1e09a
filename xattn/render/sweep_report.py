"""A sweep (:class:`xattn.comparison.results.SweepReport`) as a table, Markdown, CSV or JSON, and its labels.

The sibling of :mod:`xattn.render.report` (whose row cells, row records and spec object it reuses);
the plot is :mod:`xattn.render.plot`. :func:`point_label` and :data:`FIELD_TITLES` name points and
swept fields here, on the plot and in :mod:`xattn.comparison.sweeper`'s errors.
The JSON layout is documented in ``docs/sweep.md`` and pinned by :data:`xattn.render.schema.SWEEP_SCHEMA`.
"""

from __future__ import annotations

from typing import Iterable

from xattn.numerics.judge import UNSUPPORTED, is_disagreement
from xattn.render.report import (
    csv_record,
    document_head,
    report_dict,
    row_cells,
    run_line,
    spec_dict,
    with_quantity,
)
from xattn.render.schema import SWEEP_SCHEMA_ID
from xattn.render.text import _wrap, page, render_as, tabulate
from xattn.timing import NOISE_THRESHOLD

#: How a swept field is named in headers and on the plot's x axis.
FIELD_TITLES = {
    "seq": "T = S", "batch": "B", "q_len": "T", "kv_len": "S", "embed": "E", "heads": "H", "kv_heads": "G",
    "head_dim": "D", "dtype": "dtype",
}
#: Spec fields shown in the header, with their shape letters.
SPEC_LETTERS = (("batch", "B"), ("q_len", "T"), ("kv_len", "S"), ("embed", "E"), ("heads", "H"),
                ("kv_heads", "G"), ("head_dim", "D"))
#: Spec fields that may differ between points (a swept field or one that follows it).
POINT_FIELDS = ("batch", "q_len", "kv_len", "embed", "heads", "kv_heads", "head_dim", "dtype")


def point_label(fields: Iterable[str], values: Iterable) -> str:
    """``"seq=128, dtype=bfloat16"``."""
    return ", ".join(f"{field}={value}" for field, value in zip(fields, values))


def sweep_dict(sweep) -> dict:
    """The sweep as the JSON schema's object: each point's values beside its complete compare report."""
    return {
        **document_head(SWEEP_SCHEMA_ID, sweep),
        "complete": sweep.complete,
        "planned_points": sweep.planned,
        "stopped_by": sweep.stopped_by,
        "fields": list(sweep.fields),
        "values": {field: list(sweep.values(field)) for field in sweep.fields},
        "spec": spec_dict(sweep.spec),
        "points": [
            {"values": dict(zip(sweep.fields, point)), "report": report_dict(report)}
            for point, report in zip(sweep.points, sweep.reports)
        ],
    }


# -------------------------------------------------------------------------------------- tables


def fixed_spec(sweep) -> str:
    """The spec fields every point shares, e.g. ``"B=2 E=64 H=4 G=4 D=16 float32, causal"``."""
    specs = [report.spec for report in sweep.reports]
    parts = [f"{letter}={getattr(specs[0], field)}" for field, letter in SPEC_LETTERS
             if len({getattr(spec, field) for spec in specs}) == 1]
    if len({spec.dtype for spec in specs}) == 1:
        parts.append(specs[0].dtype)
    text = " ".join(parts)
    if specs[0].causal:
        text += ", causal"
    if specs[0].key_lengths is not None:
        text += f", key_lengths={list(specs[0].key_lengths)}"
    return text


def sweep_title(sweep) -> str:
    """``"T = S in 64, 128, 256"`` for each swept field, joined by ``x``."""
    return " x ".join(
        f"{FIELD_TITLES[field]} in {', '.join(str(v) for v in sweep.values(field))}" for field in sweep.fields
    )


def _header(sweep) -> str:
    title = f"xattn sweep: {sweep_title(sweep)} ({len(sweep.points)} points); fixed {fixed_spec(sweep)}"
    if not sweep.complete:
        title = (f"INCOMPLETE (stopped by {sweep.stopped_by} after {len(sweep.points)} of {sweep.planned} points). "
                 + title)
    return _wrap("", title) + "\n" + run_line(sweep.reports[0].settings)


#: The columns of :data:`xattn.render.report.RESULT_HEADERS` a sweep shows.
ROW_HEADERS = ("backend", "variant", "verdict", "max err", "budget", "median", "IQR", "GFLOP/s")


def _notes(sweep) -> list[str]:
    """Errors (one note per distinct message, listing its points), disagreements, noise, the verdict."""
    messages: dict[tuple, list[str]] = {}
    disagreements, noisy, refused, bad = [], [], [], []
    for point, report in zip(sweep.points, sweep.reports):
        where = point_label(sweep.fields, point)
        for row in report.results:
            name = with_quantity(row.label, row.quantity)
            if row.error:
                messages.setdefault((name, row.error_type, row.error), []).append(where)
            if row.verdict == UNSUPPORTED:
                refused.append(f"{name} at {where}")
            elif not row.ok:
                bad.append(f"{name} at {where} ({row.verdict})")
            if row.timing is not None and row.timing.noisy:
                noisy.append(f"{name} at {where} {row.timing.spread:.2f}")
        for pair in report.pairs:
            if is_disagreement(pair.attribution):
                disagreements.append(f"{pair.a} vs {pair.b} at {where}: {pair.attribution}")
    notes = [_wrap(f"{name}: {kind}: ", f"{error} [at {'; '.join(points)}]")
             for (name, kind, error), points in messages.items()]
    notes += [_wrap("pairs: ", text) for text in disagreements]
    if noisy:
        max_time = sweep.reports[0].settings.max_time_s
        timed = sum(row.timing is not None for report in sweep.reports for row in report.results)
        listed = ", ".join(noisy) if len(noisy) <= 4 else "marked ! in the IQR column"
        notes.append(_wrap("! noisy: ", f"{len(noisy)} of {timed} timed rows had IQR/median >= {NOISE_THRESHOLD}"
                                        f" when the time cap ({max_time} s) was reached: {listed}."
                                        " Raise max_time or quiet the machine"))
    notes.append(_wrap("budget: ", "max err <= 2 x the naive same-dtype error + one rounding step, per point;"
                                   " see docs/comparator.md"))
    rows = sum(len(report.results) for report in sweep.reports)
    verdict = f"not ok: {'; '.join(bad)}" if bad else f"all {rows - len(refused)} rows that ran are ok at every point"
    if not sweep.complete:
        stop = f"stopped by {sweep.stopped_by} after {len(sweep.points)} of {sweep.planned} points"
        verdict = f"incomplete, {stop}: {verdict}"
    if refused:
        verdict += f"; {len(refused)} unsupported here (not a failure)"
    notes.append(_wrap("verdict: ", verdict))
    return notes


def _render_tabular(sweep, tablefmt: str) -> str:
    titles = [FIELD_TITLES[field] for field in sweep.fields]
    cells = []
    for point, report in zip(sweep.points, sweep.reports):
        values = [str(value) for value in point]
        for index, row in enumerate(report.results):
            shown = values if index == 0 or tablefmt == "github" else [""] * len(values)
            cells.append(shown + [row_cells(row)[header] for header in ROW_HEADERS])
    table = tabulate(cells, (*titles, *ROW_HEADERS), tablefmt=tablefmt)
    return page(_header(sweep), [table], _notes(sweep), tablefmt)


def _csv_records(sweep) -> list[dict]:
    """One record per (point, row): the point's index and spec sizes, then the row as in ``xattn compare``."""
    sizes = POINT_FIELDS[:-1] + ("causal",)
    return [
        {"point": index, **{field: getattr(report.spec, field) for field in sizes}, **csv_record(row)}
        for index, report in enumerate(sweep.reports)
        for row in report.results
    ]


def render_sweep(sweep, format: str = "table", *, indent: int | None = 2) -> str:
    """``sweep`` as text in one of :data:`xattn.render.text.FORMATS`."""
    return render_as(sweep, format, to_dict=sweep_dict, tabular=_render_tabular, csv_records=_csv_records,
                     empty_header=("point",), indent=indent)
