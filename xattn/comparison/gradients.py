"""``xattn.compare(..., grad=True)`` (``xattn compare --grad``): each variant's gradients compared like its outputs.

For the loss ⟨out, C⟩ (C from :func:`xattn.backends.calls.cotangent_like`), each variant's
gradients with respect to x (kv when it is separate) and wq, wk, wv, wo become rows
``grad/<input>`` (no timing), held to the FlashAttention-style budget of
:func:`xattn.numerics.layer_oracle.reference_vjp` (its float64 oracle against its naive run in the
run dtype), and judged and paired by the same code as the output rows (:mod:`xattn.comparison.rows`).
"""

from __future__ import annotations

import numpy as np

from xattn.backends import calls, frameworks, registry
from xattn.comparison import rows as judged_rows
from xattn.contract.spec import numpy_dtype
from xattn.numerics.blas import check_threads
from xattn.numerics.budget import floored, naive_budget
from xattn.numerics.layer_oracle import reference_vjp
from xattn.numerics.naive import naive_runs

#: Prefix of a gradient row's quantity: ``grad/x``, ``grad/wq``...
GRAD = "grad/"


def compare_gradients(plan, spec, inputs, device, progress=None):
    """``(rows, values)``: gradient rows of each (backend, variant) in ``plan``, and their values by (label, quantity).

    A variant that cannot be differentiated gets ``error`` rows. Call it inside the comparison's
    numerics settings.
    """
    say = progress or (lambda line: None)
    cross = inputs.kv is not inputs.x
    host = [inputs.x, *([inputs.kv] if cross else []), *inputs.weights()]
    labels = ["x", *(["kv"] if cross else []), "wq", "wk", "wv", "wo"]
    C = calls.cotangent_like(np.zeros(inputs.x.shape, numpy_dtype(spec.dtype)))
    with check_threads():
        budgets, oracle = _budgets(spec, inputs, cross, labels, C)
    rows, values = [], {}
    for backend, variant in plan:
        say(f"differentiating {backend}/{variant}")
        fields = [dict(backend=backend, variant=variant, device=device, quantity=f"{GRAD}{name}") for name in labels]
        try:
            call = _differentiable(backend, variant, spec, inputs, device, cross)
            found = calls.vjp(call, backend, host, {calls.OUTPUT: C}, range(len(host)), device=device)
        except Exception as error:  # one variant's failure is a row, never the end of the comparison
            rows += [judged_rows.failed(error, **each, dtype=spec.dtype, budget=budgets[name])
                     for name, each in zip(labels, fields)]
            continue
        for name, each, gradient in zip(labels, fields, found):
            row = judged_rows.judged(gradient, oracle[name], budget=budgets[name], dtype=spec.dtype, **each)
            rows.append(row)
            values[(row.label, row.quantity)] = gradient
    return rows, values


def _budgets(spec, inputs, cross, labels, C):
    """The float64 oracle of every gradient and its budget (the naive run's, floored for structural zeros)."""
    common = dict(kv=inputs.kv if cross else None, causal=spec.causal, key_lengths=inputs.key_lengths, scale=spec.scale)
    oracle = reference_vjp(inputs.x, *inputs.weights(), cotangent=C.astype(np.float64), **common)
    naive = naive_runs(lambda seed: reference_vjp(inputs.x, *inputs.weights(), cotangent=C, dtype=spec.dtype,
                                                  rounding_seed=seed, **common),
                       min(g.size for g in oracle.values()), spec.dtype, at_once=True)
    largest = max(float(np.abs(g).max(initial=0.0)) for g in oracle.values())
    budgets = {name: floored(naive_budget([run[name] for run in naive if name in run], oracle[name], spec.dtype),
                             oracle[name], largest) for name in labels}
    return budgets, oracle


def _differentiable(backend, variant, spec, inputs, device, cross):
    """The variant as ``call(x, [kv,] wq, wk, wv, wo)`` with its mask fixed, key lengths on ``device``."""
    fn = registry.build(backend, variant, causal=spec.causal, scale=spec.scale, head_dim=spec.head_dim,
                        padded=inputs.key_lengths is not None)
    lengths = None
    if inputs.key_lengths is not None:
        side = frameworks.side(backend)
        lengths = side.put((registry.get_backend(backend).as_lengths(inputs.key_lengths),), side.device(device))[0]

    def call(*args):
        x, kv, weights = args[0], (args[1] if cross else args[0]), args[1 + cross:]
        return fn(x, kv, *weights, lengths)

    return call
