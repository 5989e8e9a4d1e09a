"""xattn's environment variables, read by one rule, and the cores the process may run on.

A boolean variable is off when unset (unless its default says otherwise) or set to ``0``,
``false``, ``no``, ``off`` or nothing, and on when set to ``1``, ``true``, ``yes`` or ``on``; case and
surrounding spaces do not matter. Any other value is a ValueError naming the variable, so a typo
never flips a switch. See docs/comparator.md ("Environment variables").
"""

from __future__ import annotations

import os

#: Values that turn a boolean variable off / on (compared lower-cased and stripped).
OFF = ("0", "false", "no", "off", "")
ON = ("1", "true", "yes", "on")


def env_flag(name: str, default: bool = False) -> bool:
    """The boolean environment variable ``name`` by the rule above; ``default`` when it is unset."""
    value = os.environ.get(name)
    if value is None:
        return default
    word = value.strip().lower()
    if word in OFF:
        return False
    if word in ON:
        return True
    raise ValueError(f"{name}: expected one of {', '.join(ON)} (on) or {', '.join(OFF[:-1])} or empty (off);"
                     f" got {value!r}")


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (Linux), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
