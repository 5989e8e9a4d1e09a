"""``xattn check``: does a port compute what its original does? The logic is :mod:`xattn.porting.command`."""

from __future__ import annotations

import click

from xattn.cli.options import emit, output_option
from xattn.render.text import FORMATS


@click.command()
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
    emit(render_drift(report, fmt), output)
    raise SystemExit(0 if report.ok else 1)
