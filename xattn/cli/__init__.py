"""The ``xattn`` command line: one click group; frameworks are imported inside command bodies.

The group, its signal handling and the console script live here; the commands live in
:mod:`~xattn.cli.run` (compare, sweep), :mod:`~xattn.cli.port` (check) and
:mod:`~xattn.cli.machine` (env, bridge), and share :mod:`~xattn.cli.options`.
"""

from __future__ import annotations

import contextlib
import signal
import threading

import click

from xattn._version import __version__
from xattn.cli.machine import bridge, env
from xattn.cli.port import check
from xattn.cli.run import compare, sweep


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


main.add_command(compare)
main.add_command(check)
main.add_command(sweep)
main.add_command(env)
main.add_command(bridge)


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
