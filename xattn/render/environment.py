"""The environment block (``xattn env``, :func:`xattn.environment`) as JSON, CSV or key/value tables.

JSON keeps the nested dict as it is; CSV and the tables flatten nested keys to ``section.key``,
one table per section (one per framework under ``numerics``).
"""

from __future__ import annotations

import json

from xattn.render.text import TABLE_STYLES, check_format, csv_text, tabulate


def _flatten(data, prefix: str = ""):
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, f"{name}.")
        elif isinstance(value, list):
            yield name, ", ".join(str(v) for v in value) or "-"
        else:
            yield name, "-" if value is None else str(value)


def render_env(env: dict, format: str = "table") -> str:
    """The environment block: JSON as it is; otherwise one small key/value table per section."""
    if format == "json":
        return json.dumps(env, indent=2) + "\n"
    check_format(format)
    if format == "csv":
        return csv_text([{"key": key, "value": value} for key, value in _flatten(env)], ("key", "value"))
    general = [(key, str(value)) for key, value in env.items() if not isinstance(value, dict)]
    sections = [("xattn env", general)]
    for key, value in env.items():
        if isinstance(value, dict):
            if key == "numerics":
                sections += [(f"numerics: {name}", list(_flatten(flags))) for name, flags in value.items()]
            else:
                sections.append((key, list(_flatten(value))))
    parts = []
    for title, rows in sections:
        if rows:
            heading = f"## {title}" if format == "markdown" else f"{title}"
            parts.append(heading + "\n" + tabulate(rows, ("key", "value"), tablefmt=TABLE_STYLES[format]))
    return "\n\n".join(parts) + "\n"
