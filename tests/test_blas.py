"""NumPy's BLAS runs a check with one thread on a busy machine, and gets its count back after."""

import pytest

from xattn.numerics import blas


def test_one_blas_thread_inside_a_check_on_a_busy_machine_only(monkeypatch):
    found = blas._openblas()
    if found is None:
        pytest.skip("NumPy's BLAS here is not an OpenBLAS xattn can find: check_threads leaves it alone")
    set_threads, get_threads = found
    before = get_threads()
    set_threads(2)
    try:
        monkeypatch.setattr(blas, "busy", lambda: True)
        with blas.check_threads():
            assert get_threads() == 1
        assert get_threads() == 2
        monkeypatch.setattr(blas, "busy", lambda: False)
        with blas.check_threads():
            assert get_threads() == 2
    finally:
        set_threads(before)
