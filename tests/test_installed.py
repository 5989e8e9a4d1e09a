"""xattn run the way users run it: the installed ``xattn`` console script in a subprocess, its JSON
read back and every number in it recomputed here, and the NumPy-only suite with the frameworks hidden.

Click's runner calls ``main`` in-process, so it never sees what the console script's own exit does
(``cli.entry_point`` leaves through ``os._exit``). A run is made to drift on purpose by a
``sitecustomize`` module on the subprocess's PYTHONPATH that wraps every variant so it returns twice
its output: a wrong port, as a user's would be, with nothing changed in xattn itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import xattn
from xattn.contract.spec import AttentionSpec, make_inputs, numpy_dtype

from conftest import require_backend

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--variants", "einsum", "--batch", "1", "--q-len", "8", "--embed", "16", "--heads", "2", "--no-timing",
        "--dtype", "bfloat16", "--format", "json"]

DRIFT = '''
"""Every xattn variant returns twice its output: a deliberately wrong port (tests/test_installed.py)."""
import xattn.backends.registry as registry

_real = registry.build


class _Doubled:
    def __init__(self, fn):
        self.fn = fn

    def compile(self, *args):
        return self

    def __call__(self, *args):
        return self.fn(*args) * 2


registry.build = lambda backend, variant, **options: _Doubled(_real(backend, variant, **options))
'''

HIDE_FRAMEWORKS = '''
"""Hide JAX, torch and their kin, as on a NumPy-only install (tests/test_installed.py)."""
import sys

_HIDDEN = {"jax", "jaxlib", "torch", "flax", "equinox", "triton", "torchvision"}


class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: a NumPy-only run)", name=name)
        return None


sys.meta_path.insert(0, _Hide())
'''


def console_script() -> str:
    beside = Path(sys.executable).with_name("xattn")  # the environment's own script, even when not on PATH
    found = str(beside) if beside.exists() else shutil.which("xattn")
    assert found, "the xattn console script is not installed: pip install -e . puts it beside python"
    return found


def environment(tmp_path: Path, sitecustomize: str | None) -> dict:
    """This process's environment, with ``sitecustomize`` (if given) first on PYTHONPATH."""
    env = dict(os.environ)
    paths = [path for path in env.get("PYTHONPATH", "").split(os.pathsep) if path]
    if sitecustomize is not None:
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(textwrap.dedent(sitecustomize))
        paths.insert(0, str(site))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_script(tmp_path: Path, *args: str, sitecustomize: str | None = None):
    """(exit status, the JSON report written with -o) of one console-script run."""
    output = tmp_path / "report.json"
    result = subprocess.run([console_script(), *args, "--output", str(output)], capture_output=True, text=True,
                            timeout=300, env=environment(tmp_path, sitecustomize), cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(output.read_text())


def recomputed(data: dict, factor: float = 1.0) -> dict:
    """The numbers of the JSON report's first row, computed here from its spec with the public API."""
    row = data["results"][0]
    spec = AttentionSpec(**data["spec"])
    inputs = make_inputs(spec)
    oracle = xattn.reference(inputs.x, *inputs.weights())
    out = np.asarray(xattn.to_numpy(xattn.attention(inputs.x, *inputs.weights(), backend=row["backend"],
                                                    variant=row["variant"])), np.float64) * factor
    naive = xattn.reference(inputs.x, *inputs.weights(), dtype=spec.dtype)  # the deterministic naive run
    largest = np.asarray(np.abs(oracle).max(), numpy_dtype(spec.dtype))
    return {
        "max_abs_err": float(np.abs(out - oracle).max()),
        "naive_err": float(np.abs(np.asarray(naive, np.float64) - oracle).max()),
        "rounding_step": float(np.spacing(largest)),
    }


def check_row_numbers(data: dict, factor: float = 1.0) -> dict:
    row, expected = data["results"][0], recomputed(data, factor)
    assert row["budget_method"] == "naive"
    assert row["rounding_step"] == pytest.approx(expected["rounding_step"], rel=1e-12)
    # the naive error is the worst of its runs: the deterministic one, then random-rounding repeats
    assert row["naive_max_abs_err"] >= expected["naive_err"] * (1 - 1e-12) and row["naive_runs"] >= 1
    assert row["budget"] == pytest.approx(2 * row["naive_max_abs_err"] + row["rounding_step"], rel=1e-12)
    assert row["budget"] > row["naive_max_abs_err"]  # the budget, never the naive error itself
    assert row["max_abs_err"] == pytest.approx(expected["max_abs_err"], rel=1e-6)
    assert row["budget_use"] == pytest.approx(row["max_abs_err"] / row["budget"], rel=1e-9)
    return row


def test_console_script_json_values_and_exit_status_of_a_clean_run(tmp_path):
    require_backend("torch")  # one framework per subprocess keeps it short; the drifting run takes JAX
    status, data = run_script(tmp_path, "compare", "--backends", "torch", *TINY)
    assert status == 0 == data["exit_code"] and data["ok"] is True
    assert [(row["backend"], row["verdict"]) for row in data["results"]] == [("torch", "ok")]
    row = check_row_numbers(data)
    assert row["max_abs_err"] <= row["budget"]


def test_console_script_exits_1_on_a_drifting_run_and_says_so_in_the_json(tmp_path):
    require_backend("jax")
    status, data = run_script(tmp_path, "compare", "--backends", "jax", *TINY, sitecustomize=DRIFT)
    assert status == 1 == data["exit_code"] and data["ok"] is False
    row = check_row_numbers(data, factor=2.0)  # what the doubled port really returned
    assert row["verdict"] == "drift" and row["max_abs_err"] > row["budget"] and row["budget_use"] > 1


def test_console_script_exits_2_with_one_line_on_a_usage_error(tmp_path):
    result = subprocess.run([console_script(), "compare", "--batch", "0"], capture_output=True, text=True,
                            timeout=120, env=environment(tmp_path, None))
    assert result.returncode == 2
    assert "batch: expected a positive integer" in result.stderr and "Traceback" not in result.stderr


def test_the_numpy_only_suite_passes_with_the_frameworks_hidden(tmp_path):
    """tests/test_nobackend.py, run where JAX and torch are installed but cannot be imported."""
    env = environment(tmp_path, HIDE_FRAMEWORKS)
    env.pop("XATTN_REQUIRE_BACKENDS", None)  # nothing is required of a NumPy-only install
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True, env=env,
                           timeout=120)
    assert probe.returncode == 1 and "hidden: a NumPy-only run" in probe.stderr, probe.stderr
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                             str(ROOT / "tests" / "test_nobackend.py")], capture_output=True, text=True, env=env,
                            timeout=600, cwd=ROOT)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 10 and "skipped" not in summary, summary
