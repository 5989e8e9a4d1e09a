"""How check_port asks a user's reference for its answers: the float64 oracle and the naive runs.

The oracle is the reference on float64 copies of the floating inputs. The naive same-dtype runs
behind the budget are the reference asked for the run dtype where it names a ``dtype`` keyword
(xattn's own references and :func:`xattn.staged` ones round stage by stage in it), else run on the
inputs as they are; random-rounding repeats follow where it names ``rounding_seed``. Where that
gives no run in the run dtype, torch.testing's tolerance stands in and a note says why.
"""

from __future__ import annotations

import inspect

import numpy as np

from xattn.bridge.trees import leaves, map_leaves
from xattn.numerics.naive import naive_repeats
from xattn.porting.rows import is_floating


def as_float64(inputs) -> list:
    """The inputs with every floating array (leaves of trees too) in float64: what an oracle run takes."""
    return [map_leaves(v, lambda path, leaf: np.asarray(leaf, dtype=np.float64) if is_floating(leaf) else leaf)
            for v in inputs]


def takes_keyword(fn, name: str) -> bool:
    """Whether ``fn`` (a user's reference) names the keyword ``name``."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def naive_runs_of(reference, inputs, dtype: str, notes: list, what: str, **keywords) -> list:
    """The naive same-dtype runs of ``reference`` on ``inputs`` (deterministic first, then its random repeats).

    A reference that names a ``dtype`` keyword is asked for the run ``dtype`` (it may cast or round
    stage by stage, as xattn's own references and :func:`xattn.staged` ones do); any other is called
    on the inputs as they are. A reference that raises there gives no run: the budget falls back to
    torch.testing's tolerance, and ``notes`` says so.
    """
    if takes_keyword(reference, "dtype"):
        keywords["dtype"] = dtype
    try:
        first = reference(*inputs, **keywords)
    except Exception as error:  # a reference that cannot run in the run dtype: the tolerance stands in
        notes.append(f"budget {what}: the reference raised on the {dtype} inputs ({type(error).__name__}:"
                     f" {' '.join(str(error).split())[:200]}), so torch.testing's tolerance stands in;"
                     " give it a dtype keyword (xattn.staged) to get the naive budget")
        return []
    arrays = [leaf for _, leaf in leaves(first) if isinstance(leaf, np.ndarray)]
    return [first, *naive_repeats(reference, arrays,
                                  lambda seed: reference(*inputs, **keywords, rounding_seed=seed))]


def fallback_note(what: str, naive_run, dtype: str, budget) -> str | None:
    """What to say when a budget fell back to the tolerance although the reference ran."""
    if budget.method != "tolerance" or naive_run is None:
        return None
    return (f"budget {what}: the reference's run on the {dtype} inputs gave {np.asarray(naive_run).dtype.name},"
            " not the run dtype, so torch.testing's tolerance stands in; give it a dtype keyword (xattn.staged)"
            " to get the naive budget")
