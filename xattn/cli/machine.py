"""``xattn env`` and ``xattn bridge``: what this machine has, and how its DLPack bridge behaves."""

from __future__ import annotations

import contextlib

import click

from xattn.cli.options import emit, format_option, output_option
from xattn.render.text import FORMATS


@click.command()
@format_option
@output_option
def env(fmt, output):
    """Versions, devices, thread counts and every numerics flag that changes results."""
    from xattn.backends.env import environment
    from xattn.render.environment import render_env

    emit(render_env(environment(), fmt), output)


@click.command()
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
    emit(render_matrix(cells, fmt), output)
    if any(cell.problems for cell in cells):
        raise SystemExit(1)
