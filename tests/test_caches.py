"""The CLI's persistent compilation caches: where they go, and that they can be turned off."""

import json
import os
import subprocess
import sys
import textwrap

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
