"""Drift of a computed output against the float64 oracle. NumPy only.

Metrics are measured where both arrays are finite; a NaN or Inf that the oracle does not have is
counted apart (``nonfinite_mismatches``) and always fails (see :mod:`xattn.numerics.budget`),
however small the finite errors are. Elements left out of the metrics (a non-finite value on either
side) are counted in ``uncompared``; where nothing finite was compared the error metrics are NaN
(shown as "-" and written as JSON ``null``), never 0, and the verdict is never ok.

Two ULP figures: ``max_ulp`` counts representable numbers between each element and its oracle
(exact, but dominated by near-zero elements, where one ulp is tiny); ``ulp_at_scale`` is the
largest error in units of the last place of the run dtype at the oracle's largest magnitude (the
error measured against the output's own scale: 1 means "one rounding of the biggest element").
"""

from __future__ import annotations

import dataclasses

import numpy as np

from xattn.contract.spec import numpy_dtype


@dataclasses.dataclass(frozen=True)
class DriftMetrics:
    """How far ``actual`` is from ``expected`` (errors measured where both are finite)."""

    max_abs_err: float
    mean_abs_err: float
    rel_l2_err: float
    max_ulp: float
    #: ``1 - 2Σxy/(Σx²+Σy²)``: 0 for identical arrays, 1 for orthogonal, 2 for opposite.
    dissimilarity: float
    #: Elements where one side is finite and the other not (or NaN against Inf; or NaN on both sides
    #: where NaNs are not taken as equal).
    nonfinite_mismatches: int
    size: int
    #: Elements left out of the metrics: non-finite on either side (``size`` minus those compared).
    uncompared: int = 0
    #: Largest error in ulps of the run dtype at the oracle's largest finite magnitude.
    ulp_at_scale: float = float("nan")

    @property
    def compared(self) -> int:
        return self.size - self.uncompared


def finite_pair(actual, expected, equal_nan: bool = True):
    """``(a, e, mismatches)``: the elements finite on both sides, and the count of non-finite disagreements.

    An Inf matches the same Inf; a NaN matches a NaN only with ``equal_nan`` (against an oracle a NaN
    where the oracle has one is right; between two functions, with no oracle, two NaNs prove nothing).
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"drift: expected the shape of the reference {expected.shape}; got {actual.shape}")
    finite_a, finite_e = np.isfinite(actual), np.isfinite(expected)
    both_nan = np.isnan(actual) & np.isnan(expected) if equal_nan else np.zeros(actual.shape, bool)
    same_nonfinite = ~finite_a & ~finite_e & ((actual == expected) | both_nan)
    mismatches = int(np.count_nonzero(~(finite_a & finite_e) & ~same_nonfinite))
    both = finite_a & finite_e
    return actual[both], expected[both], mismatches


def ulp_distance(actual, expected, dtype: str) -> np.ndarray:
    """Units in the last place of ``dtype`` between ``actual`` and ``expected`` rounded to ``dtype``.

    Finite inputs only. Counts representable numbers between the two (+0 and -0 are 0 apart).
    """
    run = numpy_dtype(dtype)
    bits_type = {2: np.uint16, 4: np.uint32, 8: np.uint64}[run.itemsize]
    sign = bits_type(1) << bits_type(8 * run.itemsize - 1)
    a_bits = np.asarray(actual).astype(run).view(bits_type)
    e_bits = np.asarray(expected).astype(run).view(bits_type)
    a_mag, e_mag = (a_bits & ~sign).astype(np.int64), (e_bits & ~sign).astype(np.int64)
    same_sign = (a_bits & sign) == (e_bits & sign)
    # Magnitudes stay below 2**63, so a same-sign difference is exact in int64; a sign-crossing
    # sum is exact in float64 below 2**53 and beyond that so large that rounding it does not matter.
    return np.where(same_sign, np.abs(a_mag - e_mag).astype(np.float64), a_mag.astype(np.float64) + e_mag)


def max_abs_error(actual, expected) -> float:
    """:func:`drift_metrics`' ``max_abs_err`` alone (all a budget's naive runs need): NaN where nothing is finite."""
    a, e, _ = finite_pair(actual, expected)
    return float(np.abs(a - e).max()) if a.size else float("nan")


def drift_metrics(actual, expected, dtype: str, *, equal_nan: bool = True) -> DriftMetrics:
    """Metrics of ``actual`` (any float array) against ``expected`` (float64), ULPs in ``dtype``.

    ``equal_nan``: whether a NaN on both sides counts as agreement (see :func:`finite_pair`).
    """
    a, e, mismatches = finite_pair(actual, expected, equal_nan)
    size = int(np.asarray(expected).size)
    if a.size == 0:
        nan = float("nan")
        return DriftMetrics(nan, nan, nan, nan, nan, mismatches, size, uncompared=size)
    error = np.abs(a - e)
    norm_e = float(np.linalg.norm(e))
    norm_err = float(np.linalg.norm(a - e))
    energy = float(np.dot(a, a) + np.dot(e, e))
    scale_ulp = float(np.spacing(np.asarray(np.abs(e).max(), dtype=numpy_dtype(dtype))))
    return DriftMetrics(
        max_abs_err=float(error.max()),
        mean_abs_err=float(error.mean()),
        rel_l2_err=norm_err / norm_e if norm_e else norm_err,
        max_ulp=float(ulp_distance(a, e, dtype).max()),
        dissimilarity=1.0 - 2.0 * float(np.dot(a, e)) / energy if energy else 0.0,
        nonfinite_mismatches=mismatches,
        size=size,
        uncompared=size - int(a.size),
        ulp_at_scale=float(error.max()) / scale_ulp,
    )
