"""xattn's layers, ``xattn.FlaxAttention`` (flax.nnx) and ``xattn.TorchAttention`` (torch.nn): the
contract's parameters and math, the same options in both, and the float64 layer oracles."""

import numpy as np
import pytest

import xattn
from xattn.contract.spec import AttentionSpec, make_inputs
from xattn.numerics.layer_oracle import layer_reference, reference_vjp

from conftest import require_backend

#: max|out - oracle| / max|oracle| accepted in float32 at these sizes (measured ~2e-7).
FLOAT32_TOLERANCE = 5e-6

OPTIONS = {
    "plain": dict(),
    "grouped-kv": dict(kv_heads=2),
    "multi-query-causal": dict(kv_heads=1, causal=True),
    "head-dim-and-scale": dict(head_dim=3, scale=0.7),
    "no-bias": dict(bias=False),
}
E, H = 8, 4


def make_layer(framework: str, **options):
    if framework == "torch":
        require_backend("torch")
        return xattn.TorchAttention(E, H, **options)
    require_backend("jax")
    from flax import nnx

    return xattn.FlaxAttention(E, H, rngs=nnx.Rngs(0), **options)


def to_framework(framework: str, array):
    return xattn.to_torch(array) if framework == "torch" else xattn.to_jax(array)


def randomize(layer, framework: str, seed: int = 1):
    """Every parameter (biases included) drawn N(0, 0.5): zero biases would hide a misplaced one."""
    rng = np.random.default_rng(seed)
    names = [n for n in ("wq", "wk", "wv", "wo", "bq", "bk", "bv", "bo") if getattr(layer, n) is not None]
    for name in names:
        shape = tuple(getattr(layer, name).shape)
        value = (0.5 * rng.standard_normal(shape)).astype(np.float32)
        if framework == "torch":
            getattr(layer, name).data = xattn.to_torch(value)
        else:
            from xattn import _compat

            _compat.nnx_set_value(getattr(layer, name), xattn.to_jax(value))
    return layer


def inputs(batch=2, q_len=5, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, q_len, E)).astype(np.float32)


@pytest.mark.parametrize("case", sorted(OPTIONS))
def test_both_frameworks_have_the_same_parameters(case):
    torch_layer, flax_layer = make_layer("torch", **OPTIONS[case]), make_layer("jax", **OPTIONS[case])
    torch_shapes = {name: tuple(p.shape) for name, p in torch_layer.named_parameters()}
    from xattn import _compat

    flax_shapes = {".".join(map(str, path)): tuple(v.shape) for path, v in _compat.nnx_params(flax_layer)}
    assert torch_shapes == flax_shapes
    G = OPTIONS[case].get("kv_heads", H)
    D = OPTIONS[case].get("head_dim", E // H)
    expected = {"wq": (H, E, D), "wk": (G, E, D), "wv": (G, E, D), "wo": (H, D, E)}
    if OPTIONS[case].get("bias", True):
        expected.update(bq=(H, D), bk=(G, D), bv=(G, D), bo=(E,))
    assert torch_shapes == expected
    for option in ("embed", "heads", "kv_heads", "head_dim", "causal", "scale", "use_bias"):
        assert getattr(torch_layer, option) == getattr(flax_layer, option), option


@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("case", sorted(OPTIONS))
def test_forward_matches_the_float64_layer_oracle(framework, case):
    layer = randomize(make_layer(framework, **OPTIONS[case]), framework)
    x, lengths = inputs(), np.array([3, 5], dtype=np.int32)
    out = layer(to_framework(framework, x), key_lengths=to_framework(framework, lengths))
    weights = xattn.layer_function(layer).weights()
    expected = layer_reference(x, *weights, causal=layer.causal, key_lengths=lengths, scale=layer.scale)
    error = np.abs(np.asarray(xattn.to_numpy(out.detach() if framework == "torch" else out)) - expected).max()
    assert error / np.abs(expected).max() < FLOAT32_TOLERANCE


@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("case", ["plain", "grouped-kv", "multi-query-causal"])
def test_without_bias_it_is_the_einsum_variant(framework, case):
    layer = make_layer(framework, bias=False, **OPTIONS[case])
    x = inputs()
    weights = xattn.layer_function(layer).weights()
    lengths = np.array([2, 5], dtype=np.int32)
    out = layer(to_framework(framework, x), key_lengths=to_framework(framework, lengths))
    variant = xattn.attention(x, *weights, causal=layer.causal, key_lengths=lengths, backend=framework,
                              variant="einsum")
    got = np.asarray(xattn.to_numpy(out.detach() if framework == "torch" else out))
    want = np.asarray(xattn.to_numpy(variant))
    # Same ops in the same order: torch is bit-identical; XLA may fuse the module's jit differently.
    if framework == "torch":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-7)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_cross_attention_takes_kv(framework):
    layer = randomize(make_layer(framework), framework)
    x, kv = inputs(q_len=3), inputs(q_len=6, seed=1)
    out = layer(to_framework(framework, x), to_framework(framework, kv))
    assert tuple(out.shape) == (2, 3, E)
    expected = layer_reference(x, *xattn.layer_function(layer).weights(), kv=kv)
    got = np.asarray(xattn.to_numpy(out.detach() if framework == "torch" else out))
    assert np.abs(got - expected).max() / np.abs(expected).max() < FLOAT32_TOLERANCE


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_bad_options_and_inputs_name_the_problem(framework):
    with pytest.raises(ValueError, match="kv_heads: expected a divisor of heads=4; got kv_heads=3"):
        make_layer(framework, kv_heads=3)
    with pytest.raises(ValueError, match="scale: expected a positive finite number"):
        make_layer(framework, scale=-1.0)
    layer = make_layer(framework)
    with pytest.raises(ValueError, match=r"wq \(H,E,D\)|x \(B,T,E\)|expected shape"):
        layer(to_framework(framework, np.zeros((2, 5, E + 1), np.float32)))
    with pytest.raises(ValueError, match="key_lengths: expected every length in"):
        layer(to_framework(framework, inputs()), key_lengths=to_framework(framework, np.array([0, 5], np.int32)))


def test_torch_layer_trains_through_autograd():
    require_backend("torch")
    import torch

    layer = randomize(make_layer("torch", kv_heads=2), "torch")
    layer(torch.from_numpy(inputs())).square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


# ------------------------------------------------------------------------- the float64 oracles


def test_layer_reference_without_biases_is_the_oracle():
    spec = AttentionSpec(batch=2, q_len=5, embed=8, heads=4, kv_heads=2, causal=True, key_lengths=(3, 5),
                         dtype="float64")
    data = make_inputs(spec)
    got = layer_reference(data.x, *data.weights(), causal=True, key_lengths=data.key_lengths)
    want = xattn.reference(data.x, *data.weights(), causal=True, key_lengths=data.key_lengths)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("cross", [False, True])
def test_reference_vjp_is_jax_autodiff_in_float64(cross):
    require_backend("jax")
    import jax

    from xattn import _compat

    rng = np.random.default_rng(3)
    B, T, S, G, D = 2, 4, 6 if cross else 4, 2, 3
    x = rng.standard_normal((B, T, E))
    kv = rng.standard_normal((B, S, E)) if cross else None
    params = [rng.standard_normal(shape) * 0.5 for shape in
              [(H, E, D), (G, E, D), (G, E, D), (H, D, E), (H, D), (G, D), (G, D), (E,)]]
    lengths = np.array([S - 1, 2])
    cotangent = rng.standard_normal((B, T, E))
    want = reference_vjp(x, *params, kv=kv, key_lengths=lengths, scale=0.6, cotangent=cotangent)
    from xattn.layers.flax_layer import attend

    with _compat.jax_x64(True):
        args = [jax.numpy.asarray(a) for a in ([x] + ([kv] if cross else []) + params)]

        def loss(*args):
            x_, kv_ = args[0], (args[1] if cross else args[0])
            out = attend(x_, kv_, *args[1 + cross:], jax.numpy.asarray(lengths), causal=False, scale=0.6)
            return (out * cotangent).sum()

        got = jax.grad(loss, argnums=tuple(range(len(args))))(*args)
    names = ["x"] + (["kv"] if cross else []) + ["wq", "wk", "wv", "wo", "bq", "bk", "bv", "bo"]
    assert list(want) == names
    for name, grad in zip(names, got):
        np.testing.assert_allclose(want[name], np.asarray(grad), rtol=1e-10, atol=1e-12, err_msg=name)
