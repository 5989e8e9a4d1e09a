"""xattn.testing in a user's own suite: assert_ported, the xattn_port fixture, the pytest11 entry point."""

from importlib import metadata

import numpy as np
import pytest

from xattn.testing import assert_ported

pytest_plugins = ["pytester"]

USER_TESTS = '''
import numpy as np
from xattn.testing import assert_ported

X = np.linspace(-2, 2, 32, dtype=np.float32).reshape(4, 8)

def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)

def softmax_port(x):
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)

def softmax_wrong(x):
    return softmax(x * 1.01)

def test_fixture_passes(xattn_port):
    xattn_port(softmax, softmax_port, X, reference=softmax)

def test_fixture_fails(xattn_port):
    xattn_port(softmax, softmax_wrong, X, reference=softmax)

def test_helper_fails():
    assert_ported(softmax, softmax_wrong, X, reference=softmax)
'''


def test_entry_point_is_declared():
    points = metadata.entry_points(group="pytest11")
    assert any(point.name == "xattn" and point.value == "xattn.testing" for point in points)


def test_plugin_fixture_and_helper_in_a_user_suite(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=1, failed=2)
    output = result.stdout.str()
    assert "xattn check_port: softmax (numpy) vs softmax_wrong (numpy)" in output
    assert "softmax_wrong over budget" in output
    assert "xattn drift" in output  # the fixture's report section, shown for the passing test too (-rA)
    assert "AssertionError" in output


def test_assert_ported_returns_the_report_when_ok():
    x = np.linspace(0, 1, 8, dtype=np.float32)
    report = assert_ported(np.sin, lambda v: np.sin(v.astype(np.float64)).astype(np.float32), x, reference=np.sin)
    assert report.ok


def test_assert_ported_raises_assertion_error_with_the_table():
    x = np.linspace(0, 1, 8, dtype=np.float32)
    with pytest.raises(AssertionError, match="(?s)xattn check_port.*verdict: NOT OK"):
        assert_ported(np.sin, np.cos, x)
