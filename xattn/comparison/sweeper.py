"""``xattn.sweep``: :func:`xattn.compare` at every point of a grid of sizes or dtypes.

The grid is the cartesian product of the swept fields' values, in the order given; the first field
is the x axis of the plot (:mod:`xattn.render.plot`). Every point is built and validated before anything
runs, so an impossible point (causal with T != S, heads not dividing E) is a ValueError naming it.

A field that :class:`~xattn.contract.spec.AttentionSpec` derives from another follows it across the sweep
when the base spec left it at its derived value: S follows T, G follows H, D follows E // H. Setting
it to another value, sweeping it, or naming it in ``hold`` keeps it where it is.

Every point's estimated peak memory is checked against ``max_memory`` before the first point runs.
A point that fails (its oracle out of memory) becomes a point of ``error`` rows and the sweep goes
on; an interrupt (Ctrl-C, or the CLI's SIGTERM) raises :class:`SweepInterrupted` carrying the
points that finished.

This module is ``sweeper``, not ``sweep``: a submodule named ``sweep`` would shadow the function
``xattn.sweep`` as soon as anything imported it.
"""

from __future__ import annotations

import itertools
import signal
from typing import Callable, Iterable, Mapping

from xattn.comparison.memory import check_run
from xattn.comparison.results import SweepReport
from xattn.comparison.settings import Plan, RunSettings, make_plan, settle_threads
from xattn.contract.spec import AttentionSpec
from xattn.render.sweep_report import point_label

#: Sweeps T and S together (self-attention lengths).
SEQ = "seq"
#: Fields a sweep may vary.
SWEEPABLE = (SEQ, "batch", "q_len", "kv_len", "embed", "heads", "kv_heads", "head_dim", "dtype")
#: Derived field -> the fields it follows when the base spec left it at its derived value.
FOLLOWS = {"kv_len": ("q_len",), "kv_heads": ("heads",), "head_dim": ("embed", "heads")}


def _check_sweep(sweep) -> dict[str, tuple]:
    if not isinstance(sweep, Mapping) or not sweep:
        raise ValueError(f"sweep: expected a mapping of field -> values such as {{'q_len': [128, 256]}}; got {sweep!r}")
    checked = {}
    for field, values in sweep.items():
        if field not in SWEEPABLE:
            raise ValueError(f"sweep: expected fields from {', '.join(SWEEPABLE)}; got {field!r}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ValueError(f"sweep[{field!r}]: expected a list of values such as [128, 256]; got {values!r}")
        values = tuple(values)
        if not values:
            raise ValueError(f"sweep[{field!r}]: expected at least one value; got none")
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"sweep[{field!r}]: expected distinct values; got {', '.join(repeated)} more than once")
        checked[field] = values
    clash = [field for field in ("q_len", "kv_len") if field in checked and SEQ in checked]
    if clash:
        raise ValueError(f"sweep: 'seq' sets q_len and kv_len together; got it with {', '.join(clash)}. Sweep one.")
    return checked


def sweep_points(spec: AttentionSpec, sweep: Mapping[str, Iterable], hold: Iterable[str] = ()) -> tuple:
    """``(fields, points)``: the swept fields in order, and every point as ``(values, spec)``, validated.

    A ValueError names the first impossible point (``sweep point 2 of 6 (seq=128, dtype=float16): ...``).
    """
    if not isinstance(spec, AttentionSpec):
        raise TypeError(f"spec: expected an xattn.AttentionSpec; got {type(spec).__name__}")
    grid = _check_sweep(sweep)
    hold = set(hold)
    unknown = hold - set(FOLLOWS)
    if unknown:
        raise ValueError(f"hold: expected fields from {', '.join(FOLLOWS)}; got {', '.join(sorted(unknown))}")
    fields = tuple(grid)
    swept = set(fields) | ({"q_len", "kv_len"} if SEQ in grid else set())
    derived = {
        "kv_len": spec.kv_len == spec.q_len,
        "kv_heads": spec.kv_heads == spec.heads,
        "head_dim": spec.embed % spec.heads == 0 and spec.head_dim == spec.embed // spec.heads,
    }
    follow = [
        field for field, sources in FOLLOWS.items()
        if derived[field] and field not in swept and field not in hold and swept & set(sources)
    ]
    combos = list(itertools.product(*grid.values()))
    points = []
    for number, values in enumerate(combos, 1):
        changes = dict.fromkeys(follow)
        for field, value in zip(fields, values):
            if field == SEQ:
                changes.update(q_len=value, kv_len=value)
            else:
                changes[field] = value
        try:
            points.append((values, spec.replace(**changes)))
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"sweep point {number} of {len(combos)} ({point_label(fields, values)}): {error}"
            ) from None
    return fields, tuple(points)


def sweep(
    backends: Iterable[str] | str | None = None,
    variants: Iterable[str] | str | None = None,
    spec: AttentionSpec | None = None,
    sweep: Mapping[str, Iterable] | None = None,
    *,
    hold: Iterable[str] = (),
    settings: RunSettings | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    **options,
) -> SweepReport:
    """:func:`xattn.compare` at every point of ``sweep`` around ``spec``; a :class:`~.results.SweepReport`.

    ``sweep``: field -> values, e.g. ``{"seq": [128, 256, 512], "dtype": ["float32", "bfloat16"]}``;
    fields from :data:`SWEEPABLE` (``seq`` sets q_len and kv_len together); several fields sweep
    their cartesian product, in ``itertools.product`` order (the last field varies fastest).
    ``hold``: derived fields (kv_len, kv_heads, head_dim) kept at ``spec``'s value even where they
    would follow a swept field. ``progress(i, n, label)`` is called before point ``i`` (0-based) of
    ``n``. ``settings`` and its fields as keywords are :func:`xattn.compare`'s, the same at every
    point; the backends, variants and device are resolved once, and every point's memory checked
    (MemoryLimitError naming the point), before the first point runs.
    """
    settings = RunSettings.of(settings, options, "sweep")
    spec = AttentionSpec() if spec is None else spec
    fields, points = sweep_points(spec, sweep, hold)
    settings = settle_threads(settings)  # before anything imports JAX
    plan = make_plan(backends, variants, settings.device)
    check_run([point for _, point in points], plan, settings, [point_label(fields, values) for values, _ in points])
    return run(plan, spec, fields, points, settings, progress)


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by Ctrl-C (or a KeyboardInterrupt carrying ``signum``, as the CLI raises for SIGTERM).

    ``report``: a :class:`~xattn.comparison.results.SweepReport` of the points that finished, marked
    incomplete; None when none had.
    """

    def __init__(self, report: SweepReport | None, signum: int):
        super().__init__(f"sweep stopped by {signal.Signals(signum).name}")
        self.report, self.signum = report, signum


def run(plan: Plan, spec: AttentionSpec, fields: tuple[str, ...], points, settings: RunSettings,
        progress=None) -> SweepReport:
    """The sweep of :func:`sweep_points`' ``(fields, points)`` with a resolved ``plan``, point by point.

    A point that raises is a report of error rows; an interrupt raises :class:`SweepInterrupted`.
    """
    from xattn.comparison import comparator

    reports = []
    try:
        for index, (values, point_spec) in enumerate(points):
            if progress is not None:
                progress(index, len(points), point_label(fields, values))
            try:
                reports.append(comparator.run(plan, point_spec, settings))
            except Exception as error:  # one point's failure is that point's rows, never the end of the sweep
                reports.append(comparator.failed_run(plan, point_spec, settings, error))
    except KeyboardInterrupt as stop:
        signum = getattr(stop, "signum", signal.SIGINT)
        finished = None
        if reports:
            done = tuple(values for values, _ in points[:len(reports)])
            finished = SweepReport(spec=spec, fields=fields, points=done, reports=tuple(reports), planned=len(points),
                                   stopped_by=signal.Signals(signum).name)
        raise SweepInterrupted(finished, signum) from stop
    return SweepReport(spec=spec, fields=fields, points=tuple(values for values, _ in points), reports=tuple(reports))
