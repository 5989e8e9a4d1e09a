"""The CLI's persistent compilation caches: where they go, and that they can be turned off."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from xattn._environ import env_flag

from conftest import require_backend

SCRIPT = textwrap.dedent(
    """
    import json, xattn
    from xattn.backends.caches import enable_compilation_caches
    used = enable_compilation_caches()
    inputs = xattn.make_inputs(xattn.AttentionSpec(batch=1, q_len=8, embed=8, heads=2))
    xattn.attention(inputs.x, *inputs.weights(), backend="jax", variant="einsum").block_until_ready()
    print(json.dumps(used), flush=True)
    import os
    os._exit(0)  # jaxlib can abort during interpreter teardown (see xattn.cli.entry_point)
    """
)


def run(tmp_path, **env):
    environment = {**os.environ, "XATTN_CACHE_DIR": str(tmp_path / "cache"), **env}
    environment.pop("TORCHINDUCTOR_CACHE_DIR", None)
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=environment,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_compiles_land_in_the_xattn_cache_dir(tmp_path):
    require_backend("jax")
    used = run(tmp_path)
    assert used == {"jax": str(tmp_path / "cache" / "jax"), "torch": str(tmp_path / "cache" / "torchinductor")}
    assert any((tmp_path / "cache" / "jax").iterdir()), "JAX wrote no cache entry"


def test_no_cache_leaves_everything_off(tmp_path):
    require_backend("jax")
    assert run(tmp_path, XATTN_NO_CACHE="1") == {"jax": None, "torch": None}
    assert not (tmp_path / "cache").exists()


COMPARE = ["-m", "xattn", "compare", "--backends", "jax", "--variants", "einsum", "--batch", "1", "--q-len", "8",
           "--embed", "16", "--heads", "2", "--no-timing"]


@pytest.mark.parametrize("variable, value, where", [
    ("XATTN_CACHE_DIR", "/etc/hostname", "expected a writable directory at /etc/hostname; got a file"),
    ("XDG_CACHE_HOME", "/proc", "expected a writable directory at /proc/xattn"),
])
def test_an_unusable_cache_directory_is_one_warning_line_and_the_run_goes_on(variable, value, where):
    require_backend("jax")
    environment = {**os.environ, variable: value}
    environment.pop("XATTN_NO_CACHE", None)
    if variable == "XDG_CACHE_HOME":
        environment.pop("XATTN_CACHE_DIR", None)
    result = subprocess.run([sys.executable, *COMPARE], capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "compilation cache" in line]
    assert len(warnings) == 1 and warnings[0].startswith("xattn: warning:") and where in warnings[0], result.stderr
    assert "Traceback" not in result.stderr and "verdict: all 1 rows ok" in result.stdout


@pytest.mark.parametrize("value", ["0", "false", "No", " OFF ", ""])
def test_no_cache_set_to_an_off_word_leaves_the_caches_on(tmp_path, value):
    require_backend("jax")
    assert run(tmp_path, XATTN_NO_CACHE=value)["jax"] == str(tmp_path / "cache" / "jax")


def test_no_cache_set_to_an_unknown_word_is_a_usage_error():
    environment = {**os.environ, "XATTN_NO_CACHE": "maybe"}
    result = subprocess.run([sys.executable, *COMPARE], capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "XATTN_NO_CACHE: expected one of 1, true, yes, on (on) or 0, false, no, off or empty (off); got 'maybe'" \
        in result.stderr


@pytest.mark.parametrize("value, expected", [
    *[(word, False) for word in ("0", "false", "FALSE", "no", "off", "Off", "", "  ")],
    *[(word, True) for word in ("1", "true", "True", "yes", "ON", " on ")],
])
def test_one_rule_for_boolean_variables(monkeypatch, value, expected):
    monkeypatch.setenv("XATTN_TEST_FLAG", value)
    assert env_flag("XATTN_TEST_FLAG") is expected
    monkeypatch.delenv("XATTN_TEST_FLAG")
    assert env_flag("XATTN_TEST_FLAG") is False and env_flag("XATTN_TEST_FLAG", default=True) is True


def test_every_environment_read_in_xattn_goes_through_the_rule_or_names_a_path():
    """No module reads a boolean variable by hand: the variables xattn reads are the flag's, paths, or XLA's."""
    import re
    from pathlib import Path

    import xattn

    reads = set()
    for path in Path(xattn.__file__).parent.rglob("*.py"):
        reads |= set(re.findall(r"os\.environ(?:\.get\(|\[)\"([A-Z_]+)\"", path.read_text()))
    assert reads <= {"XATTN_CACHE_DIR", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR", "XLA_FLAGS"}, reads
