"""Drift metrics, ULPs, the FlashAttention-style budget and attribution: NumPy only."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xattn
from xattn.contract.spec import AttentionSpec, make_inputs
from xattn.numerics.budget import naive_budget, rounding_step, tolerance_budget, tolerance_excess, within_budget
from xattn.numerics.drift import drift_metrics, ulp_distance
from xattn.numerics.judge import ROUNDING_NOISE, attribute
from xattn.numerics.naive import naive_attention


def oracle_of(spec):
    inputs = make_inputs(spec)
    expected = xattn.reference(inputs.x, *inputs.weights(), kv=inputs.kv, causal=spec.causal,
                               key_lengths=inputs.key_lengths, scale=spec.scale)
    return inputs, expected


def test_identical_arrays_have_no_drift():
    x = np.linspace(-2, 2, 50).astype(np.float32)
    m = drift_metrics(x, x.astype(np.float64), "float32")
    assert m.max_abs_err == m.mean_abs_err == m.rel_l2_err == m.max_ulp == 0
    assert m.dissimilarity == pytest.approx(0, abs=1e-15)
    assert m.nonfinite_mismatches == 0 and m.size == 50


def test_metric_values():
    expected = np.array([1.0, 2.0, -3.0, 0.0])
    actual = np.array([1.5, 2.0, -3.0, 0.0])
    m = drift_metrics(actual, expected, "float64")
    assert m.max_abs_err == 0.5
    assert m.mean_abs_err == 0.125
    assert m.rel_l2_err == pytest.approx(0.5 / np.sqrt(14))
    xy, energy = np.dot(actual, expected), np.dot(actual, actual) + np.dot(expected, expected)
    assert m.dissimilarity == pytest.approx(1 - 2 * xy / energy)


def test_dissimilarity_of_opposite_and_orthogonal():
    assert drift_metrics(-np.ones(4), np.ones(4), "float64").dissimilarity == pytest.approx(2.0)
    assert drift_metrics(np.array([1.0, 0.0]), np.array([0.0, 1.0]), "float64").dissimilarity == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_ulp_distance_counts_representable_numbers(dtype):
    run = xattn.contract.spec.numpy_dtype(dtype)
    one = np.ones(1, run)
    up = np.nextafter(one, np.asarray(2, run)) if dtype != "bfloat16" else one + np.spacing(one)
    assert ulp_distance(up, one, dtype)[0] == 1
    assert ulp_distance(one, up, dtype)[0] == 1
    assert ulp_distance(np.array([0.0]), np.array([-0.0]), dtype)[0] == 0
    tiny = np.spacing(np.zeros(1, run))  # smallest subnormal
    assert ulp_distance(tiny, -tiny, dtype)[0] == 2


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=-2.0**100, max_value=2.0**100, allow_nan=False, width=32))
def test_next_float32_is_one_ulp_away(value):
    x = np.float32(value)
    assert ulp_distance(np.nextafter(x, np.float32(np.inf)), x, "float32")[()] == 1


def test_ulp_is_measured_in_the_run_dtype():
    # 1 + 2**-10 is one float16 step above 1 but rounds to 1 in bfloat16.
    assert ulp_distance(np.array([1 + 2**-10]), np.array([1.0]), "float16")[0] == 1
    assert ulp_distance(np.array([1 + 2**-10]), np.array([1.0]), "bfloat16")[0] == 0


@pytest.mark.parametrize("actual, expected, mismatches", [
    ([np.nan, 1.0], [0.5, 1.0], 1),
    ([np.inf, 1.0], [0.5, 1.0], 1),
    ([np.inf, np.nan], [np.inf, np.nan], 0),
    ([np.inf, 1.0], [-np.inf, 1.0], 1),
    ([1.0, 1.0], [np.nan, 1.0], 1),
])
def test_nonfinite_mismatches(actual, expected, mismatches):
    m = drift_metrics(np.array(actual), np.array(expected), "float32")
    assert m.nonfinite_mismatches == mismatches


def test_a_nan_where_the_oracle_has_none_is_always_over_budget():
    expected = np.linspace(0, 1, 10)
    actual = expected.copy()
    actual[3] = np.nan
    budget = tolerance_budget("float32", rtol=1e9, atol=1e9)
    m = drift_metrics(actual, expected, "float32")
    assert m.max_abs_err == 0  # the finite elements are exact...
    assert not within_budget(m, budget, tolerance_excess(actual, expected, budget))  # ...and it still fails
    generous = naive_budget(expected, expected, "float32")
    assert not within_budget(m, generous)


def test_rounding_step_is_one_ulp_at_the_largest_magnitude():
    assert rounding_step(np.array([0.5, -1.0]), "float32") == 2.0**-23
    assert rounding_step(np.array([1.0]), "float16") == 2.0**-10
    assert rounding_step(np.array([1.0]), "bfloat16") == 2.0**-7
    assert rounding_step(np.array([3.0]), "float64") == 2.0**-51


@pytest.mark.parametrize("dtype, bound", [("float64", 1e-13), ("float32", 1e-5), ("float16", 1e-2),
                                          ("bfloat16", 5e-2)])
@pytest.mark.parametrize("case", [{}, {"causal": True}, {"kv_heads": 2, "key_lengths": (3, 16)},
                                  {"kv_len": 24, "scale": 0.3}])
def test_naive_attention_is_plain_attention_in_the_run_dtype(dtype, bound, case):
    spec = AttentionSpec(batch=2, q_len=16, embed=32, heads=4, dtype=dtype, **case)
    inputs, expected = oracle_of(spec)
    naive = naive_attention(inputs, causal=spec.causal, scale=spec.scale, dtype=dtype)
    assert str(naive.dtype) == dtype
    error = np.abs(naive.astype(np.float64) - expected).max() / np.abs(expected).max()
    assert 0 < error <= bound or (dtype == "float64" and error <= bound)


def test_budget_is_two_naive_errors_plus_one_rounding_step():
    spec = AttentionSpec(batch=2, q_len=16, embed=32, heads=4, dtype="bfloat16")
    inputs, expected = oracle_of(spec)
    naive = naive_attention(inputs, dtype="bfloat16")
    budget = naive_budget(naive, expected, "bfloat16")
    naive_error = np.abs(naive.astype(np.float64) - expected).max()
    assert budget.method == "naive"
    assert budget.naive_max_abs_err == naive_error
    assert budget.max_abs == 2 * naive_error + rounding_step(expected, "bfloat16")
    assert within_budget(drift_metrics(naive, expected, "bfloat16"), budget)
    assert "naive" in budget.describe()


def test_the_seed_reshape_bug_is_far_over_budget():
    spec = AttentionSpec(batch=2, q_len=16, embed=32, heads=4)
    inputs, expected = oracle_of(spec)
    budget = naive_budget(naive_attention(inputs, dtype="float32"), expected, "float32")
    H, E, D = inputs.wq.shape
    # attn_fast_chatgpt: (H,E,D) -> (E,H·D) by reshape instead of a transpose
    wrong = inputs._replace(wq=inputs.wq.reshape(E, H * D).reshape(E, H, D).transpose(1, 0, 2))
    got = xattn.reference(wrong.x, *wrong.weights())
    assert not within_budget(drift_metrics(got, expected, "float32"), budget)


def test_tolerance_budget_is_torch_testing_default():
    budget = tolerance_budget("bfloat16")
    assert (budget.rtol, budget.atol) == (1.6e-2, 1e-5)
    expected = np.array([1.0, 100.0])
    assert tolerance_excess(expected * (1 + 1e-2), expected, budget) < 1
    assert tolerance_excess(expected * (1 + 3e-2), expected, budget) > 1
    with pytest.raises(ValueError, match="tolerance excess"):
        within_budget(drift_metrics(expected, expected, "float32"), budget)


def test_attribution_names_the_side_over_budget():
    assert attribute("a", True, "b", True) == ((), ROUNDING_NOISE)
    assert attribute("a", False, "b", True) == (("a",), "a over budget")
    assert attribute("a", True, "b", False) == (("b",), "b over budget")
    assert attribute("a", False, "b", False)[0] == ("a", "b")


def test_shape_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match=r"expected the shape of the reference \(3,\); got \(2,\)"):
        drift_metrics(np.zeros(2), np.zeros(3), "float32")


def test_bfloat16_arrays_are_accepted():
    x = np.linspace(-1, 1, 8).astype(ml_dtypes.bfloat16)
    m = drift_metrics(x, np.linspace(-1, 1, 8), "bfloat16")
    assert m.max_ulp <= 1 and m.max_abs_err < 2**-7
