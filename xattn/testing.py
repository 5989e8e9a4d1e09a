"""Helpers for your own test suite: fail a test with the drift table when a port drifts.

``assert_ported(fn_a, fn_b, *inputs, reference=None, ...)`` runs :func:`xattn.check_port` and
raises ``AssertionError`` carrying its table when either side is over budget.

Installed with xattn, this module is also a pytest plugin (entry point ``pytest11``: ``xattn``),
which provides the ``xattn_port`` fixture: the same check, plus the table attached to the test's
report (a "xattn drift" section, and ``user_properties`` for JUnit XML) whether it passes or not.
See ``docs/testing.md``.
"""

from __future__ import annotations

import pytest


def assert_ported(fn_a, fn_b, *inputs, **options):
    """:func:`xattn.check_port` that raises ``AssertionError`` with the table unless the port is ok.

    Returns the :class:`xattn.DriftReport` when it is.
    """
    __tracebackhide__ = True
    from xattn.porting.check import check_port

    return check_port(fn_a, fn_b, *inputs, **options).assert_ok()


@pytest.fixture
def xattn_port(request):
    """``xattn_port(fn_a, fn_b, *inputs, reference=None, ...)``: assert a port, keep its table in the report."""

    def check(fn_a, fn_b, *inputs, **options):
        __tracebackhide__ = True
        from xattn.porting.check import check_port

        report = check_port(fn_a, fn_b, *inputs, **options)
        table = str(report)
        request.node.add_report_section("call", "xattn drift", table)
        request.node.user_properties.append(("xattn_drift", table))
        return report.assert_ok()

    return check
