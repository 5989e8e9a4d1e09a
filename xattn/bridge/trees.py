"""One walker for nested containers, so that every part of xattn names a leaf by the same path.

A *tree* is a leaf or a container of trees: a ``dict`` (or subclass, such as torch's
``OrderedDict`` state_dict or a Hugging Face ``ModelOutput``), a ``list``, a ``tuple`` (namedtuples
included) or a dataclass instance (a model's output record). Everything else is a leaf: arrays of
any framework, but also ``None``, numbers, strings and other objects; the walker
never asks what a leaf is, the caller's function decides.

A leaf's *path* is ``root`` followed by one subscript per level, ``[{key!r}]`` for a dict key and
``[{index}]`` for a list or tuple position, ``.{field}`` for a dataclass field::

    >>> leaves({"attn": [1, 2]}, root="out")
    [("out['attn'][0]", 1), ("out['attn'][1]", 2)]

The bridge's ``tree_to_*`` use the default root ``""`` (``['attn'][1]``); the porting checks use
``root="out"`` for a function's output. Paths made with the same root are the same strings in
both functions here, so a path from :func:`leaves` can key a dict that :func:`map_leaves` reads.

Imports nothing but the standard library: no NumPy, no framework.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any


def leaves(tree, root: str = "") -> list[tuple[str, Any]]:
    """Every leaf of ``tree`` with its path, depth first in the containers' own order.

    A leaf at the top (``tree`` is no container) gets the path ``root`` itself. Empty containers
    have no leaves.
    """
    found: list[tuple[str, Any]] = []
    map_leaves(tree, lambda path, leaf: found.append((path, leaf)), root)
    return found


def map_leaves(tree, fn: Callable[[str, Any], Any], root: str = ""):
    """``tree`` rebuilt with every leaf replaced by ``fn(path, leaf)``; containers keep their type.

    ``fn`` is called once per leaf, depth first in the containers' own order, and decides itself
    what to do with leaves it does not convert (return them as they are). Rebuilding keeps:

    - a plain ``dict``, ``list`` or ``tuple`` as that type;
    - a dict subclass as a shallow ``copy.copy`` of it, updated with the new values, so its class
      and attributes survive (a torch state_dict's ``_metadata``) and ``tree`` is not changed;
    - a namedtuple as the same namedtuple, built field by field;
    - any other list or tuple subclass as ``type(tree)(new_items)``;
    - a dataclass instance (not a dict) as a shallow copy with its fields set anew, frozen or not.

    An exception raised by ``fn`` propagates as it is; ``fn`` gets the path so that it can name
    the place in its own message.
    """
    if isinstance(tree, dict):
        items = {key: map_leaves(value, fn, f"{root}[{key!r}]") for key, value in tree.items()}
        if type(tree) is dict:
            return items
        result = copy.copy(tree)
        result.update(items)
        return result
    if isinstance(tree, (list, tuple)):
        items = [map_leaves(value, fn, f"{root}[{index}]") for index, value in enumerate(tree)]
        if type(tree) in (list, tuple):
            return type(tree)(items)
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        fields = {field.name: map_leaves(getattr(tree, field.name), fn, f"{root}.{field.name}")
                  for field in dataclasses.fields(tree)}
        result = copy.copy(tree)
        for name, value in fields.items():
            object.__setattr__(result, name, value)  # frozen dataclasses too
        return result
    return fn(root, tree)
