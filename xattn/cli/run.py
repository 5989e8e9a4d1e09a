"""``xattn compare`` and ``xattn sweep``: attention variants run on one problem, or on a grid of them."""

from __future__ import annotations

import contextlib
import math

import click

from xattn.cli.options import (
    INTEGERS,
    OutputPath,
    check_memory,
    dtype_option,
    emit,
    format_option,
    in_given_order,
    mask_options,
    output_option,
    prepare_run,
    run_options,
    selection_options,
    size_options,
)
from xattn.contract.spec import SEED_SHAPE


@click.command()
@selection_options
@size_options(sweepable=False)
@mask_options
@dtype_option(sweepable=False)
@run_options
@click.option("--grad", is_flag=True,
              help="Also compare gradients (d<out, C>/d x, kv, wq, wk, wv, wo) against the float64 oracle.")
@format_option
@output_option
def compare(backends, variants, seed_shape, dtype, seed, device, matmul_precision, threads, min_time, max_time,
            no_timing, max_memory, grad, fmt, output, **sizes):
    """Run attention variants of JAX and torch on one problem: drift, verdict, speed.

    \b
    Every row is held to its dtype's budget against a float64 oracle;
    exit status 0 when every row is ok, 1 when any drifted or errored,
    2 for a usage error.
    """
    import sys

    from xattn.comparison import comparator
    from xattn.contract.spec import AttentionSpec

    fields = dict(SEED_SHAPE) if seed_shape else {}
    fields.update({name: value for name, value in sizes.items() if value is not None})
    try:
        spec = AttentionSpec(dtype=dtype, seed=seed, **fields)
    except ValueError as error:
        raise click.UsageError(f"impossible spec: {error}") from None
    plan, settings = prepare_run(backends, variants, device=device, matmul_precision=matmul_precision,
                                 threads=threads, min_time=min_time, max_time=max_time, timing=not no_timing,
                                 grad=grad, max_memory=max_memory)
    check_memory(plan, [spec], settings)
    progress = (lambda line: click.echo(f"xattn: {line}", err=True)) if sys.stderr.isatty() else None
    report = comparator.run(plan, spec, settings, progress)
    emit(report.render(fmt), output)
    raise SystemExit(report.exit_code)


@contextlib.contextmanager
def _progress(total: int):
    """``progress(i, n, label)`` for :func:`xattn.sweep`, drawn on standard error only.

    A bar on a terminal; elsewhere (a log, a pipe) one line per point.
    """
    import sys

    if not sys.stderr.isatty():
        yield lambda index, count, label: click.echo(f"xattn sweep: point {index + 1}/{count}: {label}", err=True)
        return
    with click.progressbar(length=total, label="xattn sweep", file=sys.stderr, show_pos=True,
                           item_show_func=lambda label: label) as bar:
        yield lambda index, count, label: bar.update(index - bar.pos, current_item=label)
        bar.update(total - bar.pos, current_item="done")


@click.command()
@click.pass_context
@selection_options
@click.option("--seq", type=INTEGERS, callback=in_given_order,
              help="T and S together (self-attention length), e.g. 128,256,512.")
@size_options(sweepable=True)
@mask_options
@dtype_option(sweepable=True)
@run_options
@format_option
@output_option
@click.option("--plot", "plot_path", type=OutputPath(),
              help="Also draw time, GFLOP/s and max error against the first swept field to this PNG"
                   " (needs pip install 'xattn[plot]').")
def sweep(ctx, backends, variants, seed_shape, seq, dtype, seed, device, matmul_precision, threads, min_time,
          max_time, no_timing, max_memory, fmt, output, plot_path, causal, key_lengths, scale, **sizes):
    """Run compare at every point of a grid of sizes or dtypes: every point's rows, and a plot.

    \b
    Every size option, --seq and --dtype take one value or a comma list; a
    list sweeps that field. Several lists sweep their cartesian product (every
    combination: --seq 64,128 --dtype float32,bfloat16 is 4 points). The first
    list given is the plot's x axis; each combination of the others gets its
    own row of panels. S, G and D follow T, H and E // H unless given.

    \b
    Examples:
      xattn sweep --backends jax,torch --seq 128,256,512,1024 --plot sweep.png
      xattn sweep --variants sdpa,tiled --heads 2,4,8 --dtype float32,bfloat16

    \b
    Progress goes to standard error. Exit status 0 when every row of every
    point is ok or unsupported, 1 when any drifted or errored, 2 for a usage
    error (an impossible point, or one over --max-memory, is named before
    anything runs). A point that fails is a point of error rows; Ctrl-C or
    SIGTERM writes the points finished so far, marked incomplete, and exits
    130 or 143.
    """
    from xattn.comparison import sweeper
    from xattn.contract.spec import AttentionSpec
    from xattn.render.sweep_report import point_label

    if seq is not None and (sizes["q_len"] is not None or sizes["kv_len"] is not None):
        raise click.BadParameter("--seq sets T and S together; got it with --q-len/--kv-len. Give one or the other.",
                                 param_hint="--seq")
    given = {"seq": seq, **sizes, "dtype": dtype}
    order = ctx.meta.get("xattn.given_order", [])
    swept = {name: given[name] for name in order if given[name] is not None and len(given[name]) > 1}
    if not swept:
        raise click.UsageError("nothing to sweep: expected a comma list in --seq, --batch, --q-len, --kv-len,"
                               " --embed, --heads, --kv-heads, --head-dim or --dtype, e.g. --seq 128,256,512")
    fields = dict(SEED_SHAPE) if seed_shape else {}
    for name, values in given.items():
        if values is not None:  # a swept field starts at its first value: the base spec is point 1
            fields.update({"q_len": values[0], "kv_len": values[0]} if name == "seq" else {name: values[0]})
    mask = {"causal": causal, "key_lengths": key_lengths, "scale": scale}
    fields.update({name: value for name, value in mask.items() if value is not None})
    label = point_label(swept, [values[0] for values in swept.values()])
    count = math.prod(len(values) for values in swept.values())
    try:
        spec = AttentionSpec(seed=seed, **fields)
    except ValueError as error:
        raise click.UsageError(f"impossible sweep point 1 of {count} ({label}): {error}") from None
    hold = [name for name in sweeper.FOLLOWS if sizes[name] is not None]
    try:
        fields, points = sweeper.sweep_points(spec, swept, hold)
    except ValueError as error:
        raise click.UsageError(f"impossible {error}") from None
    if plot_path is not None:
        from xattn.errors import PlotUnavailableError
        from xattn.render.plot import plot_format

        try:
            plot_format(plot_path)
        except PlotUnavailableError as error:
            raise click.UsageError(str(error)) from None
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--plot") from None
    plan, settings = prepare_run(backends, variants, device=device, matmul_precision=matmul_precision,
                                 threads=threads, min_time=min_time, max_time=max_time, timing=not no_timing,
                                 max_memory=max_memory)
    check_memory(plan, [point for _, point in points], settings,
                 [point_label(fields, values) for values, _ in points])
    try:
        with _progress(len(points)) as progress:
            result = sweeper.run(plan, spec, fields, points, settings, progress)
    except sweeper.SweepInterrupted as stop:
        if stop.report is None:
            raise
        result = stop.report
        click.echo(f"xattn: {result.stopped_by}: writing the {len(result.points)} of {result.planned} points"
                   " that finished", err=True)
    emit(result.render(fmt), output)
    if plot_path is not None:
        try:
            result.plot(plot_path)
        except OSError as error:  # the disk filled up during the sweep: the report above is kept
            click.echo(f"xattn: could not write {plot_path} ({error.strerror or error})", err=True)
            raise SystemExit(2) from None
        click.echo(f"wrote {plot_path}", err=True)
    raise SystemExit(result.exit_code)
