"""``xattn.port_weights`` between every pair of the five layer kinds, and ``check_layers`` on the result.

Kinds: xattn.FlaxAttention, xattn.TorchAttention, flax.nnx.MultiHeadAttention,
torch.nn.MultiheadAttention and equinox.nn.MultiheadAttention (whose port returns a new module:
:func:`port`); equinox's own conventions are in tests/test_equinox_layers.py. A randomly
initialised source (biases included) is ported and both layers must agree within the float32
budget against the float64 oracle, with and without masks.
"""

import numpy as np
import pytest

import xattn
from xattn.errors import BridgeError
from xattn.layers.vocabulary import EQX_MHA, FLAX_ATTENTION, KINDS, NNX_MHA, TORCH_ATTENTION, TORCH_MHA
from xattn.layers.weights import adapter

from conftest import require_backend, require_equinox

E, H = 8, 2
LENGTHS = np.array([3, 5], dtype=np.int32)


def build(kind, *, bias=True, kv_heads=None, causal=False, batch_first=False, **extra):
    """A layer of ``kind`` with width E and H heads (``causal`` only matters to xattn's layers)."""
    if kind in (TORCH_ATTENTION, TORCH_MHA):
        require_backend("torch")
        import torch

        if kind == TORCH_ATTENTION:
            return xattn.TorchAttention(E, H, kv_heads=kv_heads, causal=causal, bias=bias, **extra)
        return torch.nn.MultiheadAttention(E, H, bias=bias, batch_first=batch_first, **extra)
    require_backend("jax")
    if kind == EQX_MHA:
        return build_equinox(bias=bias, **extra)
    from flax import nnx

    if kind == FLAX_ATTENTION:
        return xattn.FlaxAttention(E, H, kv_heads=kv_heads, causal=causal, bias=bias, rngs=nnx.Rngs(0), **extra)
    from xattn import _compat

    if kv_heads is not None:
        extra["num_kv_heads"] = kv_heads
    for name in ("num_kv_heads", "in_kv_features"):
        if name in extra and not _compat.nnx_mha_takes(name):
            pytest.skip(f"this flax's nnx.MultiHeadAttention has no {name} (see xattn/_compat.py)")
    return nnx.MultiHeadAttention(H, E, use_bias=bias, decode=False, rngs=nnx.Rngs(0), **extra)


def build_equinox(*, bias=True, heads=H, **extra):
    """An ``equinox.nn.MultiheadAttention`` of width E, all four biases or none (``extra`` overrides a flag)."""
    eqx = require_equinox()
    import jax

    flags = {f"use_{part}_bias": bias for part in ("query", "key", "value", "output")}
    return eqx.nn.MultiheadAttention(heads, E, **{**flags, **extra}, key=jax.random.PRNGKey(0))


def port(src, dst, **options):
    """``(dst after the port, the PortedWeights record or None)``: a port into equinox returns a new module."""
    ported = xattn.port_weights(src, dst, **options)
    return (ported, None) if adapter(dst).kind == EQX_MHA else (dst, ported)


def randomize(layer, seed=1):
    """Every parameter drawn N(0, 0.5): fresh biases are zeros, which would hide a misplaced one.

    Returns the layer (a new one for equinox, whose modules are immutable).
    """
    rng = np.random.default_rng(seed)
    if adapter(layer).kind == EQX_MHA:
        import equinox as eqx
        import jax

        arrays, static = eqx.partition(layer, eqx.is_inexact_array)
        drawn = jax.tree_util.tree_map(
            lambda a: xattn.to_jax((0.5 * rng.standard_normal(a.shape)).astype(np.float32)), arrays)
        return eqx.combine(drawn, static)
    if adapter(layer).framework == "torch":
        for parameter in layer.parameters():  # copied into torch's own (aligned) storage
            parameter.data.copy_(xattn.to_torch((0.5 * rng.standard_normal(tuple(parameter.shape))).astype(np.float32)))
        return layer
    from xattn import _compat

    for _, variable in _compat.nnx_params(layer):
        value = (0.5 * rng.standard_normal(tuple(variable.shape))).astype(np.float32)
        _compat.nnx_set_value(variable, xattn.to_jax(value))
    return layer


def forward(layer, x, kv=None, *, causal=None, key_lengths=None):
    """The layer on NumPy inputs in the contract's layout (B,T,E), back as NumPy."""
    found = adapter(layer)
    move = xattn.to_torch if found.framework == "torch" else xattn.to_jax
    out = found.forward(layer, move(x), None if kv is None else move(kv), causal=causal,
                        key_lengths=None if key_lengths is None else move(key_lengths))
    return np.array(xattn.to_numpy(out.detach() if found.framework == "torch" else out))


def inputs(q_len=5, seed=0, width=E):
    return np.random.default_rng(seed).standard_normal((2, q_len, width)).astype(np.float32)


PAIRS = [(src, dst) for src in KINDS for dst in KINDS]


@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "causal+padding"])
@pytest.mark.parametrize("src_kind, dst_kind", PAIRS, ids=[f"{s}->{d}" for s, d in PAIRS])
def test_every_pair_ports_and_agrees(src_kind, dst_kind, masked):
    src = randomize(build(src_kind, causal=masked))
    dst, ported = port(src, build(dst_kind, causal=masked))
    assert ported is None or {t.how for t in ported.transfers} <= {"zero-copy", "copy"}
    report = xattn.check_layers(src, dst, inputs(), causal=masked, key_lengths=LENGTHS if masked else None, grad=False)
    report.assert_ok()
    assert report.pairs[0].attribution == "rounding noise"


@pytest.mark.parametrize("src_kind, dst_kind",
                         [(TORCH_MHA, NNX_MHA), (NNX_MHA, TORCH_MHA), (TORCH_ATTENTION, FLAX_ATTENTION)])
def test_gradients_agree_after_a_port(src_kind, dst_kind):
    kv_heads = 1 if src_kind == TORCH_ATTENTION else None
    src = randomize(build(src_kind, kv_heads=kv_heads, causal=True))
    dst = build(dst_kind, kv_heads=kv_heads, causal=True)
    xattn.port_weights(src, dst)
    report = xattn.check_layers(src, dst, inputs(), causal=True, key_lengths=LENGTHS, grad=True)
    report.assert_ok()
    quantities = [side.output for side in report.sides]
    expected = ["out", "grad/x", "grad/wq", "grad/wk", "grad/wv", "grad/wo", "grad/bq", "grad/bk", "grad/bv", "grad/bo"]
    assert list(dict.fromkeys(quantities)) == expected
    assert all(pair.attribution == "rounding noise" for pair in report.pairs)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_layers_pass_with_the_naive_budget(dtype):
    """check_layers in float16/bfloat16: the layer oracle's staged run gives the budget, no false alarm."""
    import torch

    src = randomize(build(TORCH_MHA))
    src.to(getattr(torch, dtype))
    require_backend("jax")
    import jax.numpy as jnp
    from flax import nnx

    dst = nnx.MultiHeadAttention(H, E, decode=False, rngs=nnx.Rngs(0), dtype=getattr(jnp, dtype),
                                 param_dtype=getattr(jnp, dtype))
    xattn.port_weights(src, dst)
    x = xattn.make_inputs(xattn.AttentionSpec(batch=2, q_len=6, embed=E, heads=H, dtype=dtype)).x
    report = xattn.check_layers(src, dst, x, causal=True, key_lengths=LENGTHS, grad=True)
    assert report.ok, str(report)
    assert report.dtype == dtype and len(report.sides) == 20
    assert all(side.budget.method == "naive" and side.budget.dtype == dtype for side in report.sides), str(report)


@pytest.mark.parametrize("batch_first", [False, True])
def test_torch_mha_round_trip_through_flax_is_bit_exact(batch_first):
    torch_layer = randomize(build(TORCH_MHA, batch_first=batch_first))
    original = {name: t.clone() for name, t in torch_layer.state_dict().items()}
    flax_layer, back = build(NNX_MHA), build(TORCH_MHA, batch_first=not batch_first)
    xattn.port_weights(torch_layer, flax_layer)
    xattn.port_weights(flax_layer, back)
    for name, tensor in back.state_dict().items():
        assert (tensor == original[name]).all(), name
    x = inputs()
    np.testing.assert_array_equal(forward(torch_layer, x, key_lengths=LENGTHS), forward(back, x, key_lengths=LENGTHS))


def test_kdim_vdim_port_to_flax_in_kv_features():
    import torch

    src = randomize(build(TORCH_MHA, kdim=6, vdim=6, batch_first=True))
    assert src.in_proj_weight is None  # torch keeps separate q/k/v_proj_weight here
    dst = build(NNX_MHA, in_kv_features=6)
    xattn.port_weights(src, dst)
    x, kv = inputs(), inputs(q_len=7, seed=2, width=6)
    with torch.no_grad():
        want = forward(src, x, kv, key_lengths=np.array([7, 4], np.int32))
    got = forward(dst, x, kv, key_lengths=np.array([7, 4], np.int32))
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-6)
    back = build(TORCH_MHA, kdim=6, vdim=6)
    xattn.port_weights(dst, back)
    for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias"):
        assert (getattr(back, name) == getattr(src, name)).all(), name


def test_a_bias_free_source_fills_destination_biases_with_zeros():
    src = randomize(build(TORCH_MHA, bias=False))
    dst = randomize(build(NNX_MHA))
    ported = xattn.port_weights(src, dst)
    zeros = {t.target for t in ported.transfers if t.how == "zeros"}
    assert zeros == {"query.bias", "key.bias", "value.bias", "out.bias"}
    x = inputs()
    np.testing.assert_allclose(forward(dst, x), forward(src, x), rtol=0, atol=5e-6)


def mismatch(src, dst, *patterns):
    with pytest.raises(ValueError) as caught:
        xattn.port_weights(src, dst)
    for pattern in patterns:
        assert pattern in str(caught.value), str(caught.value)


def test_incompatible_configurations_name_the_mismatch():
    import torch
    from flax import nnx

    mismatch(build(TORCH_MHA), nnx.MultiHeadAttention(H, 12, decode=False, rngs=nnx.Rngs(0)),
             "query input width: torch.nn.MultiheadAttention has embed_dim=8;"
             " flax.nnx.MultiHeadAttention has in_features=12")
    mismatch(build(TORCH_MHA), nnx.MultiHeadAttention(4, E, decode=False, rngs=nnx.Rngs(0)),
             "query heads: torch.nn.MultiheadAttention has num_heads=2; flax.nnx.MultiHeadAttention has num_heads=4",
             "head width")
    mismatch(build(TORCH_ATTENTION, kv_heads=1), build(TORCH_MHA),
             "key/value heads: xattn.TorchAttention has kv_heads=1; torch.nn.MultiheadAttention has num_heads")
    mismatch(build(TORCH_MHA, kdim=6, vdim=4), build(NNX_MHA, in_kv_features=6),
             "value input width: torch.nn.MultiheadAttention has vdim=4;"
             " flax.nnx.MultiHeadAttention has in_kv_features=6")
    mismatch(build(TORCH_MHA, kdim=6, vdim=6), build(FLAX_ATTENTION), "key input width", "kdim=6", "embed=8")
    mismatch(build(TORCH_ATTENTION), build(NNX_MHA, bias=False), "bias: xattn.TorchAttention has biases")
    mismatch(xattn.TorchAttention(E, H, scale=0.25), build(TORCH_MHA),
             "scale: xattn.TorchAttention scales logits by scale=0.25")
    mismatch(build(TORCH_MHA, dtype=torch.float64), build(NNX_MHA), "parameter dtype", "dtype=float64")
    mismatch(build(TORCH_MHA, add_bias_kv=True), build(NNX_MHA), "add_bias_kv=True")
    mismatch(build(TORCH_MHA, add_zero_attn=True), build(TORCH_ATTENTION), "add_zero_attn=True")


def test_dropout_ports_only_where_outputs_agree():
    training = build(TORCH_MHA, dropout=0.1)
    mismatch(training, build(NNX_MHA), "dropout=0.1 in training mode", ".eval()")
    xattn.port_weights(training.eval(), build(NNX_MHA))
    mismatch(build(TORCH_MHA), build(NNX_MHA, dropout_rate=0.1), "dropout_rate=0.1 without deterministic=True")
    xattn.port_weights(build(TORCH_MHA), build(NNX_MHA, dropout_rate=0.1, deterministic=True))


def test_not_a_layer_is_a_type_error():
    import torch

    with pytest.raises(TypeError, match="expected a layer of one of xattn.FlaxAttention.*got torch.nn.*Linear"):
        xattn.port_weights(torch.nn.Linear(E, E), build(NNX_MHA))


def test_zero_copy_where_the_layout_allows_and_copy_semantics():
    torch_layer = randomize(build(TORCH_ATTENTION))
    flax_layer = build(FLAX_ATTENTION)
    ported = xattn.port_weights(torch_layer, flax_layer, copy=False)  # same names, shapes and layout
    assert set(ported.zero_copy) == {"wq", "wk", "wv", "wo", "bq", "bk", "bv", "bo"}
    # Shared buffers alias: an in-place torch update shows in the JAX layer (copy=True prevents it).
    import torch

    with torch.no_grad():
        torch_layer.bo.add_(1.0)
    np.testing.assert_array_equal(np.asarray(flax_layer.bo[...]), torch_layer.bo.detach().numpy())
    independent = build(FLAX_ATTENTION)
    assert xattn.port_weights(torch_layer, independent, copy=True).zero_copy == ()
    with torch.no_grad():
        torch_layer.bo.add_(1.0)
    assert not np.array_equal(np.asarray(independent.bo[...]), torch_layer.bo.detach().numpy())
    with pytest.raises(BridgeError, match="in_proj_weight cannot share"):
        xattn.port_weights(build(NNX_MHA), build(TORCH_MHA), copy=False)
    table = str(xattn.port_weights(build(NNX_MHA), build(TORCH_MHA)))
    assert "in_proj_weight" in table and "query.kernel, key.kernel, value.kernel" in table


def test_check_layers_refuses_layers_that_hold_different_weights():
    with pytest.raises(ValueError, match="Port them first"):
        xattn.check_layers(randomize(build(TORCH_MHA)), build(NNX_MHA), inputs(), grad=False)


def test_porting_modules_import_no_framework():
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import sys, xattn
        from xattn.layers import check, vocabulary, weights
        from xattn.numerics import layer_oracle
        from xattn.porting import gradients
        xattn.port_weights, xattn.check_layers, xattn.reference_vjp
        try:
            xattn.port_weights(object(), object())
        except TypeError as error:
            assert "expected a layer of one of" in str(error), error
        print(",".join(m for m in ("jax", "torch", "flax", "jaxlib", "equinox") if m in sys.modules))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_check_layers_takes_causal_from_an_xattn_layer():
    src = randomize(build(TORCH_ATTENTION, causal=True))
    dst = build(TORCH_MHA, batch_first=True)
    xattn.port_weights(src, dst)
    report = xattn.check_layers(src, dst, inputs(), grad=False)  # causal=None: TorchAttention's own True
    report.assert_ok()
    with pytest.raises(ValueError, match="causal: expected the layer's own causal=True"):
        xattn.check_layers(src, dst, inputs(), causal=False, grad=False)


def test_worked_example_script_runs(capsys):
    import pathlib
    import runpy

    require_backend("torch")
    require_backend("jax")
    script = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "port_mha.py"
    main = runpy.run_path(str(script))["main"]
    assert main(["--embed", "16", "--heads", "2", "--length", "6"]) == 0
    printed = capsys.readouterr().out
    assert "grad/wq" in printed and "verdict: ok" in printed and "bit-exact" in printed


def test_check_layers_runs_each_staged_forward_once_and_keeps_none_stale(monkeypatch):
    import xattn.layers.check as layer_check
    from xattn.numerics.layer_oracle import layer_reference, reference_vjp

    src = randomize(build(TORCH_MHA, batch_first=True))
    dst = build(NNX_MHA)
    xattn.port_weights(src, dst)
    calls = []
    real = layer_check.layer_forward

    def counted(*args, rounding_seed=None, **keywords):
        calls.append("repeats" if isinstance(rounding_seed, tuple) else np.asarray(args[0]).dtype.name)
        return real(*args, rounding_seed=rounding_seed, **keywords)

    monkeypatch.setattr(layer_check, "layer_forward", counted)
    report = xattn.check_layers(src, dst, inputs(), causal=True, key_lengths=LENGTHS, grad=True)
    assert report.ok, str(report)
    # one float64 oracle and one float32 naive forward for output and gradients alike, then the repeats
    assert calls.count("float64") == 1 and calls.count("float32") == 1 and "repeats" in calls
    # a LayerFunction asked about other arguments computes them afresh: the answers are those of the oracles
    fn = layer_check.LayerFunction(src, causal=True, key_lengths=LENGTHS)
    weights = fn.weights()
    keywords = dict(zip(fn.weight_names, weights), causal=True, key_lengths=LENGTHS)
    cotangent = inputs(seed=3)
    for x in (inputs(seed=1), inputs(seed=2)):
        np.testing.assert_array_equal(fn.reference(x, *weights), layer_reference(x, **keywords, dtype="float32"))
        grads = reference_vjp(x, **keywords, cotangent=cotangent, dtype="float32")
        for name, gradient in zip(fn.names, fn.reference_vjp(x, *weights, cotangent=cotangent)):
            np.testing.assert_array_equal(gradient, grads[name])
