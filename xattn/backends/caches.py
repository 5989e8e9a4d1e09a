"""Persistent compilation caches, so a second ``xattn compare`` skips XLA and inductor compiles.

Both live under the user's cache directory (``$XDG_CACHE_HOME/xattn`` or ``~/.cache/xattn``):
``jax/`` for JAX's persistent compilation cache and ``torchinductor/`` for torch.compile's.
``XATTN_CACHE_DIR`` moves them; ``XATTN_NO_CACHE=1`` turns them off. A cache the user has already
configured (``jax_compilation_cache_dir``, ``TORCHINDUCTOR_CACHE_DIR``) is left as it is.
The CLI turns them on; library users call :func:`enable_compilation_caches` themselves, since it
changes process-wide framework settings.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    if "XATTN_CACHE_DIR" in os.environ:
        return Path(os.environ["XATTN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xattn"


def enable_compilation_caches(frameworks=("jax", "torch")) -> dict[str, str | None]:
    """Turn on the persistent caches of ``frameworks``; returns {framework: directory, or None when off}.

    Call it before the first compile. JAX must not have compiled anything yet for its cache to
    take effect on those earlier functions; later compiles are cached either way.
    """
    if os.environ.get("XATTN_NO_CACHE"):
        return {"jax": None, "torch": None}
    root = cache_root()
    used = {"jax": None, "torch": None}
    if "torch" in frameworks:
        # torch reads this when it first compiles, whether or not torch is imported yet.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "torchinductor"))
        used["torch"] = os.environ["TORCHINDUCTOR_CACHE_DIR"]
    if "jax" not in frameworks:
        return used
    try:
        import jax
    except ImportError:
        return used
    if jax.config.jax_compilation_cache_dir is None:
        (root / "jax").mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(root / "jax"))
        # xattn's functions compile in well under the 1 s default threshold; cache them all.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    used["jax"] = jax.config.jax_compilation_cache_dir
    return used
