"""The oracle's and the naive runs' NumPy work spread over the cores, bit for bit as on one. NumPy only.

NumPy lets go of the GIL in its loops and BLAS calls, so threads share a check's NumPy work. Two
ways, each giving exactly the bits of the work done on one thread (tested):

- :func:`run_chunks`: independent runs (the chunks of random-rounding repeats), one per thread.
- :func:`split_contraction`: one contraction cut along an axis of its output that it does not sum
  over, each piece on a thread. Every output element is then the same sum, in the same order, of
  the same products: only which thread computes it changes. xattn's naive runs sum in NumPy's own
  loops (:func:`xattn.numerics.layer_oracle.contract_in_loops`), 20-40 ms per contraction of a
  mid-size layer, which this halves on two cores.
"""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np

from xattn._environ import available_cores

#: Multiply-adds below which a contraction stays on one thread (a thread costs ~0.1 ms to start).
SPLIT_WORK = 1 << 21


def run_chunks(run, chunks) -> list:
    """``[run(chunk) for chunk in chunks]``: the first here (it fills the products the others share),
    the others on a thread per core; the runs share nothing they write."""
    if not chunks:
        return []
    first, rest = run(chunks[0]), chunks[1:]
    workers = min(len(rest), available_cores())
    if workers <= 1:
        return [first, *map(run, rest)]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return [first, *pool.map(run, rest)]


def split_contraction(contract, equation: str, *operands, parts: int | None = None, min_work: int = SPLIT_WORK):
    """``contract(equation, *operands)`` computed in ``parts`` pieces (default: one per core) on threads.

    The pieces cut the first output axis of length 2 or more, which ``equation`` (explicit, with
    ``->``, one letter per axis) does not sum over; each operand holding that axis is sliced, the
    others are shared, and each piece is written into its slice of one output array
    (``contract(..., out=)``, as ``np.einsum`` takes it). A contraction of fewer than ``min_work``
    multiply-adds, or without such an axis, runs as it is.
    """
    terms, output = equation.split("->")
    terms = terms.split(",")
    sizes: dict[str, int] = {}
    for term, operand in zip(terms, operands):
        sizes.update(zip(term, np.shape(operand)))
    parts = available_cores() if parts is None else parts
    axis = next((letter for letter in output if sizes[letter] >= 2), None)
    if axis is None or parts < 2 or int(np.prod(list(sizes.values()), dtype=np.int64)) < min_work:
        return contract(equation, *operands)
    bounds = np.linspace(0, sizes[axis], min(parts, sizes[axis]) + 1).astype(int)
    out = np.empty([sizes[letter] for letter in output], np.result_type(*operands))
    errors: list[BaseException] = []

    def piece(index):
        cut = slice(bounds[index], bounds[index + 1])
        sliced = [operand[tuple(cut if letter == axis else slice(None) for letter in term)] if axis in term
                  else operand for term, operand in zip(terms, operands)]
        try:
            contract(equation, *sliced, out=out[tuple(cut if letter == axis else slice(None) for letter in output)])
        except BaseException as error:  # raised again on the calling thread
            errors.append(error)

    threads = [threading.Thread(target=piece, args=(index,)) for index in range(1, len(bounds) - 1)]
    for thread in threads:
        thread.start()
    try:
        piece(0)
    finally:
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return out
