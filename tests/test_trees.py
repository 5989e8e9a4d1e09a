"""The one tree walker (xattn.bridge.trees): path strings, rebuilt containers, leaves left alone.

The path formats here are the ones the bridge's errors ("tree_to_jax: at ['weight']: ...") and the
porting reports ("out['attn'][0]") already print; they must not change.
"""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import pytest

from xattn.bridge.trees import leaves, map_leaves

Pair = collections.namedtuple("Pair", "first second")


class StateDict(collections.OrderedDict):
    """Like torch's state_dict: an OrderedDict subclass carrying an attribute."""


class Tagged(list):
    pass


def _tree():
    state = StateDict(weight="w", bias="b")
    state._metadata = {"": {"version": 1}}
    return {"state": state, "list": [1, None, ("x", Pair("p0", ["deep"]))], 3: "int key"}


def test_leaves_name_every_leaf_in_order_from_the_default_root():
    assert leaves(_tree()) == [
        ("['state']['weight']", "w"),
        ("['state']['bias']", "b"),
        ("['list'][0]", 1),
        ("['list'][1]", None),
        ("['list'][2][0]", "x"),
        ("['list'][2][1][0]", "p0"),
        ("['list'][2][1][1][0]", "deep"),
        ("[3]", "int key"),
    ]


def test_a_root_prefixes_every_path_as_the_porting_reports_write_them():
    assert leaves({"attn": [10, 20]}, root="out") == [("out['attn'][0]", 10), ("out['attn'][1]", 20)]
    assert leaves(("a", {"b": "c"}), root="out") == [("out[0]", "a"), ("out[1]['b']", "c")]


def test_a_bare_leaf_is_its_own_root_and_empty_containers_have_no_leaves():
    assert leaves("array") == [("", "array")]
    assert leaves(5, root="out") == [("out", 5)]
    assert leaves({"a": [], "b": {}, "c": ()}) == []


def test_map_leaves_passes_the_same_paths_that_leaves_gives():
    seen = []
    map_leaves(_tree(), lambda path, leaf: seen.append((path, leaf)), root="out")
    assert seen == leaves(_tree(), root="out")


def test_map_leaves_rebuilds_every_container_type():
    tree = _tree()
    mapped = map_leaves(tree, lambda path, leaf: f"<{leaf}>" if isinstance(leaf, str) else leaf)
    assert type(mapped) is dict and list(mapped) == ["state", "list", 3]
    assert type(mapped["state"]) is StateDict and list(mapped["state"].items()) == [("weight", "<w>"), ("bias", "<b>")]
    assert mapped["state"]._metadata == {"": {"version": 1}}
    assert type(mapped["list"]) is list and mapped["list"][:2] == [1, None]  # other leaves kept as they are
    inner = mapped["list"][2]
    assert type(inner) is tuple and inner[0] == "<x>"
    assert type(inner[1]) is Pair and inner[1] == Pair("<p0>", ["<deep>"])
    assert mapped[3] == "<int key>"


def test_map_leaves_leaves_the_input_unchanged():
    tree = _tree()
    map_leaves(tree, lambda path, leaf: "replaced")
    assert leaves(tree) == leaves(_tree())
    assert tree["state"]._metadata == {"": {"version": 1}}


def test_other_list_and_tuple_subclasses_are_rebuilt_from_their_items():
    mapped = map_leaves(Tagged([1, 2]), lambda path, leaf: leaf * 10)
    assert type(mapped) is Tagged and mapped == [10, 20]


def test_dataclasses_are_walked_by_field_and_rebuilt_without_touching_the_input():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Output:
        logits: object
        hidden: tuple
        extra: object = None

    class ModelOutput(collections.OrderedDict):  # Hugging Face's: a dict subclass, walked as a dict
        pass

    tree = Output("l", ("h0", "h1"), ModelOutput(loss="x"))
    assert leaves(tree, "out") == [("out.logits", "l"), ("out.hidden[0]", "h0"), ("out.hidden[1]", "h1"),
                                   ("out.extra['loss']", "x")]
    mapped = map_leaves(tree, lambda path, leaf: path)
    assert type(mapped) is Output and mapped.hidden == (".hidden[0]", ".hidden[1]")
    assert type(mapped.extra) is ModelOutput and mapped.extra["loss"] == ".extra['loss']"
    assert tree.logits == "l"  # the input is unchanged


def test_an_error_in_fn_propagates_as_it_is():
    def fail(path, leaf):
        raise KeyError(path)

    with pytest.raises(KeyError, match=r"out\['a'\]\[1\]"):
        map_leaves({"a": [0, 1]}, lambda path, leaf: fail(path, leaf) if leaf else leaf, root="out")


def test_the_walker_imports_neither_numpy_nor_any_framework():
    path = Path(__file__).resolve().parent.parent / "xattn" / "bridge" / "trees.py"
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('trees', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "assert module.leaves({'a': [1]}) == [(\"['a'][0]\", 1)]\n"
        "print(sorted({'numpy', 'jax', 'torch', 'xattn'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
