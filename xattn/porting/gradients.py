"""check_port's gradients: jax.vjp against torch.autograd, against a float64 oracle.

The scalar loss is ⟨out, C⟩ = Σ out·C for a fixed cotangent C ~ N(0, 1)
(:func:`xattn.backends.calls.cotangent_like`, rounded to the output's dtype), so each gradient is
a vector-Jacobian product, d⟨out, C⟩ / d input, taken for every floating-point input (data and
weights alike) and reported as ``grad/<input name>`` beside the output rows, with the same
metrics, budget and attribution (:mod:`xattn.numerics.judge`).

The oracle of xattn's own layers' gradients is :func:`xattn.numerics.layer_oracle.reference_vjp`,
the attention backward written out in NumPy float64; on run-dtype inputs it is the naive
same-dtype computation behind the budget. NumPy only at import.
"""

from __future__ import annotations

import inspect

import numpy as np

from xattn.backends.calls import call, cotangent_like, differentiable_leaves, float64_vjp, vjp
from xattn.backends.frameworks import FRAMEWORKS
from xattn.bridge.trees import leaves
from xattn.contract.spec import numpy_dtype
from xattn.numerics.budget import floored, reference_budget
from xattn.numerics.naive import naive_repeats
from xattn.porting.modules import float64_scope, kind_of
from xattn.porting.references import as_float64, fallback_note, takes_keyword
from xattn.porting.rows import judge_pair, unattributed

#: Prefix of a gradient row's quantity: ``grad/x``, ``grad/wq``...
GRAD = "grad/"


def input_names(fn, count: int) -> tuple[str, ...]:
    """Names of ``fn``'s first ``count`` positional parameters, or ``inputs[i]`` where they are unknown.

    A torch module is asked for its ``forward``'s (its ``__call__`` takes ``*args``).
    """
    if kind_of(fn) == "torch":
        fn = fn.forward
    try:
        parameters = [p for p in inspect.signature(fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        parameters = []
    names = [p.name for p in parameters[:count]]
    return tuple(names + [f"inputs[{i}]" for i in range(len(names), count)])


def gradient_rows(fn_a, fn_b, frameworks, names, host, dtype, *, reference=None, grad_reference=None, rtol=None,
                  atol=None, outputs=None, equal_nan=False, notes=None, rerun=None):
    """check_port's gradient rows and pairs: one ``grad/<input>[path]`` row per floating input leaf, per function.

    Every floating leaf of every input (a params tree's too) is differentiated and named by its
    input's name and its path in the tree (``grad/params['w'][0]``; ``grad/x`` for an array input).
    ``rerun``: ``(side index, float64 callable)`` for ``reference="a"``/``"b"``: that side's float64
    rerun's VJP is the oracle, and that side's own gradients the naive run behind the budget.

    The oracle is ``grad_reference(*inputs, cotangent=C)`` on float64 copies, returning gradients
    aligned with the inputs (a sequence, ``None`` where not differentiable) or a dict by input name;
    on the inputs as they are it is the naive computation behind the budget. Without it but with a
    forward ``reference``, ``fn_a`` run in float64 stands in as the oracle (JAX under x64) and the
    budget is torch.testing's tolerance around it (one sample of a's own rounding is no yardstick).
    Without either, ``a`` is held to that tolerance around ``b``, as outputs are. ``outputs``: the
    forward's ``[(path, array)]`` (for C's shapes). Every gradient is judged in the run ``dtype``, C
    is drawn in it, and a grad_reference naming a ``dtype`` keyword is asked for it (as
    :func:`~xattn.porting.check.check_port` asks an output reference); ``notes`` collects what the
    report must say (a budget that fell back to the tolerance).
    """
    notes = [] if notes is None else notes
    frameworks = tuple(frameworks)
    for name, framework in zip(names, frameworks):
        if framework not in FRAMEWORKS:
            raise ValueError(f"grad: expected {name} to be a jax or torch function (NumPy has no autodiff);"
                             f" got framework {framework!r}. Pass frameworks=... if the guess is wrong")
    wrt = differentiable_leaves(host)
    if not wrt:
        raise ValueError("grad: expected at least one floating-point input to differentiate; got none")
    labels = input_names(fn_a, len(host))
    if outputs is None:
        outputs = call(fn_a, frameworks[0], host)
    run = numpy_dtype(dtype)
    cotangents = {path: cotangent_like(np.empty(array.shape, run), index=i) for i, (path, array) in enumerate(outputs)}
    grads_a = vjp(fn_a, frameworks[0], host, cotangents, wrt)
    grads_b = vjp(fn_b, frameworks[1], host, cotangents, wrt)
    oracle = naive = None
    if grad_reference is not None:
        oracle, naive = _reference_gradients(grad_reference, host, outputs, cotangents, labels, wrt, dtype, notes)
    elif rerun is not None:
        index, float64_run = rerun
        oracle = _rerun_gradients(float64_run, frameworks[index], host, cotangents, wrt, names[index])
        naive = [(grads_a, grads_b)[index]]
    elif reference is not None:
        oracle = float64_vjp(fn_a, frameworks[0], host, cotangents, wrt)  # naive stays None: tolerance
        if oracle is not None:
            notes.append(f"budget of the gradients: no grad_reference, so {names[0]} run in float64 is their oracle"
                         " and torch.testing's tolerance their budget; pass grad_reference=, or reference='a', for"
                         " the naive budget")
    sides, pairs = [], []
    largest = None if oracle is None else max(float(np.abs(np.asarray(g, np.float64)).max(initial=0.0)) for g in oracle)
    for k, (index, path) in enumerate(wrt):
        quantity = f"{GRAD}{labels[index]}{path}"
        a, b = grads_a[k], grads_b[k]
        if oracle is None:
            sides.append(unattributed(names, quantity, a, b, dtype, rtol, atol, equal_nan=equal_nan))
            continue
        expected = np.asarray(oracle[k], np.float64)
        runs = [] if naive is None else [run[k] for run in naive if run[k] is not None]
        budget = reference_budget(runs, expected, dtype, rtol, atol)
        note = fallback_note(quantity, None if naive is None else naive[0][k], dtype, budget)
        if note and grad_reference is not None:
            notes.append(note)
        elif rerun is not None and budget.method == "tolerance":
            notes.append(f"budget {quantity}: {names[rerun[0]]}'s own gradient came back in"
                         f" {np.asarray(naive[0][k]).dtype.name}, not the run dtype {dtype}, so torch.testing's"
                         " tolerance stands in")
        rows, pair = judge_pair(quantity, names, a, b, expected, dtype, floored(budget, expected, largest))
        sides += rows
        pairs.append(pair)
    return sides, pairs


def _rerun_gradients(float64_run, framework, host, cotangents, wrt, name) -> list[np.ndarray]:
    """The gradients of a side's float64 rerun (:func:`xattn.porting.modules.float64_version`): the oracle."""
    cotangents = {path: np.asarray(c, np.float64) for path, c in cotangents.items()}
    with float64_scope(framework):
        grads = vjp(float64_run, framework, as_float64(host), cotangents, wrt)
    narrow = sorted({np.asarray(g).dtype.name for g in grads} - {"float64"})
    if narrow:
        raise ValueError(f"reference: expected the float64 rerun of {name} to give float64 gradients; got"
                         f" {', '.join(narrow)}. It computes in a fixed narrower dtype somewhere: pass"
                         " grad_reference= a NumPy float64 function instead")
    return grads


def _reference_gradients(grad_reference, host, outputs, cotangents, labels, wrt, dtype, notes):
    """``(oracle, naive runs)`` of a user's ``grad_reference``, each one array per differentiated input.

    The naive runs are None where the reference raises on the run-dtype inputs (``notes`` says so).
    """
    cot = [cotangents[path] for path, _ in outputs]
    cot = cot[0] if len(cot) == 1 else cot
    f64_cot = np.asarray(cot, np.float64) if not isinstance(cot, list) else [np.asarray(c, np.float64) for c in cot]
    oracle = _aligned(grad_reference(*as_float64(host), cotangent=f64_cot), labels, wrt)
    keywords = {"cotangent": cot, **({"dtype": dtype} if takes_keyword(grad_reference, "dtype") else {})}
    try:
        first = _aligned(grad_reference(*host, **keywords), labels, wrt)
    except Exception as error:  # a reference that cannot run in the run dtype: the tolerance stands in
        notes.append(f"budget of the gradients: the grad_reference raised on the {dtype} inputs"
                     f" ({type(error).__name__}), so torch.testing's tolerance stands in")
        return oracle, None
    repeats = naive_repeats(grad_reference, first, lambda seed: grad_reference(*host, **keywords, rounding_seed=seed))
    return oracle, [first, *(_aligned(run, labels, wrt, repeat=True) for run in repeats)]


def _aligned(grads, labels, wrt, repeat=False) -> list[np.ndarray | None]:
    """A grad_reference's answer as one array per differentiated input leaf, in ``wrt`` order.

    Per input (by position, or by name in a dict) a gradient shaped as that input: an array, or a
    tree like the input's, whose leaf at each path is taken. A ``repeat`` (of a reference that
    computes its repeats at once) may lack the gradients too large to need one: None stands in.
    """
    if isinstance(grads, dict):
        missing = sorted({labels[i] for i, _ in wrt if labels[i] not in grads})
        if missing and not repeat:
            raise ValueError(f"grad_reference: expected gradients for {', '.join(missing)}; got keys {sorted(grads)}")
        per_input = {i: grads.get(labels[i]) for i, _ in wrt}
    else:
        grads = list(grads)
        if len(grads) != len(labels):
            raise ValueError(f"grad_reference: expected one gradient per input ({len(labels)}); got {len(grads)}")
        per_input = dict(enumerate(grads))
    found = []
    for i, path in wrt:
        if per_input[i] is None:  # a repeat computed only for the gradients that need it
            found.append(None)
            continue
        by_path = dict(leaves(per_input[i]))
        if path not in by_path:
            raise ValueError(f"grad_reference: expected the gradient of {labels[i]} to have a leaf at {path!r}"
                             f" like the input; got paths {sorted(by_path)}")
        found.append(np.asarray(by_path[path]))
    return found
