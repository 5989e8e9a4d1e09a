"""The one judge: verdict words and attribution lines every report uses. NumPy only."""

import json

import numpy as np
import pytest

from xattn.numerics.budget import naive_budget, tolerance_budget
from xattn.numerics.judge import (
    BOTH_OVER,
    DRIFT,
    ERROR,
    OK,
    ROUNDING_NOISE,
    UNSUPPORTED,
    Verdict,
    difference,
    is_disagreement,
    judge,
    not_compared,
)


def test_a_verdict_is_its_word_everywhere():
    assert [str(v) for v in Verdict] == ["ok", "drift", "error", "unsupported"]
    assert OK == "ok" and f"{DRIFT}" == "drift" and json.dumps({"v": UNSUPPORTED}) == '{"v": "unsupported"}'


def test_judge_holds_a_value_to_its_budget_and_never_passes_a_nan():
    expected = np.linspace(-1.0, 1.0, 64)
    budget = naive_budget(expected.astype(np.float32), expected, "float32")
    right = judge(expected.astype(np.float32), expected, "float32", budget)
    assert right.verdict == OK and 0 <= right.budget_use <= 1
    wrong = judge((expected * 1.001).astype(np.float32), expected, "float32", budget)
    assert wrong.verdict == DRIFT and wrong.budget_use > 1
    planted = expected.astype(np.float32)
    planted[3] = np.nan
    found = judge(planted, expected, "float32", budget)
    assert found.verdict == DRIFT and found.metrics.nonfinite_mismatches == 1 and found.metrics.uncompared == 1
    tolerance = tolerance_budget("float32")
    assert judge((expected * (1 + 1e-7)).astype(np.float32), expected, "float32", tolerance).verdict == OK
    assert judge((expected * 1.01).astype(np.float32), expected, "float32", tolerance).verdict == DRIFT


@pytest.mark.parametrize("a_ok, b_ok, over, attribution", [
    (True, True, (), ROUNDING_NOISE),
    (False, True, ("a",), "a over budget"),
    (True, False, ("b",), "b over budget"),
    (False, False, ("a", "b"), BOTH_OVER),
])
def test_a_pair_blames_the_side_over_budget(a_ok, b_ok, over, attribution):
    a, b = np.array([1.0, 2.0], np.float32), np.array([1.0, 2.5], np.float32)
    found = difference("a", a, a_ok, "b", b, b_ok, "float32")
    assert found.over_budget == over and found.attribution == attribution and found.max_abs_diff == 0.5
    assert is_disagreement(found.attribution) is (attribution != ROUNDING_NOISE)


def test_a_pair_with_a_side_that_did_not_run_is_not_compared():
    found = not_compared("jax/sdpa", UNSUPPORTED, "torch/sdpa", OK)
    assert found.attribution == "n/a: jax/sdpa unsupported" and found.over_budget == () and found.max_abs_diff is None
    found = not_compared("jax/x", ERROR, "torch/x", ERROR)
    assert found.over_budget == ("jax/x", "torch/x") and not is_disagreement(found.attribution)


def test_ulp_at_scale_counts_rounding_steps_at_the_budgets_scale():
    """A structurally zero gradient is counted in steps at its floor's scale, not its own (~0) one."""
    from xattn.numerics.budget import floored

    expected = np.linspace(-1.0, 1.0, 64)
    actual = expected + 3 * np.spacing(np.float32(1.0))  # three float32 steps at the largest element
    plain = judge(actual.astype(np.float32), expected, "float32", naive_budget([expected.astype(np.float32)],
                                                                              expected, "float32"))
    assert plain.metrics.ulp_at_scale == pytest.approx(3.0, rel=0.2)

    zero = np.zeros(8)  # exactly zero in exact arithmetic; the other gradients are ~100
    noise = np.full(8, 1e-5, np.float32)
    budget = floored(naive_budget([noise], zero, "float32"), zero, largest=100.0)
    judged = judge(noise, zero, "float32", budget)
    assert judged.verdict == OK
    step = float(np.spacing(np.float32(100.0)))
    assert judged.metrics.ulp_at_scale == pytest.approx(1e-5 / step, rel=1e-3)  # ~1.3, not ~1e40
