"""The sweep plot: median time, GFLOP/s and max error against the first swept field.

Takes a :class:`xattn.comparison.results.SweepReport` and draws what it holds: one line per backend/variant,
colour by variant and line style by backend, the IQR of the timing samples as a band, the error
budget as a grey line, and one row of panels per combination of the other swept fields.
matplotlib (the ``plot`` extra) is imported inside the functions and drawn through a bare
``Figure`` (the Agg canvas), so the caller's pyplot backend and state are left alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xattn.errors import PlotUnavailableError
from xattn.render.files import write_atomic
from xattn.render.report import threads_text
from xattn.render.sweep_report import fixed_spec, point_label, sweep_title
from xattn.render.text import duration

INSTALL = "pip install 'xattn[plot]'"
#: Line style and marker of each backend; a backend not listed gets the next of OTHER_STYLES.
BACKEND_STYLES = {"jax": ("-", "o"), "torch": ("--", "s")}
OTHER_STYLES = ((":", "^"), ("-.", "D"), (":", "v"))
#: Colour-blind-safe colours (Okabe-Ito), one per variant in the order the sweep ran them.
VARIANT_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442")
#: A numeric x axis is drawn log2 when its largest value is at least this many times its smallest.
LOG_X_RATIO = 4
PANEL_WIDTH_IN, PANEL_HEIGHT_IN = 5.2, 3.6
BUDGET_LINE = dict(color="0.55", linewidth=5, alpha=0.45)
DRIFT_MARKER = dict(marker="o", markersize=12, markerfacecolor="none", markeredgecolor="#D00000", markeredgewidth=1.8)
#: Points listed by name in the "not drawn" footnote before it just counts them.
MAX_LISTED_POINTS = 3
AXIS_TITLES = {
    "seq": "sequence length T = S", "batch": "batch B", "q_len": "query length T", "kv_len": "key/value length S",
    "embed": "model width E", "heads": "query heads H", "kv_heads": "key/value heads G", "head_dim": "head width D",
    "dtype": "dtype",
}


def require_matplotlib():
    """The matplotlib module, or PlotUnavailableError naming the extra to install."""
    try:
        import matplotlib
    except ImportError as error:
        raise PlotUnavailableError(
            f"plot: expected matplotlib (the 'plot' extra) to draw the sweep; got {error}. Install it with: {INSTALL}"
        ) from None
    return matplotlib


def plot_format(path) -> str:
    """The file format ``path``'s suffix names (png when it has none); ValueError for one matplotlib cannot write."""
    require_matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(str(path)).suffix.lower().lstrip(".") or "png"
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix not in formats:
        raise ValueError(f"expected a file name ending in one of {', '.join('.' + name for name in sorted(formats))};"
                         f" got {str(path)!r}")
    return suffix


def _series(sweep, group_points):
    """label -> per-x arrays (median, q25, q75, gflops, error, drift flag) over ``group_points`` (x index, report)."""
    count = len(sweep.values(sweep.fields[0]))
    series, budget = {}, np.full(count, np.nan)
    for x_index, report in group_points:
        for row in report.results:
            if row.quantity != "out":
                continue
            data = series.setdefault((row.backend, row.variant), {
                key: np.full(count, np.nan) for key in ("median", "q25", "q75", "gflops", "error", "drift")})
            if row.budget is not None and row.budget.max_abs is not None:
                budget[x_index] = row.budget.max_abs
            if row.drift is not None:
                data["error"][x_index] = row.drift.max_abs_err
                data["drift"][x_index] = row.drift.max_abs_err if not row.ok else np.nan
            if row.timing is not None:
                data["median"][x_index] = row.timing.median_s
                data["q25"][x_index], data["q75"][x_index] = np.percentile(row.timing.times_s, [25, 75])
                data["gflops"][x_index] = row.gflops if row.gflops is not None else np.nan
    return series, budget


def _groups(sweep):
    """(label, [(x index, report)]) per combination of the fields after the first, in sweep order."""
    x_values = list(sweep.values(sweep.fields[0]))
    groups: dict[tuple, list] = {}
    for point, report in zip(sweep.points, sweep.reports):
        groups.setdefault(tuple(point[1:]), []).append((x_values.index(point[0]), report))
    return [(point_label(sweep.fields[1:], rest), members) for rest, members in groups.items()]


def _x_axis(axes, field, values):
    """Positions of ``values`` on ``axes``: the values themselves (log2 when they span a ratio), else categories."""
    from matplotlib.ticker import NullFormatter, NullLocator

    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        positions = np.asarray(values, dtype=float)
        if min(positions) > 0 and max(positions) / min(positions) >= LOG_X_RATIO:
            axes.set_xscale("log", base=2)
            axes.xaxis.set_minor_locator(NullLocator())
            axes.xaxis.set_minor_formatter(NullFormatter())
    else:
        positions = np.arange(len(values), dtype=float)
        axes.set_xlim(-0.5, len(values) - 0.5)
    axes.set_xticks(positions)
    axes.set_xticklabels([str(v) for v in values])
    axes.set_xlabel(AXIS_TITLES.get(field, field))
    return positions


def _duration_tick(seconds, _position=None) -> str:
    return duration(seconds) if seconds > 0 else ""


def _styles(sweep):
    variants, backends = {}, {}
    for report in sweep.reports:
        for row in report.results:
            variants.setdefault(row.variant, VARIANT_COLOURS[len(variants) % len(VARIANT_COLOURS)])
            if row.backend not in backends:
                backends[row.backend] = BACKEND_STYLES.get(
                    row.backend, OTHER_STYLES[sum(b not in BACKEND_STYLES for b in backends) % len(OTHER_STYLES)])
    return variants, backends


def _title(sweep) -> str:
    report = sweep.reports[0]
    env, settings = report.env, report.settings
    versions = ", ".join(f"{name} {env['versions'].get(name)}" for name in settings.backends)
    cores = env.get("cpu", {}).get("cores_available")
    machine = settings.device + (f" ({cores} cores available)" if settings.device == "cpu" else "")
    return (
        f"xattn sweep: {sweep_title(sweep)}; fixed {fixed_spec(sweep)}\n"
        f"{machine}; threads {threads_text(settings)}; matmul precision {settings.matmul_precision}; {versions}"
    )


def _not_shown(sweep) -> str:
    """One line per backend/variant with no output at some points: which verdict, where."""
    missing: dict[tuple, list[str]] = {}
    for point, report in zip(sweep.points, sweep.reports):
        for row in report.results:
            if row.drift is None and row.quantity == "out":
                missing.setdefault((row.label, row.verdict), []).append(point_label(sweep.fields, point))
    lines = []
    for (label, verdict), points in missing.items():
        where = "every point" if len(points) == len(sweep.points) else "; ".join(points)
        if len(points) > MAX_LISTED_POINTS and len(points) < len(sweep.points):
            where = f"{len(points)} of {len(sweep.points)} points (see the table)"
        lines.append(f"not drawn: {label} {verdict} at {where}")
    return "\n".join(lines)


def _draw_timing(time_axes, gflops_axes, positions, series, colours, styles) -> None:
    from matplotlib.ticker import FuncFormatter

    for (backend, variant), data in series.items():
        line, marker = styles[backend]
        look = dict(color=colours[variant], linestyle=line, marker=marker, markersize=5, linewidth=1.6)
        time_axes.plot(positions, data["median"], **look)
        time_axes.fill_between(positions, data["q25"], data["q75"], color=colours[variant], alpha=0.12, linewidth=0)
        gflops_axes.plot(positions, data["gflops"], **look)
    time_axes.set_yscale("log")
    time_axes.yaxis.set_major_formatter(FuncFormatter(_duration_tick))
    time_axes.yaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
    gflops_axes.set_ylim(bottom=0)


def _draw_error(error_axes, positions, series, budget, colours, styles) -> None:
    for (backend, variant), data in series.items():
        line, marker = styles[backend]
        error_axes.plot(positions, data["error"], color=colours[variant], linestyle=line, marker=marker,
                        markersize=5, linewidth=1.6)
        error_axes.plot(positions, data["drift"], linestyle="none", **DRIFT_MARKER)
    error_axes.plot(positions, budget, **BUDGET_LINE, zorder=0)
    if np.isfinite(budget).any() or any(np.isfinite(data["error"]).any() for data in series.values()):
        error_axes.set_yscale("log")


def plot_sweep(sweep, path, *, dpi: int = 110) -> str:
    """Draw ``sweep`` to ``path`` (PNG, or any format matplotlib infers from the suffix); return ``path``.

    Per combination of the other swept fields, a row of panels against the first swept field:
    median time (log scale, IQR band) and GFLOP/s when the sweep was timed, and max |error|
    against the float64 oracle beside the error budget (log scale).
    """
    require_matplotlib()
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    field = sweep.fields[0]
    x_values = sweep.values(field)
    groups = _groups(sweep)
    colours, styles = _styles(sweep)
    timed = any(row.timing is not None for report in sweep.reports for row in report.results)
    columns = 3 if timed else 1
    width = columns * PANEL_WIDTH_IN if timed else 1.6 * PANEL_WIDTH_IN
    figure = Figure(figsize=(width, PANEL_HEIGHT_IN * len(groups) + 1.6), dpi=dpi, layout="constrained")
    panels = figure.subplots(len(groups), columns, squeeze=False)
    for (group_label, members), row_axes in zip(groups, panels):
        series, budget = _series(sweep, members)
        suffix = f"  [{group_label}]" if group_label else ""
        for axes in row_axes:
            positions = _x_axis(axes, field, x_values)
            axes.grid(True, which="major", alpha=0.3)
        if timed:
            time_axes, gflops_axes, error_axes = row_axes
            time_axes.set_title("median time per call (band: IQR)" + suffix, fontsize=10)
            gflops_axes.set_title("GFLOP/s (higher is better)" + suffix, fontsize=10)
            _draw_timing(time_axes, gflops_axes, positions, series, colours, styles)
        else:
            (error_axes,) = row_axes
        error_axes.set_title("max |error| vs float64 oracle" + suffix, fontsize=10)
        _draw_error(error_axes, positions, series, budget, colours, styles)
    handles = [Line2D([], [], color=colour, linewidth=2.5, label=variant) for variant, colour in colours.items()]
    handles += [Line2D([], [], color="0.2", linestyle=line, marker=marker, label=backend)
                for backend, (line, marker) in styles.items()]
    if timed:
        handles.append(Patch(color="0.5", alpha=0.25, label="IQR of samples"))
    handles.append(Line2D([], [], **BUDGET_LINE, label="error budget"))
    if any(row.drift is not None and not row.ok for report in sweep.reports for row in report.results):
        handles.append(Line2D([], [], linestyle="none", **DRIFT_MARKER, label="over budget (drift)"))
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 12 if timed else 6),
                  frameon=False, fontsize=9)
    title = _title(sweep) + ("" if timed else "; not timed")
    figure.suptitle("\n".join(filter(None, (title, _not_shown(sweep)))), fontsize=10)
    _save(figure, path, dpi)
    return str(path)


def _save(figure, path, dpi: int) -> None:
    """Save atomically (:func:`xattn.render.files.write_atomic`); a PNG is reduced to a 256-colour palette (a
    third of the bytes, the same picture) to commit."""
    import io

    buffer = io.BytesIO()
    kind = plot_format(path)
    figure.savefig(buffer, format=kind, dpi=dpi)
    if kind == "png":
        from PIL import Image  # a dependency of matplotlib itself

        buffer.seek(0)
        with Image.open(buffer) as image:
            palette = io.BytesIO()
            image.convert("RGB").quantize(colors=256).save(palette, format="png", optimize=True)  # median cut
        buffer = palette
    write_atomic(path, buffer.getvalue())
