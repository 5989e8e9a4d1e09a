"""Walking nested dicts, lists and tuples of arrays with a path to each leaf (placeholder; see the bridge branch)."""

from __future__ import annotations


def map_leaves(tree, fn, root: str = ""):
    """``tree`` with each leaf replaced by ``fn(path, leaf)``; paths like ``root['key'][0]``."""
    if isinstance(tree, dict):
        return type(tree)({key: map_leaves(value, fn, f"{root}[{key!r}]") for key, value in tree.items()})
    if isinstance(tree, (list, tuple)):
        items = [map_leaves(value, fn, f"{root}[{index}]") for index, value in enumerate(tree)]
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
    return fn(root, tree)


def leaves(tree, root: str = "") -> list:
    """``[(path, leaf)]`` in the order :func:`map_leaves` visits them."""
    found = []
    map_leaves(tree, lambda path, leaf: found.append((path, leaf)), root)
    return found
