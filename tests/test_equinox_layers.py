"""``equinox.nn.MultiheadAttention`` as a layer kind: its conventions, immutable ports and checks.

The every-pair port matrix (equinox included) is in tests/test_porting.py; here are what only
equinox has: a port that returns a new module, a layer called per example, separate key/value
widths and bias flags, query scaling, and a wrong layer that ``check_layers`` must catch.
"""

import numpy as np
import pytest
from test_porting import (
    LENGTHS,
    E,
    H,
    build,
    build_equinox,
    forward,
    inputs,
    mismatch,
    port,
    randomize,
)

import xattn
from xattn.layers.vocabulary import EQX_MHA, FLAX_ATTENTION, NNX_MHA, TORCH_MHA
from xattn.layers.weights import adapter

from conftest import REQUIRED, require_backend, require_equinox

# At import (InterleavedHeads subclasses equinox's layer): a module-level skip without equinox, except
# where CI demands jax (tox installs equinox with it): there a missing equinox fails the collection.
if "jax" in REQUIRED:
    import equinox as eqx
else:
    eqx = pytest.importorskip("equinox")


@pytest.fixture(autouse=True)
def _both_frameworks():
    require_equinox()
    require_backend("torch")


def weights_of(module) -> dict:
    """Every array of an equinox module by path, as NumPy copies."""
    import jax

    arrays = jax.tree_util.tree_leaves_with_path(eqx.filter(module, eqx.is_array))
    return {jax.tree_util.keystr(path): np.array(array) for path, array in arrays}


def test_a_port_into_equinox_returns_a_new_module_and_leaves_dst_unchanged():
    src = randomize(build(TORCH_MHA))
    dst = build_equinox()
    before = weights_of(dst)
    ported = xattn.port_weights(src, dst)
    assert isinstance(ported, eqx.nn.MultiheadAttention) and ported is not dst
    after = weights_of(dst)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    # Same layout as torch's unpacked projections: rows h·D..(h+1)·D are head h.
    torch_rows = src.in_proj_weight.detach().numpy()
    np.testing.assert_array_equal(np.asarray(ported.query_proj.weight), torch_rows[:E])
    np.testing.assert_array_equal(np.asarray(ported.value_proj.weight), torch_rows[2 * E:])
    np.testing.assert_array_equal(np.asarray(ported.output_proj.bias), src.out_proj.bias.detach().numpy())


def test_the_adapter_calls_the_layer_once_per_example():
    layer = randomize(build_equinox())
    x = inputs()
    batched = forward(layer, x)
    for b in range(x.shape[0]):  # eager and jitted XLA round differently: a few float32 ulps
        np.testing.assert_allclose(batched[b], np.asarray(layer(x[b], x[b], x[b])), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("other", [TORCH_MHA, NNX_MHA], ids=["torch", "flax"])
def test_round_trips_are_bit_exact(other):
    src = randomize(build(other))
    middle, _ = port(src, build_equinox())
    back, _ = port(middle, build(other))
    own = adapter(src)
    original, returned = own.raw(src), own.raw(back)
    for name in original:
        np.testing.assert_array_equal(xattn.to_numpy(returned[name]), xattn.to_numpy(original[name]), err_msg=name)
    x = inputs()
    np.testing.assert_array_equal(forward(src, x, key_lengths=LENGTHS), forward(back, x, key_lengths=LENGTHS))


def test_separate_key_and_value_widths_port_to_torch_kdim_vdim_and_back():
    import jax
    import torch

    src = randomize(build_equinox(key_size=6, value_size=4))
    dst, _ = port(src, build(TORCH_MHA, kdim=6, vdim=4, batch_first=True))
    assert dst.in_proj_weight is None  # torch's separate q/k/v_proj_weight
    # The contract's kv feeds keys and values alike; with kdim != vdim both layers are called directly.
    x, k, v = inputs(), inputs(q_len=7, seed=2, width=6), inputs(q_len=7, seed=3, width=4)
    with torch.no_grad():
        want, _ = dst(*(torch.from_numpy(a) for a in (x, k, v)), need_weights=False)
    got = jax.vmap(src)(x, k, v)
    np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=0, atol=5e-6)
    back, _ = port(dst, build_equinox(key_size=6, value_size=4))
    returned = weights_of(back)
    for name, array in weights_of(src).items():
        np.testing.assert_array_equal(returned[name], array)


@pytest.mark.parametrize("other", [TORCH_MHA, NNX_MHA, FLAX_ATTENTION], ids=["torch", "flax-nnx", "xattn-flax"])
def test_check_layers_with_gradients_against_torch_and_flax(other):
    src = randomize(build_equinox())
    dst, _ = port(src, build(other, causal=True))
    report = xattn.check_layers(src, dst, inputs(), causal=True, key_lengths=LENGTHS, grad=True)
    report.assert_ok()
    assert report.frameworks[0] == "jax" and report.names[0] == EQX_MHA
    expected = ["out", "grad/x", "grad/wq", "grad/wk", "grad/wv", "grad/wo", "grad/bq", "grad/bk", "grad/bv", "grad/bo"]
    assert list(dict.fromkeys(side.output for side in report.sides)) == expected
    assert all(pair.attribution == "rounding noise" for pair in report.pairs)


def test_cross_attention_with_a_head_width_whose_scale_is_not_exact():
    # qk_size 6: equinox scales queries by 1/sqrt(6) before the product, torch the logits after it.
    import jax
    import torch

    flags = dict(use_query_bias=True, use_key_bias=True, use_value_bias=True, use_output_bias=True)
    src = randomize(eqx.nn.MultiheadAttention(2, 12, **flags, key=jax.random.PRNGKey(3)))
    dst, _ = port(src, torch.nn.MultiheadAttention(12, 2))
    x, kv = inputs(width=12), inputs(q_len=4, seed=5, width=12)
    xattn.check_layers(src, dst, x, kv, key_lengths=np.array([4, 2]), grad=True).assert_ok()


class InterleavedHeads(eqx.nn.MultiheadAttention):
    """A wrong equinox layer: it splits H·D into (D, H), reading head h's features as every H-th row."""

    def _project(self, proj, x):
        import jax

        return jax.vmap(proj)(x).reshape(x.shape[0], -1, self.num_heads).swapaxes(1, 2)


def test_check_layers_catches_a_planted_bug_and_names_the_layer():
    import jax

    flags = dict(use_query_bias=True, use_key_bias=True, use_value_bias=True, use_output_bias=True)
    wrong = randomize(InterleavedHeads(H, E, **flags, key=jax.random.PRNGKey(0)))
    torch_mha, _ = port(wrong, build(TORCH_MHA))
    report = xattn.check_layers(torch_mha, wrong, inputs(), grad=True)
    assert not report.ok
    verdicts = {(side.name, side.output): side.verdict for side in report.sides}
    assert verdicts[(TORCH_MHA, "out")] == "ok" and verdicts[(EQX_MHA, "out")] == "drift"
    assert report.pairs[0].attribution == f"{EQX_MHA} over budget"
    with pytest.raises(AssertionError, match="drifts beyond its budget"):
        report.assert_ok()


def test_what_equinox_has_beyond_the_contract_is_named():
    mismatch(build_equinox(vo_size=2), build(TORCH_MHA), "vo_size=2 differs from qk_size=4")
    mismatch(build_equinox(bias=False, use_output_bias=True), build(TORCH_MHA),
             "use_query_bias=False, use_key_bias=False, use_value_bias=False, use_output_bias=True")
    mismatch(build(TORCH_MHA), build_equinox(bias=False),
             f"bias: {TORCH_MHA} has biases", f"{EQX_MHA} has none (use_{{query,key,value,output}}_bias=False)")
    mismatch(build_equinox(heads=4), build(TORCH_MHA), "query heads", "num_heads=4", "head width", "qk_size=2")
    training = build_equinox(dropout_p=0.1)
    mismatch(training, build(TORCH_MHA), "dropout_p=0.1 with inference=False", "eqx.nn.inference_mode(layer)")
    xattn.port_weights(eqx.nn.inference_mode(training), build(TORCH_MHA))


def test_a_bias_free_equinox_layer_fills_torch_biases_with_zeros():
    src = randomize(build_equinox(bias=False))
    dst = randomize(build(TORCH_MHA))
    ported = xattn.port_weights(src, dst)
    assert {t.target for t in ported.transfers if t.how == "zeros"} == {"in_proj_bias", "out_proj.bias"}
    x = inputs()
    np.testing.assert_allclose(forward(dst, x), forward(src, x), rtol=0, atol=5e-6)
