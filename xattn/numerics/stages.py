"""How a naive computation rounds each stage, and references written once for every dtype. NumPy only.

:func:`stage_rounding` is the rounding of one stage: the result of an op, computed with accumulation
in float32, rounded to the run dtype as an eager framework rounds every op's output (or at random,
for the repeats of :mod:`xattn.numerics.naive`). :func:`staged` turns a NumPy function written once
with a ``stage`` callable into a reference that is the float64 oracle with ``dtype=None`` and the
naive computation in any run dtype, bfloat16 included, which NumPy alone cannot compute in.
"""

from __future__ import annotations

import functools
import inspect

import ml_dtypes
import numpy as np

from xattn.bridge.trees import map_leaves
from xattn.contract.spec import DTYPES, numpy_dtype

#: Key of the random-rounding streams, beside the seed. 4096 since random rounding came in (it was
#: ``NAIVE_DRAWS`` then), kept so that a seeded run repeats the bits it gave before.
ROUNDING_STREAM = 4096

#: Rounding-error draws (elements x runs) the naive error is the worst of; see :func:`naive_run_count`.
NAIVE_DRAWS = 4096
#: The most naive runs one budget takes (the deterministic run included).
MAX_NAIVE_RUNS = 64


#: Elements of the largest intermediate (the logits: B·H·T·S per run) that the random-rounding
#: repeats of one of xattn's own references may hold in all. A repeat of a large layer is a whole
#: forward and backward (about 90 ms at B=4 T=256 E=256 H=8 on this project's CPU), so its 256-element
#: bias gradients' 15 repeats were most of a check; beyond this, fewer repeats (at least one), and
#: the budget extrapolates their worst error to the draws wanted (:func:`xattn.numerics.budget.draws_scale`).
#: A problem whose repeats' logits fit in it (every layer of the tests) keeps every repeat.
MAX_REPEAT_ELEMENTS = 1 << 23


def naive_run_count(size: int) -> int:
    """Naive runs for an output of ``size`` elements: :data:`NAIVE_DRAWS` draws, 1 to :data:`MAX_NAIVE_RUNS` runs."""
    return max(1, min(MAX_NAIVE_RUNS, -(-NAIVE_DRAWS // max(int(size), 1))))


def repeat_cap(per_run: int) -> int:
    """The most random-rounding repeats a reference whose runs hold ``per_run`` logits makes: at least 1.

    See :data:`MAX_REPEAT_ELEMENTS`.
    """
    return max(1, MAX_REPEAT_ELEMENTS // max(int(per_run), 1))


def run_dtype(dtype) -> np.dtype | None:
    """``dtype`` (a name of :data:`~xattn.contract.spec.DTYPES`, a NumPy or ml_dtypes dtype) as a NumPy dtype.

    ``None`` stays ``None``: the float64 oracle, no rounding.
    """
    if dtype is None:
        return None
    if isinstance(dtype, str):
        return numpy_dtype(dtype)
    try:
        found = np.dtype(dtype)
    except TypeError:
        found = None
    if found is None or found.name not in DTYPES:
        raise ValueError(f"dtype: expected None, one of {', '.join(DTYPES)} or its NumPy dtype; got {dtype!r}")
    return found


def repeats_at_once(reference):
    """Mark ``reference`` as taking a tuple of seeds as ``rounding_seed`` and returning the list of those runs.

    Such a reference computes its repeats together (xattn's own do, on BLAS, and only for the
    outputs small enough to need them) instead of once per seed.
    """
    reference.repeats_at_once = True
    return reference


def stage_rounding(dtype, seed: int | tuple[int, ...] | None = None):
    """``(accumulation dtype, stage)``: how a naive computation in ``dtype`` rounds each stage's result.

    ``stage(array)`` rounds to ``dtype`` and returns the value in the accumulation dtype (float32,
    or float64 for float64 runs and for ``dtype=None``, the oracle, where it is the identity). With
    a ``seed`` it is random rounding instead: the result times ``1 + δ``, δ uniform in ±½ ulp
    (``eps/2``) and drawn afresh per element, then rounded; float64 runs are never perturbed (their
    naive run is the oracle itself).

    A tuple of seeds rounds every seed's run at once (:func:`repeats_rounding`).
    """
    if isinstance(seed, tuple):
        return repeats_rounding(dtype, seed)
    run = run_dtype(dtype)
    if run is None or run == np.float64:
        return np.dtype(np.float64), lambda array: np.asarray(array, np.float64)
    acc = np.dtype(np.float32)
    if seed is None:
        if run == acc:  # a float32 result is its own rounding: one copy, not two
            return acc, lambda array: np.array(array, dtype=acc)
        return acc, lambda array: np.asarray(array).astype(run).astype(acc)
    rng = np.random.default_rng([ROUNDING_STREAM, int(seed)])
    half_ulp = float(ml_dtypes.finfo(run).eps) / 2

    def stage(array):
        array = np.asarray(array, np.float64)
        return (array * (1.0 + rng.uniform(-half_ulp, half_ulp, array.shape))).astype(run).astype(acc)

    return acc, stage


#: Levels of δ in :func:`repeats_rounding`: from 8 random bits per element and stage.
DITHER_LEVELS = 128


def repeats_rounding(dtype, seeds: tuple[int, ...]):
    """``(accumulation dtype, stage)`` rounding the runs of several ``seeds`` at once, one per leading index.

    ``stage(array)`` takes an array whose first axis has length 1 (the same value for every run)
    or ``len(seeds)`` (one per run) and returns one of length ``len(seeds)``: each run's slice
    randomly rounded as :func:`stage_rounding` with that seed does, but in float32 arithmetic and
    with δ = k·eps/256 for k an odd number from a random byte (uniform in ±½ ulp on 128 levels)
    instead of a float64 draw: fewer and narrower memory passes, for the budget's repeats
    (:mod:`xattn.numerics.naive`). Float64 runs are never perturbed.
    """
    run = run_dtype(dtype)
    count = len(seeds)
    if run is None or run == np.float64:
        return np.dtype(np.float64), lambda array: np.broadcast_to(
            np.asarray(array, np.float64), (count,) + np.shape(array)[1:]).copy()
    acc = np.dtype(np.float32)
    generators = [np.random.default_rng([ROUNDING_STREAM, int(seed)]) for seed in seeds]
    step = acc.type(float(ml_dtypes.finfo(run).eps) / (2 * DITHER_LEVELS))

    def stage(array):
        array = np.asarray(array, acc)
        shape = array.shape[1:]
        size = int(np.prod(shape))
        out = np.empty((count,) + shape, acc)
        for index, generator in enumerate(generators):  # odd k in [-127, 127]: δ = k·eps/256
            odd = random_bytes(generator, size)
            np.bitwise_or(odd, 1, out=odd)
            np.multiply(odd.reshape(shape), step, out=out[index], dtype=acc)
        out *= array
        out += array  # x·(1 + δ), rounded to float32 by the addition
        return out if run == acc else out.astype(run).astype(acc)

    return acc, stage


def random_bytes(generator: np.random.Generator, size: int) -> np.ndarray:
    """``generator.bytes(size)`` as a writable int8 array: the same bytes, the generator left as it would be.

    Read straight from its bit generator's 64-bit words where they give the same bytes (a multiple
    of 8 with no half word kept from before), which is four times faster than ``bytes``.
    """
    bits = generator.bit_generator
    if size % 8 == 0 and not bits.state.get("has_uint32", 0):
        return bits.random_raw(size // 8).view(np.int8)
    return np.frombuffer(bytearray(generator.bytes(size)), np.int8)


def is_floating(value) -> bool:
    """A NumPy array or scalar of a floating dtype, bfloat16 included (which NumPy calls kind ``V``)."""
    return isinstance(value, (np.ndarray, np.generic)) and (value.dtype.kind == "f" or value.dtype.name == "bfloat16")


def staged(fn):
    """``fn(*inputs, stage)`` written once in NumPy, as a reference ``fn(*inputs, dtype=None, rounding_seed=None)``.

    Write the computation in NumPy and pass the result of every op a framework would round through
    ``stage``::

        @xattn.staged
        def mlp_reference(x, w1, w2, *, stage):
            h = stage(np.tanh(stage(x @ w1)))
            return stage(h @ w2)

    The reference it gives (``fn``'s name and docstring, ``stage`` replaced by two keywords):

    - ``dtype=None``: the float64 oracle. Floating inputs are promoted to float64 and ``stage`` is
      the identity.
    - ``dtype="bfloat16"`` (any of :data:`~xattn.contract.spec.DTYPES`, or a NumPy dtype): the naive
      computation in that dtype. Floating inputs are cast to the accumulation dtype (float32; float64
      for float64) and ``stage`` rounds each result to ``dtype``, :func:`stage_rounding`; NumPy's own
      ops then never see a dtype they cannot compute in.
    - ``rounding_seed``: random rounding instead of round-to-nearest, for the naive repeats.

    Floating inputs are NumPy arrays and scalars, also inside dicts, lists and tuples; everything
    else (integer arrays, masks, Python numbers, which NumPy never lets change a dtype) is passed as
    it is. Every floating leaf of the output (a Python float too), however nested, comes back in the
    run dtype (float64 for the oracle). Further keywords of ``fn`` pass through.

    ``xattn.check_port(..., reference=mlp_reference)`` calls it with ``dtype`` left at ``None`` on
    float64 copies of the inputs, and with ``dtype`` (and ``rounding_seed``) set to the run dtype on
    the inputs as they are.
    """
    signature = inspect.signature(fn)
    parameters = list(signature.parameters.values())
    names = [p.name for p in parameters]
    if "stage" not in names:
        raise TypeError(f"staged: expected a function with a `stage` keyword; got {fn.__name__}{signature}. "
                        "Add `*, stage` to its parameters and pass each op's result through stage(...)")
    taken = sorted({"dtype", "rounding_seed"} & set(names))
    if taken:
        raise TypeError(f"staged: expected a function without {', '.join(taken)} parameters (the reference adds "
                        f"them); got {fn.__name__}{signature}. Rename them")

    @functools.wraps(fn)
    def reference(*inputs, dtype=None, rounding_seed=None, **keywords):
        run = run_dtype(dtype)
        acc, stage = stage_rounding(run, rounding_seed)
        out_dtype = np.dtype(np.float64) if run is None else run
        cast = [map_leaves(value, lambda path, leaf: leaf.astype(acc) if is_floating(leaf) else leaf)
                for value in inputs]
        out = fn(*cast, stage=stage, **keywords)
        return map_leaves(out, lambda path, leaf: _in_dtype(leaf, out_dtype))

    kept = [p for p in parameters if p.name != "stage"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None)
             for name in ("dtype", "rounding_seed")]
    at = next((i for i, p in enumerate(kept) if p.kind is inspect.Parameter.VAR_KEYWORD), len(kept))
    # check_port reads the keywords a reference names from its signature; without this,
    # inspect.signature follows __wrapped__ to fn and finds `stage` instead.
    reference.__signature__ = signature.replace(parameters=[*kept[:at], *added, *kept[at:]])
    return reference


def _in_dtype(leaf, dtype: np.dtype):
    if is_floating(leaf) or isinstance(leaf, float):
        return np.asarray(leaf).astype(dtype)
    return leaf
