"""A two-layer perceptron ``layers.1(gelu(layers.0(x)))`` in every module kind locate watches.

torch (``layers.0``), flax.linen (``layers_0``, set up as a list), equinox (``layers.0``, applied
to one example and vmapped over the batch inside the model), and flax.nnx under *other* names
(``dense_in``, ``dense_out``), so that only execution order and shapes can pair it. Each builder
imports its framework when called; weights come from the torch model, ported by hand.

And a model whose output is far smaller than the terms it comes from (``head_a(h) - head_b(h)``,
two heads alike to 1e-3), in torch and nnx: the case locate's jiggled reruns are for.
"""

from __future__ import annotations

import numpy as np

from xattn import _compat

#: Input width, hidden width, output width.
WIDTHS = (5, 8, 3)


def torch_mlp(seed: int = 0):
    import torch
    from torch import nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(WIDTHS[0], WIDTHS[1]), nn.Linear(WIDTHS[1], WIDTHS[2])])

        def forward(self, x):
            return self.layers[1](nn.functional.gelu(self.layers[0](x)))

    torch.manual_seed(seed)
    return MLP().eval()


def _weights(torch_model):
    return [(layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy())
            for layer in torch_model.layers]


def linen_mlp(torch_model, *, scale_hidden: float = 1.0):
    """The bound linen port; ``scale_hidden`` != 1 plants a bug between the two layers."""
    import jax
    import jax.numpy as jnp
    from flax import linen

    class MLP(linen.Module):
        def setup(self):
            self.layers = [linen.Dense(WIDTHS[1]), linen.Dense(WIDTHS[2])]

        def __call__(self, x):
            return self.layers[1](scale_hidden * jax.nn.gelu(self.layers[0](x), approximate=False))

    params = {f"layers_{k}": {"kernel": jnp.asarray(w), "bias": jnp.asarray(b)}
              for k, (w, b) in enumerate(_weights(torch_model))}
    return MLP().bind({"params": params})


def equinox_mlp(torch_model):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    class MLP(eqx.Module):
        layers: list

        def __init__(self, weights):
            keys = jax.random.split(jax.random.key(0), 2)
            self.layers = [eqx.nn.Linear(WIDTHS[k], WIDTHS[k + 1], key=keys[k]) for k in range(2)]
            for k, (w, b) in enumerate(weights):
                self.layers[k] = eqx.tree_at(lambda layer: (layer.weight, layer.bias), self.layers[k],
                                             (jnp.asarray(w.T), jnp.asarray(b)))

        def __call__(self, x_BE):
            return jax.vmap(lambda x_E: self.layers[1](jax.nn.gelu(self.layers[0](x_E), approximate=False)))(x_BE)

    return MLP(_weights(torch_model))


def nnx_mlp_renamed(torch_model, *, scale_hidden: float = 1.0):
    """The nnx port with its own names (``dense_in``, ``dense_out``); ``scale_hidden`` != 1 plants a bug."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self):
            rngs = nnx.Rngs(0)
            self.dense_in = nnx.Linear(WIDTHS[0], WIDTHS[1], rngs=rngs)
            self.dense_out = nnx.Linear(WIDTHS[1], WIDTHS[2], rngs=rngs)

        def __call__(self, x):
            return self.dense_out(scale_hidden * jax.nn.gelu(self.dense_in(x), approximate=False))

    model = MLP()
    for layer, (w, b) in zip((model.dense_in, model.dense_out), _weights(torch_model)):
        _compat.nnx_set_value(layer.kernel, jnp.asarray(w))
        _compat.nnx_set_value(layer.bias, jnp.asarray(b))
    return model


def inputs(seed: int = 0, batch: int = 64) -> np.ndarray:
    """``x_BE``: float32 inputs."""
    return np.random.default_rng([seed, 11]).standard_normal((batch, WIDTHS[0])).astype(np.float32)


def torch_cancelling(seed: int = 0):
    """``head_a(h) - head_b(h)``, two heads alike to 1e-3: an output far smaller than the terms it comes from.

    Its rounding error is set by the terms (hundreds of its own ulps) and it has few elements, so
    one naive run is a poor draw of that error: the case the jiggled reruns are for.
    """
    import torch
    from torch import nn

    class Cancelling(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = nn.Linear(WIDTHS[0], 64)
            self.head_a, self.head_b = nn.Linear(64, 2), nn.Linear(64, 2)

        def forward(self, x):
            h = nn.functional.gelu(self.hidden(x))
            return self.head_a(h) - self.head_b(h)

    torch.manual_seed(seed)
    model = Cancelling().eval()
    with torch.no_grad():
        model.hidden.weight.mul_(4)
        model.head_b.weight.copy_(model.head_a.weight * (1 + 1e-3 * torch.randn_like(model.head_a.weight)))
        model.head_b.bias.copy_(model.head_a.bias)
    return model


def nnx_cancelling(torch_model):
    """The nnx port of :func:`torch_cancelling`, same names."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    class Cancelling(nnx.Module):
        def __init__(self):
            rngs = nnx.Rngs(0)
            self.hidden = nnx.Linear(WIDTHS[0], 64, rngs=rngs)
            self.head_a, self.head_b = nnx.Linear(64, 2, rngs=rngs), nnx.Linear(64, 2, rngs=rngs)

        def __call__(self, x):
            h = jax.nn.gelu(self.hidden(x), approximate=False)
            return self.head_a(h) - self.head_b(h)

    model = Cancelling()
    for name in ("hidden", "head_a", "head_b"):
        source, target = getattr(torch_model, name), getattr(model, name)
        _compat.nnx_set_value(target.kernel, jnp.asarray(source.weight.detach().numpy().T))
        _compat.nnx_set_value(target.bias, jnp.asarray(source.bias.detach().numpy()))
    return model
