"""Output files: checked writable before any work, written atomically after it.

:func:`check_writable` is what every command runs on ``-o``/``--plot`` before it computes anything,
so a bad path costs nothing. :func:`write_atomic` writes a temporary file in the target's own
directory and renames it over the target (``os.replace``), so a run interrupted mid-write, or a
full disk, leaves the old file or none, never half of one. ``os.devnull`` is written directly.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


def check_writable(path) -> Path:
    """``path`` as a Path if a report can be written there; else ValueError saying why and what to do."""
    target = Path(os.fspath(path)).expanduser()
    if str(target) == os.devnull:
        return target
    if target.is_dir():
        raise ValueError(f"expected a file path; got {str(target)!r}, a directory. Name a file inside it.")
    if target.exists() or target.is_symlink():
        try:
            mode = target.stat().st_mode
        except OSError as error:
            raise ValueError(f"expected a writable file; got {str(target)!r}: {error.strerror}") from None
        if not stat.S_ISREG(mode):
            raise ValueError(f"expected a regular file; got {str(target)!r}, a device or pipe. Name a file, or"
                             " leave the option out to write to standard output.")
        if not os.access(target, os.W_OK):
            raise ValueError(f"expected a writable file; got {str(target)!r}, which is read-only. Name another"
                             " file or make it writable.")
    folder = target.resolve().parent
    if not folder.is_dir():
        found = "a file" if folder.exists() else "nothing"
        raise ValueError(f"expected an existing directory for {str(target)!r}; got {found} at {str(folder)!r}."
                         " Create the directory first or choose another path.")
    probe = folder / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:  # os.access says yes to root on a read-only mount; creating a file is the real test
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as error:
        raise ValueError(f"expected a directory xattn can write in; got {str(folder)!r}: {error.strerror}."
                         " Choose another path.") from None
    probe.unlink(missing_ok=True)
    return target


def write_atomic(path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file renamed over it.

    The new file gets the old file's permissions, or the umask's for a new one. OSError (a full
    disk, a vanished directory) propagates; the temporary file is removed in every case.
    """
    target = Path(os.fspath(path)).expanduser()
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if str(target) == os.devnull:
        target.write_bytes(payload)
        return
    real = target.resolve()  # a symlink keeps pointing at the file it named
    temporary = real.parent / f".{real.name}.{secrets.token_hex(4)}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        if real.exists():
            os.chmod(temporary, stat.S_IMODE(real.stat().st_mode))
        os.replace(temporary, real)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
