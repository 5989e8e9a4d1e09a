"""xattn's multi-head attention layer as a ``flax.nnx.Module``, and the JAX side of :func:`xattn.port_weights`.

:class:`FlaxAttention` is :class:`xattn.layers.vocabulary.XattnLayer` in Flax: the contract's
weights as ``nnx.Param`` under the contract's names, its forward the JAX backend's ``einsum``
variant with biases (:func:`xattn.backends.jax_attention.einsum_attention`). Its torch twin is
:class:`xattn.layers.torch_layer.TorchAttention`: same options, same parameter names and shapes.

The adapters below read, write and call ``FlaxAttention`` and ``flax.nnx.MultiHeadAttention`` in
the contract's terms; :func:`xattn.layers.weights.adapter` imports this module only when a Flax
layer is handed to it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from xattn import _compat
from xattn.backends.registry import get_backend
from xattn.bridge import to_jax
from xattn.contract.shapes import attention_dims, default_scale
from xattn.layers.vocabulary import (
    BIASES,
    FLAX_ATTENTION,
    NNX_MHA,
    WEIGHTS,
    LayerConfig,
    XattnLayer,
    XattnLayerAdapter,
    raw_names,
)

_backend = get_backend("jax")


@functools.partial(jax.jit, static_argnames=("causal", "scale"))
def attend(x, kv, wq, wk, wv, wo, bq=None, bk=None, bv=None, bo=None, key_lengths=None, *, causal=False, scale):
    """The layer's math on explicit arrays, jitted: x (B,T,E), kv (B,S,E), contract weights, optional biases."""
    lengths = None if key_lengths is None else key_lengths.astype(jnp.int32)
    return _backend.einsum_attention(x, kv, wq, wk, wv, wo, lengths, causal=causal, scale=scale,
                                     bq=bq, bk=bk, bv=bv, bo=bo)


class FlaxAttention(XattnLayer, nnx.Module):
    """Multi-head attention of the contract with its weights as ``nnx.Param`` (a ``flax.nnx.Module``).

    Options as in :class:`~xattn.layers.vocabulary.XattnLayer`; ``param_dtype`` is the weights'
    dtype and ``rngs`` draws them.

    ``__call__(x, kv=None, *, key_lengths=None)``: x (B,T,E), kv (B,S,E) defaulting to x,
    key_lengths (B,) integers in [1, S] (keys at and after a row's length are padding).
    """

    def __init__(self, embed, heads, *, kv_heads=None, head_dim=None, causal=False, scale=None, bias=True,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        self._set_options(embed, heads, kv_heads, head_dim, causal, scale, bias)
        for name, shape in self.parameter_shapes().items():
            if name in WEIGHTS:
                param = nnx.Param(jax.random.normal(rngs.params(), shape, param_dtype) * self.init_std(name))
            else:
                param = nnx.Param(jnp.zeros(shape, param_dtype)) if bias else None
            setattr(self, name, param)

    def __call__(self, x, kv=None, *, key_lengths=None):
        kv = x if kv is None else kv
        weights = self.weights()
        concrete_lengths = None if isinstance(key_lengths, _compat.jax_tracer_type()) else key_lengths
        attention_dims(x, kv, *weights[:4], causal=self.causal, key_lengths=concrete_lengths)
        lengths = None if key_lengths is None else jnp.asarray(key_lengths)
        return attend(x, kv, *weights, lengths, causal=self.causal, scale=self.effective_scale)

    def weights(self) -> tuple:
        """(wq, wk, wv, wo, bq, bk, bv, bo) as arrays; the biases are None without ``bias``."""
        variables = (getattr(self, name) for name in (*WEIGHTS, *BIASES))
        return tuple(None if variable is None else _compat.nnx_value(variable) for variable in variables)


# ------------------------------------------------------------------------------------ adapters


def _variable(layer, name: str):
    for part in name.split("."):
        layer = getattr(layer, part)
    return layer


class _FlaxAdapter:
    framework = "jax"

    def raw(self, layer) -> dict:
        return {name: _compat.nnx_value(_variable(layer, name)) for name in raw_names(self.config(layer))}

    def device(self, layer, name):
        return next(iter(_compat.nnx_value(_variable(layer, name)).devices()))

    def place(self, array, *, device, copy):
        return to_jax(array, device=device, copy=True if copy else None)

    def lengths_like(self, key_lengths, x):
        """``key_lengths`` (B,), NumPy, as a JAX array to pass beside ``x``."""
        return to_jax(key_lengths)

    def assign(self, layer, placed: dict) -> None:
        for name, array in placed.items():
            _compat.nnx_set_value(_variable(layer, name), array)


class _FlaxAttentionAdapter(XattnLayerAdapter, _FlaxAdapter):
    kind = FLAX_ATTENTION
    attend = staticmethod(attend)

    def param_dtype(self, layer) -> str:
        return _compat.nnx_value(layer.wq).dtype.name


class _NnxMhaAdapter(_FlaxAdapter):
    kind = NNX_MHA
    _NAMES = {
        "embed": "in_features", "key_embed": "in_kv_features", "value_embed": "in_kv_features",
        "out_embed": "out_features", "heads": "num_heads", "kv_heads": "num_kv_heads",
        "head_dim": "qkv_features // num_heads", "bias": "use_bias", "scale": "1/sqrt(head_dim) (fixed)",
    }

    def config(self, layer) -> LayerConfig:
        unsupported = []
        if not isinstance(layer.in_features, int) or not isinstance(layer.out_features, int):
            unsupported.append(f"in_features={layer.in_features}, out_features={layer.out_features}: only integer"
                               " widths (one feature axis) have a counterpart in the contract")
        if layer.normalize_qk:
            unsupported.append("normalize_qk=True layer-normalizes queries and keys, which the contract does not;"
                               " only layers built with normalize_qk=False port")
        if layer.attention_fn is not nnx.dot_product_attention:
            unsupported.append("a custom attention_fn: xattn cannot know its math; only the default"
                               " nnx.dot_product_attention ports")
        if layer.dropout_rate > 0 and layer.deterministic is not True:
            unsupported.append(f"dropout_rate={layer.dropout_rate} without deterministic=True draws random masks"
                               " no other layer can reproduce, so outputs would differ; call layer.eval() first"
                               " (or build it with deterministic=True or dropout_rate=0)")
        return LayerConfig(
            kind=self.kind, embed=layer.in_features, key_embed=_compat.nnx_mha_kv_features(layer),
            value_embed=_compat.nnx_mha_kv_features(layer), out_embed=layer.out_features, heads=layer.num_heads,
            kv_heads=_compat.nnx_mha_kv_heads(layer), head_dim=layer.head_dim, bias=bool(layer.use_bias),
            scale=default_scale(layer.head_dim, None), dtype=_compat.nnx_value(layer.query.kernel).dtype.name,
            names=self._NAMES, unsupported=tuple(unsupported),
        )

    def forward(self, layer, x, kv=None, *, causal=None, key_lengths=None):
        B, T, _ = x.shape
        S = T if kv is None else kv.shape[1]
        valid_BTS = _backend.mask_BTS(T, S, bool(causal), None if key_lengths is None else jnp.asarray(key_lengths))
        mask_B1TS = None if valid_BTS is None else jnp.broadcast_to(valid_BTS, (B, T, S))[:, None]  # True: attend
        return layer(x, kv, mask=mask_B1TS, decode=False)

    def call_with(self, layer, raw, x, kv=None, *, causal=None, key_lengths=None):
        copy = _compat.nnx_fresh_copy(layer)
        self.assign(copy, raw)
        return self.forward(copy, x, kv, causal=causal, key_lengths=key_lengths)


#: This framework's adapters by layer class (:func:`xattn.layers.weights.adapter` picks one).
ADAPTERS = {FlaxAttention: _FlaxAttentionAdapter(), nnx.MultiHeadAttention: _NnxMhaAdapter()}

