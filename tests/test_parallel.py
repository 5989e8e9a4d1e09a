"""The naive runs' NumPy work on several threads gives the bits it gives on one. NumPy only."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from xattn.numerics.parallel import run_chunks, split_contraction

#: Every contraction of xattn's staged attention (numerics/layer_oracle.py), forward and backward.
EQUATIONS = (
    "BTE,HED->BTHD", "BSE,GED->BSGD", "BTGRD,BSGD->BGRTS", "BGRTS,BSGD->BTGRD", "BTHD,HDE->BTE",
    "BTE,HDE->BTHD", "BGRTS,BTGRD->BSGD", "BTGRD,BTE->GRDE", "BTHD,HED->BTE", "BSGD,GED->BSE",
    "BTE,BTHD->HED", "BSE,BSGD->GED",
)
SHAPES = (
    dict(B=3, T=7, S=9, E=20, H=6, G=3, R=2, D=5),  # grouped heads, odd sizes
    dict(B=1, T=12, S=12, E=32, H=4, G=1, R=4, D=8),  # one batch: the cut moves to the next output axis
    dict(B=2, T=64, S=48, E=64, H=8, G=8, R=1, D=8),
)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dims", SHAPES)
def test_a_contraction_cut_over_threads_is_the_same_bits_as_in_one_piece(dims, dtype):
    rng = np.random.default_rng(0)
    for equation in EQUATIONS:
        terms = equation.split("->")[0].split(",")
        operands = [rng.standard_normal([dims[letter] for letter in term]).astype(dtype) for term in terms]
        whole = np.einsum(equation, *operands)
        for parts in (2, 3):
            cut = split_contraction(np.einsum, equation, *operands, parts=parts, min_work=0)
            assert cut.dtype == whole.dtype
            np.testing.assert_array_equal(cut, whole, err_msg=f"{equation} in {parts}")


def test_the_pieces_run_on_threads_over_an_axis_the_contraction_keeps():
    seen = []

    def contract(equation, *operands, out=None):
        seen.append((threading.get_ident(), operands[0].shape, operands[1].shape))
        return np.einsum(equation, *operands, out=out)

    x, w = np.ones((4, 5, 6), np.float32), np.ones((3, 6, 2), np.float32)
    out = split_contraction(contract, "BTE,HED->BTHD", x, w, parts=2, min_work=0)
    assert out.shape == (4, 5, 3, 2) and (out == 6).all()
    assert sorted(shapes for _, *shapes in seen) == [[(2, 5, 6), (3, 6, 2)]] * 2  # B cut in halves, W shared
    assert len({ident for ident, *_ in seen}) == 2
    seen.clear()
    split_contraction(contract, "BTE,HED->BTHD", x, w, parts=2)  # 720 multiply-adds: not worth a thread
    assert len(seen) == 1


def test_an_error_on_a_thread_is_raised_to_the_caller():
    def contract(equation, *operands, out=None):
        if operands[0].shape[0] == 2 and threading.current_thread() is not threading.main_thread():
            raise FloatingPointError("piece failed")
        return np.einsum(equation, *operands, out=out)

    with pytest.raises(FloatingPointError, match="piece failed"):
        split_contraction(contract, "BTE,HED->BTHD", np.ones((4, 5, 6)), np.ones((3, 6, 2)), parts=2, min_work=0)


def test_naive_loops_split_over_the_cores(monkeypatch):
    from xattn.numerics import layer_oracle

    calls = []
    monkeypatch.setattr(layer_oracle, "split_contraction",
                        lambda contract, equation, *ops: calls.append(equation) or contract(equation, *ops))
    layer_oracle.contract_in_loops("ij,jk->ik", np.ones((2, 3)), np.ones((3, 4)))
    assert calls == ["ij,jk->ik"]


def test_chunks_run_in_order_whatever_thread_runs_them():
    assert run_chunks(lambda chunk: sum(chunk), [(1, 2), (3,), (4, 5, 6), (7,)]) == [3, 3, 15, 7]
    assert run_chunks(lambda chunk: chunk, []) == []
