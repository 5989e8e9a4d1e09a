"""`import xattn` pulls in no framework, and a missing framework names the extra to install."""

import subprocess
import sys
import textwrap

import pytest

import xattn


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_import_and_core_api_load_no_framework():
    result = run_python(
        """
        import sys, xattn
        spec = xattn.AttentionSpec(batch=1, q_len=4, embed=8, heads=2)
        inputs = xattn.make_inputs(spec)
        xattn.reference(inputs.x, *inputs.weights())
        from xattn import cli, api
        from xattn.backends import registry
        from xattn.contract import shapes
        print(",".join(m for m in ("jax", "torch", "flax", "jaxlib") if m in sys.modules))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("backend, extra", [("jax", "jax"), ("torch", "torch")])
def test_missing_framework_names_the_extra(backend, extra):
    # Hide the framework the way a machine without it would: a None entry makes its import fail.
    result = run_python(
        f"""
        import sys
        sys.modules["{backend}"] = None
        import xattn
        try:
            xattn.variants("{backend}")
        except xattn.BackendUnavailableError as error:
            print(error)
        """
    )
    assert result.returncode == 0, result.stderr
    assert f"pip install 'xattn[{extra}]'" in result.stdout


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(ValueError, match="backend: expected one of jax, torch; got 'mxnet'"):
        xattn.variants("mxnet")


def test_unknown_public_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        xattn.nonsense  # noqa: B018 - the attribute access is the test


def test_cli_version_and_help():
    from click.testing import CliRunner

    from xattn.cli import main

    runner = CliRunner()
    assert runner.invoke(main, ["--version"]).output.strip() == f"xattn, version {xattn.__version__}"
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0 and "Compare attention implementations" in result.output


def test_every_required_backend_is_installed():
    # CI sets XATTN_REQUIRE_BACKENDS=jax,torch: this fails outright if either is missing, even if no
    # other test happened to ask for it.
    from conftest import REQUIRED

    for name in sorted(REQUIRED):
        xattn.get_backend(name)
