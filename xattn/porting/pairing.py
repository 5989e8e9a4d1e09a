"""Which submodule call of one model is which of the other's: :func:`pair_calls`.

Calls (:class:`xattn.porting.capture.Call`) are paired in four passes, each over what the
passes before it left:

1. ``match``: the caller's mapping ``{path_a: path_b}`` or function ``path_a -> path_b | None``
   (paths as either framework writes them; the n-th call of a module pairs with the n-th);
2. the same *normalised path*: split at ``.``, ``/`` and brackets, lower case, and a trailing
   ``_<n>`` (linen's ``layers_1``) split off, so ``encoder.layer.1.attention`` ≙
   ``encoder/layer/1/attention`` ≙ ``encoder.layer[1].attention``;
3. the same path once plural words lose their ``s`` (``layers.1`` ≙ ``layer.1``), where that
   names one call on each side;
4. execution order and shape: between two calls already paired, the calls left on each side are
   aligned in order by their output shapes (a longest common subsequence).

Within a pair of calls, the output leaves pair by their path in the output, else in order where
both sides return as many, else in order by shape. What pairs with nothing is listed apart.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Mapping

#: How a pair was found, for the report.
BY_MATCH, BY_NAME, BY_LOOSE_NAME, BY_ORDER = "match", "name", "plural", "order"


@dataclasses.dataclass(frozen=True)
class Pairing:
    """Paired calls ``(call_a, call_b, how)`` in side a's order, and the calls of each side left alone."""

    pairs: tuple
    unmatched_a: tuple
    unmatched_b: tuple


def normalised(path: str | tuple) -> tuple[str, ...]:
    """A path's framework-free form: ``"encoder/layers_1/Attention"`` -> ``("encoder", "layers", "1", "attention")``."""
    parts = path if isinstance(path, tuple) else (path,)
    tokens = []
    for part in parts:
        for token in re.split(r"[./\[\]'\"\s]+", str(part)):
            if not token:
                continue
            split = re.fullmatch(r"(.*[^_\d])_(\d+)", token)
            tokens += [split[1].lower(), split[2]] if split else [token.lower()]
    return tuple(tokens)


def _loose(tokens: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(t[:-1] if len(t) > 3 and t.isalpha() and t.endswith("s") and not t.endswith("ss") else t
                 for t in tokens)


def pair_calls(calls_a, calls_b, match: Mapping[str, str] | Callable | None = None) -> Pairing:
    """Pair two models' calls (each in execution order) as the module docstring says."""
    calls_a, calls_b = [c for c in calls_a if c.outputs], [c for c in calls_b if c.outputs]
    paired: dict[int, tuple[int, str]] = {}  # index in calls_a -> (index in calls_b, how)
    taken: set[int] = set()

    def take(key_a, key_b, how, unique=False):
        index_b = {}
        for j, call in enumerate(calls_b):
            if j not in taken:
                index_b.setdefault(key_b(call), []).append(j)
        index_a = {}
        for i, call in enumerate(calls_a):
            if i not in paired:
                key = key_a(call)
                if key is not None:
                    index_a.setdefault(key, []).append(i)
        for key, on_a in index_a.items():
            on_b = index_b.get(key, [])
            if unique and (len(on_a) != 1 or len(on_b) != 1):
                continue
            for i, j in zip(on_a, on_b):
                paired[i] = (j, how)
                taken.add(j)

    if match is not None:
        lookup = _match_function(match)

        def matched(call):
            target = lookup(call.path)
            return None if target is None else (normalised(target), call.call)

        take(matched, lambda call: (normalised(call.parts), call.call), BY_MATCH)
    take(lambda call: (normalised(call.parts), call.call), lambda call: (normalised(call.parts), call.call), BY_NAME)
    take(lambda call: (_loose(normalised(call.parts)), call.call),
         lambda call: (_loose(normalised(call.parts)), call.call), BY_LOOSE_NAME, unique=True)
    _by_order(calls_a, calls_b, paired, taken)
    pairs = tuple((calls_a[i], calls_b[j], how) for i, (j, how) in sorted(paired.items()))
    return Pairing(pairs, tuple(c for i, c in enumerate(calls_a) if i not in paired),
                   tuple(c for j, c in enumerate(calls_b) if j not in taken))


def _match_function(match) -> Callable[[str], str | None]:
    if callable(match):
        return match
    if isinstance(match, Mapping):
        table = {normalised(key): value for key, value in match.items()}
        return lambda path: table.get(normalised(path))
    raise TypeError(f"match: expected a mapping {{path_a: path_b}} or a function path_a -> path_b; got"
                    f" {type(match).__name__}")


def _signature(call) -> tuple:
    return tuple((leaf.shape, leaf.dtype.kind) for _, leaf in call.outputs)


def _by_order(calls_a, calls_b, paired, taken) -> None:
    """Pair what is left between consecutive anchors (pairs in order on both sides) by shape, in order."""
    anchors, last_b = [(-1, -1)], -1
    for i, (j, _) in sorted(paired.items()):
        if j > last_b:  # pairs that cross others are no anchors
            anchors.append((i, j))
            last_b = j
    anchors.append((len(calls_a), len(calls_b)))
    for (start_a, start_b), (end_a, end_b) in zip(anchors, anchors[1:]):
        left_a = [i for i in range(start_a + 1, end_a) if i not in paired]
        left_b = [j for j in range(start_b + 1, end_b) if j not in taken]
        for i, j in _common_subsequence([_signature(calls_a[i]) for i in left_a],
                                        [_signature(calls_b[j]) for j in left_b]):
            paired[left_a[i]] = (left_b[j], BY_ORDER)
            taken.add(left_b[j])


def _common_subsequence(first: list, second: list) -> list[tuple[int, int]]:
    """Index pairs of a longest common subsequence of two lists (equal items)."""
    rows, cols = len(first), len(second)
    length = [[0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(rows - 1, -1, -1):
        for j in range(cols - 1, -1, -1):
            length[i][j] = length[i + 1][j + 1] + 1 if first[i] == second[j] else max(length[i + 1][j],
                                                                                      length[i][j + 1])
    found, i, j = [], 0, 0
    while i < rows and j < cols:
        if first[i] == second[j]:
            found.append((i, j))
            i, j = i + 1, j + 1
        elif length[i + 1][j] >= length[i][j + 1]:
            i += 1
        else:
            j += 1
    return found


def pair_outputs(call_a, call_b) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """``(pairs, left_a, left_b)``: the two calls' output leaves paired by path, else in order, else by shape."""
    paths_a, paths_b = [p for p, _ in call_a.outputs], [p for p, _ in call_b.outputs]
    if paths_a == paths_b or len(paths_a) == len(paths_b):
        return list(zip(paths_a, paths_b)), [], []
    shapes_a, shapes_b = dict(call_a.outputs), dict(call_b.outputs)
    pairs = [(p, p) for p in paths_a if p in shapes_b]
    rest_a = [p for p in paths_a if p not in shapes_b]
    rest_b = [p for p in paths_b if p not in shapes_a]
    for i, j in _common_subsequence([shapes_a[p].shape for p in rest_a], [shapes_b[p].shape for p in rest_b]):
        pairs.append((rest_a[i], rest_b[j]))
    used_a, used_b = {a for a, _ in pairs}, {b for _, b in pairs}
    pairs.sort(key=lambda pair: paths_a.index(pair[0]))
    return pairs, [p for p in paths_a if p not in used_a], [p for p in paths_b if p not in used_b]
