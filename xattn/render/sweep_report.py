"""Rendering of a sweep (:class:`xattn.comparison.results.SweepReport`): table, Markdown, CSV, JSON.

The sibling of :mod:`xattn.render.report` (whose cells and row objects it reuses); the plot is :mod:`xattn.render.plot`.
:func:`point_label` and :data:`FIELD_TITLES` name points and swept fields here, on the plot and in
:mod:`xattn.comparison.sweeper`'s errors.
The JSON layout is documented in ``docs/sweep.md`` and pinned by :data:`xattn.render.schema.SWEEP_SCHEMA`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import Iterable

from xattn.numerics.judge import UNSUPPORTED, is_disagreement
from xattn.render.report import report_dict, row_dict
from xattn.render.schema import SWEEP_SCHEMA_ID
from xattn.render.text import FORMATS, _sci, _wrap, duration, tabulate
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


def _spec_dict(spec) -> dict:
    data = dataclasses.asdict(spec)
    data["key_lengths"] = None if spec.key_lengths is None else list(spec.key_lengths)
    return data


def sweep_dict(sweep) -> dict:
    """The sweep as the JSON schema's object: each point's values beside its complete compare report."""
    from xattn._version import __version__

    return {
        "schema": SWEEP_SCHEMA_ID,
        "xattn_version": __version__,
        "ok": sweep.ok,
        "exit_code": sweep.exit_code,
        "fields": list(sweep.fields),
        "values": {field: list(sweep.values(field)) for field in sweep.fields},
        "spec": _spec_dict(sweep.spec),
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
    settings = sweep.reports[0].settings
    threads = ", ".join(f"{k} {v}" for k, v in settings.get("threads", {}).items())
    return (
        _wrap("", f"xattn sweep: {sweep_title(sweep)} ({len(sweep.points)} points); fixed {fixed_spec(sweep)}") + "\n"
        f"device {settings.get('device')}; matmul precision {settings.get('matmul_precision')};"
        f" threads {threads or '-'}"
    )


ROW_HEADERS = ("backend", "variant", "verdict", "max err", "budget", "median", "IQR", "GFLOP/s")


def _row_cells(row) -> list:
    drift, timing = row.drift, row.timing
    iqr = "-" if timing is None else f"±{timing.spread * 100:.0f}%" + ("!" if timing.noisy else "")
    return [
        row.backend,
        row.variant if row.quantity == "out" else f"{row.variant}:{row.quantity}",
        row.verdict,
        _sci(drift.max_abs_err) if drift else "-",
        _sci(row.budget.max_abs) if row.budget and row.budget.max_abs is not None else "-",
        duration(timing.median_s) if timing else "-",
        iqr,
        f"{row.gflops:.3g}" if row.gflops is not None else "-",
    ]


def _notes(sweep) -> list[str]:
    """Errors (one note per distinct message, listing its points), disagreements, noise, the verdict."""
    messages: dict[tuple, list[str]] = {}
    disagreements, noisy, refused, bad = [], [], [], []
    for point, report in zip(sweep.points, sweep.reports):
        where = point_label(sweep.fields, point)
        for row in report.results:
            name = row.label + ("" if row.quantity == "out" else f" ({row.quantity})")
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
        max_time = sweep.reports[0].settings.get("max_time_s")
        timed = sum(row.timing is not None for report in sweep.reports for row in report.results)
        listed = ", ".join(noisy) if len(noisy) <= 4 else "marked ! in the IQR column"
        notes.append(_wrap("! noisy: ", f"{len(noisy)} of {timed} timed rows had IQR/median >= {NOISE_THRESHOLD}"
                                        f" when the time cap ({max_time} s) was reached: {listed}."
                                        " Raise --max-time or quiet the machine"))
    notes.append(_wrap("budget: ", "max err <= 2 x the naive same-dtype error + one rounding step, per point;"
                                   " see docs/comparator.md"))
    rows = sum(len(report.results) for report in sweep.reports)
    verdict = f"not ok: {'; '.join(bad)}" if bad else f"all {rows - len(refused)} rows that ran are ok at every point"
    if refused:
        verdict += f"; {len(refused)} unsupported here (not a failure)"
    notes.append(_wrap("verdict: ", verdict))
    return notes


def _render_tabular(sweep, tablefmt: str) -> str:
    header = _header(sweep)
    if tablefmt == "github":
        header = "\n".join(f"**{line}**  " for line in header.splitlines())
    titles = [FIELD_TITLES[field] for field in sweep.fields]
    cells = []
    for point, report in zip(sweep.points, sweep.reports):
        values = [str(value) for value in point]
        for index, row in enumerate(report.results):
            shown = values if index == 0 or tablefmt == "github" else [""] * len(values)
            cells.append(shown + _row_cells(row))
    notes = _notes(sweep)
    if tablefmt == "github":
        notes = [f"- {line}" for line in notes]
    return "\n".join([header, "", tabulate(cells, (*titles, *ROW_HEADERS), tablefmt=tablefmt), ""] + notes) + "\n"


def _render_csv(sweep) -> str:
    """One line per (point, row): the point's index and spec sizes, then the row as in ``xattn compare``."""
    sizes = POINT_FIELDS[:-1] + ("causal",)
    lines = []
    for index, report in enumerate(sweep.reports):
        for row in report.results:
            data = {"point": index, **{field: getattr(report.spec, field) for field in sizes}, **row_dict(row)}
            data["notes"] = "; ".join(data["notes"])
            lines.append(data)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(lines[0]) if lines else ["point"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(lines)
    return buffer.getvalue()


def render_sweep(sweep, format: str = "table", *, indent: int | None = 2) -> str:
    """``sweep`` as text in one of :data:`xattn.render.text.FORMATS`."""
    if format == "json":
        return json.dumps(sweep_dict(sweep), indent=indent, allow_nan=False) + "\n"
    if format == "table":
        return _render_tabular(sweep, "simple")
    if format == "markdown":
        return _render_tabular(sweep, "github")
    if format == "csv":
        return _render_csv(sweep)
    raise ValueError(f"format: expected one of {', '.join(FORMATS)}; got {format!r}")
