"""The comparator's results: frozen dataclasses, rendered only by :mod:`xattn.render.report`.

A :class:`Row` is one (backend, variant, quantity): ``quantity`` is ``"out"`` (the attention
output) today; gradient rows will add one row per differentiated input (``"grad/x"``,
``"grad/wq"``, ...) with the same drift fields and their own timing, so neither the rows nor the
JSON schema change shape when they arrive.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Mapping
from typing import Any

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
    #: True for an eager variant: nothing is compiled, and ``compile_s`` is None.
    eager: bool = False
    first_call_s: float | None = None
    gflops: float | None = None
    error: str | None = None
    error_type: str | None = None
    notes: tuple[str, ...] = ()
    #: err / budget: how much of its budget the row's error uses (above 1: over); None when not judged.
    budget_use: float | None = None

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
class RunRecord(Mapping):
    """How a comparison ran: its :class:`~xattn.comparison.settings.RunSettings` as applied, and what the
    machine made of them. Read it by attribute; it also reads as the JSON ``settings`` mapping.
    """

    backends: tuple[str, ...]
    variants: tuple[str, ...]
    device: str
    matmul_precision: str
    min_time_s: float
    max_time_s: float
    warmup_s: float
    timing: bool
    #: Intra-op threads per framework as the run had them.
    threads: Mapping[str, int]
    threads_equal: bool
    #: Whether xattn turned jax_enable_x64 on for this float64 run (and restored it after).
    jax_enable_x64_set_by_xattn: bool
    grad: bool
    #: The intra-op thread count the run asked for (None: XLA's count for every framework).
    threads_requested: int | None = None
    #: How busy the machine was while timing (:meth:`xattn.timing.MachineLoad.as_dict`); None untimed.
    machine: Mapping[str, Any] | None = None
    #: Why xattn chose the thread count itself (a busy machine), or None.
    threads_note: str | None = None

    def to_dict(self) -> dict:
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        data.update(backends=list(self.backends), variants=list(self.variants), threads=dict(self.threads),
                    machine=None if self.machine is None else dict(self.machine))
        return data

    def __getitem__(self, key):
        return self.to_dict()[key]

    def __iter__(self):
        return iter(field.name for field in dataclasses.fields(self))

    def __len__(self) -> int:
        return len(dataclasses.fields(self))


class _Rendered:
    """``str()``, ``render()``, ``to_json()`` and ``to_dict()`` through one renderer of :mod:`xattn.render`."""

    def _renderer(self):
        """``(as_dict, render)``: the functions of :mod:`xattn.render` for this result (imported on use)."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        return self._renderer()[0](self)

    def to_json(self, indent: int | None = 2) -> str:
        return self._renderer()[1](self, "json", indent=indent)

    def render(self, format: str = "table") -> str:
        return self._renderer()[1](self, format)

    def __str__(self) -> str:
        return self.render("table")


@dataclasses.dataclass(frozen=True)
class Report(_Rendered):
    """Everything one comparison found. ``str(report)`` is the table; see :mod:`xattn.render.report`."""

    env: Mapping[str, Any]
    spec: AttentionSpec
    settings: RunRecord
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

    def _renderer(self):
        from xattn.render.report import render, report_dict

        return report_dict, render


@dataclasses.dataclass(frozen=True)
class SweepReport(_Rendered):
    """One :class:`Report` per point of a sweep (:func:`xattn.sweep`); ``str(sweep)`` is the table.

    ``fields`` are the swept fields in order (the first is the plot's x axis); ``points[i]`` holds
    point i's value of each field and ``reports[i]`` its comparison. ``spec`` is the base problem.
    A sweep stopped by a signal holds the points that finished: ``stopped_by`` names the signal
    (``"SIGINT"``, ``"SIGTERM"``) and ``planned`` counts the points it was to run.
    """

    spec: AttentionSpec
    fields: tuple[str, ...]
    points: tuple[tuple[Any, ...], ...]
    reports: tuple[Report, ...]
    planned: int | None = None
    stopped_by: str | None = None

    def __post_init__(self):
        if self.planned is None:
            object.__setattr__(self, "planned", len(self.points))

    @property
    def complete(self) -> bool:
        return self.stopped_by is None

    @property
    def ok(self) -> bool:
        return self.complete and all(report.ok for report in self.reports)

    @property
    def exit_code(self) -> int:
        """0 when every point's report is ok (rows ok or ``unsupported``); 1 when any row drifted or errored;
        128 + the signal (130 for SIGINT, 143 for SIGTERM) when a signal stopped the sweep."""
        if self.stopped_by is not None:
            return 128 + signal.Signals[self.stopped_by].value
        return 0 if self.ok else 1

    def values(self, field: str) -> tuple:
        """The distinct values ``field`` takes, in sweep order."""
        index = self.fields.index(field)
        return tuple(dict.fromkeys(point[index] for point in self.points))

    def _renderer(self):
        from xattn.render.sweep_report import render_sweep, sweep_dict

        return sweep_dict, render_sweep

    def plot(self, path, **options):
        """Draw time, GFLOP/s and max error against the first swept field to ``path`` (needs matplotlib)."""
        from xattn.render.plot import plot_sweep

        return plot_sweep(self, path, **options)
