"""The seed's other two operations: the full-rank model and the batched-GEMM layout experiment."""

import numpy as np
import pytest

import xattn
from xattn.contract.spec import AttentionSpec, make_inputs
from xattn.numerics.oracle import _f64


@pytest.mark.parametrize("case", [dict(), dict(causal=True, key_lengths=(2, 9)), dict(kv_len=11, kv_heads=1)])
def test_fullrank_matches_its_own_oracle(backend, case):
    spec = AttentionSpec(batch=2, q_len=9, embed=12, heads=3, **case)
    inputs = make_inputs(spec)
    wh = (np.random.default_rng(1).standard_normal((3, 12, 12)) / np.sqrt(12)).astype(np.float32)
    kv = None if inputs.kv is inputs.x else inputs.kv
    kwargs = dict(kv=kv, causal=spec.causal, key_lengths=inputs.key_lengths)
    out = xattn.fullrank_attention(inputs.x, inputs.wq, inputs.wk, wh, backend=backend, **kwargs)
    expected = xattn.fullrank_reference(inputs.x, inputs.wq, inputs.wk, wh, **kwargs)
    np.testing.assert_allclose(_f64(out), expected, rtol=1e-5, atol=1e-5)
    # A different model: it must not agree with the contract's oracle.
    contract = xattn.reference(inputs.x, *inputs.weights(), **kwargs)
    assert np.abs(expected - contract).max() > 0.1


def test_fullrank_rejects_wrong_wh_shape(backend):
    inputs = make_inputs(AttentionSpec(batch=1, q_len=4, embed=8, heads=2))
    with pytest.raises(ValueError, match=r"wh \(H,E,E\): expected shape \(2, 8, 8\); got \(2, 8, 4\)"):
        xattn.fullrank_attention(inputs.x, inputs.wq, inputs.wk, np.zeros((2, 8, 4), np.float32), backend=backend)


@pytest.mark.parametrize("layout, shapes", [("leading", ((3, 2, 4, 5), (3, 2, 5, 6))),
                                            ("trailing", ((4, 5, 3, 2), (5, 6, 3, 2)))])
def test_batched_matmul_layouts(backend, layout, shapes):
    rng = np.random.default_rng(0)
    m1, m2 = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    out = xattn.batched_matmul(m1, m2, layout=layout, backend=backend)
    np.testing.assert_allclose(_f64(out), xattn.bmm_reference(m1, m2, layout=layout), rtol=1e-5, atol=1e-5)


def test_batched_matmul_layouts_agree_with_each_other():
    rng = np.random.default_rng(0)
    m1, m2 = rng.standard_normal((3, 2, 4, 5)), rng.standard_normal((3, 2, 5, 6))
    leading = xattn.bmm_reference(m1, m2, layout="leading")
    trailing = xattn.bmm_reference(m1.transpose(2, 3, 0, 1), m2.transpose(2, 3, 0, 1), layout="trailing")
    np.testing.assert_allclose(leading, trailing.transpose(2, 3, 0, 1))


def test_batched_matmul_bad_input():
    with pytest.raises(ValueError, match="layout: expected one of leading, trailing; got 'middle'"):
        xattn.bmm_reference(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), layout="middle")
    with pytest.raises(ValueError,
                       match=r"expected m1 \(A,B,I,J\), m2 \(A,B,J,K\); got \(1, 1, 2, 3\) and \(1, 1, 2, 2\)"):
        xattn.bmm_reference(np.zeros((1, 1, 2, 3)), np.zeros((1, 1, 2, 2)))
