"""check_port on whole models: any module kind without frameworks=, parameter trees, tree outputs, and
one side's float64 rerun as the oracle (reference="a"/"b").

The models are small and written here in both frameworks with parallel names, torch's weights
ported into the JAX one weight by weight: a token embedding, one multi-head self-attention with a
residual and a LayerNorm, and a linear head. Nothing is downloaded.
"""

import collections
import dataclasses
import functools
from typing import NamedTuple

import numpy as np
import pytest

import xattn
from xattn.errors import PortCallError

from conftest import require_backend, require_equinox

VOCAB, E, H, CLASSES = 13, 8, 2, 3
IDS = np.random.default_rng(0).integers(0, VOCAB, size=(2, 5))


def torch_encoder(eps=1e-5, seed=0):
    require_backend("torch")
    import torch

    class TorchEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(VOCAB, E)
            self.qkv = torch.nn.Linear(E, 3 * E)
            self.out = torch.nn.Linear(E, E)
            self.norm = torch.nn.LayerNorm(E, eps=eps)
            self.drop = torch.nn.Dropout(0.1)
            self.head = torch.nn.Linear(E, CLASSES)

        def forward(self, ids):
            x = self.embed(ids)
            batch, length, _ = x.shape
            q, k, v = (t.reshape(batch, length, H, E // H).transpose(1, 2) for t in self.qkv(x).chunk(3, -1))
            p = torch.softmax(q @ k.transpose(-1, -2) / (E // H) ** 0.5, -1)
            o = (p @ v).transpose(1, 2).reshape(batch, length, E)
            return self.head(self.norm(x + self.drop(self.out(o))))

    torch.manual_seed(seed)
    return TorchEncoder().eval()


def nnx_encoder(source, eps=1e-5):
    """The same encoder in flax.nnx, every weight copied from ``source`` (torch Linear weights transposed)."""
    require_backend("jax")
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from xattn import _compat

    class NnxEncoder(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Embed(VOCAB, E, rngs=rngs)
            self.qkv = nnx.Linear(E, 3 * E, rngs=rngs)
            self.out = nnx.Linear(E, E, rngs=rngs)
            self.norm = nnx.LayerNorm(E, epsilon=eps, rngs=rngs)
            self.drop = nnx.Dropout(0.1, rngs=rngs)
            self.head = nnx.Linear(E, CLASSES, rngs=rngs)

        def __call__(self, ids):
            x = self.embed(ids)
            batch, length, _ = x.shape
            q, k, v = (t.reshape(batch, length, H, E // H).transpose(0, 2, 1, 3)
                       for t in jnp.split(self.qkv(x), 3, -1))
            p = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / (E // H) ** 0.5, -1)
            o = (p @ v).transpose(0, 2, 1, 3).reshape(batch, length, E)
            return self.head(self.norm(x + self.drop(self.out(o))))

    model = NnxEncoder(nnx.Rngs(0))
    weights = {name: value.detach().numpy() for name, value in source.state_dict().items()}
    _compat.nnx_set_value(model.embed.embedding, jnp.asarray(weights["embed.weight"]))
    for name in ("qkv", "out", "head"):
        _compat.nnx_set_value(getattr(model, name).kernel, jnp.asarray(weights[f"{name}.weight"].T))
        _compat.nnx_set_value(getattr(model, name).bias, jnp.asarray(weights[f"{name}.bias"]))
    _compat.nnx_set_value(model.norm.scale, jnp.asarray(weights["norm.weight"]))
    _compat.nnx_set_value(model.norm.bias, jnp.asarray(weights["norm.bias"]))
    model.eval()
    return model


def torch_dense(seed=0):
    """tanh(x Wᵀ + b) in torch: the other kinds below are ported from it."""
    require_backend("torch")
    import torch

    class TorchDense(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 3)

        def forward(self, x):
            return torch.tanh(self.proj(x))

    torch.manual_seed(seed)
    return TorchDense()


def linen_dense(source):
    require_backend("jax")
    import flax.linen as nn
    import jax.numpy as jnp

    class LinenDense(nn.Module):
        @nn.compact
        def __call__(self, x):
            return jnp.tanh(nn.Dense(3, name="proj")(x))

    params = {"params": {"proj": {"kernel": jnp.asarray(source.proj.weight.detach().numpy().T),
                                  "bias": jnp.asarray(source.proj.bias.detach().numpy())}}}
    return LinenDense().bind(params)


def equinox_dense(source):
    require_backend("jax")
    eqx = require_equinox()
    import jax
    import jax.numpy as jnp

    class EqxDense(eqx.Module):
        proj: eqx.nn.Linear

        def __init__(self):
            self.proj = eqx.nn.Linear(4, 3, key=jax.random.key(0))

        def __call__(self, x):
            return jnp.tanh(jax.vmap(self.proj)(x))

    model = EqxDense()
    model = eqx.tree_at(lambda m: m.proj.weight, model, jnp.asarray(source.proj.weight.detach().numpy()))
    return eqx.tree_at(lambda m: m.proj.bias, model, jnp.asarray(source.proj.bias.detach().numpy()))


def nnx_dense(source):
    require_backend("jax")
    import jax.numpy as jnp
    from flax import nnx

    from xattn import _compat

    class NnxDense(nnx.Module):
        def __init__(self):
            self.proj = nnx.Linear(4, 3, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return jnp.tanh(self.proj(x))

    model = NnxDense()
    _compat.nnx_set_value(model.proj.kernel, jnp.asarray(source.proj.weight.detach().numpy().T))
    _compat.nnx_set_value(model.proj.bias, jnp.asarray(source.proj.bias.detach().numpy()))
    return model


X = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
KIND_NAMES = {"nnx": "NnxDense (flax.nnx.Module)", "linen": "LinenDense (flax.linen.Module)",
              "equinox": "EqxDense (equinox.Module)"}


@pytest.mark.parametrize("kind", ["nnx", "linen", "equinox"])
def test_every_module_kind_is_checked_without_frameworks(kind):
    source = torch_dense()
    port = {"nnx": nnx_dense, "linen": linen_dense, "equinox": equinox_dense}[kind](source)
    report = xattn.check_port(source, port, X, reference="a")
    assert report.ok, report
    assert report.frameworks == ("torch", "jax")
    assert report.kinds == ("TorchDense (torch.nn.Module)", KIND_NAMES[kind])
    header = " ".join(str(report).split())
    assert header.startswith(f"xattn check_port: TorchDense (torch, TorchDense (torch.nn.Module)) vs"
                             f" {type(port).__name__} (jax, {KIND_NAMES[kind]})")


MODEL = None


def test_a_function_that_refers_to_a_users_module_is_recognised():
    global MODEL
    source = torch_dense()
    port = nnx_dense(source)
    MODEL = source

    def through_a_global(x):
        return MODEL(x)

    def through_a_closure(x):
        return port(x) * 1.0

    class Runner:  # a plain object whose attribute is the module
        def __init__(self, model):
            self.model = model

        def __call__(self, x):
            return self.model(x)

    report = xattn.check_port(through_a_global, through_a_closure, X)
    assert report.ok and report.frameworks == ("torch", "jax"), report
    assert xattn.check_port(Runner(source), functools.partial(through_a_closure), X).frameworks == ("torch", "jax")
    assert xattn.check_port(source.forward, port.__call__, X).frameworks == ("torch", "jax")


def test_a_wrong_guess_says_what_was_guessed_and_how_to_say_otherwise():
    require_backend("torch")
    import torch

    def takes_tensors(x):  # refers to nothing of torch, so xattn guesses NumPy
        return x.to(dtype=x.dtype) * 2

    with pytest.raises(PortCallError) as caught:
        xattn.check_port(takes_tensors, lambda x: torch.as_tensor(x) * 2, X)
    text = str(caught.value)
    assert "takes_tensors raised AttributeError" in text and "with numpy arrays" in text
    assert "xattn guessed numpy because it refers to no module, array or function of jax or torch" in text
    assert "frameworks=('torch', 'torch')" in text
    assert isinstance(caught.value.__cause__, AttributeError)
    assert xattn.check_port(takes_tensors, lambda x: torch.as_tensor(x) * 2, X, frameworks=("torch", "torch")).ok


def test_active_dropout_is_named_as_a_likely_cause_of_drift():
    model = torch_encoder().train()
    report = xattn.check_port(model, nnx_encoder(torch_encoder()), IDS)
    note = next(note for note in report.notes if "dropout" in note)
    assert note.startswith("TorchEncoder: TorchEncoder (torch.nn.Module) is in training mode with active dropout")
    assert "drop (Dropout, p=0.1)" in note and ".eval()" in note and note in " ".join(str(report).split())
    assert not any("dropout" in note for note in xattn.check_port(torch_encoder(), nnx_encoder(torch_encoder()),
                                                                  IDS).notes)


def test_parameter_trees_are_bridged_leaf_by_leaf_with_a_gradient_row_per_leaf():
    require_backend("torch")
    require_backend("jax")
    import jax
    import jax.numpy as jnp
    import torch

    seen = {}

    def torch_mlp(params, x):
        seen["torch"] = all(isinstance(w, torch.Tensor) for w in [*params["w"], params["b"], x])
        h = torch.tanh(x @ params["w"][0] + params["b"])
        return {"out": h @ params["w"][1], "hidden": (h,)}

    def jax_mlp(params, x):
        seen["jax"] = all(isinstance(w, jax.Array) for w in [*params["w"], params["b"], x])
        h = jnp.tanh(x @ params["w"][0] + params["b"])
        return {"out": h @ params["w"][1], "hidden": (h,)}

    rng = np.random.default_rng(2)
    params = {"w": [rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal((6, 2)).astype(np.float32)],
              "b": rng.standard_normal(6).astype(np.float32)}
    report = xattn.check_port(torch_mlp, jax_mlp, params, X, grad=True, reference="a")
    assert report.ok, report
    assert seen == {"torch": True, "jax": True}  # each side got its own arrays, leaf by leaf
    quantities = list(dict.fromkeys(side.output for side in report.sides))
    assert quantities == ["out['out']", "out['hidden'][0]", "grad/params['w'][0]", "grad/params['w'][1]",
                          "grad/params['b']", "grad/x"]
    assert all(side.budget.method == "naive" for side in report.sides), report


def test_a_planted_bug_in_one_leaf_of_a_params_tree_is_found_in_its_gradient_row():
    require_backend("torch")
    require_backend("jax")
    import jax.numpy as jnp
    import torch

    def torch_fn(params, x):
        return torch.tanh(x @ params["w"]) * params["gain"]

    def jax_fn(params, x):  # the gain's gradient is wrong: the gain is read through a stop_gradient
        import jax

        return jnp.tanh(x @ params["w"]) * jax.lax.stop_gradient(params["gain"])

    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal((4, 3)).astype(np.float32), "gain": np.float32([1.5, 0.5, 2.0])}
    report = xattn.check_port(torch_fn, jax_fn, params, X, grad=True, reference="a")
    verdicts = {side.output: side.verdict for side in report.sides if side.name == "jax_fn"}
    assert verdicts == {"out": "ok", "grad/params['w']": "ok", "grad/params['gain']": "drift", "grad/x": "ok"}
    pair = next(pair for pair in report.pairs if pair.output == "grad/params['gain']")
    assert pair.attribution == "jax_fn over budget"


@dataclasses.dataclass
class Output:
    logits: object
    hidden: object = None


class ModelOutput(collections.OrderedDict):  # as Hugging Face's: a dict subclass whose None fields are absent
    pass


class Pair(NamedTuple):
    logits: object
    hidden: object


@pytest.mark.parametrize("record", ["dataclass", "ModelOutput", "NamedTuple"])
def test_record_outputs_are_judged_field_by_field_gradients_included(record):
    require_backend("torch")
    require_backend("jax")
    import jax.numpy as jnp
    import torch

    make = {"dataclass": lambda logits, hidden: Output(logits, hidden),
            "ModelOutput": lambda logits, hidden: ModelOutput(logits=logits, hidden=hidden),
            "NamedTuple": Pair}[record]

    def torch_fn(x, w):
        hidden = torch.tanh(x @ w)
        return make(hidden.sum(-1), hidden)

    def jax_fn(x, w, wrong=False):
        hidden = jnp.tanh(x @ w)
        return make(hidden.sum(-1) + (1e-3 if wrong else 0), hidden)

    w = np.random.default_rng(4).standard_normal((4, 3)).astype(np.float32)
    report = xattn.check_port(torch_fn, jax_fn, X, w, grad=True, reference="a")
    assert report.ok, report
    paths = {"dataclass": ["out.logits", "out.hidden"], "ModelOutput": ["out['logits']", "out['hidden']"],
             "NamedTuple": ["out[0]", "out[1]"]}[record]
    assert list(dict.fromkeys(side.output for side in report.sides)) == [*paths, "grad/x", "grad/w"]
    wrong = xattn.check_port(torch_fn, functools.partial(jax_fn, wrong=True), X, w, reference="a",
                             names=("torch_fn", "jax_fn"))
    assert [side.output for side in wrong.sides if side.verdict != "ok"] == [paths[0]]


def test_a_none_field_is_left_out():
    require_backend("torch")
    import torch

    report = xattn.check_port(lambda x: Output(torch.as_tensor(x) * 2), lambda x: Output(np.asarray(x) * 2), X,
                              frameworks=("torch", "numpy"))
    assert [side.output for side in report.sides] == ["out.logits"]


def test_reference_a_passes_a_correct_port_and_blames_a_planted_bug():
    model = torch_encoder()
    right, wrong = nnx_encoder(model), nnx_encoder(model, eps=1e-3)
    report = xattn.check_port(model, right, IDS, reference="a")
    assert report.ok, report
    assert report.basis == "each against TorchEncoder's float64 rerun, within twice TorchEncoder's own error in" \
                           " float32 (the naive run) + 8 ulps"
    assert all(side.budget.method == "naive" for side in report.sides)
    bad = xattn.check_port(model, wrong, IDS, reference="a")
    assert not bad.ok and bad.pairs[0].attribution == "NnxEncoder over budget", bad
    assert [side.verdict for side in bad.sides] == ["ok", "drift"]
    # the JAX side as the oracle blames the torch side when the bug is there
    flipped = xattn.check_port(torch_encoder(eps=1e-3), right, IDS, reference="b")
    assert flipped.pairs[0].attribution == "TorchEncoder over budget", flipped


def test_integer_inputs_take_the_run_dtype_from_the_parameters_and_the_rerun_as_oracle():
    model = torch_encoder()
    report = xattn.check_port(model, nnx_encoder(model), IDS, reference="a")
    assert report.dtype == "float32"
    assert report.dtype_reason == ("float32, the dtype of TorchEncoder's and NnxEncoder's floating parameters;"
                                   " no input is floating")
    assert report.sides[0].budget.method == "naive" and report.sides[0].budget.naive_max_abs_err > 0
    assert "rtol/atol" not in str(report) and "tolerance" not in report.basis
    half = xattn.check_port(torch_encoder().double(), torch_encoder().double(), IDS, frameworks=("torch", "torch"))
    assert half.dtype == "float64" and "floating parameters" in half.dtype_reason


def test_the_callers_module_is_untouched_by_the_float64_rerun():
    model = torch_encoder()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    xattn.check_port(model, nnx_encoder(model), IDS, reference="a")
    after = model.state_dict()
    for name, value in before.items():
        assert after[name].dtype == value.dtype and bool((after[name] == value).all()), name


@pytest.mark.parametrize("x64_before", [False, True])
def test_the_callers_x64_flag_is_unchanged(x64_before):
    model = torch_encoder()
    port = nnx_encoder(model)
    import jax

    from xattn import _compat

    with _compat.jax_x64(x64_before):
        report = xattn.check_port(model, port, IDS, reference="b", grad=False)
        assert jax.config.jax_enable_x64 is x64_before
    assert report.ok, report
    assert jax.config.jax_enable_x64 is False


def test_grad_with_reference_a_uses_the_float64_reruns_gradients():
    source = torch_dense()
    report = xattn.check_port(source, nnx_dense(source), X, reference="a", grad=True)
    grad_row = next(side for side in report.sides if side.output == "grad/x")
    assert report.ok and grad_row.budget.method == "naive", report
    # a's own float32 gradient measured against the float64 rerun's: a real, small rounding error
    assert grad_row.name == "TorchDense" and 0 < grad_row.drift.max_abs_err < 1e-6
    assert grad_row.budget.naive_max_abs_err == grad_row.drift.max_abs_err
    assert not any("tolerance" in note for note in report.notes)


def test_a_plain_function_holding_a_module_cannot_be_rerun_and_says_what_to_pass():
    model = torch_encoder()
    port = nnx_encoder(model)

    def wrapped(ids):
        return model(ids)

    with pytest.raises(ValueError) as caught:
        xattn.check_port(wrapped, port, IDS, reference="a")
    text = str(caught.value)
    assert text.startswith("reference='a': cannot rerun wrapped in float64.")
    assert "holds TorchEncoder (torch.nn.Module) (closure 'model')" in text
    assert "Pass the module itself" in text and "reference= a NumPy float64 function" in text
    with pytest.raises(ValueError, match="expected 'a', 'b' or a NumPy function; got 'c'"):
        xattn.check_port(model, port, IDS, reference="c")


def test_a_fallback_to_the_tolerance_is_in_the_notes_and_the_basis():
    require_backend("torch")
    import torch

    def own_run_in_float16(x):  # a side whose own run comes back narrower than the run dtype, not in float64
        out = torch.tanh(x) * 2
        return out if x.dtype == torch.float64 else out.to(torch.float16)

    def float64_safe(x):
        return torch.tanh(x) * 2

    report = xattn.check_port(own_run_in_float16, float64_safe, X, reference="a")
    assert "torch.testing's tolerance stands in for out (see notes)" in report.basis
    assert any(note.startswith("budget out: own_run_in_float16's own run gave float16") for note in report.notes)
    assert not report.ok  # the narrow side is still drift


def test_an_unbound_linen_module_is_refused_with_the_fix():
    source = torch_dense()
    bound = linen_dense(source)
    unbound, _ = bound.unbind()
    with pytest.raises(ValueError, match=r"check_port b: expected a bound flax.linen.Module.*module.bind\(variables\)"):
        xattn.check_port(source, unbound, X)


@pytest.mark.parametrize("seed", range(6))
def test_correct_ports_pass_with_either_side_as_the_oracle_over_seeds(seed):
    model = torch_encoder(seed=seed)
    port = nnx_encoder(model)
    ids = np.random.default_rng(100 + seed).integers(0, VOCAB, size=(3, 7))
    for side in ("a", "b"):
        report = xattn.check_port(model, port, ids, reference=side)
        assert report.ok, report
    wrong = xattn.check_port(model, nnx_encoder(model, eps=2e-5), ids, reference="a")
    assert not wrong.ok and wrong.pairs[0].attribution == "NnxEncoder over budget", wrong
