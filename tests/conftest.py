"""Backend selection for the test suite.

Tests that need a framework ask for it through ``require_backend``. A missing framework skips the
test, except for the backends named in XATTN_REQUIRE_BACKENDS (comma-separated; CI sets
"jax,torch"), where it fails instead: CI can never go green with a framework silently absent.
"""

from __future__ import annotations

import os

import pytest

from xattn.backends.registry import backend_names, get_backend
from xattn.errors import BackendUnavailableError

REQUIRED = {name for name in os.environ.get("XATTN_REQUIRE_BACKENDS", "").split(",") if name}


def require_backend(name: str):
    """The backend module, or a skip (a failure when XATTN_REQUIRE_BACKENDS names it)."""
    try:
        return get_backend(name)
    except BackendUnavailableError as error:
        if name in REQUIRED:
            pytest.fail(f"XATTN_REQUIRE_BACKENDS demands {name!r}: {error}")
        pytest.skip(str(error))


@pytest.fixture(params=backend_names())
def backend(request):
    """Each registered backend name in turn (skips or fails as ``require_backend`` says)."""
    require_backend(request.param)
    return request.param


def pytest_report_header(config):
    return f"xattn: XATTN_REQUIRE_BACKENDS={','.join(sorted(REQUIRED)) or '(none)'}"


def require_equinox():
    """equinox (the ``equinox`` extra), or a skip; a failure where XATTN_REQUIRE_BACKENDS demands jax,
    since every tox env that demands jax installs the equinox extra beside it."""
    require_backend("jax")
    try:
        import equinox
    except ImportError as error:
        if "jax" in REQUIRED:
            pytest.fail(f"XATTN_REQUIRE_BACKENDS demands jax, and tox installs equinox with it: {error}")
        pytest.skip(f"equinox is not installed: pip install 'xattn[equinox]' ({error})")
    return equinox


class Scaled:
    """A built variant whose output (and so every gradient) is ``factor`` times the right one: a port bug."""

    def __init__(self, fn, factor: float = 2.0):
        self.fn, self.factor = fn, factor

    def compile(self, *args):
        return self

    def __call__(self, *args):
        return self.fn(*args) * self.factor


def cli_runner():
    """click's CliRunner with standard output and standard error kept apart (``result.stdout``, ``.stderr``)."""
    from click.testing import CliRunner

    try:
        return CliRunner(mix_stderr=False)  # click < 8.2 mixes them unless told not to
    except TypeError:
        return CliRunner()  # click >= 8.2 always keeps them apart
