"""Gradients compared like outputs: ``check_port(..., grad=True)`` and ``xattn compare --grad``."""

import numpy as np
import pytest

import xattn
from xattn.contract.spec import AttentionSpec, make_inputs
from xattn.numerics.layer_oracle import reference_vjp

from conftest import Scaled, require_backend

SPEC = AttentionSpec(batch=2, q_len=6, embed=8, heads=2, kv_heads=1, causal=True, key_lengths=(4, 6))
DATA = make_inputs(SPEC)
KEYWORDS = dict(causal=SPEC.causal, key_lengths=DATA.key_lengths)
GRADS = ["grad/x", "grad/wq", "grad/wk", "grad/wv", "grad/wo"]


def torch_einsum(x, wq, wk, wv, wo):
    return xattn.attention(x, wq, wk, wv, wo, backend="torch", variant="einsum", **KEYWORDS)


def jax_packed(x, wq, wk, wv, wo):
    return xattn.attention(x, wq, wk, wv, wo, backend="jax", variant="packed", **KEYWORDS)


def jax_wrong_reshape(x, wq, wk, wv, wo):
    """The seed's attn_fast_chatgpt mistake: a reshape where a transpose belongs. Runs fine, wrong model."""
    import jax.numpy as jnp

    def misread(w):
        heads, embed, head_dim = w.shape
        return jnp.transpose(jnp.reshape(w, (embed, heads, head_dim)), (1, 0, 2))

    return xattn.attention(x, misread(wq), misread(wk), wv, wo, backend="jax", variant="packed", **KEYWORDS)


def oracle(x, wq, wk, wv, wo):
    """The float64 oracle on float64 inputs; on run-dtype inputs the naive computation behind the budget."""
    naive_dtype = None if x.dtype == np.float64 else x.dtype
    return xattn.layer_reference(x, wq, wk, wv, wo, dtype=naive_dtype, **KEYWORDS)


def oracle_vjp(x, wq, wk, wv, wo, *, cotangent):
    naive_dtype = None if x.dtype == np.float64 else x.dtype
    return reference_vjp(x, wq, wk, wv, wo, cotangent=cotangent, dtype=naive_dtype, **KEYWORDS)


@pytest.fixture(autouse=True)
def frameworks():
    require_backend("torch")
    require_backend("jax")


def check(fn_b, **options):
    return xattn.check_port(torch_einsum, fn_b, DATA.x, *DATA.weights(), frameworks=("torch", "jax"), grad=True,
                            **options)


def test_a_faithful_port_passes_on_outputs_and_every_gradient():
    report = check(jax_packed, reference=oracle, grad_reference=oracle_vjp)
    report.assert_ok()
    assert list(dict.fromkeys(side.output for side in report.sides)) == ["out", *GRADS]
    assert {pair.attribution for pair in report.pairs} == {"rounding noise"}
    assert all(side.budget.method == "naive" for side in report.sides)


def test_the_seeds_wrong_reshape_fails_and_is_blamed_on_the_port():
    report = check(jax_wrong_reshape, reference=oracle, grad_reference=oracle_vjp)
    assert not report.ok
    blamed = {pair.output: pair.over_budget for pair in report.pairs}
    for quantity in ("out", "grad/x", "grad/wq", "grad/wk"):
        assert blamed[quantity] == ("jax_wrong_reshape",), quantity
    with pytest.raises(AssertionError, match="grad/wq"):
        report.assert_ok()


def test_without_a_gradient_oracle_the_first_function_in_float64_stands_in():
    report = check(jax_packed, reference=oracle)
    report.assert_ok()
    grads = [side for side in report.sides if side.output.startswith("grad/")]
    assert grads and all(side.budget.method == "tolerance" for side in grads)
    assert len(grads) == 2 * len(GRADS)  # each function against the float64 run of torch_einsum
    assert not check(jax_wrong_reshape, reference=oracle).ok


def test_without_any_reference_gradients_are_held_to_the_tolerance_between_the_two():
    report = check(jax_packed)
    report.assert_ok()
    assert {side.name for side in report.sides} == {"torch_einsum vs jax_packed"}
    assert all(side.budget.method == "tolerance" for side in report.sides)


def test_numpy_functions_have_no_gradients():
    with pytest.raises(ValueError, match="NumPy has no autodiff"):
        xattn.check_port(oracle, jax_packed, DATA.x, *DATA.weights(), frameworks=("numpy", "jax"), grad=True)


def test_compare_grad_rows_for_each_variant_and_pair():
    report = xattn.compare(("jax", "torch"), ("einsum", "blocked"), SPEC.replace(kv_len=None), timing=False, grad=True)
    assert report.ok, str(report)
    quantities = {(row.backend, row.variant, row.quantity) for row in report.results}
    for backend in ("jax", "torch"):
        for variant in ("einsum", "blocked"):
            assert {(backend, variant, q) for q in ["out", *GRADS]} <= quantities
    assert {pair.quantity for pair in report.pairs} == {"out", *GRADS}
    assert report.settings["grad"] is True


def test_compare_cli_grad_flag():
    from click.testing import CliRunner

    from xattn.cli import main

    result = CliRunner().invoke(main, ["compare", "--backends", "jax,torch", "--variants", "einsum", "--batch", "1",
                                       "--q-len", "4", "--embed", "8", "--heads", "2", "--no-timing", "--grad"])
    assert result.exit_code == 0, result.output
    assert "einsum:grad/wq" in result.output and "(grad/wo)" in result.output


def test_cross_attention_gradients_include_kv():
    spec = AttentionSpec(batch=1, q_len=3, kv_len=5, embed=8, heads=2)
    report = xattn.compare(("jax", "torch"), ("einsum",), spec, timing=False, grad=True)
    assert report.ok, str(report)
    assert {"grad/x", "grad/kv"} <= {row.quantity for row in report.results}


def test_reference_vjp_naive_run_stays_in_the_run_dtype():
    cotangent = np.ones((2, 6, 8), np.float32)
    naive = reference_vjp(*(DATA.x, *DATA.weights()), cotangent=cotangent, dtype="float32", **KEYWORDS)
    exact = reference_vjp(*(DATA.x, *DATA.weights()), cotangent=cotangent, **KEYWORDS)
    assert all(g.dtype == np.float32 for g in naive.values())
    assert all(g.dtype == np.float64 for g in exact.values())
    for name in exact:
        assert np.abs(naive[name] - exact[name]).max() < 1e-5 * max(1.0, np.abs(exact[name]).max()), name


def test_compare_grad_judges_and_pairs_gradient_rows_like_output_rows(monkeypatch):
    require_backend("jax")
    require_backend("torch")
    import xattn.backends.registry as registry

    real = registry.build

    def build(backend, variant, **options):
        fn = real(backend, variant, **options)
        return Scaled(fn, 1.001) if (backend, variant) == ("jax", "packed") else fn

    monkeypatch.setattr(registry, "build", build)
    spec = SPEC.replace(kv_len=None)
    report = xattn.compare(("jax", "torch"), ("einsum", "packed"), spec, timing=False, grad=True)
    for quantity in ["out", *GRADS]:
        assert report.row("jax", "packed", quantity).verdict == "drift", quantity
        assert report.row("torch", "packed", quantity).verdict == "ok", quantity
        pair = next(p for p in report.pairs if (p.a, p.quantity) == ("jax/packed", quantity))
        assert pair.over_budget == ("jax/packed",) and pair.attribution == "jax/packed over budget"
    assert report.exit_code == 1


def test_compare_grad_of_a_variant_that_cannot_be_differentiated_is_error_rows_and_unpaired(monkeypatch):
    require_backend("jax")
    require_backend("torch")
    from xattn.backends import calls

    real = calls.vjp

    def vjp(fn, framework, *args, **kwargs):
        if framework == "torch":
            raise RuntimeError("no backward here")
        return real(fn, framework, *args, **kwargs)

    monkeypatch.setattr(calls, "vjp", vjp)
    report = xattn.compare(("jax", "torch"), "einsum", SPEC.replace(kv_len=None), timing=False, grad=True)
    for quantity in GRADS:
        row = report.row("torch", "einsum", quantity)
        assert row.verdict == "error" and row.error == "no backward here"
        pair = next(p for p in report.pairs if p.quantity == quantity)
        assert pair.attribution == "n/a: torch/einsum error" and pair.over_budget == ("torch/einsum",)
    assert report.row("torch", "einsum").verdict == "ok" and report.exit_code == 1
