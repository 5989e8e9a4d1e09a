"""xattn's multi-head attention layer as a ``flax.nnx.Module``, and the JAX side of :func:`xattn.port_weights`.

:class:`FlaxAttention` holds the contract's weights under the contract's names (shape letters as
in :mod:`xattn.contract.spec`): wq (H,E,D), wk and wv (G,E,D), wo (H,D,E), and with ``bias=True`` bq (H,D),
bk and bv (G,D), bo (E,). Its forward is the JAX backend's ``einsum`` variant, biases added inside
the projections; with ``bias=False`` it is that variant op for op. Its torch twin is
:class:`xattn.layers.torch_layer.TorchAttention`: same options, same parameter names and shapes.

The adapters below read, write and call ``FlaxAttention`` and ``flax.nnx.MultiHeadAttention`` in
the contract's terms; :mod:`xattn.layers.weights` uses them and imports this module only when a Flax
layer is handed to it.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from einops import einsum, rearrange
from flax import nnx

from xattn import _compat
from xattn.backends.registry import get_backend
from xattn.contract.shapes import attention_dims, default_scale
from xattn.layers.vocabulary import (
    BIASES,
    FLAX_ATTENTION,
    NNX_MHA,
    WEIGHTS,
    LayerConfig,
    layer_options,
    own_causal,
    raw_names,
)

_backend = get_backend("jax")


def _project(source, weight, bias, pattern):
    projected = einsum(source, weight, pattern)
    return projected if bias is None else projected + bias


@functools.partial(jax.jit, static_argnames=("causal", "scale"))
def attend(x, kv, wq, wk, wv, wo, bq=None, bk=None, bv=None, bo=None, key_lengths=None, *, causal=False, scale):
    """The layer's math on explicit arrays: x (B,T,E), kv (B,S,E), contract weights, optional biases."""
    G = wk.shape[0]
    Q_BTHD = _project(x, wq, bq, "B T E, H E D -> B T H D")
    K_BSGD = _project(kv, wk, bk, "B S E, G E D -> B S G D")
    V_BSGD = _project(kv, wv, bv, "B S E, G E D -> B S G D")
    Q_BTGRD = rearrange(Q_BTHD, "B T (G R) D -> B T G R D", G=G)
    lengths = None if key_lengths is None else key_lengths.astype(jnp.int32)
    valid_BTS = _backend.mask_BTS(x.shape[1], kv.shape[1], causal, lengths)
    O_BTHD = rearrange(_backend.core_BTGRD(Q_BTGRD, K_BSGD, V_BSGD, valid_BTS, scale), "B T G R D -> B T (G R) D")
    out_BTE = einsum(O_BTHD, wo, "B T H D, H D E -> B T E")
    return out_BTE if bo is None else out_BTE + bo


class FlaxAttention(nnx.Module):
    """Multi-head attention of the contract with its weights as ``nnx.Param`` (a ``flax.nnx.Module``).

    ``embed`` E is the width of queries, keys/values and output; ``heads`` H; ``kv_heads`` G
    (divides H; default H, 1 is multi-query); ``head_dim`` D (default E // H); ``causal`` masks
    future keys (needs T == S); ``scale`` multiplies the logits (default 1/sqrt(D)); ``bias`` adds
    bq, bk, bv, bo. Weights start as N(0, 1/fan_in), biases as zeros (the seed's scales).

    ``__call__(x, kv=None, *, key_lengths=None)``: x (B,T,E), kv (B,S,E) defaulting to x,
    key_lengths (B,) integers in [1, S] (keys at and after a row's length are padding).
    """

    def __init__(self, embed, heads, *, kv_heads=None, head_dim=None, causal=False, scale=None, bias=True,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        E, H, G, D, scale = layer_options(embed, heads, kv_heads, head_dim, scale)
        self.embed, self.heads, self.kv_heads, self.head_dim = E, H, G, D
        self.causal, self.scale, self.use_bias = bool(causal), scale, bool(bias)

        def normal(shape, fan_in):
            return nnx.Param(jax.random.normal(rngs.params(), shape, param_dtype) * (1.0 / math.sqrt(fan_in)))

        self.wq = normal((H, E, D), E)
        self.wk = normal((G, E, D), E)
        self.wv = normal((G, E, D), E)
        self.wo = normal((H, D, E), H * D)
        shapes = {"bq": (H, D), "bk": (G, D), "bv": (G, D), "bo": (E,)}
        for name, shape in shapes.items():
            setattr(self, name, nnx.Param(jnp.zeros(shape, param_dtype)) if bias else None)

    @property
    def effective_scale(self) -> float:
        return default_scale(self.head_dim, self.scale)

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
        from xattn.bridge import to_jax

        return to_jax(array, device=device, copy=True if copy else None)

    def assign(self, layer, placed: dict) -> None:
        for name, array in placed.items():
            _compat.nnx_set_value(_variable(layer, name), array)


class _FlaxAttentionAdapter(_FlaxAdapter):
    kind = FLAX_ATTENTION

    def config(self, layer) -> LayerConfig:
        E = layer.embed
        return LayerConfig(
            kind=self.kind, embed=E, key_embed=E, value_embed=E, out_embed=E, heads=layer.heads,
            kv_heads=layer.kv_heads, head_dim=layer.head_dim, bias=layer.use_bias, scale=layer.effective_scale,
            dtype=_compat.nnx_value(layer.wq).dtype.name,
        )

    def forward(self, layer, x, kv=None, *, causal=None, key_lengths=None):
        own_causal(layer, causal)
        return layer(x, kv, key_lengths=key_lengths)

    def call_with(self, layer, raw, x, kv=None, *, causal=None, key_lengths=None):
        causal = own_causal(layer, causal)
        weights = [raw.get(name) for name in (*WEIGHTS, *BIASES)]
        lengths = None if key_lengths is None else jnp.asarray(key_lengths)
        return attend(x, x if kv is None else kv, *weights, lengths, causal=causal, scale=layer.effective_scale)


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

