"""The naive same-dtype computation behind every budget, and its random-rounding repeats. NumPy only.

A naive computation evaluates the math in the run dtype and rounds every stage's result to it, as
an eager framework would (:func:`~xattn.numerics.stages.stage_rounding`). xattn's attention has one:
:func:`xattn.reference` given a run dtype, which :func:`naive_attention` calls on an
:class:`~xattn.contract.spec.AttentionInputs`; a user's NumPy function gets one through
:func:`xattn.staged`.

One naive run is one draw of rounding error per element, and the largest of a few draws is a poor
estimate of what rounding can do: a 4-element bias gradient's naive error can land at half its
typical size. So a naive output with fewer than :data:`NAIVE_DRAWS` elements is recomputed with
*random rounding* (Monte Carlo arithmetic: each stage's result is perturbed by a random relative
amount of at most half an ulp before it is rounded, :func:`stage_rounding`) until the runs hold
about that many draws, and the budget's naive error is the worst of all runs (:func:`naive_run_count`).
"""

from __future__ import annotations

import inspect

import numpy as np

from xattn.numerics.layer_oracle import layer_reference
from xattn.numerics.stages import MAX_NAIVE_RUNS, NAIVE_DRAWS, naive_run_count, repeats_at_once, stage_rounding

__all__ = [
    "MAX_NAIVE_RUNS", "NAIVE_DRAWS", "naive_attention", "naive_repeats", "naive_run_count", "naive_runs",
    "repeats_at_once", "stage_rounding", "takes_rounding_seed",
]


def naive_runs(naive, size: int, dtype: str | None = None, *, at_once: bool = False) -> list:
    """``[naive(None), naive(1), ...]``: the deterministic naive run and its random-rounding repeats.

    ``naive(seed)`` computes the naive output with ``rounding_seed=seed``; ``size`` is the number
    of elements of the smallest output that will be judged (:func:`naive_run_count`). A float64 run
    is never perturbed, so it gets one run. ``at_once``: ``naive`` takes the tuple of every repeat's
    seed and returns their list (xattn's own references, :func:`repeats_at_once`).
    """
    count = 1 if dtype == "float64" else naive_run_count(size)
    seeds = tuple(range(1, count))
    if at_once:
        return [naive(None), *(naive(seeds) if seeds else [])]
    return [naive(None)] + [naive(seed) for seed in seeds]


def naive_repeats(reference, first, repeat) -> list:
    """The random-rounding repeats of a naive run ``first`` (its output arrays) by a user's ``reference``.

    ``repeat(seed)`` calls the reference with ``rounding_seed=seed``, for seeds 1, 2...: as many as
    the smallest output needs (:func:`naive_run_count`), one call each, or one call with the tuple
    of them for a reference that computes them at once (:func:`repeats_at_once`; its runs may hold
    only the outputs that need repeats, ``None`` or no key in place of the others). None for a
    reference without that keyword (:func:`takes_rounding_seed`) or for a float64 run, which is
    never perturbed.
    """
    arrays = [np.asarray(array) for array in first]
    if not arrays or not takes_rounding_seed(reference) or all(a.dtype == np.float64 for a in arrays):
        return []
    seeds = tuple(range(1, naive_run_count(min(a.size for a in arrays))))
    if not seeds:
        return []
    if getattr(reference, "repeats_at_once", False):
        return list(repeat(seeds))
    return [repeat(seed) for seed in seeds]


def takes_rounding_seed(fn) -> bool:
    """Whether ``fn`` (a user's reference) names a ``rounding_seed`` keyword, and so can be repeated."""
    try:
        return "rounding_seed" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def naive_attention(inputs, *, causal: bool = False, scale: float | None = None, dtype: str,
                    rounding_seed: int | None = None) -> np.ndarray:
    """Plain multi-head attention as a naive framework program computes it in ``dtype``: :func:`xattn.reference`.

    Each stage (the three projections, Q·Kᵀ, the scaling, the softmax, P·V, the output projection)
    is computed with accumulation in float32 (float64 for float64 runs) and its result rounded to
    ``dtype``, as an eager framework rounds every op's output; the softmax runs in float32 on the
    rounded logits, as torch does for 16-bit inputs. ``inputs`` is an :class:`xattn.contract.spec.AttentionInputs`.
    ``rounding_seed``: random rounding instead of round-to-nearest (:func:`stage_rounding`). The
    same staged forward as the float64 oracle and :func:`xattn.layer_reference`, so the three agree
    bit for bit.
    """
    return layer_reference(inputs.x, *inputs.weights(), kv=inputs.kv, causal=causal, key_lengths=inputs.key_lengths,
                           scale=scale, dtype=dtype, rounding_seed=rounding_seed)
