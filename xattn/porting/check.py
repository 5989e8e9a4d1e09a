"""``xattn.check_port``: do two functions (JAX, torch or NumPy, any mix) compute the same thing?

Both run on the very same input bits, bridged zero-copy into each one's framework
(:mod:`xattn.backends.calls`). Their outputs (an array, or a tuple/list/dict of arrays) come back
to NumPy and are judged leaf by leaf by :mod:`xattn.numerics.judge`:

- with ``reference=`` (a NumPy function, run on float64 copies of the inputs: the oracle), each
  side's drift is measured against the oracle and held to the FlashAttention-style budget, whose
  naive computation is the same reference run on the inputs as they are (in the run dtype); the
  side over budget is named. A reference that cannot run in the run dtype falls back to
  torch.testing's tolerance against the oracle. A reference with a ``rounding_seed=None`` keyword
  (as :func:`xattn.layer_reference`) is rerun with random rounding where the outputs are small, and
  the naive error is the worst run's (:mod:`xattn.numerics.naive`).
- without it, ``a`` is held to torch.testing's per-dtype rtol/atol around ``b``: no attribution.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from xattn.backends.calls import FRAMEWORK_NAMES, OUTPUT, call, is_array
from xattn.bridge.trees import leaves, map_leaves
from xattn.errors import PortCallError
from xattn.numerics.budget import PORT_ULPS, reference_budget
from xattn.numerics.judge import OK
from xattn.porting import modules
from xattn.porting.infer import guess_framework
from xattn.porting.references import as_float64, fallback_note, naive_runs_of
from xattn.porting.rows import PortPair, PortRow, is_floating, judge_pair, run_dtype_of, unattributed

#: ``reference=`` values that make one side's float64 rerun the oracle.
RERUN_SIDES = ("a", "b")


@dataclasses.dataclass(frozen=True, repr=False)
class DriftReport:
    """What :func:`check_port` found. ``str(report)`` is the table; ``assert_ok()`` raises with it."""

    names: tuple[str, str]
    frameworks: tuple[str, str]
    #: The run dtype every value is judged in: the inputs' (see ``dtype_reason``).
    dtype: str
    basis: str
    sides: tuple[PortRow, ...]
    pairs: tuple[PortPair, ...]
    #: What decided the run dtype, in words.
    dtype_reason: str = ""
    #: What the report must say beyond its rows (a budget that fell back to a tolerance, and why;
    #: active dropout, a likely cause of drift).
    notes: tuple[str, ...] = ()
    #: What each side is: ``"TorchNet (torch.nn.Module)"``, ``"function"``.
    kinds: tuple[str, str] = ("", "")

    @property
    def ok(self) -> bool:
        return bool(self.sides) and all(side.verdict == OK for side in self.sides)

    def assert_ok(self) -> "DriftReport":
        if not self.ok:
            raise AssertionError("ported function drifts beyond its budget:\n" + str(self))
        return self

    def __str__(self) -> str:
        from xattn.render.port_report import render_drift_report

        return render_drift_report(self)

    __repr__ = __str__


def check_port(
    fn_a: Callable,
    fn_b: Callable,
    *inputs,
    reference: Callable | str | None = None,
    names: Sequence[str] | None = None,
    frameworks: Sequence[str] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    grad: bool = False,
    grad_reference: Callable | None = None,
    equal_nan: bool = False,
) -> DriftReport:
    """Run ``fn_a`` and ``fn_b`` on the same ``inputs`` (NumPy, JAX or torch arrays, or trees of them).

    ``fn_a``/``fn_b``: a module of any kind (a ``torch.nn.Module``, ``flax.nnx.Module``, bound
    ``flax.linen.Module`` or ``equinox.Module``, recognised by type) or a function. An input may be
    a tree (dicts, lists, tuples of arrays: a params pytree), bridged leaf by leaf; outputs may be
    trees too (dataclasses and ``ModelOutput``-style dicts included), judged leaf by leaf.

    Every value is judged in the *run dtype*, the floating inputs' dtype (the most precise of
    them where they mix); where no input is floating (token ids), the modules' floating parameters'
    dtype; float32 where nothing decides. A side whose value comes back in another dtype is drift.

    ``reference``: ``"a"`` or ``"b"``: that side rerun in float64 is the oracle (a float64 copy of a
    module, or a function whose parameters are all inputs, on float64 inputs; see
    :func:`xattn.porting.modules.float64_version`), and that side's own run in the run dtype is the
    naive run behind the budget. Or a NumPy function of the same inputs: on float64 copies it is
    the oracle, and its run in the run dtype the naive computation (a reference naming a ``dtype``
    keyword, such as ``xattn.reference`` or :func:`xattn.staged` ones, is called with
    ``dtype=<run dtype>``). Where no naive run in the run dtype exists, torch.testing's tolerance
    stands in, and the report's notes and basis say so. ``frameworks``: what each function takes
    (``"jax"``, ``"torch"``, ``"numpy"``); guessed when omitted (:func:`~xattn.porting.infer.guess_framework`),
    and a function that raises on the guessed arrays gets a :class:`~xattn.errors.PortCallError`
    saying what was guessed and why. ``rtol``/``atol`` override torch.testing's tolerance.
    ``equal_nan``: without a reference, whether a NaN on both sides agrees (default no). A value of
    which nothing finite was compared is never ok. ``grad``: also compare the gradients of ⟨out, C⟩
    (a fixed random C) with respect to every floating input leaf, as ``grad/<input>[path]`` rows
    with the same budget and attribution (oracle: ``grad_reference``, or with ``reference="a"`` the
    float64 rerun's gradients; see :mod:`xattn.porting.gradients`).
    """
    from xattn.numerics.blas import check_threads

    with check_threads():  # NumPy's BLAS with one thread: two stall on each other whenever a core is taken
        return _check_port(fn_a, fn_b, inputs, reference, names, frameworks, rtol, atol, grad, grad_reference,
                           equal_nan)


def _check_port(fn_a, fn_b, inputs, reference, names, frameworks, rtol, atol, grad, grad_reference, equal_nan):
    from xattn.bridge import to_numpy

    for side_name, fn in zip(RERUN_SIDES, (fn_a, fn_b)):
        modules.check_callable(fn, f"check_port {side_name}")
    if isinstance(reference, str) and reference not in RERUN_SIDES:
        raise ValueError(f"reference: expected 'a', 'b' or a NumPy function; got {reference!r}")
    reasons = (None, None)
    if frameworks is None:
        (framework_a, reason_a), (framework_b, reason_b) = guess_framework(fn_a), guess_framework(fn_b)
        frameworks, reasons = (framework_a, framework_b), (reason_a, reason_b)
    frameworks = tuple(frameworks)
    if len(frameworks) != 2 or any(f not in FRAMEWORK_NAMES for f in frameworks):
        raise ValueError(f"frameworks: expected two of {', '.join(FRAMEWORK_NAMES)}; got {frameworks!r}")
    names = _names(fn_a, fn_b, names)
    host = [map_leaves(value, lambda path, leaf: to_numpy(leaf) if is_array(leaf) else leaf) for value in inputs]
    out_a, out_b = (_called(names, index, frameworks, reasons, lambda fn=fn, f=f: call(fn, f, host))
                    for index, (fn, f) in enumerate(((fn_a, frameworks[0]), (fn_b, frameworks[1]))))
    _check_same_structure(names, out_a, out_b)
    held = [_held(fn) for fn in (fn_a, fn_b)]
    dtype, dtype_reason = run_dtype_of(host, [(name, _dtypes(found)) for name, found in zip(names, held)])
    notes = [f"{name}: {finding}" for name, found in zip(names, held) for _, module in found
             for finding in modules.dropout_findings(module)]
    rerun = None
    if reference is None:
        sides = [unattributed(names, path, a, b, dtype, rtol, atol, equal_nan=equal_nan)
                 for (path, a), (_, b) in zip(out_a, out_b)]
        pairs = []
        basis = f"{names[0]} against {names[1]}, no reference"
    elif isinstance(reference, str):
        index = RERUN_SIDES.index(reference)
        rerun = (index, _float64_version(reference, (fn_a, fn_b)[index], names[index]))
        sides, pairs = _rerun_attributed(names, rerun, frameworks[index], (out_a, out_b)[index], out_a, out_b, host,
                                         dtype, rtol, atol, notes)
        steps = PORT_ULPS[dtype]
        basis = (f"each against {names[index]}'s float64 rerun, within twice {names[index]}'s own error in"
                 f" {dtype} (the naive run) + {steps} ulp{'s' if steps > 1 else ''}")
    else:
        sides, pairs = _attributed(names, out_a, out_b, reference, host, dtype, rtol, atol, notes)
        basis = "each against the float64 reference"
    if grad:
        from xattn.porting.gradients import gradient_rows

        grad_sides, grad_pairs = gradient_rows(fn_a, fn_b, frameworks, names, host, dtype,
                                               reference=None if rerun else reference,
                                               grad_reference=grad_reference, rtol=rtol, atol=atol, outputs=out_a,
                                               equal_nan=equal_nan, notes=notes, rerun=rerun)
        sides, pairs = [*sides, *grad_sides], [*pairs, *grad_pairs]
    if reference is not None:
        basis += _fallback_in_basis(sides)
    kinds = tuple(modules.label(fn) if modules.kind_of(fn) else "function" for fn in (fn_a, fn_b))
    return DriftReport(names=names, frameworks=frameworks, dtype=dtype, basis=basis, sides=tuple(sides),
                       pairs=tuple(pairs), dtype_reason=dtype_reason, notes=tuple(notes), kinds=kinds)


def _called(names, index, frameworks, reasons, run):
    """``run()``; where it raises and the framework was guessed, a PortCallError saying what was guessed."""
    try:
        return run()
    except Exception as error:
        if reasons[index] is None:
            raise
        other = {"numpy": "torch", "torch": "jax", "jax": "torch"}[frameworks[index]]
        suggestion = tuple(other if i == index else f for i, f in enumerate(frameworks))
        text = " ".join(str(error).split())[:300]
        raise PortCallError(
            f"check_port: {names[index]} raised {type(error).__name__} ({text}) when called with {frameworks[index]}"
            f" arrays. xattn guessed {frameworks[index]} because {reasons[index]}. If {names[index]} takes other"
            f" arrays, say so: frameworks={suggestion!r} (one entry per function: jax, torch or numpy)"
        ) from error


def _held(fn) -> list[tuple[str, object]]:
    """The modules behind a side: itself, or those a function refers to."""
    return [("", fn)] if modules.kind_of(fn) else modules.held_modules(fn)


def _dtypes(held) -> tuple[str, ...]:
    return tuple(sorted({dtype for _, module in held for dtype in modules.parameter_dtypes(module)}))


def _float64_version(reference, fn, name):
    try:
        return modules.float64_version(fn)
    except ValueError as error:
        raise ValueError(f"reference={reference!r}: cannot rerun {name} in float64. {error}") from None


def _rerun_attributed(names, rerun, framework, own, out_a, out_b, host, dtype, rtol, atol, notes):
    """Both sides against one side's float64 rerun; that side's own run is the naive run of the budget."""
    index, float64_run = rerun
    with modules.float64_scope(framework):
        oracle = dict(call(float64_run, framework, as_float64(host)))
    own = dict(own)
    sides, pairs = [], []
    for (path, a), (_, b) in zip(out_a, out_b):
        if path not in oracle:
            raise ValueError(f"check_port: the float64 rerun of {names[index]} returned no {path}; it returned"
                             f" {sorted(oracle)}")
        expected = oracle[path]
        if is_floating(expected) and expected.dtype != np.float64:
            raise ValueError(
                f"reference='{'ab'[index]}': expected the float64 rerun of {names[index]} to give float64 at {path};"
                f" got {expected.dtype.name}: it computes in a fixed narrower dtype somewhere (a dtype= argument?)."
                " Pass reference= a NumPy float64 function instead")
        budget = reference_budget([own[path]], np.asarray(expected, np.float64), dtype, rtol, atol)
        if budget.method == "tolerance" and is_floating(own[path]):
            notes.append(f"budget {path}: {names[index]}'s own run gave {own[path].dtype.name}, not the run dtype"
                         f" {dtype}, so torch.testing's tolerance stands in")
        rows, pair = judge_pair(path, names, a, b, np.asarray(expected, np.float64), dtype, budget)
        sides += rows
        pairs.append(pair)
    return sides, pairs


def _fallback_in_basis(sides) -> str:
    """What the basis line adds when a budget fell back to torch.testing's tolerance: never silent."""
    fallen = list(dict.fromkeys(side.output for side in sides if side.budget.method == "tolerance"))
    if not fallen:
        return ""
    shown = ", ".join(fallen[:3]) + (f" and {len(fallen) - 3} more" if len(fallen) > 3 else "")
    return f"; torch.testing's tolerance stands in for {shown} (see notes)"


def _names(fn_a, fn_b, names) -> tuple[str, str]:
    if names is not None:
        names = tuple(str(n) for n in names)
        if len(names) != 2:
            raise ValueError(f"names: expected two names, one per function; got {names!r}")
        return names
    found = [getattr(fn, "__name__", None) or type(fn).__name__ for fn in (fn_a, fn_b)]
    return (found[0], found[1]) if found[0] != found[1] else (f"{found[0]} (a)", f"{found[1]} (b)")


def _check_same_structure(names, out_a, out_b) -> None:
    for name, out in zip(names, (out_a, out_b)):
        if not out:  # nothing to judge must never read as agreement
            raise ValueError(f"check_port: expected {name} to return an array or a tree of arrays; it returned none"
                             " (None, an empty container, or only non-array values). Return the outputs to compare")
    paths_a, paths_b = [p for p, _ in out_a], [p for p, _ in out_b]
    if paths_a != paths_b:
        raise ValueError(f"check_port: expected both functions to return the same structure; got {names[0]}:"
                         f" {paths_a} and {names[1]}: {paths_b}")
    for (path, a), (_, b) in zip(out_a, out_b):
        if a.shape != b.shape:
            raise ValueError(
                f"check_port: {path}: expected equal shapes; got {names[0]} {a.shape}, {names[1]} {b.shape}"
            )


def _attributed(names, out_a, out_b, reference, host, dtype, rtol, atol, notes):
    oracle = dict(leaves(reference(*as_float64(host)), OUTPUT))
    runs = [dict(leaves(run, OUTPUT)) for run in naive_runs_of(reference, host, dtype, notes, "of the outputs")]
    sides, pairs = [], []
    for (path, a), (_, b) in zip(out_a, out_b):
        if path not in oracle:
            raise ValueError(f"check_port: the reference returned no {path}; it returned {sorted(oracle)}")
        expected = np.asarray(oracle[path], dtype=np.float64)
        leaf_runs = [run[path] for run in runs if run.get(path) is not None]
        budget = reference_budget(leaf_runs, expected, dtype, rtol, atol)
        note = fallback_note(path, leaf_runs[0] if leaf_runs else None, dtype, budget)
        if note:
            notes.append(note)
        rows, pair = judge_pair(path, names, a, b, expected, dtype, budget)
        sides += rows
        pairs.append(pair)
    return sides, pairs
