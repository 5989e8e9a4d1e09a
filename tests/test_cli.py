"""The `xattn compare` and `xattn env` commands: output formats, exit codes, usage errors."""

import json
import subprocess
import sys

import jsonschema
import pytest
from click.testing import CliRunner

import xattn
import xattn.backends.registry
from xattn import _compat
from xattn.cli import main
from xattn.render.schema import REPORT_SCHEMA

from conftest import Scaled, require_backend

#: A tiny problem and no timed loop: these tests check behaviour, not speed.
TINY = ["--batch", "1", "--q-len", "8", "--embed", "16", "--heads", "2", "--no-timing"]


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_compare_both_backends_prints_the_table_and_exits_0():
    require_backend("jax")
    require_backend("torch")
    result = run("compare", "--backends", "jax,torch", "--variants", "einsum,sdpa", "--batch", "1", "--q-len", "8",
                 "--embed", "16", "--heads", "2", "--min-time", "0", "--max-time", "0.005")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("xattn compare: B=1 T=8 S=8 E=16 H=2 G=2 D=8 float32")
    assert all(len(line) <= 100 for line in lines)
    assert sum(line.split()[:1] in (["jax"], ["torch"]) for line in lines) == 4
    assert "jax/sdpa vs torch/sdpa" in result.output and "verdict: all 4 rows ok" in result.output


def test_json_output_validates_against_the_documented_schema():
    require_backend("jax")
    require_backend("torch")
    result = run("compare", "--backends", "jax,torch", "--variants", "einsum,blocked", "--format", "json",
                 "--causal", "--dtype", "bfloat16", *TINY)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    jsonschema.validate(data, REPORT_SCHEMA)
    assert data["exit_code"] == 0 and data["spec"]["dtype"] == "bfloat16" and data["spec"]["causal"] is True
    assert {(r["backend"], r["variant"]) for r in data["results"]} == {
        ("jax", "einsum"), ("jax", "blocked"), ("torch", "einsum"), ("torch", "blocked")}
    assert data["results"][0]["median_s"] is None  # --no-timing
    assert len(data["pairs"]) == 2


def test_seed_shape_flag_and_overrides(tmp_path):
    require_backend("jax")
    out = tmp_path / "report.json"
    result = run("compare", "--backends", "jax", "--variants", "einsum", "--seed-shape", "--batch", "1",
                 "--q-len", "16", "--no-timing", "--format", "json", "--output", str(out))
    assert result.exit_code == 0, result.output
    spec = json.loads(out.read_text())["spec"]
    assert (spec["batch"], spec["q_len"], spec["embed"], spec["heads"], spec["head_dim"]) == (1, 16, 128, 16, 8)


@pytest.mark.parametrize("fmt, marker", [("markdown", "| backend"), ("csv", "backend,variant,quantity")])
def test_other_formats(fmt, marker):
    require_backend("jax")
    result = run("compare", "--backends", "jax", "--variants", "packed", "--format", fmt, *TINY)
    assert result.exit_code == 0, result.output
    assert marker in result.output


def test_exit_1_when_a_row_drifts(monkeypatch):
    require_backend("jax")
    real = xattn.backends.registry.build

    monkeypatch.setattr(xattn.backends.registry, "build",
                        lambda backend, variant, **o: Scaled(real(backend, variant, **o)))
    result = run("compare", "--backends", "jax", "--variants", "einsum", *TINY)
    assert result.exit_code == 1
    assert "drift" in result.output and "not ok: jax/einsum" in result.output


def test_exit_0_and_a_visible_message_for_an_unsupported_variant():
    require_backend("jax")
    if _compat.jax_sdpa_runs_float16_on_cpu():
        pytest.skip("this JAX runs float16 sdpa on CPU (0.4.38 does): nothing to refuse")
    result = run("compare", "--backends", "jax", "--variants", "sdpa,einsum", "--dtype", "float16", *TINY)
    assert result.exit_code == 0
    assert "unsupported" in result.output and "VariantUnsupportedError" in result.output


@pytest.mark.parametrize("args, message", [
    (["--backends", "jax,mxnet"], "expected names from jax, torch; got mxnet"),
    (["--backends", "jax", "--variants", "flash"], "expected names from einsum, packed, vmap, sdpa, blocked, tiled"),
    (["--causal", "--kv-len", "16"], "impossible spec: causal: expected q_len == kv_len"),
    (["--heads", "3"], "impossible spec: head_dim: expected embed divisible by heads"),
    (["--kv-heads", "3"], "impossible spec: kv_heads: expected a divisor of heads"),
    (["--key-lengths", "5,x"], "expected comma-separated integers"),
    (["--key-lengths", "5,99"], "impossible spec: key_lengths: expected every length in [1, kv_len=8]"),
    (["--batch", "0"], "impossible spec: batch: expected a positive integer"),
    (["--min-time", "2", "--max-time", "1"], "expected at least --min-time"),
    (["--dtype", "int8"], "'int8' is not one of"),
    (["--device", "cuda", "--backends", "jax"], "expected a cuda device for jax"),
])
def test_usage_errors_exit_2_with_one_line_reason(args, message):
    require_backend("jax")
    base = ["compare", "--q-len", "8", "--no-timing"]
    result = CliRunner().invoke(main, base + args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_missing_framework_is_a_usage_error_naming_the_extra():
    code = ("import sys; sys.modules['torch'] = None; from xattn.cli import main;"
            " main(['compare', '--backends', 'torch'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "pip install 'xattn[torch]'" in result.stderr and "Traceback" not in result.stderr


def test_env_lists_versions_threads_and_numerics_flags():
    require_backend("jax")
    require_backend("torch")
    result = run("env", "--format", "json")
    assert result.exit_code == 0
    env = json.loads(result.output)
    assert set(env["versions"]) >= {"numpy", "jax", "jaxlib", "flax", "torch", "einops"}
    assert env["numerics"]["jax"].keys() >= {"jax_default_matmul_precision", "jax_enable_x64"}
    assert env["numerics"]["torch"].keys() >= {"float32_matmul_precision", "cuda.matmul.allow_tf32", "sdpa_enabled"}
    assert env["threads"].keys() >= {"xla_cpu_intra_op", "torch_intra_op"}
    table = run("env").output
    assert "numerics: torch" in table and all(len(line) <= 100 for line in table.splitlines())


# ------------------------------------------------------------------------------ messages (issue 14)


def test_eager_rows_say_eager_where_compiled_rows_show_their_compile_time():
    require_backend("jax")
    require_backend("torch")
    result = run("compare", "--backends", "jax,torch", "--variants", "einsum", *TINY)
    assert result.exit_code == 0, result.output
    cells = {line.split()[0]: line.split() for line in result.output.splitlines()
             if line.split()[:1] in (["jax"], ["torch"])}
    assert cells["torch"][-2] == "eager"
    assert cells["jax"][-2] in ("µs", "ms", "s")  # e.g. "35.2 ms": XLA compiled it


@pytest.mark.parametrize("requested, says, not_says", [
    (5, "can be set only to 1; the others run the 5 asked for", "ask for threads"),
    (None, "ask for threads before anything imports JAX", "asked for"),
])
def test_the_threads_note_fits_whether_threads_were_asked_for(requested, says, not_says):
    import dataclasses

    require_backend("jax")
    report = xattn.compare("jax", "einsum", xattn.AttentionSpec(batch=1, q_len=4, embed=8, heads=2), timing=False)
    record = dataclasses.replace(report.settings, threads={"jax": 2, "torch": 5}, threads_equal=False,
                                 threads_requested=requested)
    text = " ".join(str(dataclasses.replace(report, settings=record)).split())
    assert "threads: not equal (jax 2, torch 5): XLA's count is fixed when JAX starts" in text
    assert says in text and not_says not in text


def test_matmul_precision_help_has_one_default():
    text = " ".join(run("compare", "--help").output.split())
    assert "'default' leaves each framework's own setting. [default: highest]" in text
    assert "leave as is" not in text
