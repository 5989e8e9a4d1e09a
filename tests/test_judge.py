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
