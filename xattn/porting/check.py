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
from xattn.bridge.trees import leaves
from xattn.numerics.budget import reference_budget
from xattn.numerics.judge import OK
from xattn.porting.infer import infer_framework
from xattn.porting.references import as_float64, fallback_note, naive_runs_of
from xattn.porting.rows import PortPair, PortRow, judge_pair, run_dtype_of, unattributed


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
    #: What the report must say beyond its rows (a budget that fell back to a tolerance, and why).
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(side.verdict == OK for side in self.sides)

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
    reference: Callable | None = None,
    names: Sequence[str] | None = None,
    frameworks: Sequence[str] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    grad: bool = False,
    grad_reference: Callable | None = None,
    equal_nan: bool = False,
) -> DriftReport:
    """Run ``fn_a`` and ``fn_b`` on the same ``inputs`` (NumPy, JAX or torch arrays; other values as they are).

    Every value is judged in the *run dtype*, the floating inputs' dtype (the most precise of
    them where they mix; float32 where there are none), never in what a side returned: a side whose
    value comes back in another dtype is drift, and the report says so.

    ``reference``: a NumPy function of the same inputs; called on float64 copies it is the oracle,
    and its run in the run dtype is the naive same-dtype computation behind the budget: a reference
    naming a ``dtype`` keyword (``xattn.reference``, ``xattn.layer_reference``, :func:`xattn.staged`
    ones) is called with ``dtype=<run dtype>``, any other on the inputs as they are; where that gives
    no run in the run dtype, torch.testing's tolerance stands in and the report says why.
    ``frameworks``: what each function takes (``"jax"``, ``"torch"``, ``"numpy"``); guessed by
    :func:`~xattn.porting.infer.infer_framework` when omitted. ``rtol``/``atol`` override
    torch.testing's tolerance. ``equal_nan``: without a reference, whether a NaN on both sides
    agrees (default no: two NaNs prove nothing; against a reference, a NaN where the oracle has one
    is right). A value of which nothing finite was compared is never ok. ``grad``: also compare the
    gradients of ⟨out, C⟩ (a fixed random C) with respect to every floating-point input, jax.vjp
    against torch.autograd, as ``grad/<input>`` rows with the same budget and attribution
    (``grad_reference``: their float64 oracle; see :mod:`xattn.porting.gradients`).
    """
    from xattn.numerics.blas import check_threads

    with check_threads():  # NumPy's BLAS with one thread: two stall on each other whenever a core is taken
        return _check_port(fn_a, fn_b, inputs, reference, names, frameworks, rtol, atol, grad, grad_reference,
                           equal_nan)


def _check_port(fn_a, fn_b, inputs, reference, names, frameworks, rtol, atol, grad, grad_reference, equal_nan):
    from xattn.bridge import to_numpy

    if frameworks is None:
        frameworks = (infer_framework(fn_a), infer_framework(fn_b))
    frameworks = tuple(frameworks)
    if len(frameworks) != 2 or any(f not in FRAMEWORK_NAMES for f in frameworks):
        raise ValueError(f"frameworks: expected two of {', '.join(FRAMEWORK_NAMES)}; got {frameworks!r}")
    names = _names(fn_a, fn_b, names)
    host = [to_numpy(v) if is_array(v) else v for v in inputs]
    out_a, out_b = call(fn_a, frameworks[0], host), call(fn_b, frameworks[1], host)
    _check_same_structure(names, out_a, out_b)
    dtype, dtype_reason = run_dtype_of(host)
    notes = []
    if reference is None:
        sides = [unattributed(names, path, a, b, dtype, rtol, atol, equal_nan=equal_nan)
                 for (path, a), (_, b) in zip(out_a, out_b)]
        pairs = []
        basis = f"{names[0]} against {names[1]}, no reference"
    else:
        sides, pairs = _attributed(names, out_a, out_b, reference, host, dtype, rtol, atol, notes)
        basis = "each against the float64 reference"
    if grad:
        from xattn.porting.gradients import gradient_rows

        grad_sides, grad_pairs = gradient_rows(fn_a, fn_b, frameworks, names, host, dtype, reference=reference,
                                               grad_reference=grad_reference, rtol=rtol, atol=atol, outputs=out_a,
                                               equal_nan=equal_nan, notes=notes)
        sides, pairs = [*sides, *grad_sides], [*pairs, *grad_pairs]
    return DriftReport(names=names, frameworks=frameworks, dtype=dtype, basis=basis, sides=tuple(sides),
                       pairs=tuple(pairs), dtype_reason=dtype_reason, notes=tuple(notes))


def _names(fn_a, fn_b, names) -> tuple[str, str]:
    if names is not None:
        names = tuple(str(n) for n in names)
        if len(names) != 2:
            raise ValueError(f"names: expected two names, one per function; got {names!r}")
        return names
    found = [getattr(fn, "__name__", None) or type(fn).__name__ for fn in (fn_a, fn_b)]
    return (found[0], found[1]) if found[0] != found[1] else (f"{found[0]} (a)", f"{found[1]} (b)")


def _check_same_structure(names, out_a, out_b) -> None:
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
