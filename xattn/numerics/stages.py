"""How a naive computation rounds each stage. NumPy only.

:func:`stage_rounding` is the rounding of one stage: the result of an op, computed with accumulation
in float32, rounded to the run dtype as an eager framework rounds every op's output (or at random,
for the repeats of :mod:`xattn.numerics.naive`).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from xattn.contract.spec import DTYPES, numpy_dtype

#: Key of the random-rounding streams, beside the seed. 4096 since random rounding came in (it was
#: ``NAIVE_DRAWS`` then), kept so that a seeded run repeats the bits it gave before.
ROUNDING_STREAM = 4096


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


def stage_rounding(dtype, seed: int | None = None):
    """``(accumulation dtype, stage)``: how a naive computation in ``dtype`` rounds each stage's result.

    ``stage(array)`` rounds to ``dtype`` and returns the value in the accumulation dtype (float32,
    or float64 for float64 runs and for ``dtype=None``, the oracle, where it is the identity). With
    a ``seed`` it is random rounding instead: the result times ``1 + δ``, δ uniform in ±½ ulp
    (``eps/2``) and drawn afresh per element, then rounded; float64 runs are never perturbed (their
    naive run is the oracle itself).
    """
    run = run_dtype(dtype)
    if run is None or run == np.float64:
        return np.dtype(np.float64), lambda array: np.asarray(array, np.float64)
    acc = np.dtype(np.float32)
    if seed is None:
        return acc, lambda array: np.asarray(array).astype(run).astype(acc)
    rng = np.random.default_rng([ROUNDING_STREAM, int(seed)])
    half_ulp = float(ml_dtypes.finfo(run).eps) / 2

    def stage(array):
        array = np.asarray(array, np.float64)
        return (array * (1.0 + rng.uniform(-half_ulp, half_ulp, array.shape))).astype(run).astype(acc)

    return acc, stage
