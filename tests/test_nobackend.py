"""xattn with NumPy alone, for real: no JAX, no torch importable (tox's ``nobackend`` env).

Every test here asks what a user without a framework sees: the import works, the CLI helps, and
each framework-needing call names the extra to install instead of raising a bare ImportError.
Where a framework can be imported these tests skip, and tests/test_installed.py runs this file
again in a subprocess that hides JAX and torch, so every suite runs them.
"""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import xattn
from xattn.cli import main

FRAMEWORKS = ("jax", "torch")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # hidden by an import hook (tests/test_installed.py)
        return False


pytestmark = pytest.mark.skipif(
    any(_importable(name) for name in FRAMEWORKS),
    reason="a framework is importable: tests/test_installed.py runs these with the frameworks hidden",
)


def test_import_works_and_the_core_runs():
    spec = xattn.AttentionSpec(batch=1, q_len=4, embed=8, heads=2)
    inputs = xattn.make_inputs(spec)
    assert xattn.reference(inputs.x, *inputs.weights()).shape == (1, 4, 8)
    assert not set(FRAMEWORKS) & set(sys.modules)


def test_console_script_help():
    beside = Path(sys.executable).with_name("xattn")  # the env's own script, even when not on PATH
    executable = str(beside) if beside.exists() else shutil.which("xattn")
    assert executable, "the xattn console script is not on PATH"
    result = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "Compare attention implementations" in result.stdout


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_backend_names_the_extra(name):
    with pytest.raises(xattn.BackendUnavailableError, match=rf"pip install 'xattn\[{name}\]'"):
        xattn.variants(name)


@pytest.mark.parametrize("backends", ["jax", "torch", "jax,torch"])
def test_cli_compare_names_the_extra(backends):
    result = CliRunner().invoke(main, ["compare", "--backends", backends, "--no-timing"])
    assert result.exit_code == 2, result.output
    assert f"pip install 'xattn[{backends.split(',')[0]}]'" in result.output


def test_cli_compare_without_any_backend_names_both_extras():
    result = CliRunner().invoke(main, ["compare", "--no-timing"])
    assert result.exit_code == 2, result.output
    assert "pip install 'xattn[jax]'" in result.output and "pip install 'xattn[torch]'" in result.output


def test_cli_env_works_without_frameworks():
    result = CliRunner().invoke(main, ["env"])
    assert result.exit_code == 0, result.output
    assert result.exception is None and "numpy" in result.output


@pytest.mark.parametrize("convert, name", [(xattn.to_torch, "torch"), (xattn.to_jax, "jax")])
def test_bridge_names_the_extra(convert, name):
    with pytest.raises(xattn.BackendUnavailableError, match=rf"pip install 'xattn\[{name}\]'"):
        convert(np.ones(3, np.float32))
