"""``xattn.locate``: where, inside two models, a port starts to drift.

Both models run once on the same input bits with every submodule's output captured
(:mod:`xattn.porting.capture`); the calls are paired across the models (:mod:`xattn.porting.pairing`)
and each pair is judged as check_port judges an output, by :func:`xattn.porting.rows.judge_pair`:

- the *reference* side (``reference="a"`` or ``"b"``), rerun in float64
  (:func:`xattn.porting.modules.float64_version`), gives every intermediate's oracle;
- its own run in the run dtype is the naive run behind each intermediate's budget
  (:func:`xattn.numerics.budget.reference_budget`), with check_port's floor for a side's own run
  (:data:`~xattn.numerics.budget.PORT_ULPS` rounding steps: another library's functions may be
  a few ulps off where the reference's are correctly rounded), repeated with every submodule's
  output re-rounded at random (:func:`xattn.porting.capture.jiggled`) where an intermediate is
  small, as :mod:`xattn.numerics.naive` repeats a NumPy reference: one run is one draw of
  rounding error, and a six-element classifier output needs more draws than that to bound it.
  So each budget is at least the one check_port gives the same output with the same reference.

So each intermediate is held to what rounding in the run dtype does to it, errors inherited from
the submodules before it included, on the reference side: a correct port stays within budget
everywhere, and the first pair over budget in the port's execution order is where the port starts
to compute something else.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

from xattn.backends.calls import arguments, is_array
from xattn.backends.frameworks import side
from xattn.numerics.budget import reference_budget
from xattn.numerics.judge import OK
from xattn.numerics.naive import naive_run_count
from xattn.porting.capture import ROOT, capture
from xattn.porting.modules import (
    FRAMEWORK_OF_KIND,
    MODULE_KINDS_TEXT,
    check_callable,
    dropout_findings,
    float64_version,
    kind_of,
    label,
    parameter_dtypes,
)
from xattn.porting.pairing import pair_calls, pair_outputs
from xattn.porting.rows import PortPair, PortRow, is_floating, judge_pair, run_dtype_of


@dataclasses.dataclass(frozen=True)
class Located:
    """One pair of intermediates (a submodule call's output leaf on each side) judged."""

    #: The intermediate's path on each side (``encoder.layer.1.attention``, ``encoder/layer/1/attention``).
    names: tuple[str, str]
    #: How the pair was found: ``match``, ``name``, ``plural`` or ``order`` (:mod:`xattn.porting.pairing`).
    how: str
    shape: tuple[int, ...]
    #: Each side against the reference's float64 intermediate (:class:`~xattn.porting.rows.PortRow`).
    rows: tuple[PortRow, PortRow]
    #: |a-b| and who is over budget.
    difference: PortPair
    #: Position of the call in the port's (the side that is not the reference) execution order.
    order: int

    @property
    def over(self) -> bool:
        """Whether a side is over budget (or a finding against it, such as another dtype)."""
        return any(row.verdict != OK for row in self.rows)

    @property
    def budget_use(self) -> float:
        """The larger side's err / budget."""
        uses = [row.budget_use for row in self.rows if row.budget_use == row.budget_use]
        return max(uses) if uses else float("nan")


@dataclasses.dataclass(frozen=True, repr=False)
class LocateReport:
    """What :func:`locate` found. ``first`` is where drift starts; ``str(report)`` is the table."""

    #: Each model's label (class and kind), and the short names the table uses for them.
    models: tuple[str, str]
    names: tuple[str, str]
    kinds: tuple[str, str]
    #: ``"a"`` or ``"b"``: whose float64 rerun is the oracle and whose run the naive one.
    reference: str
    dtype: str
    dtype_reason: str
    #: Every pair judged, in the port's execution order.
    pairs: tuple[Located, ...]
    #: Submodule outputs of each side that pair with nothing (``path`` or ``path[leaf]``).
    unmatched: tuple[tuple[str, ...], tuple[str, ...]]
    #: Pairs that could not be judged (``"a ≙ b: why"``), such as outputs of different shapes.
    not_compared: tuple[str, ...] = ()
    #: How many runs of the reference side in the run dtype the budgets take (the first unperturbed).
    naive_runs: int = 1
    notes: tuple[str, ...] = ()

    @property
    def first(self) -> Located | None:
        """The earliest pair over budget in the port's execution order; None when every pair is within."""
        return next((pair for pair in self.pairs if pair.over), None)

    @property
    def unjudged(self) -> tuple[str, ...]:
        """Why a report with no pair over budget still proves nothing: the models' own outputs unjudged.

        A pair that could not be compared (shapes differ) or a model output that paired with nothing
        is a difference locate cannot weigh, so it is never taken for agreement.
        """
        found = [f"not compared: {line}" for line in self.not_compared]
        found += [f"unmatched in {name}: {leaf}" for name, left in zip(self.names, self.unmatched)
                  for leaf in left if leaf.startswith(ROOT)]
        if not any(pair.names[0].startswith(ROOT) and pair.names[1].startswith(ROOT) for pair in self.pairs):
            found.append("the models' own outputs were never paired and judged")
        return tuple(dict.fromkeys(found))

    @property
    def ok(self) -> bool:
        """No pair over budget, and the models' outputs themselves judged (see :attr:`unjudged`)."""
        return self.first is None and not self.unjudged

    def assert_ok(self) -> "LocateReport":
        if not self.ok:
            raise AssertionError("ported model drifts beyond its budget:\n" + str(self))
        return self

    def __str__(self) -> str:
        from xattn.render.locate_report import render_locate_report

        return render_locate_report(self)

    __repr__ = __str__


def locate(a, b, *inputs, match: Mapping[str, str] | Callable | None = None, reference: str = "a",
           names=None, rtol: float | None = None, atol: float | None = None) -> LocateReport:
    """Run models ``a`` and ``b`` on ``inputs`` and judge every pair of submodule outputs; see the module docstring.

    ``a``, ``b``: modules of any kind (:func:`xattn.porting.modules.kind_of`); ``inputs``: arrays
    (NumPy, JAX or torch; other values as they are), the same bits for both. ``match``: pairs the
    names cannot, ``{path_a: path_b}`` or a function ``path_a -> path_b | None``. ``reference``:
    whose float64 rerun is the oracle. ``names``: what the table calls the models (default their
    kinds, or ``a``/``b``). ``rtol``/``atol``: torch.testing's tolerance where no naive budget exists.
    """
    if reference not in ("a", "b"):
        raise ValueError(f"reference: expected 'a' or 'b' (whose float64 rerun is the oracle); got {reference!r}")
    kinds = _kinds(a, b)
    names = _short_names(kinds, names)
    from xattn.bridge import to_numpy

    host = [to_numpy(v) if is_array(v) else v for v in inputs]
    index = 0 if reference == "a" else 1
    models = (a, b)
    ref, ref_kind = models[index], kinds[index]
    dtype, dtype_reason = run_dtype_of(host)
    if not any(is_floating(v) for v in host):
        dtype, dtype_reason = _parameter_dtype(ref, dtype, dtype_reason)

    runs = [_captured(model, kind, host) for model, kind in zip(models, kinds)]
    oracle = _captured_float64(ref, ref_kind, host)
    _check_same_calls(runs[index], oracle, "its float64 rerun")
    naive = [runs[index]] + _repeats(ref, ref_kind, host, runs[index], dtype)
    pairing = pair_calls(runs[0], runs[1], match)

    located, not_compared, left = [], [], ([], [])
    for call_a, call_b, how in pairing.pairs:
        leaf_pairs, left_a, left_b = pair_outputs(call_a, call_b)
        left[0].extend(_shown(call_a, leaf) for leaf in left_a)
        left[1].extend(_shown(call_b, leaf) for leaf in left_b)
        for leaves in leaf_pairs:
            found = _judged((call_a, call_b), leaves, how, index, oracle, naive, names, dtype, rtol, atol)
            (located if isinstance(found, Located) else not_compared).append(found)
    located.sort(key=lambda pair: pair.order)
    unmatched = tuple(tuple(_all_shown(calls) + extra)
                      for calls, extra in zip((pairing.unmatched_a, pairing.unmatched_b), left))
    notes = [note for model in models for note in dropout_findings(model)]
    return LocateReport(models=(label(a), label(b)), names=names, kinds=kinds, reference=reference, dtype=dtype,
                        dtype_reason=dtype_reason, pairs=tuple(located), unmatched=unmatched,
                        not_compared=tuple(not_compared), naive_runs=len(naive), notes=tuple(notes))


def _judged(calls, leaves, how, index, oracle, naive, names, dtype, rtol, atol) -> Located | str:
    """One pair of output leaves judged against the reference's float64 one: a :class:`Located`, or why not."""
    values = [dict(call.outputs)[leaf] for call, leaf in zip(calls, leaves)]
    shown = tuple(_shown(call, leaf) for call, leaf in zip(calls, leaves))
    if values[0].shape != values[1].shape:
        return f"{shown[0]} ≙ {shown[1]}: shapes {values[0].shape} and {values[1].shape} differ"
    order, leaf = calls[index].order, leaves[index]  # a call's order is its place in every run's list
    expected = np.asarray(dict(oracle[order].outputs)[leaf], dtype=np.float64)
    runs_here = [outputs[leaf] for outputs in (dict(run[order].outputs) for run in naive) if leaf in outputs]
    # judged in the dtype the reference computes this intermediate in (an integer one: exactly)
    leaf_dtype = runs_here[0].dtype.name if is_floating(runs_here[0]) else dtype
    budget = reference_budget(runs_here, expected, leaf_dtype, rtol, atol)
    rows, pair = judge_pair(shown[index], names, values[0], values[1], expected, leaf_dtype, budget)
    return Located(shown, how, values[0].shape, tuple(rows), pair, calls[1 - index].order)


def _kinds(a, b) -> tuple[str, str]:
    kinds = (kind_of(a), kind_of(b))
    for which, model, kind in zip("ab", (a, b), kinds):
        if kind is None:
            raise TypeError(f"locate: expected {which} to be {MODULE_KINDS_TEXT}; got {type(model).__name__}."
                            " locate looks inside modules; for plain functions use xattn.check_port")
        check_callable(model, which)
    return kinds


def _short_names(kinds, names) -> tuple[str, str]:
    if names is not None:
        names = tuple(str(name) for name in names)
        if len(names) != 2 or names[0] == names[1]:
            raise ValueError(f"names: expected two different names, one per model; got {names!r}")
        return names
    return kinds if kinds[0] != kinds[1] else ("a", "b")


def _parameter_dtype(model, dtype: str, reason: str) -> tuple[str, str]:
    """The run dtype from the reference model's floating parameters, where no input is floating."""
    found = parameter_dtypes(model)
    if not found:
        return dtype, reason
    chosen = next(name for name in ("float64", "float32", "float16", "bfloat16") if name in found)
    return chosen, f"{chosen}, the reference model's parameters' dtype (no input is floating)"


def _captured(model, kind: str, host, jiggle: int | None = None):
    framework = FRAMEWORK_OF_KIND[kind]
    args = arguments(framework, host)
    return capture(model, kind, lambda: side(framework).call(model, args), jiggle=jiggle)[1]


def _captured_float64(model, kind: str, host):
    rerun = float64_version(model)
    framework = FRAMEWORK_OF_KIND[kind]
    args = arguments(framework, host)
    return capture(rerun.module, kind, lambda: side(framework).call(rerun, args))[1]


def _repeats(model, kind: str, host, first, dtype: str) -> list:
    """The reference's reruns with jiggled outputs: enough for the smallest floating intermediate's draws."""
    sizes = [leaf.size for call in first for _, leaf in call.outputs if is_floating(leaf)]
    if dtype == "float64" or not sizes:
        return []
    repeats = []
    for seed in range(1, naive_run_count(min(sizes))):
        calls = _captured(model, kind, host, jiggle=seed)
        _check_same_calls(first, calls, f"its rerun {seed} with re-rounded outputs")
        # keep only what a budget will read: an intermediate of n elements takes naive_run_count(n) runs,
        # so a large model holds about NAIVE_DRAWS elements per intermediate across its reruns, not 64 copies
        repeats.append([dataclasses.replace(call, outputs=tuple((path, value) for path, value in call.outputs
                                                                if naive_run_count(value.size) > seed))
                        for call in calls])
    return repeats


def _layout(calls) -> list:
    return [(call.name, tuple((path, value.shape) for path, value in call.outputs)) for call in calls]


def _check_same_calls(first, other, what: str) -> None:
    """ValueError unless a rerun of the reference called the same submodules, in order, with the same shapes."""
    expected, found = _layout(first), _layout(other)
    if expected != found:
        at = next(i for i in range(max(len(expected), len(found)))
                  if i >= min(len(expected), len(found)) or expected[i] != found[i])
        raise ValueError(
            f"locate: expected the reference model to call the same submodules with the same output shapes in {what};"
            f" call {at} was {expected[at] if at < len(expected) else 'none'} in its run and"
            f" {found[at] if at < len(found) else 'none'} in {what}. A model whose structure depends on the dtype or"
            " on randomness cannot be located")


def _shown(call, leaf: str) -> str:
    return call.name + leaf


def _all_shown(calls) -> list[str]:
    return [_shown(call, leaf) for call in calls for leaf, _ in call.outputs]
