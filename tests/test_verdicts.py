"""check_port's verdicts: never a pass for a wrong port, never an alarm for a right one (issue 12's repros)."""

import numpy as np
import pytest

import xattn

from conftest import require_backend

SPEC = xattn.AttentionSpec(batch=2, q_len=16, embed=32, heads=4)
INPUTS = xattn.make_inputs(SPEC)
NUMPY = dict(frameworks=("numpy", "numpy"))


def good(*args):
    return np.asarray(xattn.to_numpy(xattn.attention(*args, backend="torch", variant="einsum")))


def lossy(*args):
    """A port that silently returns float16."""
    return good(*args).astype(np.float16)


def widened(*args):
    """A port that silently returns float64 from float32 inputs."""
    return good(*args).astype(np.float64)


def truncated(*args):
    """A port that returns integers."""
    return good(*args).astype(np.int32)


def wrong(*args):
    return np.asarray(xattn.to_numpy(xattn.attention(*args, scale=100.0, backend="torch", variant="einsum")))


def verdicts(report):
    return {(side.name, side.output): side.verdict for side in report.sides}


@pytest.mark.parametrize("port", [lossy, widened, truncated])
def test_a_side_in_another_dtype_is_blamed_whatever_the_order(port):
    require_backend("torch")
    for a, b in ((port, good), (good, port)):
        report = xattn.check_port(a, b, INPUTS.x, *INPUTS.weights(), reference=xattn.reference, **NUMPY)
        assert not report.ok and report.dtype == "float32"
        assert verdicts(report) == {(port.__name__, "out"): "drift", ("good", "out"): "ok"}
        (pair,) = report.pairs
        assert pair.attribution == f"{port.__name__} over budget"
        blamed = next(side for side in report.sides if side.name == port.__name__)
        assert blamed.notes == (f"returned {np.dtype(port(*INPUTS[:1], *INPUTS.weights()).dtype).name}; expected"
                                " float32, the run dtype",)
        assert f"{port.__name__} out: returned" in str(report)


def test_without_a_reference_a_side_in_another_dtype_fails_the_pair():
    require_backend("torch")
    report = xattn.check_port(good, lossy, INPUTS.x, *INPUTS.weights(), **NUMPY)
    (row,) = report.sides
    assert row.verdict == "drift" and row.notes == ("lossy returned float16; expected float32, the run dtype",)


def test_nan_on_both_sides_without_an_oracle_is_drift_unless_nans_are_declared_equal():
    def nan(x):
        return x * np.nan

    ones = np.ones((4, 4), np.float32)
    report = xattn.check_port(nan, nan, ones, **NUMPY)
    (row,) = report.sides
    assert not report.ok and row.drift.nonfinite_mismatches == 16 and row.drift.uncompared == 16
    # Declared equal, the NaNs no longer disagree, but nothing finite was compared: still not ok.
    report = xattn.check_port(nan, nan, ones, equal_nan=True, **NUMPY)
    (row,) = report.sides
    assert not report.ok and row.drift.nonfinite_mismatches == 0 and row.drift.compared == 0
    assert "no finite element to compare" in str(report)

    def half_nan(x):
        return np.where(np.arange(x.size).reshape(x.shape) % 2 == 0, x, np.nan).astype(x.dtype)

    assert not xattn.check_port(half_nan, half_nan, ones, **NUMPY).ok
    report = xattn.check_port(half_nan, half_nan, ones, equal_nan=True, **NUMPY)
    assert report.ok and report.sides[0].drift.uncompared == 8


def test_an_all_nan_input_passes_no_port_wrong_or_right():
    require_backend("torch")
    x = INPUTS.x.copy()
    x[:] = np.nan
    report = xattn.check_port(good, wrong, x, *INPUTS.weights(), reference=xattn.reference, **NUMPY)
    assert not report.ok
    for side in report.sides:
        assert side.verdict == "drift" and side.drift.compared == 0 and np.isnan(side.drift.max_abs_err)
    table = str(report)
    assert "max err 0" not in table and "no finite element to compare" in table
    row = next(line for line in table.splitlines() if line.startswith("good "))
    assert row.split()[3] == "-"  # max err: nothing compared, so no number


def test_the_header_names_each_framework_and_what_decided_the_run_dtype():
    require_backend("torch")
    report = xattn.check_port(good, good, INPUTS.x, *INPUTS.weights(), names=("a", "b"), **NUMPY)
    assert report.dtype == "float32" and report.dtype_reason == "float32, the inputs' dtype"
    assert str(report).startswith("xattn check_port: a (numpy) vs b (numpy); run dtype float32, the inputs' dtype;")
    mixed = xattn.check_port(lambda x, w: x @ w, lambda x, w: x @ w, np.ones((2, 2), np.float32),
                             np.ones((2, 2), np.float16), **NUMPY)
    assert mixed.dtype == "float32" and "most precise of the inputs' dtypes (float32, float16)" in mixed.dtype_reason
    ids = np.arange(6).reshape(2, 3)
    assert xattn.check_port(lambda i: i * 2, lambda i: i + i, ids, **NUMPY).dtype_reason == (
        "float32: no floating input or module parameter decides it")


def test_equal_integer_outputs_are_compared_exactly():
    ids = np.arange(12).reshape(3, 4)
    same = xattn.check_port(lambda i: i.argmax(-1), lambda i: np.argmax(i, axis=-1), ids, **NUMPY)
    assert same.ok and same.sides[0].budget.method == "exact"
    off = xattn.check_port(lambda i: i.argmax(-1), lambda i: i.argmax(-1) - (i[:, 0] == 4), ids, **NUMPY)
    assert not off.ok


def test_err_per_budget_is_shown_and_says_how_close_to_the_line_a_row_is():
    require_backend("torch")
    report = xattn.check_port(good, wrong, INPUTS.x, *INPUTS.weights(), reference=xattn.reference, **NUMPY)
    good_row, wrong_row = report.sides
    assert good_row.budget_use <= 1 < wrong_row.budget_use
    assert good_row.budget.method == "naive"  # xattn.reference gives the naive run in the inputs' dtype
    assert good_row.budget_use == pytest.approx(good_row.drift.max_abs_err / good_row.budget.max_abs)
    assert "err/bud" in str(report)


# ------------------------------------------------------------------ half precision, xattn's own oracles

CONFIGS = [
    dict(batch=2, q_len=16, embed=32, heads=4),
    dict(batch=1, q_len=12, embed=32, heads=4, kv_heads=1, causal=True),
    dict(batch=2, q_len=8, kv_len=24, embed=16, heads=4, kv_heads=2, key_lengths=(5, 24)),
]
DTYPES = ("float32", "float16", "bfloat16")


def ported(backend, variant="einsum", **options):
    def port(x, kv, wq, wk, wv, wo, key_lengths):
        lengths = None if key_lengths.shape[0] == 0 else key_lengths
        return xattn.attention(x, wq, wk, wv, wo, kv=kv, key_lengths=lengths, backend=backend, variant=variant,
                               causal=port.causal, **options)

    port.__name__ = f"{backend}_{variant}"
    return port


def reference(x, kv, wq, wk, wv, wo, key_lengths, *, causal=False, dtype=None, rounding_seed=None):
    lengths = None if key_lengths.shape[0] == 0 else key_lengths
    return xattn.reference(x, wq, wk, wv, wo, kv=kv, key_lengths=lengths, causal=causal, dtype=dtype,
                           rounding_seed=rounding_seed)


def case(config, dtype, seed):
    spec = xattn.AttentionSpec(**config, dtype=dtype, seed=seed)
    inputs = xattn.make_inputs(spec)
    lengths = np.zeros(0, np.int32) if inputs.key_lengths is None else inputs.key_lengths
    return spec, (inputs.x, inputs.kv, *inputs.weights(), lengths)


def check(a, b, spec, args):
    a.causal = b.causal = spec.causal
    return xattn.check_port(a, b, *args, reference=lambda *r, dtype=None, rounding_seed=None: reference(
        *r, causal=spec.causal, dtype=dtype, rounding_seed=rounding_seed), frameworks=(
        "jax" if a.__name__.startswith("jax") else "torch", "jax" if b.__name__.startswith("jax") else "torch"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS, ids=["mha", "mqa-causal", "gqa-cross-padded"])
def test_a_correct_port_passes_in_every_dtype_with_the_naive_budget(config, dtype):
    require_backend("jax")
    require_backend("torch")
    for seed in range(3):
        spec, args = case(config, dtype, seed)
        report = check(ported("jax"), ported("torch", "sdpa"), spec, args)
        assert report.ok, str(report)
        assert report.dtype == dtype and all(side.budget.method == "naive" for side in report.sides), str(report)


@pytest.mark.parametrize("dtype", DTYPES)
def test_check_port_and_compare_agree_on_the_same_variants(dtype):
    require_backend("jax")
    require_backend("torch")
    spec, args = case(CONFIGS[0], dtype, 0)
    compared = xattn.compare("jax,torch", "einsum,packed", spec, timing=False)
    for variant in ("einsum", "packed"):
        report = check(ported("jax", variant), ported("torch", variant), spec, args)
        assert report.ok == (compared.row("jax", variant).ok and compared.row("torch", variant).ok), str(report)
        assert report.ok, str(report)


def fast_chatgpt(x, kv, wq, wk, wv, wo, key_lengths):
    """The seed's attn_fast_chatgpt: a reshape where a transpose belongs. Runs fine; a wrong model."""
    import jax.numpy as jnp

    def misread(w):
        heads, embed, head_dim = w.shape
        return jnp.transpose(jnp.reshape(jnp.asarray(w), (embed, heads, head_dim)), (1, 0, 2))

    return xattn.attention(x, misread(wq), misread(wk), misread(wv), wo, kv=kv, backend="jax", variant="packed")


fast_chatgpt.causal = False
fast_chatgpt.__name__ = "jax_fast_chatgpt"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bug", ["fast_chatgpt", "missing_scale"])
def test_the_seeds_bugs_fail_in_every_dtype_and_are_blamed_on_the_port(bug, dtype):
    require_backend("jax")
    require_backend("torch")
    port = fast_chatgpt if bug == "fast_chatgpt" else ported("jax", scale=1.0)
    spec, args = case(CONFIGS[0], dtype, 0)
    report = check(port, ported("torch"), spec, args)
    assert not report.ok
    (pair,) = report.pairs
    assert pair.attribution == f"{port.__name__} over budget", str(report)


def test_perturbing_one_element_by_four_budgets_fails_the_port():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    require_backend("torch")

    @settings(max_examples=25, deadline=None)
    @given(st.sampled_from(DTYPES), st.integers(1, 2), st.integers(1, 9), st.sampled_from([(8, 2), (16, 4), (16, 1)]),
           st.integers(0, 10_000), st.data())
    def property_(dtype, batch, q_len, widths, seed, data):
        embed, heads = widths
        spec, args = case(dict(batch=batch, q_len=q_len, embed=embed, heads=heads), dtype, seed)
        right = ported("torch")
        first = check(right, ported("torch", "packed"), spec, args)
        assert first.ok, str(first)
        out = np.asarray(xattn.to_numpy(right(*[xattn.to_torch(a) for a in args])))
        index = data.draw(st.integers(0, out.size - 1))
        budget = first.sides[0].budget.max_abs
        bent = out.astype(np.float64).reshape(-1)
        bent[index] += data.draw(st.sampled_from([-4.0, 4.0])) * budget
        bent = bent.reshape(out.shape).astype(out.dtype)

        def perturbed(*_):
            return xattn.to_torch(bent)

        perturbed.__name__ = "torch_perturbed"
        report = check(perturbed, right, spec, args)
        assert verdicts(report)[("torch_perturbed", "out")] == "drift", str(report)

    property_()


def _grad_ports(**options):
    def jax_port(x, wq, wk, wv, wo):
        return xattn.attention(x, wq, wk, wv, wo, causal=True, backend="jax", variant="einsum", **options)

    def torch_port(x, wq, wk, wv, wo):
        return xattn.attention(x, wq, wk, wv, wo, causal=True, backend="torch", variant="einsum")

    return jax_port, torch_port


@pytest.mark.parametrize("dtype", ("float16", "bfloat16"))
def test_half_precision_gradients_are_judged_against_reference_vjp_in_the_run_dtype(dtype):
    """reference_vjp gives the gradients' naive same-dtype run: correct ports pass, a missing scale fails."""
    import functools

    require_backend("jax")
    require_backend("torch")
    inputs = xattn.make_inputs(xattn.AttentionSpec(batch=2, q_len=16, embed=32, heads=4, dtype=dtype, causal=True))
    options = dict(reference=functools.partial(xattn.reference, causal=True), grad=True,
                   grad_reference=functools.partial(xattn.reference_vjp, causal=True), frameworks=("jax", "torch"))
    right = xattn.check_port(*_grad_ports(), inputs.x, *inputs.weights(), **options)
    assert right.ok, str(right)
    assert {side.output for side in right.sides} == {"out", "grad/x", "grad/wq", "grad/wk", "grad/wv", "grad/wo"}
    assert all(side.budget.method == "naive" and side.budget.dtype == dtype for side in right.sides), str(right)
    wrong = xattn.check_port(*_grad_ports(scale=1.0), inputs.x, *inputs.weights(), **options)
    over = {pair.output for pair in wrong.pairs if pair.over_budget == ("jax_port",)}
    assert {"out", "grad/x", "grad/wq", "grad/wk"} <= over, str(wrong)


def test_a_library_whose_elementary_functions_are_a_few_ulps_off_is_not_a_false_alarm():
    """jnp.tanh is up to ~4.5 float32 ulps off where np.tanh is correctly rounded: still a correct port."""
    require_backend("jax")
    require_backend("torch")
    import jax.numpy as jnp
    import torch

    def jax_tanh(x):
        return jnp.tanh(x)

    def torch_tanh(x):
        return torch.tanh(x)

    def wrong_tanh(x):  # a port that scales its input by 1 + 2^-18: up to ~28 float32 ulps at tanh's scale
        return torch.tanh(x * (1 + 2**-18))

    for seed in range(5):
        x = (2 * np.random.default_rng(seed).standard_normal((64, 64))).astype(np.float32)
        right = xattn.check_port(jax_tanh, torch_tanh, x, reference=np.tanh)
        assert right.ok, str(right)
        assert right.sides[0].budget.ulps == 8 and right.sides[0].budget_use > 0.1, str(right)
        wrong = xattn.check_port(jax_tanh, wrong_tanh, x, reference=np.tanh)
        assert wrong.pairs[0].over_budget == ("wrong_tanh",), str(wrong)


@pytest.mark.parametrize("returns", [(), None, {}, "abc"], ids=["empty-tuple", "none", "empty-dict", "string"])
def test_functions_that_return_nothing_to_compare_are_refused_not_passed(returns):
    x = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="expected .* to return an array or a tree of arrays"):
        xattn.check_port(lambda x: returns, lambda x: returns, x, **NUMPY)
    from xattn.porting.check import DriftReport

    assert not DriftReport(names=("a", "b"), frameworks=("numpy", "numpy"), dtype="float32", basis="", sides=(),
                           pairs=()).ok
