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


@xattn.staged
def mlp_reference(x, params, mask, *, stage, activation="tanh"):
    """A two-layer MLP written once: every op a framework would round goes through stage."""
    h = stage(getattr(np, activation)(stage(stage(x @ params["w1"]) + params["b1"])))
    out = stage(np.where(mask, stage(h @ params["w2"]), 0.0))
    return {"out": out, "parts": (h, [stage(out.sum(axis=-1)), float(out.max())]), "mask": mask, "name": "mlp"}


def mlp_inputs(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8, 16)).astype(dtype)
    params = {"w1": (rng.standard_normal((16, 32)) / 4).astype(dtype), "b1": rng.standard_normal(32).astype(dtype),
              "w2": (rng.standard_normal((32, 8)) / 6).astype(dtype)}
    return x, params, rng.random((4, 8, 8)) < 0.8


def plain_mlp(x, params, mask):
    h = np.tanh(x @ params["w1"] + params["b1"])
    return np.where(mask, h @ params["w2"], 0.0), h


def test_staged_keeps_the_name_and_shows_its_keywords_instead_of_stage():
    import inspect

    from xattn.numerics.naive import takes_rounding_seed

    assert mlp_reference.__name__ == "mlp_reference" and "two-layer MLP" in mlp_reference.__doc__
    parameters = inspect.signature(mlp_reference).parameters
    assert list(parameters) == ["x", "params", "mask", "activation", "dtype", "rounding_seed"]
    assert parameters["dtype"].default is None and parameters["dtype"].kind is inspect.Parameter.KEYWORD_ONLY
    assert takes_rounding_seed(mlp_reference)


def test_staged_oracle_is_plain_float64_numpy():
    x, params, mask = mlp_inputs(ml_dtypes.bfloat16)
    got = mlp_reference(x, params, mask)
    want_out, want_h = plain_mlp(x.astype(np.float64), {k: w.astype(np.float64) for k, w in params.items()}, mask)
    np.testing.assert_array_equal(got["out"], want_out)
    np.testing.assert_array_equal(got["parts"][0], want_h)
    assert all(leaf.dtype == np.float64 for leaf in (got["out"], got["parts"][0], *got["parts"][1]))


def test_staged_naive_run_in_bfloat16_is_bfloat16_off_by_bfloat16_rounding():
    x, params, mask = mlp_inputs(ml_dtypes.bfloat16)
    oracle = mlp_reference(x, params, mask)
    naive = mlp_reference(x, params, mask, dtype="bfloat16")
    for got, want in [(naive["out"], oracle["out"]), (naive["parts"][0], oracle["parts"][0]),
                      (naive["parts"][1][0], oracle["parts"][1][0])]:
        assert got.dtype == ml_dtypes.bfloat16
        error = np.abs(got.astype(np.float64) - want).max() / np.abs(want).max()
        assert 2.0**-12 < error < 2.0**-4  # bfloat16's eps is 2**-7; float32 rounding would be ~1e-7
    assert naive["parts"][1][1].dtype == ml_dtypes.bfloat16  # a Python float output too
    np.testing.assert_array_equal(mlp_reference(x, params, mask, dtype=ml_dtypes.bfloat16)["out"], naive["out"])


def test_staged_passes_what_is_not_floating_as_it_is():
    x, params, mask = mlp_inputs(np.float32)
    seen = {}

    @xattn.staged
    def spy(x, lengths, mask, scale, label, *, stage):
        seen.update(x=x.dtype, lengths=lengths, mask=mask, scale=scale, label=label)
        return stage(x * scale), lengths

    lengths = np.array([3, 5], dtype=np.int32)
    out, lengths_out = spy(x, lengths, mask, 0.5, "tag", dtype="float16")
    assert seen["x"] == np.float32 and out.dtype == np.float16
    assert seen["lengths"] is lengths and lengths_out is lengths and seen["mask"] is mask
    assert seen["scale"] == 0.5 and type(seen["scale"]) is float and seen["label"] == "tag"
    assert mlp_reference(x, params, mask, dtype="float32")["name"] == "mlp"
    assert mlp_reference(x, params, mask, dtype="float32", activation="sin")["out"].dtype == np.float32


def test_staged_rebuilds_nested_outputs_and_rounds_at_random_with_a_seed():
    x, params, mask = mlp_inputs(np.float16)
    nearest = mlp_reference(x, params, mask, dtype="float16")
    random = mlp_reference(x, params, mask, dtype="float16", rounding_seed=1)
    assert set(nearest) == {"out", "parts", "mask", "name"}
    assert isinstance(nearest["parts"], tuple) and isinstance(nearest["parts"][1], list)
    assert nearest["out"].dtype == random["out"].dtype == np.float16
    assert not np.array_equal(nearest["out"], random["out"])
    np.testing.assert_array_equal(random["out"], mlp_reference(x, params, mask, dtype="float16",
                                                                rounding_seed=1)["out"])
    oracle = mlp_reference(x, params, mask)["out"]
    error = np.abs(nearest["out"].astype(np.float64) - oracle).max()
    assert error / 4 <= np.abs(random["out"].astype(np.float64) - oracle).max() <= 4 * error


def test_staged_wants_a_stage_parameter_and_leaves_it_the_dtype_keywords():
    with pytest.raises(TypeError, match="expected a function with a `stage` keyword; got plain_mlp"):
        xattn.staged(plain_mlp)
    with pytest.raises(TypeError, match="without dtype parameters"):
        xattn.staged(lambda x, *, stage, dtype: x)
