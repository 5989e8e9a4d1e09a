"""The comparator's results: frozen dataclasses, rendered only by :mod:`xattn.render.report`.

A :class:`Row` is one (backend, variant, quantity): ``quantity`` is ``"out"`` (the attention
output) today; gradient rows will add one row per differentiated input (``"grad/x"``,
``"grad/wq"``, ...) with the same drift fields and their own timing, so neither the rows nor the
JSON schema change shape when they arrive.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from xattn.contract.spec import AttentionSpec
from xattn.numerics.budget import Budget
from xattn.numerics.drift import DriftMetrics
from xattn.numerics.judge import OK, PASSING, Verdict
from xattn.timing import Measurement

#: The quantity of a forward row; gradient rows are named "grad/<input>".
OUTPUT = "out"


@dataclasses.dataclass(frozen=True)
class Row:
    """One (backend, variant, quantity): drift against the oracle, verdict, and timing."""

    backend: str
    variant: str
    dtype: str
    device: str
    verdict: Verdict
    quantity: str = OUTPUT
    drift: DriftMetrics | None = None
    budget: Budget | None = None
    timing: Measurement | None = None
    compile_s: float | None = None
    first_call_s: float | None = None
    gflops: float | None = None
    error: str | None = None
    error_type: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.variant}"

    @property
    def ok(self) -> bool:
        return self.verdict == OK


@dataclasses.dataclass(frozen=True)
class Pair:
    """Two rows' outputs side by side: their difference beside each one's error against the oracle."""

    a: str
    b: str
    quantity: str
    max_abs_diff: float | None
    rel_l2_diff: float | None
    a_max_abs_err: float | None
    b_max_abs_err: float | None
    budget: float | None
    over_budget: tuple[str, ...]
    attribution: str


@dataclasses.dataclass(frozen=True)
class Report:
    """Everything one comparison found. ``str(report)`` is the table; see :mod:`xattn.render.report`."""

    env: Mapping[str, Any]
    spec: AttentionSpec
    settings: Mapping[str, Any]
    results: tuple[Row, ...]
    pairs: tuple[Pair, ...]

    @property
    def ok(self) -> bool:
        return all(row.verdict in PASSING for row in self.results)

    @property
    def exit_code(self) -> int:
        """0 when every row is ok or an honest refusal (``unsupported``); 1 when any row drifted or errored."""
        return 0 if self.ok else 1

    def row(self, backend: str, variant: str, quantity: str = OUTPUT) -> Row:
        for row in self.results:
            if (row.backend, row.variant, row.quantity) == (backend, variant, quantity):
                return row
        raise KeyError(f"no row for {backend}/{variant} ({quantity}); rows: {[r.label for r in self.results]}")

    def to_dict(self) -> dict:
        from xattn.render.report import report_dict

        return report_dict(self)

    def to_json(self, indent: int | None = 2) -> str:
        from xattn.render.report import render

        return render(self, "json", indent=indent)

    def render(self, format: str = "table") -> str:
        from xattn.render.report import render

        return render(self, format)

    def __str__(self) -> str:
        return self.render("table")


@dataclasses.dataclass(frozen=True)
class SweepReport:
    """One :class:`Report` per point of a sweep (:func:`xattn.sweep`); ``str(sweep)`` is the table.

    ``fields`` are the swept fields in order (the first is the plot's x axis); ``points[i]`` holds
    point i's value of each field and ``reports[i]`` its comparison. ``spec`` is the base problem.
    """

    spec: AttentionSpec
    fields: tuple[str, ...]
    points: tuple[tuple[Any, ...], ...]
    reports: tuple[Report, ...]

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.reports)

    @property
    def exit_code(self) -> int:
        """0 when every point's report is ok (rows ok or ``unsupported``); 1 when any row drifted or errored."""
        return 0 if self.ok else 1

    def values(self, field: str) -> tuple:
        """The distinct values ``field`` takes, in sweep order."""
        index = self.fields.index(field)
        return tuple(dict.fromkeys(point[index] for point in self.points))

    def to_dict(self) -> dict:
        from xattn.render.sweep_report import sweep_dict

        return sweep_dict(self)

    def to_json(self, indent: int | None = 2) -> str:
        from xattn.render.sweep_report import render_sweep

        return render_sweep(self, "json", indent=indent)

    def render(self, format: str = "table") -> str:
        from xattn.render.sweep_report import render_sweep

        return render_sweep(self, format)

    def plot(self, path, **options):
        """Draw time, GFLOP/s and max error against the first swept field to ``path`` (needs matplotlib)."""
        from xattn.render.plot import plot_sweep

        return plot_sweep(self, path, **options)

    def __str__(self) -> str:
        return self.render("table")
