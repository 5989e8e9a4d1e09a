"""NumPy's BLAS threads during a check: one. NumPy only (and ctypes).

OpenBLAS's worker threads wait at each GEMM for every peer; when any core is taken (by another
process, or by the frameworks' own pools, which spin for a while after each call) a descheduled
peer stalls the rest. On this project's 2-core machine the check's GEMMs ran 10-20x slower with
two threads than with one, with one other busy process (load average 1.8) as with six.
:func:`check_threads` runs a block with one BLAS thread and restores the count after; where
NumPy's OpenBLAS cannot be found (another BLAS, another platform) it leaves BLAS alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools

#: The thread setters and getters of OpenBLAS builds NumPy ships (scipy-openblas: prefixed, 64-bit suffix).
_NAMES = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


@functools.lru_cache(maxsize=1)
def _openblas():
    """``(set_threads, get_threads)`` of the OpenBLAS this process loaded, or None."""
    import numpy  # noqa: F401  (loads its BLAS)

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line.split()[-1]}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for setter, getter in _NAMES:
            if hasattr(library, setter) and hasattr(library, getter):
                return getattr(library, setter), getattr(library, getter)
    return None


@contextlib.contextmanager
def check_threads():
    """The block with one BLAS thread, the count restored after."""
    found = _openblas()
    if found is None:
        yield
        return
    set_threads, get_threads = found
    before = get_threads()
    set_threads(1)
    try:
        yield
    finally:
        set_threads(before)
