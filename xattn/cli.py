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
