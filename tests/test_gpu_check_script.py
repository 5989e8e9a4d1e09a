"""scripts/gpu_check.sh on a machine without CUDA: says so, writes nothing, exits 0."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_backend

ROOT = Path(__file__).resolve().parents[1]


def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    torch = require_backend("torch").torch
    require_backend("jax")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the script would run the real check")
    out = tmp_path / "gpu.txt"
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out)], capture_output=True,
                            text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "no CUDA device visible to both torch and JAX" in result.stdout
    assert not out.exists()
