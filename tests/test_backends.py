"""The backend interface: every registered framework is described once and meets both protocols."""

import numpy as np

from xattn.backends import frameworks
from xattn.backends.env import environment
from xattn.backends.frameworks import FRAMEWORKS, ROOTS
from xattn.backends.protocol import Backend, Side
from xattn.backends.registry import backend_names
from xattn.contract.spec import AttentionSpec

from conftest import require_backend


def test_the_registry_lists_exactly_the_described_frameworks():
    assert backend_names() == tuple(FRAMEWORKS)
    for name, framework in FRAMEWORKS.items():
        assert framework.name == name and framework.install == f"pip install 'xattn[{framework.extra}]'"
        assert framework.name in framework.roots and all(ROOTS[root] == name for root in framework.roots)


def test_each_backend_module_and_side_meets_its_protocol(backend):
    module = require_backend(backend)
    assert isinstance(module, Backend)
    side = frameworks.side(backend)
    assert isinstance(side, Side) and side.name == backend  # runtime_checkable: every member is there


def test_sides_call_and_differentiate_in_their_own_framework(backend):
    require_backend(backend)
    from xattn.backends import calls

    x = np.linspace(-1.0, 1.0, 6, dtype=np.float32).reshape(2, 3)
    out = calls.call(lambda a: {"sq": a * a, "sum": [a.sum()]}, backend, [x])
    assert [path for path, _ in out] == ["out['sq']", "out['sum'][0]"]
    np.testing.assert_allclose(out[0][1], x * x)
    C = {"out['sq']": np.ones_like(x), "out['sum'][0]": np.float32(2.0)}
    (grad,) = calls.vjp(lambda a: {"sq": a * a, "sum": [a.sum()]}, backend, [x], C, [0])
    np.testing.assert_allclose(grad, 2 * x + 2, rtol=1e-6)


def test_only_torch_names_the_kernel_its_sdpa_picked():
    require_backend("torch")
    import torch

    spec = AttentionSpec(batch=1, q_len=8, embed=16, heads=2)
    x = torch.zeros(1, 8, 16)
    notes = frameworks.side("torch").notes("sdpa", spec, x)
    assert len(notes) <= 1 and all(note.startswith("SDPA kernel: ") for note in notes)
    assert frameworks.side("torch").notes("einsum", spec, x) == ()
    require_backend("jax")
    assert frameworks.side("jax").notes("sdpa", spec, np.zeros((1, 8, 16), np.float32)) == ()


def test_the_environment_block_names_every_described_framework_it_inspects(backend):
    require_backend(backend)
    env = environment((backend,))
    assert isinstance(env["devices"][backend], list) and env["numerics"][backend]
