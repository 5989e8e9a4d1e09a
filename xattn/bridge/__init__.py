"""The DLPack bridge: NumPy, JAX and torch arrays converted so that every framework reads the same bits.

:mod:`~xattn.bridge.convert` holds the public conversions (re-exported here), :mod:`~xattn.bridge.paths`
one path per (source, target) pair, :mod:`~xattn.bridge.rules` the checks those paths share,
:mod:`~xattn.bridge.trees` the one walker of nested dicts, lists and tuples (and the leaf paths every
part of xattn names), and :mod:`~xattn.bridge.matrix` the measured dtype x direction x layout table
of ``xattn bridge``.
Importing any of them imports no framework.
"""

from xattn.bridge.convert import (
    FRAMEWORKS,
    buffer_pointer,
    framework_of,
    to_jax,
    to_numpy,
    to_torch,
    tree_to_jax,
    tree_to_numpy,
    tree_to_torch,
)

__all__ = [
    "FRAMEWORKS", "buffer_pointer", "framework_of", "to_jax", "to_numpy", "to_torch", "tree_to_jax",
    "tree_to_numpy", "tree_to_torch",
]
