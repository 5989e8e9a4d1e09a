"""xattn.porting.modules: module kinds told by type, what plain functions refer to, float64 reruns, dropout."""

import functools

import numpy as np
import pytest

from xattn.porting import modules
from xattn.porting.modules import float64_version, framework_of_module, kind_of

from conftest import require_backend, require_equinox

W = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
X = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)


def torch_net():
    require_backend("torch")
    import torch

    class TorchNet(torch.nn.Module):  # a user's own subclass, defined outside torch
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 3)
            self.drop = torch.nn.Dropout(0.25)

        def forward(self, x):
            return torch.tanh(self.drop(self.proj(x)))

    torch.manual_seed(0)
    return TorchNet().eval()


def nnx_net(dropout=False):
    require_backend("jax")
    import jax.numpy as jnp
    from flax import nnx

    class NnxNet(nnx.Module):
        def __init__(self, rngs):
            self.proj = nnx.Linear(4, 3, rngs=rngs)
            self.drop = nnx.Dropout(0.25, rngs=rngs)

        def __call__(self, x):
            return jnp.tanh(self.drop(self.proj(x)))

    net = NnxNet(nnx.Rngs(0))
    if not dropout:
        net.eval()
    return net


def linen_net():
    require_backend("jax")
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    class LinenNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            return jnp.tanh(nn.Dense(3)(x))

    module = LinenNet()
    return module, module.init(jax.random.key(0), jnp.ones((1, 4)))


def equinox_net():
    require_backend("jax")
    eqx = require_equinox()
    import jax
    import jax.numpy as jnp

    class EqxNet(eqx.Module):
        proj: eqx.nn.Linear

        def __init__(self, key):
            self.proj = eqx.nn.Linear(4, 3, key=key)

        def __call__(self, x):
            return jnp.tanh(jax.vmap(self.proj)(x))

    return EqxNet(jax.random.key(0))


def test_every_kind_is_recognised_by_type():
    module, variables = linen_net()
    found = {kind_of(torch_net()), kind_of(nnx_net()), kind_of(module.bind(variables)), kind_of(equinox_net())}
    assert found == {"torch", "nnx", "linen", "equinox"}
    assert framework_of_module(torch_net()) == "torch"
    assert {framework_of_module(m) for m in (nnx_net(), module.bind(variables), equinox_net())} == {"jax"}
    assert kind_of(lambda x: x) is None and kind_of(np.ones(3)) is None and framework_of_module(3) is None
    assert kind_of(type(torch_net())) is None  # the class is not a module instance


def test_an_unbound_linen_module_is_refused_with_the_fix():
    module, variables = linen_net()
    assert modules.is_bound(module.bind(variables)) and not modules.is_bound(module)
    with pytest.raises(ValueError, match=r"module.bind\(variables\)"):
        modules.check_callable(module)


MODEL = None


def test_references_look_through_closures_globals_partials_and_objects():
    global MODEL
    net = torch_net()

    def closure(x):
        return net(x)

    MODEL = net

    def via_global(x):
        return MODEL(x)

    class Holder:  # a plain object holding the module
        def __init__(self):
            self.inner = net

    holder = Holder()

    def via_object(x):
        return holder.inner(x)

    def helper(x):
        return closure(x)

    def via_helper(x):
        return helper(x)

    for fn in (closure, via_global, via_object, via_helper, functools.partial(closure), net.forward):
        held = modules.held_modules(fn)
        assert held and held[0][1] is net, fn


def numpy_of(value):
    return np.asarray(value.detach().numpy() if hasattr(value, "detach") else value)


def make_net(kind):
    if kind == "torch":
        return torch_net()
    if kind == "linen":
        module, variables = linen_net()
        return module.bind(variables)
    return {"nnx": nnx_net, "equinox": equinox_net}[kind]()


def framework_input(kind, array):
    if kind == "torch":
        import torch

        return torch.from_numpy(array)
    import jax.numpy as jnp

    return jnp.asarray(array)


@pytest.mark.parametrize("kind", ["torch", "nnx", "linen", "equinox"])
def test_float64_version_runs_in_float64_and_leaves_the_caller_alone(kind):
    net = make_net(kind)
    x = framework_input(kind, X)
    expected32 = numpy_of(net(x))
    run = float64_version(net)
    out = numpy_of(run(x))
    assert out.dtype == np.float64 and expected32.dtype == np.float32
    assert np.allclose(out, expected32, atol=1e-5) and not np.array_equal(out, expected32.astype(np.float64))
    assert modules.parameter_dtypes(run.module) == ("float64",)
    assert modules.parameter_dtypes(net) == ("float32",)  # the caller's module keeps its dtype
    assert numpy_of(net(x)).dtype == np.float32
    if kind != "torch":
        import jax

        assert jax.config.jax_enable_x64 is False  # the caller's flag is back


@pytest.mark.parametrize("x64_before", [False, True])
def test_the_callers_x64_flag_is_restored_whatever_it_was(x64_before):
    net = nnx_net()
    import jax
    import jax.numpy as jnp

    from xattn import _compat

    with _compat.jax_x64(x64_before):
        run = float64_version(net)
        assert jax.config.jax_enable_x64 is x64_before
        assert np.asarray(run(jnp.asarray(X))).dtype == np.float64
        assert jax.config.jax_enable_x64 is x64_before


def test_bound_methods_and_partials_rerun_too():
    module, variables = linen_net()
    import jax.numpy as jnp

    run = float64_version(functools.partial(module.apply, variables))
    assert np.asarray(run(jnp.asarray(X))).dtype == np.float64
    net = torch_net()
    import torch

    assert float64_version(net.forward)(torch.from_numpy(X)).dtype == torch.float64


def test_a_function_holding_parameters_gets_a_clear_error_but_a_parameter_free_one_runs():
    net = torch_net()
    import torch

    def holds_a_module(x):
        return net(x)

    with pytest.raises(ValueError, match=r"holds TorchNet \(torch.nn.Module\).*closure 'net'.*Pass the module itself"):
        float64_version(holds_a_module)

    def takes_its_parameters(params, x):
        return torch.tanh(x @ params["w"])

    run = float64_version(takes_its_parameters)
    out = run({"w": torch.from_numpy(W)}, torch.from_numpy(X))
    assert out.dtype == torch.float64
    assert np.allclose(out.numpy(), np.tanh(X.astype(np.float64) @ W.astype(np.float64)), rtol=0, atol=1e-15)


def test_parameter_dtypes_of_each_kind():
    module, variables = linen_net()
    assert modules.parameter_dtypes(torch_net().half()) == ("float16",)
    assert modules.parameter_dtypes(nnx_net()) == ("float32",)
    assert modules.parameter_dtypes(module.bind(variables)) == ("float32",)
    assert modules.parameter_dtypes(equinox_net()) == ("float32",)
    assert modules.parameter_dtypes(lambda x: x) == ()


def test_active_dropout_is_found_and_an_evaluated_module_is_quiet():
    net = torch_net()
    assert modules.dropout_findings(net) == []
    findings = modules.dropout_findings(net.train())
    assert len(findings) == 1 and "training mode" in findings[0] and "p=0.25" in findings[0]
    assert "drop" in findings[0] and ".eval()" in findings[0]
    assert modules.dropout_findings(nnx_net()) == []
    findings = modules.dropout_findings(nnx_net(dropout=True))
    assert len(findings) == 1 and "rate=0.25" in findings[0] and "deterministic=False" in findings[0]
    import jax

    module, variables = linen_net()
    assert modules.dropout_findings(module.bind(variables)) == []
    with_rngs = module.bind(variables, rngs={"dropout": jax.random.key(1)})
    assert "rngs ['dropout']" in modules.dropout_findings(with_rngs)[0]
    eqx = require_equinox()

    assert modules.dropout_findings(equinox_net()) == []
    assert "Dropout(p=0.5" in modules.dropout_findings(eqx.nn.Sequential([eqx.nn.Dropout(0.5)]))[0]
    assert modules.dropout_findings(eqx.nn.inference_mode(eqx.nn.Sequential([eqx.nn.Dropout(0.5)]))) == []


def test_a_fixed_compute_dtype_is_lifted_to_float64_in_the_rerun():
    require_backend("jax")
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import nnx

    fixed = nnx.Linear(4, 3, dtype=jnp.float32, rngs=nnx.Rngs(0))
    assert numpy_of(float64_version(fixed)(jnp.asarray(X))).dtype == np.float64
    assert fixed.dtype == jnp.float32  # the caller's module keeps its own

    class Block(nn.Module):  # the Hugging Face Flax pattern: submodules take dtype=self.dtype
        dtype: object = jnp.float32

        @nn.compact
        def __call__(self, x):
            return nn.Dense(3, dtype=self.dtype)(x)

    block = Block()
    bound = block.bind(block.init(jax.random.key(0), jnp.ones((1, 4))))
    assert numpy_of(float64_version(bound)(jnp.asarray(X))).dtype == np.float64
    assert numpy_of(bound(jnp.asarray(X))).dtype == np.float32
