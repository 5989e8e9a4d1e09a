"""NumPy's BLAS threads during a check: one where the machine is busy. NumPy only (and ctypes).

OpenBLAS's worker threads wait at each GEMM for every peer; on a machine whose cores are taken by
other processes a descheduled peer stalls the rest, and the oracles' float64 GEMMs ran 10-15x
slower with two threads than with one on this project's loaded 2-core machine. :func:`check_threads`
runs a block with one BLAS thread when the load average is at or above the core count, and leaves
BLAS alone otherwise (or where NumPy's OpenBLAS cannot be found: another BLAS, another platform).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os

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


def busy() -> bool:
    """Whether the 1-minute load average is at or above the cores this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
        return os.getloadavg()[0] >= cores
    except (AttributeError, OSError):
        return False


@contextlib.contextmanager
def check_threads():
    """The block with one BLAS thread on a busy machine (:func:`busy`), the count restored after."""
    found = _openblas() if busy() else None
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
