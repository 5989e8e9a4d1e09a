"""The naive error as the worst of several random-rounding runs, where an output is small. NumPy only.

One naive run gives one draw of rounding error per element; on a 4-element bias gradient the
largest of four draws can sit far below what an equally good float32 program gets. These tests
pin the ensemble's parts and show, on the tiny layer of tests/test_porting.py, that the old
one-run budget rejects legitimate float32 programs which the ensemble budget accepts.
"""

import ml_dtypes
import numpy as np
import pytest

from xattn.contract.spec import AttentionSpec, make_inputs
from xattn.numerics.budget import draws_scale, naive_budget, within_budget
from xattn.numerics.drift import drift_metrics
from xattn.numerics.layer_oracle import reference_vjp
from xattn.numerics.naive import (
    MAX_NAIVE_RUNS,
    NAIVE_DRAWS,
    naive_attention,
    naive_repeats,
    naive_run_count,
    naive_runs,
    stage_rounding,
    takes_rounding_seed,
)


@pytest.mark.parametrize("size, runs", [(1, MAX_NAIVE_RUNS), (4, MAX_NAIVE_RUNS), (100, 41), (NAIVE_DRAWS, 1),
                                        (10 * NAIVE_DRAWS, 1), (0, MAX_NAIVE_RUNS)])
def test_run_count_reaches_the_draws_within_the_cap(size, runs):
    assert naive_run_count(size) == runs


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_random_rounding_moves_a_value_at_most_one_ulp(dtype):
    values = np.random.default_rng(0).standard_normal(10_000)
    acc, nearest = stage_rounding(dtype)
    _, randomly = stage_rounding(dtype, seed=3)
    assert acc == np.float32
    near, rand = nearest(values).astype(np.float64), randomly(values).astype(np.float64)
    eps = float(ml_dtypes.finfo(dtype).eps)
    # a draw of at most half an ulp, then a rounding of at most half an ulp: one ulp (eps) in all
    assert (np.abs(rand - values) / np.abs(values)).max() <= eps * (1 + eps)
    assert (np.abs(near - values) <= np.abs(rand - values)).all()  # round-to-nearest is the closest
    assert 0 < np.count_nonzero(rand != near) < rand.size  # some results land on the other neighbour
    np.testing.assert_array_equal(stage_rounding(dtype, seed=3)[1](values), rand)  # the seed reproduces it
    assert not np.array_equal(stage_rounding(dtype, seed=4)[1](values), rand)


def test_float64_runs_are_never_perturbed():
    values = np.random.default_rng(0).standard_normal(100)
    _, stage = stage_rounding("float64", seed=7)
    np.testing.assert_array_equal(stage(values), values)
    assert len(naive_runs(lambda seed: values, size=1, dtype="float64")) == 1


def test_the_budget_takes_the_worst_run_and_says_how_many():
    expected = np.linspace(-1, 1, 1366)  # 1366 elements want 3 runs of draws
    small, large = expected + 1e-7, expected + 3e-7
    budget = naive_budget([small, large, small, large * 2], expected, "float32")  # a fourth run is not read
    assert budget.naive_max_abs_err == pytest.approx(3e-7)
    assert budget.naive_runs == 3 and "worst of 3 runs" in budget.describe()
    assert budget.naive_scale == 1.0 and "extrapolated" not in budget.describe()
    assert naive_budget(small, expected, "float32").naive_runs == 1
    with pytest.raises(ValueError, match="at least one"):
        naive_budget([], expected, "float32")


def test_fewer_runs_than_the_draws_want_are_extrapolated_but_one_run_is_taken_as_it_is():
    """A large problem makes fewer repeats (MAX_REPEAT_ELEMENTS): its worst error is scaled to NAIVE_DRAWS draws."""
    expected = np.linspace(-1, 1, 256)  # wants 16 runs
    runs = [expected + 1e-7, expected + 2e-7, expected + 1e-7, expected + 1e-7, expected + 1e-7]
    budget = naive_budget(runs, expected, "float32")
    assert budget.naive_scale == pytest.approx(draws_scale(5 * 256, 16 * 256))
    assert 1.05 < budget.naive_scale < 1.15
    assert budget.naive_max_abs_err == pytest.approx(2e-7 * budget.naive_scale)
    assert "worst of 5 runs ×1.09, extrapolated to 4096 draws" in budget.describe()
    alone = naive_budget(runs[:1], expected, "float32")  # a reference that cannot repeat: as before
    assert alone.naive_scale == 1.0 and alone.naive_max_abs_err == pytest.approx(1e-7)


def test_draws_scale_grows_with_the_draws_missing():
    assert draws_scale(4096, 4096) == draws_scale(5000, 4096) == 1.0
    assert 1.0 < draws_scale(2048, 4096) < draws_scale(1024, 4096) < draws_scale(256, 4096)
    assert draws_scale(1024, 4096) == pytest.approx(1.11, abs=0.01)  # Φ⁻¹(1 - 1/8192) / Φ⁻¹(1 - 1/2048)


def test_naive_attention_repeats_differ_but_only_by_rounding():
    spec = AttentionSpec(batch=1, q_len=4, embed=8, heads=2)
    inputs = make_inputs(spec)
    runs = naive_runs(lambda seed: naive_attention(inputs, dtype="float32", rounding_seed=seed), 4 * 8, "float32")
    assert len(runs) == naive_run_count(32) == MAX_NAIVE_RUNS
    assert not np.array_equal(runs[0], runs[1])
    np.testing.assert_allclose(runs[1], runs[0], rtol=0, atol=1e-5)


def test_references_that_take_a_seed_are_recognised():
    assert takes_rounding_seed(reference_vjp)
    assert not takes_rounding_seed(lambda x: x)
    assert not takes_rounding_seed(np.add)  # no signature to read: one run


def _tiny_layer():
    """The E=8, H=2, one-kv-head causal layer with key padding of tests/test_porting.py, in float32."""
    rng = np.random.default_rng(1)
    shapes = {"wq": (2, 8, 4), "wk": (1, 8, 4), "wv": (1, 8, 4), "wo": (2, 4, 8),
              "bq": (2, 4), "bk": (1, 4), "bv": (1, 4), "bo": (8,)}
    weights = {name: (0.5 * rng.standard_normal(shape)).astype(np.float32) for name, shape in shapes.items()}
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    cotangent = np.random.default_rng(2).standard_normal((2, 5, 8)).astype(np.float32)
    return x, weights, dict(causal=True, key_lengths=np.array([3, 5], np.int32)), cotangent


@pytest.mark.parametrize("at_once", [False, True], ids=["seed-by-seed", "at-once"])
def test_the_one_run_budget_rejects_programs_the_ensemble_accepts(at_once):
    x, weights, masks, cotangent = _tiny_layer()
    oracle = reference_vjp(x.astype(np.float64), **{k: w.astype(np.float64) for k, w in weights.items()},
                           cotangent=cotangent.astype(np.float64), **masks)

    def naive(seed):
        return reference_vjp(x, **weights, cotangent=cotangent, dtype="float32", rounding_seed=seed, **masks)

    runs = naive_runs(naive, min(g.size for g in oracle.values()), "float32", at_once=at_once)
    if at_once:  # the repeats of every seed in one vectorised run, on BLAS, with 8-bit random rounding
        assert len(runs) == MAX_NAIVE_RUNS and not np.array_equal(runs[1]["bo"], runs[2]["bo"])
    # Other float32 programs: the same algorithm, rounded by draws that the budget never saw.
    others = [naive(seed) for seed in range(1000, 1040)]
    largest = max(np.abs(g).max() for g in oracle.values())
    one_run_rejects = ensemble_rejects = 0
    for name, expected in oracle.items():
        one_run = naive_budget(runs[0][name], expected, "float32")
        ensemble = naive_budget([run[name] for run in runs][:naive_run_count(expected.size)], expected, "float32")
        assert ensemble.max_abs >= one_run.max_abs
        for other in others:
            metrics = drift_metrics(other[name], expected, "float32")
            one_run_rejects += not within_budget(metrics, one_run)
            ensemble_rejects += not within_budget(metrics, ensemble)
        off_by_a_bug = other[name].astype(np.float64) + 1e-4 * largest  # e.g. a dropped bias term
        assert not within_budget(drift_metrics(off_by_a_bug, expected, "float32"), ensemble), name
    assert one_run_rejects > 0
    assert ensemble_rejects == 0


def test_the_budget_counts_only_the_runs_its_size_needs():
    expected = np.zeros(NAIVE_DRAWS)
    budget = naive_budget([expected + 1e-7, expected + 5e-7], expected, "float32")
    assert budget.naive_runs == 1 and budget.naive_max_abs_err == pytest.approx(1e-7)


def test_repeats_come_only_from_a_reference_that_takes_a_seed():
    small = [np.zeros(4, np.float32)]
    seeds = naive_repeats(lambda x, rounding_seed=None: x, small, lambda seed: seed)
    assert seeds == list(range(1, MAX_NAIVE_RUNS))
    assert naive_repeats(lambda x: x, small, lambda seed: seed) == []
    assert naive_repeats(lambda x, rounding_seed=None: x, [np.zeros(4)], lambda seed: seed) == []  # float64


def test_repeats_in_chunks_on_threads_are_the_bits_of_the_chunks_one_after_the_other(monkeypatch):
    from xattn.numerics import layer_oracle

    spec = AttentionSpec(batch=1, q_len=512, embed=16, heads=2)  # 2 seeds' logits per chunk: 8 chunks
    inputs = make_inputs(spec)
    rng = np.random.default_rng(5)
    biases = [(0.1 * rng.standard_normal(shape)).astype(np.float32) for shape in [(2, 8), (2, 8), (2, 8), (16,)]]
    cotangent = rng.standard_normal(inputs.x.shape).astype(np.float32)
    seeds = tuple(range(1, 16))
    assert len(layer_oracle.seed_chunks(seeds, inputs.x, None, inputs.wq)) == 8

    def repeats():
        return reference_vjp(inputs.x, *inputs.weights(), *biases, cotangent=cotangent, dtype="float32",
                             rounding_seed=seeds)

    threaded = repeats()
    monkeypatch.setattr(layer_oracle, "run_chunks", lambda run, chunks: [run(chunk) for chunk in chunks])
    in_turn = repeats()
    assert all("x" not in run and "bq" in run for run in threaded)  # only the gradients under NAIVE_DRAWS
    for a, b in zip(threaded, in_turn):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(threaded[0]["bq"], threaded[1]["bq"])  # each seed its own rounding


def test_a_large_problem_makes_fewer_repeats_and_its_budgets_say_so(monkeypatch):
    """Past MAX_REPEAT_ELEMENTS logits, xattn's references cap their repeats; check_layers' budgets extrapolate."""
    import torch

    import xattn
    from xattn.numerics import stages

    torch.manual_seed(0)
    layer = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = np.random.default_rng(0).standard_normal((1, 4, 8)).astype(np.float32)  # logits per run: 1·2·4·4 = 32
    full = xattn.check_layers(layer, layer, x, grad=True)
    monkeypatch.setattr(stages, "MAX_REPEAT_ELEMENTS", 3 * 32)  # three repeats at most
    capped = xattn.check_layers(layer, layer, x, grad=True)
    for before, after in zip(full.sides, capped.sides):
        if before.output != "grad/bo":  # 8 elements: wants 64 runs
            continue
        assert before.budget.naive_runs == MAX_NAIVE_RUNS and before.budget.naive_scale == 1.0
        assert after.budget.naive_runs == 4
        assert after.budget.naive_scale == pytest.approx(draws_scale(4 * 8, MAX_NAIVE_RUNS * 8))
        assert "extrapolated" in after.budget.describe()
    assert capped.ok
