"""``xattn.check_port``: do two functions (JAX, torch or NumPy, any mix) compute the same thing?

Both run on the very same input bits, bridged zero-copy into each one's framework. Their outputs
(an array, or a tuple/list/dict of arrays) come back to NumPy and are compared leaf by leaf:

- with ``reference=`` (a NumPy function, run on float64 copies of the inputs: the oracle), each
  side's drift is measured against the oracle and held to the FlashAttention-style budget, whose
  naive computation is the same reference run on the inputs as they are (in the run dtype); the
  side over budget is named. A reference that cannot run in the run dtype falls back to
  torch.testing's tolerance against the oracle. A reference with a ``rounding_seed=None`` keyword
  (as :func:`xattn.layer_reference`) is rerun with random rounding where the outputs are small, and
  the naive error is the worst run's (:mod:`xattn.numerics.drift`).
- without it, ``a`` is held to torch.testing's per-dtype rtol/atol around ``b``: no attribution.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, Callable, Sequence

import numpy as np

from xattn.numerics.budget import Budget, naive_budget, tolerance_budget, tolerance_excess, within_budget
from xattn.numerics.drift import DriftMetrics, drift_metrics
from xattn.numerics.judge import attribute
from xattn.numerics.naive import naive_repeats

FRAMEWORK_NAMES = ("jax", "torch", "numpy")
_FRAMEWORK_ROOTS = {"jax": "jax", "jaxlib": "jax", "flax": "jax", "torch": "torch"}


@dataclasses.dataclass(frozen=True)
class PortRow:
    """One function's (or, without a reference, one pair's) drift on one output leaf."""

    name: str
    output: str
    verdict: str
    drift: DriftMetrics
    budget: Budget


@dataclasses.dataclass(frozen=True)
class PortPair:
    output: str
    max_abs_diff: float
    rel_l2_diff: float
    over_budget: tuple[str, ...]
    attribution: str


@dataclasses.dataclass(frozen=True, repr=False)
class DriftReport:
    """What :func:`check_port` found. ``str(report)`` is the table; ``assert_ok()`` raises with it."""

    names: tuple[str, str]
    frameworks: tuple[str, str]
    dtype: str
    basis: str
    sides: tuple[PortRow, ...]
    pairs: tuple[PortPair, ...]

    @property
    def ok(self) -> bool:
        return all(side.verdict == "ok" for side in self.sides)

    def assert_ok(self) -> "DriftReport":
        if not self.ok:
            raise AssertionError("ported function drifts beyond its budget:\n" + str(self))
        return self

    def __str__(self) -> str:
        from xattn.render.port_report import render_drift_report

        return render_drift_report(self)

    __repr__ = __str__


# ------------------------------------------------------------------------------ framework guess


def _root(value) -> str | None:
    if isinstance(value, types.ModuleType):
        name = value.__name__
    else:
        name = getattr(value, "__module__", None) or type(value).__module__
    return _FRAMEWORK_ROOTS.get(str(name).split(".")[0])


def _codes(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _referenced(fn) -> list:
    """Global and closure values a plain function's code (nested functions included) refers to."""
    values = []
    code, globals_ = getattr(fn, "__code__", None), getattr(fn, "__globals__", {})
    if code is not None:
        for each in _codes(code):
            values += [globals_[name] for name in each.co_names if name in globals_]
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # an empty cell
            pass
    return values


def infer_framework(fn: Callable) -> str:
    """``"jax"``, ``"torch"`` or ``"numpy"``: what arrays ``fn`` expects, from what it is and refers to.

    A jitted function or torch module answers for itself; a plain function is judged by the modules
    and functions its code names (``jnp``, ``F``, ``torch``...). Pass ``frameworks=`` to be explicit.
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    if getattr(fn, "framework", None) in FRAMEWORK_NAMES:  # e.g. xattn.layers.check.LayerFunction
        return fn.framework
    own = _root(type(fn))
    if own is not None:
        return own
    fn = getattr(fn, "__wrapped__", fn)
    found = {root for root in map(_root, _referenced(fn)) if root is not None}
    if len(found) > 1:
        raise ValueError(
            f"check_port: expected {getattr(fn, '__name__', fn)!r} to use one framework; it refers to both"
            " jax and torch. Pass frameworks=('jax', 'torch') (one entry per function) to say which arrays it takes"
        )
    return found.pop() if found else "numpy"


# --------------------------------------------------------------------------------------- running


def _is_array(value) -> bool:
    from xattn.bridge import framework_of

    return framework_of(value) is not None or isinstance(value, np.generic)


def _convert(value, framework: str):
    from xattn import bridge

    if not _is_array(value):
        return value
    if framework == "jax":
        return bridge.to_jax(value)
    if framework == "torch":
        return bridge.to_torch(value)
    return bridge.to_numpy(value)


def _leaves(tree, path: str = "out") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        return [leaf for key, value in tree.items() for leaf in _leaves(value, f"{path}[{key!r}]")]
    if isinstance(tree, (list, tuple)):
        return [leaf for index, value in enumerate(tree) for leaf in _leaves(value, f"{path}[{index}]")]
    return [(path, tree)]


def _call(fn, framework: str, inputs) -> list[tuple[str, np.ndarray]]:
    from xattn.bridge import to_numpy

    args = [_convert(value, framework) for value in inputs]
    if framework == "torch":
        import torch

        with torch.no_grad():
            output = fn(*args)
    else:
        output = fn(*args)
    return [(path, np.asarray(to_numpy(leaf))) for path, leaf in _leaves(output)]


def _dtype_name(array: np.ndarray) -> str:
    return str(array.dtype)


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
) -> DriftReport:
    """Run ``fn_a`` and ``fn_b`` on the same ``inputs`` (NumPy, JAX or torch arrays; other values as they are).

    ``reference``: a NumPy function of the same inputs; called on float64 copies it is the oracle,
    called on the inputs as they are it is the naive same-dtype computation behind the budget.
    ``frameworks``: what each function takes (``"jax"``, ``"torch"``, ``"numpy"``); guessed by
    :func:`infer_framework` when omitted. ``rtol``/``atol`` override torch.testing's tolerance.
    ``grad``: also compare the gradients of ⟨out, C⟩ (a fixed random C) with respect to every
    floating-point input, jax.vjp against torch.autograd, as ``grad/<input>`` rows with the same
    budget and attribution (``grad_reference``: their float64 oracle; see :mod:`xattn.porting.gradients`).
    """
    from xattn.bridge import to_numpy

    if frameworks is None:
        frameworks = (infer_framework(fn_a), infer_framework(fn_b))
    frameworks = tuple(frameworks)
    if len(frameworks) != 2 or any(f not in FRAMEWORK_NAMES for f in frameworks):
        raise ValueError(f"frameworks: expected two of {', '.join(FRAMEWORK_NAMES)}; got {frameworks!r}")
    names = _names(fn_a, fn_b, names)
    host = [to_numpy(v) if _is_array(v) else v for v in inputs]
    out_a, out_b = _call(fn_a, frameworks[0], host), _call(fn_b, frameworks[1], host)
    _check_same_structure(names, out_a, out_b)
    dtype = _dtype_name(out_a[0][1]) if out_a else "float32"
    if reference is None:
        sides, pairs = _unattributed(names, out_a, out_b, rtol, atol)
        basis = f"{names[0]} against {names[1]}, no reference"
    else:
        sides, pairs = _attributed(names, out_a, out_b, reference, host, rtol, atol)
        basis = "each against the float64 reference"
    if grad:
        from xattn.porting.gradients import gradient_rows

        grad_sides, grad_pairs = gradient_rows(fn_a, fn_b, frameworks, names, host, reference=reference,
                                               grad_reference=grad_reference, rtol=rtol, atol=atol, outputs=out_a)
        sides, pairs = [*sides, *grad_sides], [*pairs, *grad_pairs]
    return DriftReport(names=names, frameworks=frameworks, dtype=dtype, basis=basis, sides=tuple(sides),
                       pairs=tuple(pairs))


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


def _verdict(metrics: DriftMetrics, budget: Budget, actual, expected) -> str:
    excess = tolerance_excess(actual, expected, budget) if budget.method == "tolerance" else None
    return "ok" if within_budget(metrics, budget, excess) else "drift"


def _run_dtype(array: np.ndarray) -> str:
    name = str(array.dtype)
    return name if name in ("float16", "bfloat16", "float32", "float64") else "float64"


def _unattributed(names, out_a, out_b, rtol, atol):
    sides = []
    for (path, a), (_, b) in zip(out_a, out_b):
        dtype = _run_dtype(a)
        budget = tolerance_budget(dtype, rtol, atol)
        metrics = drift_metrics(a, b.astype(np.float64), dtype)
        sides.append(PortRow(f"{names[0]} vs {names[1]}", path, _verdict(metrics, budget, a, b), metrics, budget))
    return sides, []


def _attributed(names, out_a, out_b, reference, host, rtol, atol):
    as_f64 = [np.asarray(v, dtype=np.float64) if _is_float_array(v) else v for v in host]
    oracle = dict(_leaves(reference(*as_f64)))
    try:
        naive = dict(_leaves(reference(*host)))
    except Exception:  # a reference that cannot run in the run dtype: fall back to the tolerance
        naive = {}
    repeats = [dict(_leaves(run)) for run in naive_repeats(reference, naive.values(),
                                                           lambda seed: reference(*host, rounding_seed=seed))]
    sides, pairs = [], []
    for (path, a), (_, b) in zip(out_a, out_b):
        if path not in oracle:
            raise ValueError(f"check_port: the reference returned no {path}; it returned {sorted(oracle)}")
        expected = np.asarray(oracle[path], dtype=np.float64)
        dtype = _run_dtype(a)
        runs = [naive[path], *(run[path] for run in repeats)] if path in naive else []
        budget = reference_budget(runs, expected, dtype, rtol, atol)
        rows, pair = judge_pair(path, names, a, b, expected, dtype, budget)
        sides += rows
        pairs.append(pair)
    return sides, pairs


def reference_budget(naive_runs, expected, dtype, rtol=None, atol=None) -> Budget:
    """The naive budget from ``naive_runs`` (deterministic run first) where they are in the run dtype.

    A reference that gave no naive run, or one in another dtype, leaves torch.testing's tolerance.
    """
    if naive_runs and str(np.asarray(naive_runs[0]).dtype) == dtype:
        return naive_budget([np.asarray(run) for run in naive_runs], expected, dtype)
    return tolerance_budget(dtype, rtol, atol)


def judge_pair(quantity, names, a, b, expected, dtype, budget):
    """Both sides of one quantity against the float64 ``expected``, and their difference: (rows, pair)."""
    rows, verdicts = [], []
    for name, actual in ((names[0], a), (names[1], b)):
        metrics = drift_metrics(actual, expected, dtype)
        verdict = _verdict(metrics, budget, actual, expected)
        verdicts.append(verdict == "ok")
        rows.append(PortRow(name, quantity, verdict, metrics, budget))
    between = drift_metrics(a, b.astype(np.float64), dtype)
    over, attribution = attribute(names[0], verdicts[0], names[1], verdicts[1])
    return rows, PortPair(quantity, between.max_abs_err, between.rel_l2_err, over, attribution)


def _is_float_array(value) -> bool:
    return isinstance(value, np.ndarray) and (value.dtype.kind == "f" or str(value.dtype) == "bfloat16")

