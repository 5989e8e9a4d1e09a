"""``xattn check MOD:FN_A MOD:FN_B --inputs FILE.npz``: loading targets, binding arrays, exit codes.

Every test writes its own small module (attention in JAX, in torch, a wrong torch port, and
``xattn.reference`` as the oracle) into a temporary directory and runs the command there, through
click's CliRunner or, once, a subprocess of ``python -m xattn``.
"""

import inspect
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from xattn.cli import main
from xattn.render.schema import CHECK_SCHEMA

from conftest import cli_runner, require_backend

PORTS = '''
import math

import jax
import jax.numpy as jnp
import torch

import xattn

reference = xattn.reference
NOT_A_FUNCTION = 3


def jax_attention(x, wq, wk, wv, wo):
    q, k, v = (jnp.einsum("BTE,HED->BTHD", x, w) for w in (wq, wk, wv))
    p = jax.nn.softmax(jnp.einsum("BTHD,BSHD->BHTS", q, k) / math.sqrt(q.shape[-1]), axis=-1)
    return jnp.einsum("BTHD,HDE->BTE", jnp.einsum("BHTS,BSHD->BTHD", p, v), wo)


def torch_attention(x, wq, wk, wv, wo):
    q, k, v = (torch.einsum("BTE,HED->BTHD", x, w) for w in (wq, wk, wv))
    p = torch.softmax(torch.einsum("BTHD,BSHD->BHTS", q, k) / math.sqrt(q.shape[-1]), dim=-1)
    return torch.einsum("BTHD,HDE->BTE", torch.einsum("BHTS,BSHD->BTHD", p, v), wo)


def torch_unscaled(x, wq, wk, wv, wo):
    """The port forgot the 1/sqrt(D) scale."""
    q, k, v = (torch.einsum("BTE,HED->BTHD", x, w) for w in (wq, wk, wv))
    p = torch.softmax(torch.einsum("BTHD,BSHD->BHTS", q, k), dim=-1)
    return torch.einsum("BTHD,HDE->BTE", torch.einsum("BHTS,BSHD->BTHD", p, v), wo)


def torch_weights_first(wq, wk, wv, wo, x):
    return torch_attention(torch.as_tensor(x), wq, wk, wv, wo)  # torch named: guessed torch


def torch_positional(a, b, c, d, e):
    return torch_attention(torch.as_tensor(a), b, c, d, e)


def torch_needs_more(x, wq, wk, wv, wo, mask):
    return torch_attention(torch.as_tensor(x), wq, wk, wv, wo)


def via_helper(x, wq, wk, wv, wo):
    return helper(x, wq, wk, wv, wo)  # refers to a function that refers to torch: guessed torch


def via_table(x, wq, wk, wv, wo):
    return TABLE["attention"](x, wq, wk, wv, wo)  # refers to a dict: guessed numpy


helper = torch_attention
TABLE = {"attention": torch_attention}


class Attention(torch.nn.Module):
    def forward(self, x, wq, wk, wv, wo):
        return TABLE["attention"](x, wq, wk, wv, wo)


class Holder:
    model = Attention()
'''

NAMES = ("x", "wq", "wk", "wv", "wo")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A directory holding ``ports_<id>.py`` (also importable by that dotted name) and ``in.npz``; the cwd."""
    require_backend("jax")
    require_backend("torch")
    module = f"ports_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(PORTS)
    rng = np.random.default_rng(0)
    B, T, E, H, D = 2, 6, 8, 2, 4
    arrays = dict(x=rng.standard_normal((B, T, E)), wq=rng.standard_normal((H, E, D)) / 3,
                  wk=rng.standard_normal((H, E, D)) / 3, wv=rng.standard_normal((H, E, D)) / 3,
                  wo=rng.standard_normal((H, D, E)) / 3)
    arrays = {name: value.astype(np.float32) for name, value in arrays.items()}
    np.savez(tmp_path / "in.npz", **arrays)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command puts the cwd and file folders on it
    return tmp_path, module, arrays


def check(*args):
    return cli_runner().invoke(main, ["check", *args])


def test_a_correct_port_passes_with_the_reference_and_says_how_it_bound(workdir):
    _, module, _ = workdir
    result = check(f"{module}.py:jax_attention", f"{module}.py:torch_attention", "--inputs", "in.npz",
                   "--reference", f"{module}.py:reference")
    assert result.exit_code == 0, result.output
    assert "verdict: ok" in result.stdout and "each against the float64 reference" in result.stdout
    assert f"{module}.py:jax_attention takes x, wq, wk, wv, wo by name, as jax arrays (guessed" in result.stderr
    assert f"{module}.py:torch_attention takes x, wq, wk, wv, wo by name, as torch arrays" in result.stderr


def test_a_drifting_port_exits_1_and_names_the_side(workdir):
    _, module, _ = workdir
    result = check(f"{module}:jax_attention", f"{module}:torch_unscaled", "--inputs", "in.npz",
                   "--reference", f"{module}:reference")
    assert result.exit_code == 1, result.output
    assert "verdict: NOT OK" in result.stdout
    assert f"; {module}:torch_unscaled over budget" in result.stdout


def test_grad_rows_and_the_other_formats(workdir):
    tmp_path, module, _ = workdir
    targets = (f"{module}:jax_attention", f"{module}:torch_attention", "--inputs", "in.npz",
               "--reference", f"{module}:reference", "--grad")
    result = check(*targets, "--format", "json", "-o", "report.json")
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "wrote report.json" in result.stderr
    document = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(document, CHECK_SCHEMA)
    assert document["schema"] == "xattn.check/1" and document["ok"] is True and document["exit_code"] == 0
    assert document["frameworks"] == ["jax", "torch"] and document["kinds"] == ["function", "function"]
    outputs = [side["output"] for side in document["sides"]]
    assert outputs[::2] == ["out", *(f"grad/{name}" for name in NAMES)]
    assert all(pair["attribution"] == "rounding noise" for pair in document["pairs"])
    csv_lines = check(*targets, "--format", "csv").stdout.splitlines()
    assert csv_lines[0].startswith("function,output,verdict") and len(csv_lines) == 1 + 12
    assert "| function " in check(*targets, "--format", "markdown").stdout


def test_arrays_bind_by_name_whatever_the_order_else_in_order(workdir):
    _, module, arrays = workdir
    np.savez("reordered.npz", **{name: arrays[name] for name in ("wo", "x", "wv", "wq", "wk")})
    result = check(f"{module}:jax_attention", f"{module}:torch_weights_first", "--inputs", "reordered.npz",
                   "--reference", f"{module}:reference", "--grad")
    assert result.exit_code == 0, result.output
    assert "grad/wq" in result.stdout  # the rows are named by the arrays, each bound to its parameter
    np.savez("unnamed.npz", *(arrays[name] for name in NAMES))  # arr_0 ... arr_4
    result = check(f"{module}:jax_attention", f"{module}:torch_positional", "--inputs", "unnamed.npz",
                   "--reference", f"{module}:reference")
    assert result.exit_code == 0, result.output
    assert "takes arr_0, arr_1, arr_2, arr_3, arr_4 in the file's order" in result.stderr


def test_a_dotted_fn_names_a_module_object(workdir):
    _, module, _ = workdir
    result = check(f"{module}:Holder.model", f"{module}.py:jax_attention", "--inputs", "in.npz",
                   "--reference", f"{module}:reference", "--grad")
    assert result.exit_code == 0, result.output
    assert f"{module}:Holder.model takes x, wq, wk, wv, wo by name, as torch arrays (guessed: it is" in result.stderr


def test_frameworks_override_a_wrong_guess(workdir):
    _, module, _ = workdir
    found = check(f"{module}:jax_attention", f"{module}:via_helper", "--inputs", "in.npz")
    assert found.exit_code == 0, found.output
    assert f"{module}:via_helper takes x, wq, wk, wv, wo by name, as torch arrays (guessed: it" in found.stderr
    targets = (f"{module}:jax_attention", f"{module}:via_table", "--inputs", "in.npz")
    guessed = check(*targets)
    assert guessed.exit_code == 1 and "Traceback" not in guessed.output
    assert "as numpy arrays (guessed: it refers to no module, array or function of jax or torch)" in guessed.stderr
    error = [line for line in guessed.stderr.splitlines() if line.startswith("xattn check: error: ")]
    assert len(error) == 1 and "say which: --frameworks A,B" in error[0]
    assert f"{module}.py:" in error[0]  # where in the user's code it raised
    told = check(*targets, "--frameworks", "jax,torch")
    assert told.exit_code == 0 and "as torch arrays (as told)" in told.stderr


@pytest.mark.parametrize("args, expected", [
    (["nocolon", "{m}:torch_attention"], "expected MOD:FN such as mymodel:forward"),
    (["no_such_module_xyz:f", "{m}:torch_attention"], "no_such_module_xyz: expected an importable module"),
    (["{m}.py:nope", "{m}:torch_attention"], "expected {m}.py to have 'nope'; it has no 'nope' (callables there:"),
    (["missing.py:f", "{m}:torch_attention"], "missing.py: expected a Python file; no such file"),
    (["{m}:NOT_A_FUNCTION", "{m}:torch_attention"], "expected a function or module; got a int"),
    (["{m}:jax_attention", "{m}:torch_needs_more"], "but it also needs mask; add it to the npz"),
    (["{m}:jax_attention", "{m}:torch_attention", "--frameworks", "jax"], "frameworks: expected two of jax, torch"),
    (["{m}:jax_attention", "{m}:torch_attention", "--inputs", "none.npz"], "none.npz: expected an .npz file"),
    (["{m}:jax_attention", "{m}:torch_attention", "--inputs", "{m}.py"], "expected an .npz file of arrays"),
    (["{m}:jax_attention", "{m}:torch_attention", "--reference", "{m}:nope"], "has no 'nope'"),
])
def test_usage_errors_exit_2_in_one_line(workdir, args, expected):
    _, module, _ = workdir
    args = [a.format(m=module) for a in args]
    if "--inputs" not in args:
        args += ["--inputs", "in.npz"]
    result = check(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and expected.format(m=module) in errors[0], result.stderr


def test_a_module_that_fails_to_import_is_a_usage_error(workdir):
    Path("broken.py").write_text("import math\nraise RuntimeError('no weights here')\n")
    result = check("broken.py:f", "broken:f", "--inputs", "in.npz")
    assert result.exit_code == 2
    assert "broken.py: importing it raised RuntimeError: no weights here" in result.stderr


def test_reference_a_reruns_a_side(workdir):
    _, module, _ = workdir
    ok = check(f"{module}:jax_attention", f"{module}:torch_attention", "--inputs", "in.npz", "--reference", "a")
    assert ok.exit_code == 0, ok.output
    drift = check(f"{module}:torch_unscaled", f"{module}:jax_attention", "--inputs", "in.npz", "--reference", "b",
                  "--grad")
    assert drift.exit_code == 1, drift.output
    assert f"; {module}:torch_unscaled over budget" in drift.stdout


def test_the_side_that_sets_the_order_is_passed_as_itself():
    from xattn.porting.command import as_called, bind, positional_order

    def a(x, w, *, dtype=None):
        return ("a", x, w)

    def b(w, x):
        return ("b", x, w)

    def c(p, q):
        return ("c", p, q)

    names = ["w", "x"]  # the file's order
    order = positional_order(a, bind(a, names), names)
    assert order == ["x", "w"]
    assert as_called(a, bind(a, names), names, order, "A") is a
    stand_in = as_called(b, bind(b, names), names, order, "B", framework="torch")
    assert stand_in is not b and stand_in.framework == "torch" and stand_in.__name__ == "B"
    assert list(inspect.signature(stand_in).parameters) == ["x", "w"]
    assert stand_in("X", "W") == ("b", "X", "W")
    in_order = as_called(c, bind(c, names), names, order, "C")
    assert bind(c, names).by == "order" and in_order("X", "W") == ("c", "W", "X")  # p, q = the file's w, x
    reordered_a = as_called(a, bind(a, names), names, ["w", "x"], "A")
    assert "dtype" in inspect.signature(reordered_a).parameters  # a reference keeps its dtype keyword


def test_python_m_xattn_check_exits_1_on_a_drifting_pair(workdir):
    tmp_path, module, _ = workdir
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-m", "xattn", "check", f"{module}:jax_attention", f"{module}:torch_unscaled",
               "--inputs", "in.npz", "--reference", f"{module}.py:reference"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "verdict: NOT OK" in result.stdout and "Traceback" not in result.stderr
    usage = subprocess.run(command[:4] + ["nocolon", "x:y", "--inputs", "in.npz"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert textwrap.dedent("Error: expected MOD:FN") in usage.stderr
