"""The parts of ``xattn.locate``: capturing submodule outputs, pairing two models' calls, jiggled reruns."""

import numpy as np
import pytest

from xattn.porting.capture import Call, capture, jiggled
from xattn.porting.pairing import normalised, pair_calls, pair_outputs

from conftest import require_backend


def call(path, shape=(2, 3), order=0, count=0, sep=".", leaves=("",)):
    parts = tuple(path.split(sep)) if path else ()
    return Call(path, parts, count, order, "M", tuple((leaf, np.zeros(shape, np.float32)) for leaf in leaves))


# ----------------------------------------------------------------------------------------- pairing


@pytest.mark.parametrize("path", ["encoder.layer.1.attention", "encoder/layer/1/attention",
                                  "encoder.layer[1].attention", "Encoder/layer_1/Attention", ("encoder", "layer", 1,
                                                                                               "attention")])
def test_every_spelling_of_a_path_normalises_alike(path):
    assert normalised(path) == ("encoder", "layer", "1", "attention")


def test_pairs_by_name_then_plural_then_order_and_shape():
    a = [call("embed", order=0), call("layers.0", order=1), call("layers.1", order=2), call("head", (2, 5), 3),
         call("extra", (7,), 4), call("", order=5)]
    b = [call("embed", order=0, sep="/"), call("layer/0", order=1, sep="/"), call("layer/1", order=2, sep="/"),
         call("classifier", (2, 5), 3, sep="/"), call("pool", (9,), 4, sep="/"), call("", order=5)]
    pairing = pair_calls(a, b)
    assert [(x.path, y.path, how) for x, y, how in pairing.pairs] == [
        ("embed", "embed", "name"), ("layers.0", "layer/0", "plural"), ("layers.1", "layer/1", "plural"),
        ("head", "classifier", "order"), ("", "", "name")]
    assert [c.path for c in pairing.unmatched_a] == ["extra"] and [c.path for c in pairing.unmatched_b] == ["pool"]


def test_order_and_shape_pairing_stays_between_the_pairs_found_by_name():
    # "x" (shape 2x3) sits after "mid" on side a and before it on side b: they must not pair across "mid"
    a = [call("first", order=0), call("mid", (4,), 1), call("x", order=2)]
    b = [call("y", order=0), call("first", order=1), call("mid", (4,), 2)]
    pairing = pair_calls(a, b)
    assert [(x.path, y.path) for x, y, _ in pairing.pairs] == [("first", "first"), ("mid", "mid")]
    assert [c.path for c in pairing.unmatched_a] == ["x"] and [c.path for c in pairing.unmatched_b] == ["y"]


def test_a_module_called_twice_pairs_call_by_call():
    a = [call("norm", order=0), call("norm", order=1, count=1)]
    b = [call("norm", order=0), call("norm", order=1, count=1)]
    assert [(x.call, y.call) for x, y, _ in pair_calls(a, b).pairs] == [(0, 0), (1, 1)]


def test_match_goes_first_and_takes_a_mapping_or_a_function():
    a = [call("q_proj", order=0), call("k_proj", order=1)]
    b = [call("key", order=0), call("query", order=1)]
    for match in ({"q_proj": "query", "k_proj": "key"}, {"q_proj": "query", "k_proj": "key"}.get):
        pairing = pair_calls(a, b, match)
        assert [(x.path, y.path, how) for x, y, how in pairing.pairs] == [("q_proj", "query", "match"),
                                                                         ("k_proj", "key", "match")]
    with pytest.raises(TypeError, match="match: expected a mapping"):
        pair_calls(a, b, ["q_proj"])


def test_output_leaves_pair_by_path_then_in_order_then_by_shape():
    one, two = call("m", leaves=("",)), call("m", leaves=("[0]",))
    assert pair_outputs(one, two) == ([("", "[0]")], [], [])
    a = Call("m", ("m",), 0, 0, "M", (("[0]", np.zeros((2, 3))), ("[1]", np.zeros((4,)))))
    b = Call("m", ("m",), 0, 0, "M", (("", np.zeros((4,))),))
    assert pair_outputs(a, b) == ([("[1]", "")], ["[0]"], [])


# ----------------------------------------------------------------------------------------- jiggling


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
def test_jiggling_moves_elements_by_at_most_one_ulp_and_leaves_zeros_and_non_finite_values(dtype):
    import ml_dtypes  # noqa: F401  (bfloat16 as a NumPy dtype)

    rng = np.random.default_rng(0)
    x = (rng.standard_normal(4000) * 10).astype(dtype)
    x[:4] = [0, np.inf, -np.inf, np.nan]
    y = jiggled(x, np.random.default_rng(1))
    assert y.dtype == x.dtype
    assert np.array_equal(y[:4], x[:4], equal_nan=True)
    wide_x, wide_y = x[4:].astype(np.float64), y[4:].astype(np.float64)
    ulp = np.spacing(np.abs(x[4:])).astype(np.float64)
    assert np.all(np.abs(wide_y - wide_x) <= ulp * 1.0000001 + 1e-300)
    moved = np.mean(wide_y != wide_x)
    assert 0.45 < moved < 0.55  # each element moves with probability 1/2
    assert np.array_equal(jiggled(np.arange(5), rng), np.arange(5))  # integers stay


# ----------------------------------------------------------------------------------------- capture


def test_torch_capture_sees_every_call_in_the_order_they_return_and_copies_at_once():
    require_backend("torch")
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(4)
            self.act = nn.ReLU()

        def forward(self, x):
            h = self.norm(x)
            first = self.act(h).clone()
            h.mul_(0)  # an in-place op after the norm returned: its captured output must not change
            return self.norm(first) + self.act(h)

    block = Block()
    x = torch.randn(2, 4)
    with torch.no_grad():
        _, calls = capture(block, "torch", lambda: block(x))
    assert [c.name for c in calls] == ["norm", "act", "norm#1", "act#1", "(root)"]
    assert [c.order for c in calls] == [0, 1, 2, 3, 4]
    with torch.no_grad():
        expected = block.norm(x).numpy()
    np.testing.assert_array_equal(calls[0].outputs[0][1], expected)
    assert torch.nn.modules.module._global_forward_hooks == {}  # the hook is gone


def test_nnx_capture_restores_every_class_it_wrapped_even_when_the_model_raises():
    require_backend("jax")
    import jax.numpy as jnp
    from flax import nnx

    class Inner(nnx.Module):
        def __call__(self, x):
            raise RuntimeError("boom")

    class Outer(nnx.Module):
        def __init__(self):
            self.inner = Inner()

        def __call__(self, x):
            return self.inner(x)

    before = (Inner.__dict__["__call__"], Outer.__dict__["__call__"])
    model = Outer()
    with pytest.raises(RuntimeError, match="boom"):
        capture(model, "nnx", lambda: model(jnp.ones(3)))
    assert (Inner.__dict__["__call__"], Outer.__dict__["__call__"]) == before


def test_a_subclass_calling_its_base_is_recorded_once():
    require_backend("jax")
    import jax.numpy as jnp
    from flax import nnx

    class Base(nnx.Module):
        def __call__(self, x):
            return x + 1

    class Child(Base):
        def __call__(self, x):
            return super().__call__(x) * 2

    class Holder(nnx.Module):
        def __init__(self):
            self.base, self.child = Base(), Child()

        def __call__(self, x):
            return self.child(self.base(x))

    model = Holder()
    _, calls = capture(model, "nnx", lambda: model(jnp.ones(3)))
    assert [c.name for c in calls] == ["base", "child", "(root)"]
    np.testing.assert_array_equal(calls[1].outputs[0][1], np.full(3, 6.0))


def test_capture_names_outputs_inside_tuples_and_dicts():
    require_backend("torch")
    import torch
    from torch import nn

    class Two(nn.Module):
        def forward(self, x):
            return {"hidden": x * 2, "extra": (x, None)}

    model = Two()
    with torch.no_grad():
        _, calls = capture(model, "torch", lambda: model(torch.ones(2)))
    assert [path for path, _ in calls[0].outputs] == [".hidden", ".extra[0]"]
