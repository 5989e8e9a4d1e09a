"""The references in every dtype: ``xattn.reference(dtype=...)`` is one staged forward with the layers' oracle.

NumPy only. ``reference(dtype=None)`` is the float64 oracle, on BLAS now: within float64 rounding of
the einsum path it replaced, not bit for bit (BLAS sums in another order). Given a run dtype it is
the naive computation, the same bits as ``layer_reference`` and ``naive_attention``.
"""

import ml_dtypes
import numpy as np
import pytest

import xattn
from xattn.contract.shapes import attention_dims, default_scale
from xattn.contract.spec import AttentionSpec, make_inputs
from xattn.numerics.budget import rounding_step
from xattn.numerics.naive import naive_attention

CASES = [{}, {"causal": True}, {"kv_heads": 2, "key_lengths": (3, 16)}, {"kv_len": 24, "scale": 0.3}]
RUN_DTYPES = ["float32", "float16", "bfloat16"]


def problem(dtype="float32", **case):
    spec = AttentionSpec(batch=2, q_len=16, embed=32, heads=4, dtype=dtype, **case)
    inputs = make_inputs(spec)
    keywords = dict(kv=inputs.kv, causal=spec.causal, key_lengths=inputs.key_lengths, scale=spec.scale)
    return spec, inputs, keywords


def einsum_oracle(x, wq, wk, wv, wo, *, kv, causal, key_lengths, scale):
    """The float64 oracle as it was before BLAS: plain np.einsum (NumPy's own loops) at every contraction."""
    B, T, S, E, H, G, D = attention_dims(x, kv, wq, wk, wv, wo, causal=causal, key_lengths=key_lengths)
    X_BTE, Y_BSE = x.astype(np.float64), kv.astype(np.float64)
    WQ, WK, WV, WO = (w.astype(np.float64) for w in (wq, wk, wv, wo))
    Q_BTGRD = np.einsum("BTE,HED->BTHD", X_BTE, WQ).reshape(B, T, G, H // G, D)
    K_BSGD = np.einsum("BSE,GED->BSGD", Y_BSE, WK)
    V_BSGD = np.einsum("BSE,GED->BSGD", Y_BSE, WV)
    logits_BGRTS = np.einsum("BTGRD,BSGD->BGRTS", Q_BTGRD, K_BSGD) * default_scale(D, scale)
    mask_BTS = np.ones((B, T, S), dtype=bool)
    if causal:
        mask_BTS &= np.tril(np.ones((T, S), dtype=bool))[None]
    if key_lengths is not None:
        mask_BTS &= (np.arange(S)[None, :] < np.asarray(key_lengths)[:, None])[:, None, :]
    logits_BGRTS = np.where(mask_BTS[:, None, None], logits_BGRTS, -np.inf)
    P_BGRTS = np.exp(logits_BGRTS - logits_BGRTS.max(axis=-1, keepdims=True))
    P_BGRTS /= P_BGRTS.sum(axis=-1, keepdims=True)
    O_BTHD = np.einsum("BGRTS,BSGD->BTGRD", P_BGRTS, V_BSGD).reshape(B, T, H, D)
    return np.einsum("BTHD,HDE->BTE", O_BTHD, WO)


@pytest.mark.parametrize("case", CASES)
def test_the_oracle_on_blas_is_the_einsum_oracle_within_float64_rounding(case):
    _, inputs, keywords = problem(**case)
    got = xattn.reference(inputs.x, *inputs.weights(), **keywords)
    want = einsum_oracle(inputs.x, *inputs.weights(), **keywords)
    assert got.dtype == np.float64
    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()
    assert np.array_equal(xattn.reference(inputs.x, *inputs.weights(), **keywords, dtype=None), got)


@pytest.mark.parametrize("dtype", RUN_DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_a_run_dtype_gives_the_naive_computation_of_the_layer_oracle(dtype, case):
    spec, inputs, keywords = problem(dtype, **case)
    naive = xattn.reference(inputs.x, *inputs.weights(), **keywords, dtype=dtype)
    assert naive.dtype == np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    # one implementation: the same bits through every door
    np.testing.assert_array_equal(naive, xattn.layer_reference(inputs.x, *inputs.weights(), **keywords, dtype=dtype))
    np.testing.assert_array_equal(naive, naive_attention(inputs, causal=spec.causal, scale=spec.scale, dtype=dtype))
    np.testing.assert_array_equal(naive, xattn.reference(inputs.x, *inputs.weights(), **keywords, dtype=naive.dtype))
    oracle = xattn.reference(inputs.x, *inputs.weights(), **keywords)
    error = np.abs(naive.astype(np.float64) - oracle).max()
    # a few roundings of the output (9 at most measured, on the small-output scale=0.3 case)
    assert 0 < error <= 16 * rounding_step(oracle, dtype)


@pytest.mark.parametrize("dtype", RUN_DTYPES)
def test_a_rounding_seed_changes_the_bits_but_not_the_error_scale(dtype):
    _, inputs, keywords = problem(dtype)
    oracle = xattn.reference(inputs.x, *inputs.weights(), **keywords)
    nearest = xattn.reference(inputs.x, *inputs.weights(), **keywords, dtype=dtype)
    error = np.abs(nearest.astype(np.float64) - oracle).max()
    for seed in (1, 2, 3):
        random = xattn.reference(inputs.x, *inputs.weights(), **keywords, dtype=dtype, rounding_seed=seed)
        assert random.dtype == nearest.dtype and not np.array_equal(random, nearest)
        np.testing.assert_array_equal(
            random, xattn.reference(inputs.x, *inputs.weights(), **keywords, dtype=dtype, rounding_seed=seed))
        assert error / 4 <= np.abs(random.astype(np.float64) - oracle).max() <= 4 * error


def test_a_float64_run_sums_in_another_order_than_the_oracle():
    # computed as the oracle is, a float64 naive run would equal it and leave a one-ulp budget
    _, inputs, keywords = problem("float64")
    oracle = xattn.reference(inputs.x, *inputs.weights(), **keywords)
    naive = xattn.reference(inputs.x, *inputs.weights(), **keywords, dtype="float64")
    assert naive.dtype == np.float64
    assert 0 < np.abs(naive - oracle).max() <= 1e-14 * np.abs(oracle).max()


@pytest.mark.parametrize("dtype", ["int32", "complex64", "float8_e4m3fn"])
def test_a_dtype_that_is_no_run_dtype_is_refused_with_the_choices(dtype):
    _, inputs, keywords = problem()
    with pytest.raises(ValueError, match="expected None, one of float32, float16, bfloat16, float64"):
        xattn.reference(inputs.x, *inputs.weights(), **keywords, dtype=np.dtype(getattr(ml_dtypes, dtype, dtype)))
