import numpy as np
import pytest

from xattn.contract.spec import DTYPES, AttentionSpec, make_inputs, numpy_dtype


def test_defaults_derive_kv_len_kv_heads_and_head_dim():
    spec = AttentionSpec(batch=3, q_len=10, embed=48, heads=6)
    assert (spec.kv_len, spec.kv_heads, spec.head_dim) == (10, 6, 8)
    assert not spec.is_cross


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(heads=4, kv_heads=3), "kv_heads: expected a divisor of heads=4; got kv_heads=3"),
        (dict(q_len=8, kv_len=9, causal=True), "causal: expected q_len == kv_len; got q_len=8, kv_len=9"),
        (dict(batch=2, key_lengths=(3,)), "one length per batch row (2); got 1"),
        (dict(batch=2, q_len=8, key_lengths=(0, 8)), "every length in [1, kv_len=8]"),
        (dict(batch=2, q_len=8, key_lengths=(1, 9)), "got [9]"),
        (dict(batch=0), "batch: expected a positive integer; got 0"),
        (dict(q_len=-1), "q_len: expected a positive integer; got -1"),
        (dict(heads=2.5), "heads: expected a positive integer; got 2.5"),
        (dict(dtype="float8"), "dtype: expected one of float32, float16, bfloat16, float64; got 'float8'"),
        (dict(embed=30, heads=4), "expected embed divisible by heads"),
        (dict(scale=-1.0), "scale: expected a positive finite number"),
        (dict(seed=-3), "seed: expected a non-negative integer"),
    ],
)
def test_bad_specs_say_expected_and_got(fields, message):
    with pytest.raises(ValueError) as caught:
        AttentionSpec(**fields)
    assert message in str(caught.value)


@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_have_run_dtype_and_contract_shapes(dtype):
    spec = AttentionSpec(batch=2, q_len=5, kv_len=7, embed=12, heads=4, kv_heads=2, head_dim=3, dtype=dtype)
    inputs = make_inputs(spec)
    shapes = [a.shape for a in (inputs.x, inputs.kv, *inputs.weights())]
    assert shapes == [(2, 5, 12), (2, 7, 12), (4, 12, 3), (2, 12, 3), (2, 12, 3), (4, 3, 12)]
    assert {a.dtype for a in (inputs.x, inputs.kv, *inputs.weights())} == {numpy_dtype(dtype)}


def test_inputs_are_bit_identical_across_calls_and_change_with_seed():
    spec = AttentionSpec(batch=2, q_len=6, embed=8, heads=2, dtype="bfloat16", key_lengths=(2, 6))
    first, second = make_inputs(spec), make_inputs(spec)
    for a, b in zip(first, second):
        assert a.tobytes() == b.tobytes()
    other = make_inputs(spec.replace(seed=1))
    assert other.x.tobytes() != first.x.tobytes()
    assert first.key_lengths.tolist() == [2, 6]


def test_self_attention_shares_the_query_source_buffer():
    inputs = make_inputs(AttentionSpec(batch=1, q_len=4, embed=4, heads=1))
    assert inputs.kv is inputs.x


def test_bfloat16_inputs_are_the_rounded_float32_values():
    spec = AttentionSpec(batch=1, q_len=4, embed=8, heads=2, dtype="bfloat16")
    bf16 = make_inputs(spec).x
    f32 = make_inputs(spec.replace(dtype="float32")).x
    assert bf16.dtype.name == "bfloat16"
    np.testing.assert_array_equal(bf16.astype(np.float32), f32.astype(bf16.dtype).astype(np.float32))
