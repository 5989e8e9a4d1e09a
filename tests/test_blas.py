"""NumPy's BLAS runs a check with one thread, and gets its count back after."""

import numpy as np
import pytest

import xattn
from xattn.numerics import blas


def test_one_blas_thread_inside_a_check_and_the_count_restored(monkeypatch):
    found = blas._openblas()
    if found is None:
        pytest.skip("NumPy's BLAS here is not an OpenBLAS xattn can find: check_threads leaves it alone")
    set_threads, get_threads = found
    before = get_threads()
    set_threads(2)
    seen = []
    try:
        with blas.check_threads():
            assert get_threads() == 1
        assert get_threads() == 2

        def reference(x, dtype=None):
            seen.append(get_threads())
            return np.asarray(x, dtype or np.float64) * 2

        xattn.check_port(reference, reference, np.ones(3, np.float32), reference=reference,
                         frameworks=("numpy", "numpy"))
        assert seen and set(seen) == {1} and get_threads() == 2
    finally:
        set_threads(before)
