"""xattn's multi-head attention layer as a ``torch.nn.Module``, and the torch side of :func:`xattn.port_weights`.

:class:`TorchAttention` is :class:`xattn.layers.vocabulary.XattnLayer` in torch: the contract's
weights as parameters under the contract's names, its forward the torch backend's ``einsum``
variant with biases (:func:`xattn.backends.torch_attention.einsum_attention`). Its JAX twin is
:class:`xattn.layers.flax_layer.FlaxAttention`: same options, same parameter names and shapes.

The adapters below read, write and call ``TorchAttention`` and ``torch.nn.MultiheadAttention`` in
the contract's terms; :func:`xattn.layers.weights.adapter` imports this module only when a torch
layer is handed to it.
"""

from __future__ import annotations

import torch
from torch import nn

from xattn.backends.registry import get_backend
from xattn.bridge import to_torch
from xattn.bridge.rules import torch_dtype_name
from xattn.contract.shapes import attention_dims, default_scale
from xattn.layers.vocabulary import (
    BIASES,
    TORCH_ATTENTION,
    TORCH_MHA,
    WEIGHTS,
    LayerConfig,
    XattnLayer,
    XattnLayerAdapter,
    raw_names,
)

_backend = get_backend("torch")


def attend(x, kv, wq, wk, wv, wo, bq=None, bk=None, bv=None, bo=None, key_lengths=None, *, causal=False, scale):
    """The layer's math on explicit tensors: x (B,T,E), kv (B,S,E), contract weights, optional biases."""
    lengths = None if key_lengths is None else _backend.as_lengths(key_lengths)
    return _backend.einsum_attention(x, kv, wq, wk, wv, wo, lengths, causal=causal, scale=scale,
                                     bq=bq, bk=bk, bv=bv, bo=bo)


class TorchAttention(XattnLayer, nn.Module):
    """Multi-head attention of the contract with its weights as parameters (a ``torch.nn.Module``).

    Options as in :class:`~xattn.layers.vocabulary.XattnLayer`; ``device`` and ``dtype`` are the
    parameters' (torch's factory arguments).

    ``forward(x, kv=None, *, key_lengths=None)``: x (B,T,E), kv (B,S,E) defaulting to x,
    key_lengths (B,) integers in [1, S] (keys at and after a row's length are padding).
    """

    def __init__(self, embed, heads, *, kv_heads=None, head_dim=None, causal=False, scale=None, bias=True,
                 device=None, dtype=None):
        super().__init__()
        self._set_options(embed, heads, kv_heads, head_dim, causal, scale, bias)
        factory = {"device": device, "dtype": dtype}
        for name, shape in self.parameter_shapes().items():
            held = name in WEIGHTS or self.use_bias
            self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)) if held else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for name in WEIGHTS:
                getattr(self, name).normal_(0.0, self.init_std(name))
            for name in BIASES:
                if getattr(self, name) is not None:
                    getattr(self, name).zero_()

    def forward(self, x, kv=None, *, key_lengths=None):
        kv = x if kv is None else kv
        attention_dims(x, kv, self.wq, self.wk, self.wv, self.wo, causal=self.causal, key_lengths=key_lengths)
        return attend(x, kv, *self.weights(), key_lengths, causal=self.causal, scale=self.effective_scale)

    def weights(self) -> tuple:
        """(wq, wk, wv, wo, bq, bk, bv, bo); the biases are None without ``bias``."""
        return tuple(getattr(self, name) for name in (*WEIGHTS, *BIASES))

    def extra_repr(self) -> str:
        return (f"embed={self.embed}, heads={self.heads}, kv_heads={self.kv_heads}, head_dim={self.head_dim},"
                f" causal={self.causal}, scale={self.scale}, bias={self.use_bias}")


# ------------------------------------------------------------------------------------ adapters


class _TorchAdapter:
    framework = "torch"

    def raw(self, layer) -> dict:
        return {name: layer.get_parameter(name).detach() for name in raw_names(self.config(layer))}

    def device(self, layer, name):
        return layer.get_parameter(name).device

    def place(self, array, *, device, copy):
        # Parameters keep torch's contiguous layout: a strided view would surprise .view() and fused kernels.
        return to_torch(array, device=device, copy=True if copy else None).contiguous()

    def lengths_like(self, key_lengths, x):
        """``key_lengths`` (B,), NumPy, as a tensor on ``x``'s device."""
        return to_torch(key_lengths, device=x.device)

    def assign(self, layer, placed: dict) -> None:
        with torch.no_grad():
            for name, tensor in placed.items():
                layer.get_parameter(name).data = tensor


class _TorchAttentionAdapter(XattnLayerAdapter, _TorchAdapter):
    kind = TORCH_ATTENTION
    attend = staticmethod(attend)

    def param_dtype(self, layer) -> str:
        return torch_dtype_name(layer.wq.dtype)


class _TorchMhaAdapter(_TorchAdapter):
    kind = TORCH_MHA
    _NAMES = {
        "embed": "embed_dim", "key_embed": "kdim", "value_embed": "vdim", "out_embed": "embed_dim",
        "heads": "num_heads", "kv_heads": "num_heads (it has no grouped-query option, so kv heads = heads)",
        "head_dim": "embed_dim // num_heads", "bias": "bias", "scale": "1/sqrt(head_dim) (fixed)",
    }

    def config(self, layer) -> LayerConfig:
        E, H = layer.embed_dim, layer.num_heads
        packed = layer.in_proj_weight is not None
        weight = layer.in_proj_weight if packed else layer.q_proj_weight
        unsupported = []
        if layer.bias_k is not None or layer.bias_v is not None:
            unsupported.append("add_bias_kv=True appends learned key/value rows the contract has no place for;"
                               " only layers built with add_bias_kv=False port")
        if layer.add_zero_attn:
            unsupported.append("add_zero_attn=True appends a zero key/value the contract has no place for;"
                               " only layers built with add_zero_attn=False port")
        if layer.dropout > 0 and layer.training:
            unsupported.append(f"dropout={layer.dropout} in training mode draws random masks no other layer can"
                               " reproduce, so outputs would differ; call .eval() first (or build it with dropout=0)")
        return LayerConfig(
            kind=self.kind, embed=E, key_embed=layer.kdim, value_embed=layer.vdim, out_embed=E, heads=H,
            kv_heads=H, head_dim=layer.head_dim, bias=layer.in_proj_bias is not None,
            scale=default_scale(layer.head_dim, None), dtype=torch_dtype_name(weight.dtype),
            names=self._NAMES, unsupported=tuple(unsupported), packed=packed,
        )

    def forward(self, layer, x, kv=None, *, causal=None, key_lengths=None):
        return self._call(layer, layer, x, kv, causal, key_lengths)

    def call_with(self, layer, raw, x, kv=None, *, causal=None, key_lengths=None):
        def functional(*args, **kwargs):
            return torch.func.functional_call(layer, raw, args, kwargs)

        return self._call(layer, functional, x, kv, causal, key_lengths)

    @staticmethod
    def _call(layer, call, x, kv, causal, key_lengths):
        """``call`` (the layer or a functional stand-in) in the contract's terms: (B,T,E) in and out."""
        B, T, _ = x.shape
        S = T if kv is None else kv.shape[1]
        masks = {}
        if causal:
            masks["attn_mask"] = torch.ones(T, S, dtype=torch.bool, device=x.device).triu(1)  # True: may not attend
        if key_lengths is not None:
            lengths = _backend.as_lengths(key_lengths).to(x.device)
            masks["key_padding_mask"] = torch.arange(S, device=x.device)[None, :] >= lengths[:, None]  # True: padding
        if not layer.batch_first:
            x = x.transpose(0, 1)
            kv = None if kv is None else kv.transpose(0, 1)
        kv = x if kv is None else kv  # one object for self-attention, as torch's fast path wants
        out, _ = call(x, kv, kv, need_weights=False, **masks)
        return out if layer.batch_first else out.transpose(0, 1)


#: This framework's adapters by layer class (:func:`xattn.layers.weights.adapter` picks one).
ADAPTERS = {TorchAttention: _TorchAttentionAdapter(), nn.MultiheadAttention: _TorchMhaAdapter()}

