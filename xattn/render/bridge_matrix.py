"""``xattn bridge``'s output: the :class:`xattn.bridge.matrix.BridgeCell` objects of the bridge matrix as text.

``table``/``markdown`` pivot them (one row per layout and dtype, one column per direction);
``json``/``csv`` give one record per cell with every field. This module only reads the cells'
fields; what a cell holds is :mod:`xattn.bridge.matrix`'s.
"""

from __future__ import annotations

import dataclasses
import json

from xattn.render.text import TABLE_STYLES, csv_text, tabulate

#: ``BridgeCell.outcome`` of a conversion that raised.
ERROR_OUTCOME = "error"
#: The CSV header when there is no cell: the fields of ``BridgeCell``, in order.
CELL_FIELDS = ("source", "target", "dtype", "layout", "outcome", "strict", "detail", "problems")


def render_matrix(cells, fmt: str = "table") -> str:
    """``table``/``markdown``: one row per (layout, dtype), one column per direction, copy=None's
    outcome in each cell; ``json``/``csv``: one record per cell with every field."""
    if fmt == "json":
        records = [{**dataclasses.asdict(cell), "problems": list(cell.problems)} for cell in cells]
        return json.dumps(records, indent=1)
    if fmt == "csv":
        records = [{**dataclasses.asdict(cell), "problems": "; ".join(cell.problems)} for cell in cells]
        return csv_text(records, CELL_FIELDS, line_end="\r\n")  # the csv module's own line end, as ever
    directions = list(dict.fromkeys(cell.direction for cell in cells))
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for cell in cells:
        mark = cell.outcome + (" (!)" if cell.problems else "")
        rows.setdefault((cell.layout, cell.dtype), {})[cell.direction] = mark
    table = [[layout, dtype, *(marks.get(d, "") for d in directions)] for (layout, dtype), marks in rows.items()]
    text = tabulate(table, ["layout", "dtype", *directions], header_padding=2,
                    tablefmt=TABLE_STYLES.get(fmt, "simple"))
    errors = sorted({cell.detail.split(". ")[0] for cell in cells if cell.outcome == ERROR_OUTCOME})
    broken = [cell for cell in cells if cell.problems]
    notes = ["", "copy=None outcome per cell; copy=False gives zero-copy where this says zero-copy, else an error."]
    notes += [f"error: {reason}" for reason in errors]
    notes += [f"(!) {cell.direction} {cell.dtype} {cell.layout}: {'; '.join(cell.problems)}" for cell in broken]
    if fmt == "markdown":
        return text + "\n\n" + "\n".join(f"- {note}" for note in notes if note) + "\n"
    return text + "\n" + "\n".join(notes) + "\n"
