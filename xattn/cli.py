"""The ``xattn`` command line: one click group; frameworks are imported inside command bodies."""

from __future__ import annotations

import click

from xattn._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
      xattn env
    """


FORMATS = ("table", "json", "markdown", "csv")
format_option = click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
    help="table and markdown read at 100 columns; json follows docs/comparator.md's schema.",
)
output_option = click.option(
    "--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
    help="Write the report to this file instead of standard output.",
)

#: The seed notebook's shape (shared/seed): B=32, T=512, E=128, H=16, D=8.
SEED_SHAPE = {"batch": 32, "q_len": 512, "embed": 128, "heads": 16, "head_dim": 8}


def _names(value: str | None) -> list[str] | None:
    return None if value is None else [name.strip() for name in value.split(",") if name.strip()]


def _key_lengths(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(int(n) for n in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 5,16; got {value!r}") from None


def _emit(text: str, output: str | None) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    with open(output, "w", encoding="utf-8") as handle:
        handle.write(text)
    click.echo(f"wrote {output}", err=True)


@main.command()
@click.option("--backends", help="Comma-separated backends, e.g. jax,torch (default: every one installed).")
@click.option("--variants", help="Comma-separated variants (default: all of each backend).")
@click.option("--seed-shape", is_flag=True,
              help="The seed notebook's shape: B=32 T=512 E=128 H=16 D=8 (other size options override it).")
@click.option("--batch", type=int, help="B  [default: 2]")
@click.option("--q-len", type=int, help="T, query length  [default: 64]")
@click.option("--kv-len", type=int, help="S, key/value length  [default: T]")
@click.option("--embed", type=int, help="E, model width  [default: 64]")
@click.option("--heads", type=int, help="H, query heads  [default: 4]")
@click.option("--kv-heads", type=int, help="G, key/value heads dividing H  [default: H]")
@click.option("--head-dim", type=int, help="D  [default: E // H]")
@click.option("--causal/--no-causal", default=None, help="Causal mask (needs T == S).  [default: no]")
@click.option("--key-lengths", callback=_key_lengths, help="Valid keys per batch row, e.g. 5,16 (key padding).")
@click.option("--scale", type=float, help="Logit scale  [default: 1/sqrt(D)]")
@click.option("--dtype", type=click.Choice(("float32", "float16", "bfloat16", "float64")), default="float32",
              show_default=True, help="Run dtype (float64 turns on jax_enable_x64 for the run).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the inputs.")
@click.option("--device", type=click.Choice(("cpu", "cuda", "auto")), default="cpu", show_default=True)
@click.option("--matmul-precision", type=click.Choice(("highest", "high", "default")), default="highest",
              show_default=True, help="float32 matmul precision in both frameworks (default: leave as is).")
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads for both frameworks [default: XLA's].")
@click.option("--min-time", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Measured seconds per variant before its timing may converge.")
@click.option("--max-time", type=click.FloatRange(min=0), default=0.3, show_default=True,
              help="Measured seconds per variant at most (then it is flagged if noisy).")
@click.option("--no-timing", is_flag=True, help="Check drift only; skip the timed loop.")
@click.option("--grad", is_flag=True,
              help="Also compare gradients (d<out, C>/d x, kv, wq, wk, wv, wo) against the float64 oracle.")
@format_option
@output_option
def compare(backends, variants, seed_shape, dtype, seed, device, matmul_precision, threads, min_time, max_time,
            no_timing, grad, fmt, output, **sizes):
    """Run attention variants of JAX and torch on one problem: drift, verdict, speed.

    \b
    Every row is held to its dtype's budget against a float64 oracle;
    exit status 0 when every row is ok, 1 when any drifted or errored,
    2 for a usage error.
    """
    import sys

    from xattn import comparator
    from xattn.errors import BackendUnavailableError
    from xattn.spec import AttentionSpec

    if max_time < min_time:
        raise click.BadParameter(f"expected at least --min-time={min_time}; got {max_time}", param_hint="--max-time")
    fields = dict(SEED_SHAPE) if seed_shape else {}
    fields.update({name: value for name, value in sizes.items() if value is not None})
    try:
        spec = AttentionSpec(dtype=dtype, seed=seed, **fields)
    except ValueError as error:
        raise click.UsageError(f"impossible spec: {error}") from None
    if threads is not None:
        from xattn.frameworks import request_xla_threads

        request_xla_threads(threads)  # before anything imports JAX
    try:
        names = comparator.resolve_backends(_names(backends))
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--backends") from None
    except BackendUnavailableError as error:
        raise click.UsageError(str(error)) from None
    try:
        comparator.resolve_variants(names, _names(variants))
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--variants") from None
    try:
        comparator.resolve_device(device, names)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--device") from None
    progress = (lambda line: click.echo(f"xattn: {line}", err=True)) if sys.stderr.isatty() else None
    report = comparator.compare(
        names, _names(variants), spec, device=device, matmul_precision=matmul_precision, min_time=min_time,
        max_time=max_time, timing=not no_timing, threads=threads, progress=progress, grad=grad,
    )
    _emit(report.render(fmt), output)
    raise SystemExit(report.exit_code)


@main.command()
@format_option
@output_option
def env(fmt, output):
    """Versions, devices, thread counts and every numerics flag that changes results."""
    from xattn.env import environment
    from xattn.report import render_env

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
    import contextlib

    from xattn import _compat
    from xattn._bridge_matrix import bridge_matrix, render_matrix

    frameworks = ["numpy"]
    for name in ("jax", "torch"):
        try:
            __import__(name)
        except ImportError:
            click.echo(f"{name} is not installed: its directions are left out (pip install 'xattn[{name}]').", err=True)
        else:
            frameworks.append(name)
    scope = _compat.jax_x64(x64) if x64 is not None and "jax" in frameworks else contextlib.nullcontext()
    with scope:
        try:
            cells = bridge_matrix(frameworks=frameworks, dtypes=dtypes or None, layouts=layouts or None)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--layout/--dtype") from None
    _emit(render_matrix(cells, fmt), output)
    if any(cell.problems for cell in cells):
        raise SystemExit(1)
