"""The ``xattn compare`` report (:class:`xattn.comparison.results.Report`) as a table, Markdown, CSV or JSON.

Also what :mod:`xattn.render.sweep_report` reuses for each point: a row's JSON object, CSV record
and table cells, and the spec as JSON. Takes frozen dataclasses and computes nothing.
The JSON layout is documented in ``docs/comparator.md`` and pinned by :data:`xattn.render.schema.REPORT_SCHEMA`.
"""

from __future__ import annotations

import dataclasses

from xattn._version import __version__
from xattn.numerics.judge import UNSUPPORTED
from xattn.render.schema import SCHEMA_ID
from xattn.render.text import _count, _finite, _sci, _wrap, duration, page, render_as, share, tabulate
from xattn.timing import NOISE_THRESHOLD, PAGE_FAULTS_PER_CALL, PINNED_MALLOC

# ---------------------------------------------------------------------------------------- JSON


def row_dict(row) -> dict:
    """One result row as the JSON schema's ``results[]`` object (every key always present)."""
    drift, budget, timing = row.drift, row.budget, row.timing
    return {
        "backend": row.backend,
        "variant": row.variant,
        "quantity": row.quantity,
        "dtype": row.dtype,
        "device": row.device,
        "verdict": row.verdict,
        "error": row.error,
        "error_type": row.error_type,
        "max_abs_err": _finite(drift.max_abs_err) if drift else None,
        "mean_abs_err": _finite(drift.mean_abs_err) if drift else None,
        "rel_l2_err": _finite(drift.rel_l2_err) if drift else None,
        "max_ulp": _finite(drift.max_ulp) if drift else None,
        "dissimilarity": _finite(drift.dissimilarity) if drift else None,
        "nonfinite_mismatches": drift.nonfinite_mismatches if drift else None,
        "uncompared": drift.uncompared if drift else None,
        "ulp_at_scale": _finite(drift.ulp_at_scale) if drift else None,
        "budget_use": _finite(row.budget_use),
        "budget": _finite(budget.max_abs) if budget else None,
        "budget_method": budget.method if budget else None,
        "naive_max_abs_err": _finite(budget.naive_max_abs_err) if budget else None,
        "rounding_step": _finite(budget.rounding_step) if budget else None,
        "naive_runs": budget.naive_runs if budget else None,
        "median_s": timing.median_s if timing else None,
        "iqr_s": timing.iqr_s if timing else None,
        "min_s": timing.min_s if timing else None,
        "n": timing.n if timing else None,
        "number": timing.number if timing else None,
        "noisy": timing.noisy if timing else None,
        "page_faults_per_call": _finite(timing.faults_per_call) if timing else None,
        "compile_s": row.compile_s,
        "eager": row.eager,
        "first_call_s": row.first_call_s,
        "gflops": _finite(row.gflops),
        "notes": list(row.notes),
    }


def csv_record(row) -> dict:
    """:func:`row_dict` with its notes joined by ``"; "``: one CSV line."""
    record = row_dict(row)
    record["notes"] = "; ".join(record["notes"])
    return record


def spec_dict(spec) -> dict:
    """An :class:`~xattn.contract.spec.AttentionSpec` as the JSON schema's ``spec`` object."""
    data = dataclasses.asdict(spec)
    data["key_lengths"] = None if spec.key_lengths is None else list(spec.key_lengths)
    return data


def pair_dict(pair) -> dict:
    data = dataclasses.asdict(pair)
    data["over_budget"] = list(pair.over_budget)
    return {key: _finite(value) for key, value in data.items()}


def document_head(schema_id: str, result) -> dict:
    """The keys a JSON document (a report or a sweep) opens with: its schema, xattn's version, ok, exit code."""
    return {"schema": schema_id, "xattn_version": __version__, "ok": result.ok, "exit_code": result.exit_code}


def report_dict(report) -> dict:
    """The report as the JSON schema's object."""
    return {
        **document_head(SCHEMA_ID, report),
        "env": report.env,
        "spec": spec_dict(report.spec),
        "settings": report.settings.to_dict(),
        "results": [row_dict(row) for row in report.results],
        "pairs": [pair_dict(pair) for pair in report.pairs],
    }


# -------------------------------------------------------------------------------------- tables


def _spec_line(report) -> str:
    s = report.spec
    shape = f"B={s.batch} T={s.q_len} S={s.kv_len} E={s.embed} H={s.heads} G={s.kv_heads} D={s.head_dim}"
    mask = ", causal" if s.causal else ""
    mask += f", key_lengths={list(s.key_lengths)}" if s.key_lengths is not None else ""
    return f"xattn compare: {shape} {s.dtype}{mask}\n{run_line(report.settings)}"


def threads_text(settings) -> str:
    """``"jax 2, torch 2"``: the run's intra-op threads per framework (``settings``: a RunRecord)."""
    return ", ".join(f"{name} {count}" for name, count in settings.threads.items()) or "-"


def run_line(settings) -> str:
    """The header line every report of a run shares: device, matmul precision, threads."""
    return f"device {settings.device}; matmul precision {settings.matmul_precision}; threads {threads_text(settings)}"


RESULT_HEADERS = ("backend", "variant", "verdict", "max err", "budget", "err/bud", "ULP", "median", "IQR",
                  "compile", "GFLOP/s")


def with_quantity(name: str, quantity: str) -> str:
    """``name``, followed by ``quantity`` in brackets unless it is the output: ``"jax/sdpa (grad/x)"``."""
    return name + ("" if quantity == "out" else f" ({quantity})")


def row_cells(row) -> dict[str, str]:
    """Every table cell of a row, by its header in :data:`RESULT_HEADERS`; a sweep shows some of them."""
    drift, timing = row.drift, row.timing
    iqr = "-" if timing is None else f"±{timing.spread * 100:.0f}%" + ("!" if timing.noisy else "")
    cells = [
        row.backend,
        row.variant if row.quantity == "out" else f"{row.variant}:{row.quantity}",
        row.verdict,
        _sci(drift.max_abs_err) if drift else "-",
        _sci(row.budget.max_abs) if row.budget and row.budget.max_abs is not None else "-",
        share(row.budget_use),
        _count(drift.ulp_at_scale) if drift else "-",
        duration(timing.median_s) if timing else "-",
        iqr,
        "eager" if row.eager else duration(row.compile_s),
        f"{row.gflops:.3g}" if row.gflops is not None else "-",
    ]
    return dict(zip(RESULT_HEADERS, cells))


PAIR_HEADERS = ("pair", "max diff", "err a", "err b", "budget", "attribution")


def _pair_cells(pair) -> list:
    return [
        with_quantity(f"{pair.a} vs {pair.b}", pair.quantity),
        _sci(pair.max_abs_diff),
        _sci(pair.a_max_abs_err),
        _sci(pair.b_max_abs_err),
        _sci(pair.budget),
        pair.attribution,
    ]


def _render_tabular(report, tablefmt: str) -> str:
    tables = [tabulate([list(row_cells(r).values()) for r in report.results], RESULT_HEADERS, tablefmt=tablefmt)]
    if report.pairs:
        tables.append(tabulate([_pair_cells(p) for p in report.pairs], PAIR_HEADERS, tablefmt=tablefmt))
    notes = []
    for row in report.results:
        if row.error:
            notes.append(_wrap(f"{row.label}: {row.error_type}: ", row.error))
        timing_warnings = row.timing.warnings if row.timing is not None else ()
        notes += [_wrap(f"{row.label}: ", note) for note in row.notes if note not in timing_warnings]
    if report.settings.jax_enable_x64_set_by_xattn:
        notes.append("jax: jax_enable_x64 was turned on by xattn for this float64 run, and restored after")
    if not report.settings.threads_equal:
        notes.append(_wrap("threads: ", _threads_note(report.settings)))
    budget = next((r.budget for r in report.results if r.budget is not None), None)
    if budget is not None:
        notes.append(_wrap("budget: ", f"max err <= {budget.describe()} ({budget.dtype}); see docs/comparator.md"))
    if report.settings.threads_note:
        notes.append(_wrap("threads: ", report.settings.threads_note))
    machine = report.settings.machine or {}
    notes += [_wrap("! ", warning) for warning in machine.get("warnings", ())]
    noisy = [f"{r.label} {r.timing.spread:.2f}" for r in report.results if r.timing is not None and r.timing.noisy]
    if noisy:
        notes.append(_wrap("! noisy: ", f"IQR/median >= {NOISE_THRESHOLD} when the time cap"
                                        f" ({report.settings.max_time_s} s) was reached: {', '.join(noisy)}."
                                        " Raise max_time or quiet the machine"))
    faulting = [f"{r.label} {r.timing.faults_per_call:.0f}" for r in report.results
                if r.timing is not None and (r.timing.faults_per_call or 0) >= PAGE_FAULTS_PER_CALL]
    if faulting:
        notes.append(_wrap("! page faults a call: ", f"{', '.join(faulting)}: these times hold the kernel mapping"
                                                     " fresh memory for large temporaries on every call; to time"
                                                     f" without it, run with {PINNED_MALLOC} (glibc)"))

    def labels(rows):
        return ", ".join(with_quantity(r.label, r.quantity) for r in rows)

    refused = [r for r in report.results if r.verdict == UNSUPPORTED]
    bad = [r for r in report.results if not r.ok and r.verdict != UNSUPPORTED]
    ran_ok = len(report.results) - len(refused) - len(bad)
    verdict = f"not ok: {labels(bad)}" if bad else f"all {ran_ok} rows {'that ran are ' if refused else ''}ok"
    if refused:
        verdict += f"; {len(refused)} unsupported here (not a failure): {labels(refused)}"
    notes.append(f"verdict: {verdict}")
    return page(_spec_line(report), tables, notes, tablefmt)


def _threads_note(settings) -> str:
    """Why the frameworks ran with different thread counts, and what (if anything) would make them equal."""
    text = f"not equal ({threads_text(settings)}): XLA's count is fixed when JAX starts"
    asked = settings.get("threads_requested")
    if asked is None:
        return text + "; ask for threads before anything imports JAX"
    if asked == 1:
        return text + f"; {asked} was asked for after JAX had started: ask before anything imports JAX"
    return text + f" (one per core) and can be set only to 1; the others run the {asked} asked for"


def _csv_records(report) -> list[dict]:
    return [csv_record(row) for row in report.results]


def render(report, format: str = "table", *, indent: int | None = 2) -> str:
    """``report`` as text in one of :data:`xattn.render.text.FORMATS`."""
    return render_as(report, format, to_dict=report_dict, tabular=_render_tabular, csv_records=_csv_records,
                     empty_header=("backend",), indent=indent)
