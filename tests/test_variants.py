"""Every (backend, variant) agrees with the float64 oracle on every case of the contract."""

import numpy as np
import pytest

import xattn
from xattn import _compat
from xattn.contract.spec import AttentionSpec, make_inputs
from xattn.errors import VariantUnsupportedError

from conftest import require_backend

CASES = {
    "plain": dict(),
    "causal": dict(causal=True),
    "key-padding": dict(key_lengths=(5, 16)),
    "grouped-kv": dict(kv_heads=2),
    "multi-query": dict(kv_heads=1, causal=True),
    # kv_len > the blocked variants' key block (128) so they cross block edges and pad the last block
    "cross": dict(kv_len=160, key_lengths=(150, 7)),
}

#: Largest max|out - oracle| / max|oracle| accepted per dtype: a few units of the dtype's rounding
#: at these sizes (measured: ~3e-7 float32, ~1e-3 float16, ~7e-3 bfloat16).
TOLERANCE = {"float64": 1e-12, "float32": 5e-6, "float16": 5e-3, "bfloat16": 3e-2}

#: (backend, variant, dtype) a fused kernel cannot compute faithfully here; each must say so, not compute.
#: jax sdpa: XLA has no float16 dot on CPU; its softmax is always float32, so float64 is out of reach.
UNSUPPORTED_ON_CPU = {("jax", "sdpa", "float16"): "cannot run float16",
                      ("jax", "sdpa", "float64"): "softmax in float32"}

EXPECTED_VARIANTS = {
    "jax": ("einsum", "packed", "vmap", "sdpa", "blocked", "tiled", "threaded"),
    "torch": ("einsum", "packed", "vmap", "sdpa", "blocked", "tiled", "compiled"),
}


def spec_for(case: str, dtype: str) -> AttentionSpec:
    return AttentionSpec(batch=2, q_len=16, embed=32, heads=4, dtype=dtype, **CASES[case])


def relative_error(out, spec: AttentionSpec) -> float:
    inputs = make_inputs(spec)
    expected = xattn.reference(
        inputs.x, *inputs.weights(), kv=inputs.kv, causal=spec.causal, key_lengths=inputs.key_lengths
    )
    got = np.asarray(xattn.numerics.oracle._f64(out))
    assert got.shape == expected.shape
    assert np.isfinite(got).all()
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def run(backend: str, variant: str, spec: AttentionSpec):
    inputs = make_inputs(spec)
    return xattn.attention(
        inputs.x, *inputs.weights(), kv=None if inputs.kv is inputs.x else inputs.kv,
        causal=spec.causal, key_lengths=inputs.key_lengths, backend=backend, variant=variant,
    )


@pytest.mark.parametrize("name", sorted(EXPECTED_VARIANTS))
def test_variant_lists(name):
    require_backend(name)
    assert xattn.variants(name) == EXPECTED_VARIANTS[name]


def all_pairs():
    return [(b, v) for b, names in EXPECTED_VARIANTS.items() for v in names]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend, variant", all_pairs())
def test_agrees_with_oracle(backend, variant, case, dtype):
    require_backend(backend)
    spec = spec_for(case, dtype)
    out = run(backend, variant, spec)
    assert str(out.dtype).endswith(dtype), f"output dtype {out.dtype}, expected {dtype}"
    assert relative_error(out, spec) <= TOLERANCE[dtype]


@pytest.mark.parametrize("backend, variant", all_pairs())
def test_float16(backend, variant):
    require_backend(backend)
    spec = spec_for("causal", "float16").replace(key_lengths=(9, 16))
    check_or_refused(backend, variant, spec, "float16")


@pytest.fixture
def x64():
    jax = require_backend("jax").jax
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("backend, variant", all_pairs())
def test_float64(backend, variant, request):
    require_backend(backend)
    if backend == "jax":
        request.getfixturevalue("x64")
    spec = spec_for("grouped-kv", "float64").replace(key_lengths=(3, 16), kv_len=20)
    check_or_refused(backend, variant, spec, "float64")


def check_or_refused(backend, variant, spec, dtype):
    refusal = UNSUPPORTED_ON_CPU.get((backend, variant, dtype))
    if (backend, variant, dtype) == ("jax", "sdpa", "float16") and _compat.jax_sdpa_runs_float16_on_cpu():
        refusal = None  # JAX 0.4.38 runs it; see _compat
    if refusal is None:
        assert relative_error(run(backend, variant, spec), spec) <= TOLERANCE[dtype]
        return
    with pytest.raises(VariantUnsupportedError, match=refusal):
        run(backend, variant, spec)


def test_jax_float64_without_x64_is_refused_not_downcast():
    jax = require_backend("jax").jax
    if jax.config.jax_enable_x64:
        pytest.fail("jax_enable_x64 leaked from another test")
    inputs = make_inputs(spec_for("plain", "float64"))
    with pytest.raises(xattn.XattnError, match="jax_enable_x64"):
        xattn.attention(inputs.x, *inputs.weights(), backend="jax", variant="einsum")


def test_result_is_the_backends_own_array(backend):
    out = run(backend, "einsum", spec_for("plain", "float32"))
    expected_type = {"jax": "jax", "torch": "torch"}[backend]
    assert type(out).__module__.split(".")[0].startswith(expected_type)


def test_backend_arrays_are_accepted(backend):
    module = require_backend(backend)
    spec = spec_for("key-padding", "float32")
    inputs = make_inputs(spec)
    arrays = module.as_arrays(inputs.x, *inputs.weights())
    out = xattn.attention(*arrays, key_lengths=module.as_lengths(inputs.key_lengths), backend=backend, variant="packed")
    assert relative_error(out, spec) <= TOLERANCE["float32"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: {**a, "wq": a["wq"][:, :-1]}, r"wq \(H,E,D\): expected shape \(4, 32, 8\)"),
        (lambda a: {**a, "wk": a["wk"][:3]}, r"expected a number of kv heads G dividing H=4; got G=3"),
        (lambda a: {**a, "wo": a["wo"][:, :, :-1]}, r"wo \(H,D,E\): expected shape \(4, 8, 32\)"),
        (lambda a: {**a, "x": a["x"][0]}, r"x \(B,T,E\): expected 3 dimensions; got shape \(16, 32\)"),
        (lambda a: {**a, "kv": a["x"][:, :5], "causal": True}, "causal: expected q_len == kv_len; got T=16, S=5"),
        (lambda a: {**a, "key_lengths": np.array([0, 3])}, r"every length in \[1, kv_len=16\]"),
        (lambda a: {**a, "key_lengths": np.array([1.0, 3.0])}, "key_lengths: expected integers"),
    ],
)
def test_bad_shapes_raise_before_any_backend(change, message, backend):
    inputs = make_inputs(spec_for("plain", "float32"))
    args = dict(x=inputs.x, wq=inputs.wq, wk=inputs.wk, wv=inputs.wv, wo=inputs.wo)
    args = change(args)
    x, wq, wk, wv, wo = (args.pop(name) for name in ("x", "wq", "wk", "wv", "wo"))
    with pytest.raises((ValueError, TypeError), match=message):
        xattn.attention(x, wq, wk, wv, wo, **args, backend=backend, variant="einsum")


def test_unknown_variant_lists_the_valid_ones(backend):
    inputs = make_inputs(spec_for("plain", "float32"))
    with pytest.raises(ValueError, match=f"variant: expected one of {', '.join(EXPECTED_VARIANTS[backend])}"):
        xattn.attention(inputs.x, *inputs.weights(), backend=backend, variant="flash")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tiled_across_ragged_query_tiles_and_row_chunks(backend, dtype, monkeypatch):
    module = require_backend(backend)
    if backend == "jax":
        # Force several (kv-head row) chunks at this small size; build() caches per configuration.
        monkeypatch.setattr(module, "TILE_BYTES", 64 * 1024)
        monkeypatch.setattr(module, "QUERY_TILE", 128)
        module.build.cache_clear()
    assert module.QUERY_TILE == 128
    # q_len 150 = one full query tile of 128 and a ragged one of 22
    spec = AttentionSpec(batch=3, q_len=150, embed=32, heads=4, kv_heads=2, causal=True,
                         key_lengths=(150, 1, 77), dtype=dtype)
    try:
        assert relative_error(run(backend, "tiled", spec), spec) <= TOLERANCE[dtype]
    finally:
        if backend == "jax":
            module.build.cache_clear()


def test_an_empty_batch_runs_in_every_variant(backend):
    # Issue 14: JAX tiled and threaded raised "max() arg is an empty sequence" on batch 0.
    inputs = make_inputs(spec_for("plain", "float32"))
    x = inputs.x[:0]
    for variant in xattn.variants(backend):
        for mask in ({}, {"causal": True, "key_lengths": np.zeros(0, np.int32)}):
            out = xattn.attention(x, *inputs.weights(), **mask, backend=backend, variant=variant)
            assert tuple(out.shape) == (0, 16, 32), (variant, mask)
            assert str(out.dtype).removeprefix("torch.") == "float32", (variant, mask)
    wh = np.ones((4, 32, 32), np.float32)
    assert tuple(xattn.fullrank_attention(x, inputs.wq, inputs.wk, wh, backend=backend).shape) == (0, 16, 32)


MIXED_MESSAGE = ("inputs: expected one dtype for every input; got x float32, kv float32, wq float16, wk float16,"
                 " wv float16, wo float16. Cast them to one dtype first")


def test_mixed_input_dtypes_are_one_value_error_in_every_backend(backend):
    # Issue 14: x in float32 with float16 weights: JAX promoted silently, torch raised a RuntimeError.
    inputs = make_inputs(spec_for("plain", "float32"))
    weights = [w.astype(np.float16) for w in inputs.weights()]
    module = require_backend(backend)
    for arrays in ((inputs.x, *weights), module.as_arrays(inputs.x, *weights)):  # NumPy, then the backend's own
        for variant in ("einsum", "sdpa"):
            with pytest.raises(ValueError) as caught:
                xattn.attention(*arrays, backend=backend, variant=variant)
            assert str(caught.value).startswith(MIXED_MESSAGE), caught.value
    with pytest.raises(ValueError, match="got x float32, kv float32, wq float32, wk float32, wh float16"):
        xattn.fullrank_attention(inputs.x, inputs.wq, inputs.wk, np.ones((4, 32, 32), np.float16), backend=backend)


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 0.0, -0.5])
def test_a_scale_that_is_not_positive_and_finite_is_refused_like_the_spec_refuses_it(scale, backend):
    inputs = make_inputs(spec_for("plain", "float32"))
    message = f"scale: expected a positive finite number; got {scale!r}"
    with pytest.raises(ValueError, match=message):
        AttentionSpec(batch=1, q_len=4, embed=8, heads=2, scale=scale)  # what the CLI's --scale goes through
    with pytest.raises(ValueError, match=message):
        xattn.attention(inputs.x, *inputs.weights(), scale=scale, backend=backend, variant="einsum")
    with pytest.raises(ValueError, match=message):
        xattn.fullrank_attention(inputs.x, inputs.wq, inputs.wk, np.ones((4, 32, 32), np.float32), scale=scale,
                                 backend=backend)
    with pytest.raises(TypeError, match="scale: expected a positive finite number or None; got str"):
        xattn.attention(inputs.x, *inputs.weights(), scale="0.5", backend=backend, variant="einsum")
