"""Rows and pairs of a comparison, outputs and gradients alike: judged by :mod:`xattn.numerics.judge`."""

from __future__ import annotations

import itertools

from xattn.comparison.results import Pair, Row
from xattn.errors import VariantUnsupportedError
from xattn.numerics.judge import ERROR, NOT_RUN, UNSUPPORTED, difference, judge, not_compared

#: The longest error message a row carries.
MAX_ERROR_CHARS = 600


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def failed(error: BaseException, **fields) -> Row:
    """The row of a quantity whose code raised: ``unsupported`` for a variant's honest refusal, else ``error``."""
    verdict = UNSUPPORTED if isinstance(error, VariantUnsupportedError) else ERROR
    return Row(**fields, verdict=verdict, error=one_line(error), error_type=type(error).__name__)


def judged(actual, expected, *, budget, dtype, **fields) -> Row:
    """The row of a quantity that ran: ``actual`` against the float64 ``expected`` under ``budget``."""
    found = judge(actual, expected, dtype, budget)
    return Row(**fields, dtype=dtype, budget=budget, verdict=found.verdict, drift=found.metrics,
               budget_use=found.budget_use)


def pairs(rows, values: dict, dtype: str) -> tuple[Pair, ...]:
    """Each (variant, quantity) that two or more backends have a row of, backend against backend.

    ``values[(label, quantity)]`` is the NumPy value of each row that ran.
    """
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.variant, row.quantity), []).append(row)
    return tuple(_pair(a, b, values, dtype) for group in groups.values() for a, b in itertools.combinations(group, 2))


def _pair(a: Row, b: Row, values: dict, dtype: str) -> Pair:
    if a.verdict in NOT_RUN or b.verdict in NOT_RUN:
        found = not_compared(a.label, a.verdict, b.label, b.verdict)
    else:
        found = difference(a.label, values[(a.label, a.quantity)], a.ok, b.label, values[(b.label, b.quantity)], b.ok,
                           dtype)
    return Pair(a.label, b.label, a.quantity, found.max_abs_diff, found.rel_l2_diff, _err(a), _err(b),
                a.budget.max_abs if a.budget is not None else None, found.over_budget, found.attribution)


def _err(row: Row) -> float | None:
    return None if row.drift is None else row.drift.max_abs_err
