"""What every text rendering shares: the formats, the tabulate wrapper, number cells, notes, CSV, the dispatch.

:func:`render_as` is the one format dispatch of a result that has a JSON object, a table and CSV
records (``xattn compare`` and ``xattn sweep``); :func:`page` lays out a table page with its notes,
plain or Markdown. Tables are meant to read at :data:`WIDTH` columns. The underscored helpers
(``_sci``, ``_wrap``, ...) are for the modules of :mod:`xattn.render` only.
"""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from typing import Callable, Iterable, Mapping, Sequence

import tabulate as _tabulate_module

FORMATS = ("table", "json", "markdown", "csv")
#: The tabulate style of each tabular format.
TABLE_STYLES = {"table": "simple", "markdown": "github"}
WIDTH = 100


def check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}; got {format!r}")


def tabulate(rows, headers, *, header_padding: int = 0, **options) -> str:
    """tabulate with ``header_padding`` (tabulate's own is 2) around headers; 0 keeps columns 2 apart and fits 100."""
    padding = _tabulate_module.MIN_PADDING
    _tabulate_module.MIN_PADDING = header_padding
    try:
        return _tabulate_module.tabulate(rows, headers, disable_numparse=True, **options)
    finally:
        _tabulate_module.MIN_PADDING = padding


# ------------------------------------------------------------------------------------- numbers


def _finite(value):
    """``value``, or None for a NaN or infinite float (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _sci(value) -> str:
    """An error or difference cell: ``"1.2e-06"``, ``"0"``, or ``"-"`` for None or NaN (nothing compared)."""
    if value is None or value != value:
        return "-"
    if value == 0:
        return "0"
    return f"{value:.1e}"


def _count(value) -> str:
    """A ULP cell: one decimal below 10, whole below 1e5, else scientific; ``"-"`` for None or NaN."""
    if value is None or value != value:
        return "-"
    if value < 10:
        return f"{value:.1f}"
    return f"{value:.0f}" if value < 1e5 else f"{value:.1e}"


def share(value) -> str:
    """An err / budget cell: ``"0.42"``, ``"3.1"``, ``"inf"``; ``"-"`` for None or NaN (nothing judged)."""
    if value is None or value != value:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.3g}"


def duration(seconds) -> str:
    """``"53.4 µs"``, ``"3.5 ms"``, ``"1.2 s"``; ``"-"`` for None."""
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


# ----------------------------------------------------------------------------------- the page


def _wrap(prefix: str, text: str) -> str:
    """A note: ``prefix`` then ``text``, wrapped at :data:`WIDTH` with a 4-space hanging indent."""
    return textwrap.fill(text, WIDTH, initial_indent=prefix, subsequent_indent=" " * 4)


def page(header: str, tables: Sequence[str], notes: Sequence[str], tablefmt: str) -> str:
    """The header, the tables and the notes, a blank line apart; Markdown bolds the header and lists the notes."""
    if tablefmt == "github":
        header = "\n".join(f"**{line}**  " for line in header.splitlines())
        notes = [f"- {line}" for line in notes]
    return "\n".join([header, "", "\n\n".join(tables), "", *notes]) + "\n"


# ------------------------------------------------------------------------------ CSV and dispatch


def csv_text(records: Sequence[Mapping], empty_header: Iterable[str], *, line_end: str = "\n") -> str:
    """One CSV line per record under the first record's keys (``empty_header`` when there is none)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]) if records else list(empty_header),
                            lineterminator=line_end)
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def render_as(
    result,
    format: str,
    *,
    to_dict: Callable[[object], dict],
    tabular: Callable[[object, str], str],
    csv_records: Callable[[object], list[dict]],
    empty_header: Iterable[str],
    indent: int | None = 2,
) -> str:
    """``result`` as text in one of :data:`FORMATS`: ``to_dict`` as JSON, ``tabular`` in a table style, or CSV."""
    check_format(format)
    if format == "json":
        return json.dumps(to_dict(result), indent=indent, allow_nan=False) + "\n"
    if format == "csv":
        return csv_text(csv_records(result), empty_header)
    return tabular(result, TABLE_STYLES[format])
