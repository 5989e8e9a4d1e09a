"""Persistent compilation caches, so a second ``xattn compare`` skips XLA and inductor compiles.

Both live under the user's cache directory (``$XDG_CACHE_HOME/xattn`` or ``~/.cache/xattn``):
``jax/`` for JAX's persistent compilation cache and ``torchinductor/`` for torch.compile's.
``XATTN_CACHE_DIR`` moves them; ``XATTN_NO_CACHE=1`` turns them off (a boolean variable:
:mod:`xattn._environ`). A cache the user has already configured (``jax_compilation_cache_dir``,
``TORCHINDUCTOR_CACHE_DIR``) is left as it is. The caches are optional: a directory that cannot be
created or written gives one warning and the run goes on without that cache. The CLI turns them
on; library users call :func:`enable_compilation_caches` themselves, since it changes
process-wide framework settings.
"""

from __future__ import annotations

import os
import secrets
import warnings
from pathlib import Path

from xattn._environ import env_flag


class CacheWarning(UserWarning):
    """A compilation cache could not be used; the run goes on without it."""


def cache_root() -> Path:
    if "XATTN_CACHE_DIR" in os.environ:
        return Path(os.environ["XATTN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xattn"


def usable_directory(path: Path) -> str | None:
    """None when ``path`` exists (or can be made) and takes a new file; else why not."""
    if path.exists() and not path.is_dir():
        return "a file"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".xattn-probe-{secrets.token_hex(4)}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as error:
        return f"{error.strerror or error} ({error.filename or path})"
    return None


def _unusable(names: str, path: Path, why: str) -> None:
    warnings.warn(f"compilation cache off ({names}): expected a writable directory at {path}; got {why}."
                  " The run goes on without it; set XATTN_CACHE_DIR to a writable directory, or XATTN_NO_CACHE=1",
                  CacheWarning, stacklevel=3)


def enable_compilation_caches(frameworks=("jax", "torch")) -> dict[str, str | None]:
    """Turn on the persistent caches of ``frameworks``; returns {framework: directory, or None when off}.

    Call it before the first compile. JAX must not have compiled anything yet for its cache to
    take effect on those earlier functions; later compiles are cached either way. A directory
    that cannot be used is a :class:`CacheWarning` and that cache stays off. ValueError when
    ``XATTN_NO_CACHE`` holds something other than a boolean word.
    """
    used = {"jax": None, "torch": None}
    if env_flag("XATTN_NO_CACHE"):
        return used
    root = cache_root()
    why = usable_directory(root)
    if why is not None:  # one warning for every cache under it
        _unusable(", ".join(name for name in used if name in frameworks), root, why)
        used["torch"] = os.environ.get("TORCHINDUCTOR_CACHE_DIR") if "torch" in frameworks else None
        return used
    if "torch" in frameworks:
        # torch reads this when it first compiles, whether or not torch is imported yet.
        if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
            why = usable_directory(root / "torchinductor")
            if why is None:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / "torchinductor")
            else:
                _unusable("torch", root / "torchinductor", why)
        used["torch"] = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if "jax" not in frameworks:
        return used
    try:
        import jax
    except ImportError:
        return used
    if jax.config.jax_compilation_cache_dir is None:
        why = usable_directory(root / "jax")
        if why is not None:
            _unusable("jax", root / "jax", why)
            return used
        jax.config.update("jax_compilation_cache_dir", str(root / "jax"))
        # xattn's functions compile in well under the 1 s default threshold; cache them all.
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    used["jax"] = jax.config.jax_compilation_cache_dir
    return used
