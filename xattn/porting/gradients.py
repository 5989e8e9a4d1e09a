"""Gradients compared like outputs: jax.vjp against torch.autograd, against a float64 oracle.

The scalar loss is ⟨out, C⟩ = Σ out·C for a fixed cotangent C ~ N(0, 1), drawn from
:data:`COTANGENT_SEED` and rounded to the output's dtype, so each gradient is a vector-Jacobian
product, d⟨out, C⟩ / d input, taken for every floating-point input (data and weights alike) and
reported as ``grad/<input name>`` beside the output rows, with the same metrics, budget and
attribution (:mod:`xattn.numerics.drift`).

The oracle of the contract's gradients is :func:`xattn.numerics.layer_oracle.reference_vjp`, the attention
backward written out in NumPy float64 (with the layers' biases when given); on run-dtype inputs it
is the naive same-dtype computation behind the budget. NumPy only at import; a framework is
imported when a function of it is differentiated.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np

from xattn.contract.spec import numpy_dtype
from xattn.numerics.budget import NAIVE_FACTOR, naive_budget, rounding_step, tolerance_budget, within_budget
from xattn.numerics.drift import drift_metrics
from xattn.numerics.layer_oracle import reference_vjp
from xattn.numerics.naive import naive_repeats, naive_runs

#: Seed of the cotangent C in the loss ⟨out, C⟩ (apart from the inputs' seed, so C is not x).
COTANGENT_SEED = 20240917

#: Prefix of a gradient row's quantity: ``grad/x``, ``grad/wq``...
GRAD = "grad/"

#: A gradient whose float64 oracle stays below this fraction of the largest one is zero in exact
#: arithmetic (float64 rounding leaves ~1e-16 of the terms), and gets that largest one's rounding step.
STRUCTURAL_ZERO = 1e-9


def cotangent_like(output, seed: int = COTANGENT_SEED, index: int = 0) -> np.ndarray:
    """C ~ N(0, 1) shaped like ``output`` and rounded to its dtype: the same bits for every framework."""
    rng = np.random.default_rng([seed, index])
    output = np.asarray(output)
    return rng.standard_normal(output.shape).astype(output.dtype)


def differentiable(value) -> bool:
    """Whether an input gets a gradient: a floating-point NumPy array (bfloat16 included)."""
    return isinstance(value, np.ndarray) and (value.dtype.kind == "f" or value.dtype.name in ("bfloat16", "float16"))


def input_names(fn, count: int) -> tuple[str, ...]:
    """Names of ``fn``'s first ``count`` positional parameters, or ``inputs[i]`` where they are unknown."""
    try:
        parameters = [p for p in inspect.signature(fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        parameters = []
    names = [p.name for p in parameters[:count]]
    return tuple(names + [f"inputs[{i}]" for i in range(len(names), count)])


# ------------------------------------------------------------------------------- framework VJPs


def _map_leaves(tree, fn, path: str = "out"):
    """``tree`` with each array leaf replaced by ``fn(path, leaf)``; paths as check._leaves names them."""
    if isinstance(tree, dict):
        return type(tree)({key: _map_leaves(value, fn, f"{path}[{key!r}]") for key, value in tree.items()})
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map_leaves(value, fn, f"{path}[{index}]") for index, value in enumerate(tree))
    return fn(path, tree)


def framework_vjp(fn, framework: str, inputs, cotangents: dict, wrt, device=None) -> list[np.ndarray]:
    """Gradients of ⟨fn(*inputs), C⟩ for the inputs at positions ``wrt``, as NumPy arrays.

    ``framework``: ``"jax"`` (jax.vjp) or ``"torch"`` (torch.autograd.grad); ``inputs`` are NumPy
    arrays (other values pass as they are) bridged zero-copy; ``cotangents`` maps each output
    leaf's path to its C. An input the output does not depend on gets zeros. ``device``: where the
    inputs go (the bridge's ``device=``; default the host).
    """
    from xattn.bridge import to_jax, to_numpy, to_torch

    if framework == "jax":
        import jax

        args = [to_jax(v, device=device) if isinstance(v, np.ndarray) else v for v in inputs]

        def of_differentiated(*values):
            full = list(args)
            for index, value in zip(wrt, values):
                full[index] = value
            return fn(*full)

        out, pullback = jax.vjp(of_differentiated, *[args[i] for i in wrt])
        grads = pullback(_map_leaves(out, lambda path, leaf: to_jax(cotangents[path], device=device)))
        return [np.asarray(to_numpy(g)) for g in grads]
    if framework == "torch":
        import torch

        args = [to_torch(v, device=device) if isinstance(v, np.ndarray) else v for v in inputs]
        for index in wrt:
            args[index] = args[index].detach().requires_grad_(True)
        with torch.enable_grad():
            out = fn(*args)
        leaves, cots = [], []

        def collect(path, leaf):
            leaves.append(leaf)
            cots.append(to_torch(cotangents[path], device=device))

        _map_leaves(out, collect)
        grads = torch.autograd.grad(leaves, [args[i] for i in wrt], grad_outputs=cots, allow_unused=True)
        return [to_numpy(torch.zeros_like(args[i]) if g is None else g.detach()).copy()
                for i, g in zip(wrt, grads)]
    raise ValueError(f"grad: expected a jax or torch function to differentiate; got framework {framework!r}")


# ------------------------------------------------------------------------- rows for check_port


def gradient_rows(fn_a, fn_b, frameworks, names, host, *, reference=None, grad_reference=None, rtol=None,
                  atol=None, outputs=None):
    """check_port's gradient rows and pairs: one ``grad/<input>`` row per function (or per pair).

    The oracle is ``grad_reference(*inputs, cotangent=C)`` on float64 copies, returning gradients
    aligned with the inputs (a sequence, ``None`` where not differentiable) or a dict by input name;
    on the inputs as they are it is the naive computation behind the budget. Without it but with a
    forward ``reference``, ``fn_a`` run in float64 stands in as the oracle (JAX under x64) and the
    budget is torch.testing's tolerance around it (one sample of a's own rounding is no yardstick).
    Without either, ``a`` is held to that tolerance around ``b``, as outputs are. ``outputs``: the
    forward's ``[(path, array)]`` (for C's shapes).
    """
    from xattn.porting.check import PortRow, _call, _verdict, judge_pair, reference_budget

    frameworks = tuple(frameworks)
    for name, framework in zip(names, frameworks):
        if framework not in ("jax", "torch"):
            raise ValueError(f"grad: expected {name} to be a jax or torch function (NumPy has no autodiff);"
                             f" got framework {framework!r}. Pass frameworks=... if the guess is wrong")
    wrt = [i for i, value in enumerate(host) if differentiable(value)]
    if not wrt:
        raise ValueError("grad: expected at least one floating-point input to differentiate; got none")
    labels = input_names(fn_a, len(host))
    if outputs is None:
        outputs = _call(fn_a, frameworks[0], host)
    cotangents = {path: cotangent_like(array, index=i) for i, (path, array) in enumerate(outputs)}
    grads_a = framework_vjp(fn_a, frameworks[0], host, cotangents, wrt)
    grads_b = framework_vjp(fn_b, frameworks[1], host, cotangents, wrt)
    oracle = naive = None
    if grad_reference is not None:
        cot = [cotangents[path] for path, _ in outputs]
        cot = cot[0] if len(cot) == 1 else cot
        as_f64 = [np.asarray(v, np.float64) if differentiable(v) else v for v in host]
        f64_cot = np.asarray(cot, np.float64) if not isinstance(cot, list) else [np.asarray(c, np.float64) for c in cot]
        oracle = _aligned(grad_reference(*as_f64, cotangent=f64_cot), labels, wrt)
        naive = [_aligned(grad_reference(*host, cotangent=cot), labels, wrt)]
        naive += [_aligned(run, labels, wrt) for run in naive_repeats(
            grad_reference, naive[0], lambda seed: grad_reference(*host, cotangent=cot, rounding_seed=seed))]
    elif reference is not None:
        oracle = _float64_vjp(fn_a, frameworks[0], host, cotangents, wrt)  # naive stays None: tolerance
    sides, pairs = [], []
    largest = None if oracle is None else max(float(np.abs(np.asarray(g, np.float64)).max(initial=0.0)) for g in oracle)
    for k, index in enumerate(wrt):
        quantity = f"{GRAD}{labels[index]}"
        a, b = grads_a[k], grads_b[k]
        dtype = _run_dtype(a)
        if oracle is None:
            budget = tolerance_budget(dtype, rtol, atol)
            metrics = drift_metrics(a, b.astype(np.float64), dtype)
            verdict = _verdict(metrics, budget, a, b)
            sides.append(PortRow(f"{names[0]} vs {names[1]}", quantity, verdict, metrics, budget))
            continue
        expected = np.asarray(oracle[k], np.float64)
        budget = reference_budget([] if naive is None else [run[k] for run in naive], expected, dtype, rtol, atol)
        if budget.method == "naive":
            budget = _floored(budget, expected, largest)
        rows, pair = judge_pair(quantity, names, a, b, expected, dtype, budget)
        sides += rows
        pairs.append(pair)
    return sides, pairs


def _floored(budget, expected, largest):
    """A budget whose rounding step fits a gradient that is zero in exact arithmetic.

    Such a gradient is a sum whose terms cancel (the softmax ignores a shift of every logit, so
    d/d bk is 0): what it carries is the rounding of its terms, whose scale is that of the other
    gradients of the same loss, not its own (zero) one. Its floor is one rounding step at the
    largest gradient instead.
    """
    if not largest or float(np.abs(expected).max(initial=0.0)) > STRUCTURAL_ZERO * largest:
        return budget
    step = rounding_step(np.asarray(largest), budget.dtype)
    return dataclasses.replace(budget, rounding_step=step, max_abs=NAIVE_FACTOR * budget.naive_max_abs_err + step)


def _aligned(grads, labels, wrt) -> list[np.ndarray]:
    """A grad_reference's answer as one array per differentiated input, in ``wrt`` order."""
    if isinstance(grads, dict):
        missing = [labels[i] for i in wrt if labels[i] not in grads]
        if missing:
            raise ValueError(f"grad_reference: expected gradients for {', '.join(missing)}; got keys {sorted(grads)}")
        return [np.asarray(grads[labels[i]]) for i in wrt]
    grads = list(grads)
    if len(grads) != len(labels):
        raise ValueError(f"grad_reference: expected one gradient per input ({len(labels)}); got {len(grads)}")
    return [np.asarray(grads[i]) for i in wrt]


def _float64_vjp(fn, framework, host, cotangents, wrt):
    """``fn``'s gradients with every floating input and C in float64; None if ``fn`` cannot run so."""
    from xattn import _compat

    as_f64 = [np.asarray(v, np.float64) if differentiable(v) else v for v in host]
    cots = {path: np.asarray(c, np.float64) for path, c in cotangents.items()}
    try:
        if framework == "jax":
            with _compat.jax_x64(True):
                grads = framework_vjp(fn, framework, as_f64, cots, wrt)
        else:
            grads = framework_vjp(fn, framework, as_f64, cots, wrt)
    except Exception:  # a function that cannot run in float64 leaves the tolerance as the budget
        return None
    if any(np.asarray(g).dtype != np.float64 for g in grads):
        return None  # it computed in a narrower dtype after all: no oracle
    return grads


def _run_dtype(array) -> str:
    name = np.asarray(array).dtype.name
    return name if name in ("float16", "bfloat16", "float32", "float64") else "float64"


# ----------------------------------------------------------------------- rows for xattn.compare


def compare_gradients(plan, spec, inputs, device, progress=None):
    """``xattn compare --grad``: gradient rows and pairs for each (backend, variant) in ``plan``.

    For the loss ⟨out, C⟩, each variant's gradients with respect to x (kv when it is separate) and
    wq, wk, wv, wo become rows ``grad/<input>`` (no timing), held to the FlashAttention-style
    budget of :func:`reference_vjp` (float64 oracle against its naive run in the run dtype), and
    paired backend against backend like outputs. A variant that cannot be differentiated gets
    ``error`` rows. Call it inside the comparison's numerics settings.
    """
    from xattn.api import build
    from xattn.backends.registry import get_backend
    from xattn.comparison.results import Pair, Row
    from xattn.numerics.judge import DRIFT, ERROR, OK, attribute

    say = progress or (lambda line: None)
    cross = inputs.kv is not inputs.x
    host = [inputs.x, *([inputs.kv] if cross else []), *inputs.weights()]
    labels = ["x", *(["kv"] if cross else []), "wq", "wk", "wv", "wo"]
    C = cotangent_like(np.zeros(inputs.x.shape, numpy_dtype(spec.dtype)))
    common = dict(kv=inputs.kv if cross else None, causal=spec.causal, key_lengths=inputs.key_lengths, scale=spec.scale)
    oracle = reference_vjp(inputs.x, *inputs.weights(), cotangent=C.astype(np.float64), **common)
    naive = naive_runs(lambda seed: reference_vjp(inputs.x, *inputs.weights(), cotangent=C, dtype=spec.dtype,
                                                  rounding_seed=seed, **common),
                       min(g.size for g in oracle.values()), spec.dtype)
    largest = max(float(np.abs(g).max(initial=0.0)) for g in oracle.values())
    budgets = {}
    for name in labels:
        runs = [run[name] for run in naive]
        budgets[name] = _floored(naive_budget(runs, oracle[name], spec.dtype), oracle[name], largest)
    rows, grads = [], {}
    for backend, variant in plan:
        say(f"differentiating {backend}/{variant}")
        base = dict(backend=backend, variant=variant, dtype=spec.dtype, device=device)
        try:
            module = get_backend(backend)
            fn = build(backend, variant, causal=spec.causal, scale=spec.scale, head_dim=spec.head_dim,
                       padded=inputs.key_lengths is not None)
            lengths = None if inputs.key_lengths is None else module.as_lengths(inputs.key_lengths)
            if lengths is not None and backend == "torch":
                lengths = lengths.to(device)

            def call(*args, fn=fn, lengths=lengths):
                x, kv, weights = args[0], (args[1] if cross else args[0]), args[1 + cross:]
                return fn(x, kv, *weights, lengths)

            found = framework_vjp(call, backend, host, {"out": C}, range(len(host)), device=device)
        except Exception as error:  # one variant's failure is a row, never the end of the comparison
            message = " ".join(str(error).split())[:600]
            rows += [Row(**base, quantity=f"{GRAD}{name}", verdict=ERROR, budget=budgets[name], error=message,
                         error_type=type(error).__name__) for name in labels]
            continue
        for name, gradient in zip(labels, found):
            metrics = drift_metrics(gradient, oracle[name], spec.dtype)
            verdict = OK if within_budget(metrics, budgets[name]) else DRIFT
            rows.append(Row(**base, quantity=f"{GRAD}{name}", verdict=verdict, drift=metrics, budget=budgets[name]))
            grads[(backend, variant, name)] = gradient
    pairs = []
    for a in rows:
        for b in rows:
            same = (a.variant, a.quantity) == (b.variant, b.quantity)
            if not same or a.backend >= b.backend or ERROR in (a.verdict, b.verdict):
                continue
            name = a.quantity[len(GRAD):]
            a_grad, b_grad = grads[(a.backend, a.variant, name)], grads[(b.backend, b.variant, name)]
            between = drift_metrics(a_grad, b_grad, spec.dtype)
            over, attribution = attribute(a.label, a.ok, b.label, b.ok)
            pairs.append(Pair(a.label, b.label, a.quantity, between.max_abs_err, between.rel_l2_err,
                              a.drift.max_abs_err, b.drift.max_abs_err, a.budget.max_abs, over, attribution))
    return rows, pairs
