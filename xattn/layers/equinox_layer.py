"""The equinox side of :func:`xattn.port_weights`: ``equinox.nn.MultiheadAttention`` in the contract's terms.

equinox's layer differs from the other kinds in three ways this adapter absorbs:

- it is called per example, ``layer(query (T,Eq), key_ (S,Ek), value (S,Ev), mask (T,S))``: the
  adapter maps it over the batch with ``jax.vmap``, keys and values both read from ``kv``;
- its four projections are ``eqx.nn.Linear`` layers, weight (out, in) with heads the major part
  of H·D (torch's unpacked layout), each with its own ``use_*_bias`` flag: the contract has all
  four biases or none, so a mix does not port;
- it is immutable: :meth:`_EquinoxMhaAdapter.assign` returns a new module (``eqx.tree_at``) and
  :func:`xattn.port_weights` hands that back instead of its record.

It scales the queries by 1/sqrt(qk_size) before the product (the others scale the logits after
it; exact where qk_size is a power of 4) and masks with the dtype's lowest value rather than
-inf (the same softmax, since the contract never masks a whole row). Imported only when an
equinox module is handed to :func:`xattn.layers.weights.adapter`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from xattn.backends.registry import get_backend
from xattn.bridge import to_jax
from xattn.contract.shapes import default_scale
from xattn.layers.vocabulary import EQX_MHA, LayerConfig, raw_names

_backend = get_backend("jax")

_BIAS_FLAGS = ("use_query_bias", "use_key_bias", "use_value_bias", "use_output_bias")


def _get(layer, name: str):
    for part in name.split("."):
        layer = getattr(layer, part)
    return layer


@eqx.filter_jit
def _batched(layer, x_BTE, kv_BSE, valid_BTS):
    """``layer`` mapped over the batch: (B,T,E) queries, (B,S,E) keys and values, mask (B,T,S) or None."""
    if valid_BTS is None:
        return jax.vmap(lambda x, kv: layer(x, kv, kv))(x_BTE, kv_BSE)
    return jax.vmap(lambda x, kv, valid: layer(x, kv, kv, mask=valid))(x_BTE, kv_BSE, valid_BTS)


class _EquinoxMhaAdapter:
    framework = "jax"
    kind = EQX_MHA
    #: ``assign`` returns a new module rather than changing the one it was given.
    immutable = True
    _NAMES = {
        "embed": "query_size", "key_embed": "key_size", "value_embed": "value_size", "out_embed": "output_size",
        "heads": "num_heads", "kv_heads": "num_heads (it has no grouped-query option, so kv heads = heads)",
        "head_dim": "qk_size", "bias": "use_{query,key,value,output}_bias",
        "scale": "1/sqrt(qk_size) (fixed, applied to the queries)",
    }

    def config(self, layer) -> LayerConfig:
        unsupported = []
        if layer.vo_size != layer.qk_size:
            unsupported.append(f"vo_size={layer.vo_size} differs from qk_size={layer.qk_size}: the contract has one"
                               " head width D for queries, keys and values; only layers with vo_size == qk_size port")
        flags = {flag: bool(getattr(layer, flag)) for flag in _BIAS_FLAGS}
        if len(set(flags.values())) > 1:
            listed = ", ".join(f"{flag}={value}" for flag, value in flags.items())
            unsupported.append(f"{listed}: the contract has all four biases or none; build the layer with the four"
                               " flags equal")
        dropout = layer.dropout
        if float(dropout.p) > 0 and not dropout.inference:
            unsupported.append(f"dropout_p={dropout.p} with inference=False draws random masks no other layer can"
                               " reproduce, so outputs would differ; pass eqx.nn.inference_mode(layer) instead (or"
                               " build it with dropout_p=0 or inference=True)")
        return LayerConfig(
            kind=self.kind, embed=layer.query_size, key_embed=layer.key_size, value_embed=layer.value_size,
            out_embed=layer.output_size, heads=layer.num_heads, kv_heads=layer.num_heads, head_dim=layer.qk_size,
            bias=all(flags.values()), scale=default_scale(layer.qk_size, None),
            dtype=layer.query_proj.weight.dtype.name, names=self._NAMES, unsupported=tuple(unsupported),
        )

    def raw(self, layer) -> dict:
        return {name: _get(layer, name) for name in raw_names(self.config(layer))}

    def device(self, layer, name):
        return next(iter(_get(layer, name).devices()))

    def place(self, array, *, device, copy):
        return to_jax(array, device=device, copy=True if copy else None)

    def lengths_like(self, key_lengths, x):
        """``key_lengths`` (B,), NumPy, as a JAX array to pass beside ``x``."""
        return to_jax(key_lengths)

    def assign(self, layer, placed: dict):
        """A new module: ``layer`` with the arrays of ``placed`` (its own names) in place of its own."""
        names = tuple(placed)
        return eqx.tree_at(lambda module: tuple(_get(module, name) for name in names), layer,
                           tuple(placed[name] for name in names))

    def forward(self, layer, x, kv=None, *, causal=None, key_lengths=None):
        B, T, _ = x.shape
        kv = x if kv is None else kv
        S = kv.shape[1]
        valid = _backend.mask_BTS(T, S, bool(causal), None if key_lengths is None else jnp.asarray(key_lengths))
        valid_BTS = None if valid is None else jnp.broadcast_to(valid, (B, T, S))  # True: attend
        return _batched(layer, x, kv, valid_BTS)

    def call_with(self, layer, raw, x, kv=None, *, causal=None, key_lengths=None):
        return self.forward(self.assign(layer, raw), x, kv, causal=causal, key_lengths=key_lengths)


#: This framework's adapters by layer class (:func:`xattn.layers.weights.adapter` picks one).
ADAPTERS = {eqx.nn.MultiheadAttention: _EquinoxMhaAdapter()}
