"""The ``xattn`` command line: one click group; frameworks are imported inside command bodies."""

from __future__ import annotations

import contextlib
import math
import signal
import threading

import click

from xattn._version import __version__
from xattn.backends.frameworks import DEVICES, MATMUL_PRECISIONS
from xattn.contract.spec import DTYPES, SEED_SHAPE
from xattn.render.text import FORMATS


class _Group(click.Group):
    """The ``xattn`` group: Ctrl-C and SIGTERM end a command with 130 and 143 (128 + the signal), not 1.

    SIGTERM is raised as a KeyboardInterrupt carrying ``signum``, so a sweep keeps its finished points
    for either (see :func:`xattn.comparison.sweeper.run`).
    """

    def invoke(self, ctx):
        with _terminate_as_interrupt():
            try:
                return super().invoke(ctx)
            except KeyboardInterrupt as stop:
                signum = getattr(stop, "signum", signal.SIGINT)
                click.echo(f"xattn: interrupted by {signal.Signals(signum).name}", err=True)
                ctx.exit(128 + signum)


@contextlib.contextmanager
def _terminate_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        stop = KeyboardInterrupt()
        stop.signum = signum
        raise stop

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="xattn")
def main():
    """Compare attention implementations across JAX and PyTorch.

    \b
    Do the two compute the same thing? How far apart are they, and whose fault
    is the difference (measured against a float64 oracle)? Which is faster
    (timed fairly, side by side)?

    \b
    Examples:
      xattn compare --backends jax,torch
      xattn sweep --seq 128,256,512 --plot sweep.png
      xattn check model_jax:forward model_torch:forward --inputs batch.npz
      xattn env
    """


format_option = click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
    help="table and markdown read at 100 columns; json: see docs/comparator.md (sweep: docs/sweep.md).",
)

class OutputPath(click.ParamType):
    """A file path checked writable when the command line is read, before any work (:mod:`xattn.render.files`)."""

    name = "file"

    def get_metavar(self, param, ctx=None):
        return "FILE"

    def convert(self, value, param, ctx):
        from xattn.render.files import check_writable

        try:
            check_writable(value)
        except ValueError as error:
            self.fail(str(error), param, ctx)
        return value


output_option = click.option(
    "--output", "-o", type=OutputPath(), default=None,
    help="Write the report to this file (atomically: whole or not at all) instead of standard output.",
)

def _key_lengths(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(int(n) for n in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 5,16; got {value!r}") from None


def _emit(text: str, output: str | None) -> None:
    """``text`` to ``output`` (atomically) or standard output; a write that fails sends it to standard output."""
    from xattn.render.files import write_atomic

    if output is None:
        click.echo(text, nl=False)
        return
    try:
        write_atomic(output, text)
    except OSError as error:
        click.echo(text, nl=False)
        click.echo(f"xattn: could not write {output} ({error.strerror or error}); the report is on standard output",
                   err=True)
        raise SystemExit(2) from None
    click.echo(f"wrote {output}", err=True)


def _options(*decorators):
    """Several click decorators as one, applied so that --help lists them in the order given."""

    def apply(command):
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


class CommaList(click.ParamType):
    """One value or a comma-separated list of them (``128,256,512``), each converted by ``item``."""

    def __init__(self, item: click.ParamType, metavar: str):
        self.item, self.metavar, self.name = item, metavar, f"{item.name} list"

    def get_metavar(self, param, ctx=None):
        return self.metavar

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = [part.strip() for part in str(value).split(",")]
        if not all(parts):
            self.fail(f"expected one value or a comma-separated list such as 128,256; got {value!r}", param, ctx)
        return tuple(self.item.convert(part, param, ctx) for part in parts)


def _in_given_order(ctx, param, value):
    # click processes options in command-line order: this records which sweep option came first.
    if value is not None:
        ctx.meta.setdefault("xattn.given_order", []).append(param.name)
    return value


#: The AttentionSpec size options: one integer for compare; for sweep, a comma list sweeps the field.
SIZE_OPTIONS = (
    ("--batch", "B  [default: 2]"),
    ("--q-len", "T, query length  [default: 64]"),
    ("--kv-len", "S, key/value length  [default: T]"),
    ("--embed", "E, model width  [default: 64]"),
    ("--heads", "H, query heads  [default: 4]"),
    ("--kv-heads", "G, key/value heads dividing H  [default: H]"),
    ("--head-dim", "D  [default: E // H]"),
)
INTEGERS = CommaList(click.INT, "N[,N...]")


def size_options(sweepable: bool):
    if sweepable:
        return _options(*(click.option(name, type=INTEGERS, callback=_in_given_order, help=text)
                          for name, text in SIZE_OPTIONS))
    return _options(*(click.option(name, type=int, help=text) for name, text in SIZE_OPTIONS))


def dtype_option(sweepable: bool):
    text = "Run dtype (float64 turns on jax_enable_x64 for the run)."
    if sweepable:
        return click.option("--dtype", type=CommaList(click.Choice(DTYPES), "DTYPE[,DTYPE...]"), default="float32",
                            show_default=True, callback=_in_given_order, help=text)
    return click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True, help=text)


selection_options = _options(
    click.option("--backends", help="Comma-separated backends, e.g. jax,torch (default: every one installed)."),
    click.option("--variants", help="Comma-separated variants, or 'all' (default: the variants every chosen"
                 " backend has, so each row has a partner; 'all' adds JAX's threaded and torch's compiled)."),
    click.option("--seed-shape", is_flag=True,
                 help="The seed notebook's shape: B=32 T=512 E=128 H=16 D=8 (other size options override it)."),
)
mask_options = _options(
    click.option("--causal/--no-causal", default=None, help="Causal mask (needs T == S).  [default: no]"),
    click.option("--key-lengths", callback=_key_lengths, help="Valid keys per batch row, e.g. 5,16 (key padding)."),
    click.option("--scale", type=float, help="Logit scale  [default: 1/sqrt(D)]"),
)
run_options = _options(
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the inputs."),
    click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True),
    click.option("--matmul-precision", type=click.Choice(MATMUL_PRECISIONS), default="highest",
                 show_default=True, help="float32 matmul precision in both frameworks; 'default' leaves each"
                 " framework's own setting."),
    click.option("--threads", type=int, help="Intra-op threads for both frameworks, 1 to 1024 [default: XLA's]."),
    click.option("--min-time", type=float, default=0.05, show_default=True,
                 help="Measured seconds per variant before its timing may converge."),
    click.option("--max-time", type=float, default=0.3, show_default=True,
                 help="Measured seconds per variant at most (then it is flagged if noisy)."),
    click.option("--no-timing", is_flag=True, help="Check drift only; skip the timed loop."),
    click.option("--max-memory", help="Refuse to start when the estimated peak memory is over this: a size"
                 " (8GiB, 512MiB) or a share of the memory available now (50%).  [default: 75%]"),
)


def _flag(argument: str) -> str:
    return "--" + argument.replace("_", "-")


def _checked(flag: str, resolve, *args):
    """``resolve(*args)``, its ValueError a usage error of ``flag`` (exit 2)."""
    try:
        return resolve(*args)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=flag) from None


def _prepare_run(backends, variants, **options):
    """``(plan, settings)``, the library's own RunSettings and Plan: bad options are usage errors (exit 2)."""
    from xattn.comparison import settings as run_settings
    from xattn.errors import BackendUnavailableError

    try:
        settings = run_settings.RunSettings(**options)
    except ValueError as error:  # "max_time: expected at least min_time=2; got 1" -> --max-time, in flags
        field, _, message = str(error).partition(": ")
        for name in options:
            message = message.replace(name, _flag(name))
        raise click.BadParameter(message, param_hint=_flag(field)) from None
    settings = run_settings.settle_threads(settings, for_load=True)  # before anything imports JAX
    try:
        names = _checked("--backends", run_settings.resolve_backends, backends)
    except BackendUnavailableError as error:
        raise click.UsageError(str(error)) from None
    runs = _checked("--variants", run_settings.resolve_variants, names, variants)
    device = _checked("--device", run_settings.resolve_device, settings.device, names)
    _enable_caches(names)
    return run_settings.Plan(names, runs, device), settings


def _enable_caches(names) -> None:
    """The compilation caches, a second run skipping XLA and inductor compiles; an unusable one is a warning line."""
    import warnings

    from xattn.backends.caches import enable_compilation_caches

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            enable_compilation_caches(names)
        except ValueError as error:  # XATTN_NO_CACHE=maybe
            raise click.UsageError(str(error)) from None
    for warning in caught:
        click.echo(f"xattn: warning: {warning.message}", err=True)


def _check_memory(plan, specs, settings, names=None) -> None:
    """Exit 2 before anything runs when a problem's estimated peak is over --max-memory."""
    from xattn.comparison import memory
    from xattn.errors import MemoryLimitError

    try:
        memory.check_run(specs, plan, settings, names)
    except MemoryLimitError as error:
        raise click.UsageError(str(error).replace("max_memory", "--max-memory")) from None


@main.command()
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
    plan, settings = _prepare_run(backends, variants, device=device, matmul_precision=matmul_precision,
                                  threads=threads, min_time=min_time, max_time=max_time, timing=not no_timing,
                                  grad=grad, max_memory=max_memory)
    _check_memory(plan, [spec], settings)
    progress = (lambda line: click.echo(f"xattn: {line}", err=True)) if sys.stderr.isatty() else None
    report = comparator.run(plan, spec, settings, progress)
    _emit(report.render(fmt), output)
    raise SystemExit(report.exit_code)


@main.command()
@click.argument("fn_a", metavar="MOD:FN_A")
@click.argument("fn_b", metavar="MOD:FN_B")
@click.option("--inputs", "inputs_path", required=True, metavar="FILE.npz",
              help="The inputs, numpy.savez(FILE, x=x, mask=mask): passed by name where every name is a"
                   " parameter of the function, else in the file's order.")
@click.option("--reference", metavar="MOD:FN|a|b",
              help="The float64 oracle: a NumPy function of the same inputs, or a (b) for that side rerun in"
                   " float64.  [default: none: A is held to a tolerance around B]")
@click.option("--grad", is_flag=True, help="Also compare the gradients of <out, C> with respect to every floating"
                                           " input.")
@click.option("--frameworks", metavar="A,B", help="What each function takes: jax, torch or numpy  [default: guessed]")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table and markdown read at 100 columns; json: see docs/porting.md.")
@output_option
def check(fn_a, fn_b, inputs_path, reference, grad, frameworks, fmt, output):
    """Check your port: do two functions (JAX, torch or NumPy) compute the same thing?

    \b
    MOD is an importable dotted name (the current directory is on the path)
    or a .py file; FN a function or module in it (dotted: model.encoder).
    Both run on the very same input bits; with a reference each output (and,
    with --grad, each gradient) is held to its dtype's budget against the
    float64 oracle, and the side over budget is named.

    \b
    Examples:
      python -c "import numpy as np; np.savez('batch.npz', x=np.ones((2, 8, 64), 'f4'))"
      xattn check model_jax:forward model_torch:forward --inputs batch.npz --reference numpy_ref:forward
      xattn check port.py:flax_model port.py:torch_model --inputs batch.npz --reference a --grad

    \b
    How each function takes the arrays goes to standard error. Exit status 0
    when every output is ok, 1 when any drifted or a function raised, 2 for
    a usage error (a bad MOD:FN, a missing or unreadable npz).
    """
    from xattn.porting.command import TargetError, check_targets, failure
    from xattn.render.port_report import render_drift

    chosen = None if frameworks is None else tuple(f.strip() for f in frameworks.split(","))
    try:
        report = check_targets(fn_a, fn_b, inputs_path, reference=reference, grad=grad, frameworks=chosen,
                               say=lambda line: click.echo(f"xattn check: {line}", err=True))
    except TargetError as error:
        raise click.UsageError(str(error)) from None
    except Exception as error:  # the user's code raised (or its outputs cannot be compared): a failed check
        hint = "" if chosen else "; if a framework was guessed wrong (see above), say which: --frameworks A,B"
        click.echo(f"xattn check: error: {failure(error)}{hint}", err=True)
        raise SystemExit(1) from None
    _emit(render_drift(report, fmt), output)
    raise SystemExit(0 if report.ok else 1)


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


@main.command()
@click.pass_context
@selection_options
@click.option("--seq", type=INTEGERS, callback=_in_given_order,
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
    plan, settings = _prepare_run(backends, variants, device=device, matmul_precision=matmul_precision,
                                  threads=threads, min_time=min_time, max_time=max_time, timing=not no_timing,
                                  max_memory=max_memory)
    _check_memory(plan, [point for _, point in points], settings,
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
    _emit(result.render(fmt), output)
    if plot_path is not None:
        try:
            result.plot(plot_path)
        except OSError as error:  # the disk filled up during the sweep: the report above is kept
            click.echo(f"xattn: could not write {plot_path} ({error.strerror or error})", err=True)
            raise SystemExit(2) from None
        click.echo(f"wrote {plot_path}", err=True)
    raise SystemExit(result.exit_code)


@main.command()
@format_option
@output_option
def env(fmt, output):
    """Versions, devices, thread counts and every numerics flag that changes results."""
    from xattn.backends.env import environment
    from xattn.render.environment import render_env

    _emit(render_env(environment(), fmt), output)


@main.command()
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="Pivot table (table, markdown) or one record per cell (json, csv).")
@output_option
@click.option("--x64/--no-x64", default=None, help="Set jax_enable_x64 for the run (default: as configured).")
@click.option("--layout", "layouts", multiple=True, help="Only these layouts (repeatable; default: all).")
@click.option("--dtype", "dtypes", multiple=True, help="Only these dtypes (repeatable; default: all).")
def bridge(fmt, output, x64, layouts, dtypes):
    """The DLPack bridge on this machine: dtype x direction x layout, zero-copy / copy / error.

    Every cell converts a fresh array with copy=None, False and True, proves zero-copy by buffer
    pointers and checks the bits; a cell marked (!) broke a promise.
    """
    from xattn import _compat
    from xattn.backends.frameworks import FRAMEWORKS
    from xattn.bridge.matrix import bridge_matrix
    from xattn.render.bridge_matrix import render_matrix

    frameworks = ["numpy"]
    for framework in FRAMEWORKS.values():
        try:
            __import__(framework.name)
        except ImportError:
            click.echo(f"{framework.name} is not installed: its directions are left out ({framework.install}).",
                       err=True)
        else:
            frameworks.append(framework.name)
    scope = _compat.jax_x64(x64) if x64 is not None and "jax" in frameworks else contextlib.nullcontext()
    with scope:
        try:
            cells = bridge_matrix(frameworks=frameworks, dtypes=dtypes or None, layouts=layouts or None)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--layout/--dtype") from None
    _emit(render_matrix(cells, fmt), output)
    if any(cell.problems for cell in cells):
        raise SystemExit(1)


def entry_point():
    """The ``xattn`` console script: :func:`main`, then an exit that skips interpreter teardown.

    jaxlib 0.10 on CPU sometimes aborts while the interpreter tears down after DLPack imports
    ("terminate called without an active exception", exit 134), which would replace the
    comparison's exit status; output is flushed and the status kept by leaving through os._exit.
    """
    import os
    import sys

    try:
        main(prog_name="xattn")
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
