"""Copy a multi-head attention layer's weights between JAX and PyTorch: :func:`port_weights`.

Any of the five layer kinds of :mod:`xattn.layers.vocabulary` ports into any other. Every kind is
read into the contract's layout and written from it (:func:`~xattn.layers.vocabulary.to_contract`,
:func:`~xattn.layers.vocabulary.from_contract`): a torch source stays views until the last step,
so a destination parameter shares the source's buffer (through :mod:`xattn.bridge`) wherever its
layout allows, and gets an exact copy otherwise (a packed ``in_proj_weight`` is one buffer built
from three). Rearranging and concatenating never changes a bit.

This module imports no framework: a layer's kind is told from ``sys.modules``, and the
per-framework adapters live in :mod:`xattn.layers.flax_layer`, :mod:`xattn.layers.torch_layer` and
:mod:`xattn.layers.equinox_layer`, imported only when a layer of that framework is handed over.
"""

from __future__ import annotations

import dataclasses
import sys

from xattn.bridge import buffer_pointer, framework_of, to_jax, to_torch
from xattn.errors import BridgeError
from xattn.layers.vocabulary import (
    BIASES,
    COPY,
    ZERO_COPY,
    ZEROS,
    LayerConfig,
    check_compatible,
    from_contract,
    not_a_layer,
    parameter_shapes,
    raw_names,
    to_contract,
)


def adapter(layer):
    """The per-framework adapter for ``layer``; TypeError naming the five kinds otherwise."""
    found = next((candidate for cls, candidate in _adapters(layer).items() if isinstance(layer, cls)), None)
    if found is None:
        raise not_a_layer(layer)
    return found


def _adapters(layer) -> dict:
    """The adapters of ``layer``'s framework by layer class, importing that framework's module only now."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(layer, torch.nn.Module):
        from xattn.layers import torch_layer

        return torch_layer.ADAPTERS
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(layer, nnx.Module):
        from xattn.layers import flax_layer

        return flax_layer.ADAPTERS
    equinox = sys.modules.get("equinox")
    if equinox is not None and isinstance(layer, equinox.Module):
        from xattn.layers import equinox_layer

        return equinox_layer.ADAPTERS
    return {}


def layer_config(layer) -> LayerConfig:
    """``layer``'s :class:`LayerConfig` (its sizes, bias, scale, dtype and what it does beyond the contract)."""
    return adapter(layer).config(layer)


# --------------------------------------------------------------------------------- port_weights


@dataclasses.dataclass(frozen=True)
class Transfer:
    """One destination parameter: where it came from and how (zero-copy, copy, or zeros)."""

    target: str
    sources: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    how: str


@dataclasses.dataclass(frozen=True)
class PortedWeights:
    """What :func:`port_weights` did, one :class:`Transfer` per destination parameter."""

    source: str
    target: str
    transfers: tuple[Transfer, ...]

    @property
    def zero_copy(self) -> tuple[str, ...]:
        return tuple(t.target for t in self.transfers if t.how == ZERO_COPY)

    def __str__(self) -> str:
        from tabulate import tabulate

        rows = [(t.target, ", ".join(t.sources) or "-", "×".join(map(str, t.shape)), t.dtype, t.how)
                for t in self.transfers]
        table = tabulate(rows, headers=("parameter", "from", "shape", "dtype", "how"))
        return f"{self.source} -> {self.target}\n{table}"


def port_weights(src, dst, *, copy: bool | None = None):
    """Copy ``src``'s attention weights into ``dst`` (in place, but for equinox) so both compute the same outputs.

    ``src`` and ``dst`` are any two of ``xattn.FlaxAttention``, ``xattn.TorchAttention``,
    ``flax.nnx.MultiHeadAttention``, ``torch.nn.MultiheadAttention`` and
    ``equinox.nn.MultiheadAttention``. Returns a :class:`PortedWeights` record (``str()`` is a
    table), except into equinox: its modules are immutable, so ``dst`` is left as it is and the
    ported module is returned instead (``eqx_mha = xattn.port_weights(torch_mha, eqx_mha)``). ``copy`` follows
    :mod:`xattn.bridge`: ``None`` shares the source's buffer wherever the destination's layout
    allows and copies exactly otherwise; ``True`` always copies; ``False`` refuses
    (:class:`~xattn.errors.BridgeError`) any parameter that would need a copy. Shared buffers alias:
    training ``dst`` in place changes ``src``; pass ``copy=True`` when you will.

    A source without biases fills a destination's biases with zeros (the same outputs). Any other
    difference (widths, heads, head width, scale, dtype, biases the destination lacks, kdim/vdim
    or grouped kv heads the destination cannot express, dropout in training mode) raises a
    ValueError listing every mismatch in each layer's own names. Causal masking and key padding
    are arguments of the call, not weights: pass the same ones to both layers.
    """
    if copy is not None and not isinstance(copy, bool):
        raise TypeError(f"port_weights: expected copy=None, False or True; got copy={copy!r}")
    src_adapter, dst_adapter = adapter(src), adapter(dst)
    src_config, dst_config = src_adapter.config(src), dst_adapter.config(dst)
    check_compatible(src_config, dst_config)
    frameworks = {src_adapter.framework, dst_adapter.framework}
    # Rearranging happens in torch whenever a side is torch: its views are free and JAX buffers
    # reach it zero-copy; two JAX layers need no bridge at all.
    workspace = "torch" if "torch" in frameworks else "jax"
    move = to_torch if workspace == "torch" else to_jax
    src_raw = src_adapter.raw(src)
    weights = to_contract({name: move(array) for name, array in src_raw.items()}, src_config)
    src_of = {w: name for name, held in raw_names(src_config).items() for w in held}
    if dst_config.bias and not src_config.bias:
        weights.update(_zero_biases(weights, dst_config, workspace))
    dst_raw = from_contract(weights, dst_config)
    buffers = [(buffer_pointer(a), _nbytes(a)) for a in src_raw.values()]
    placed, transfers = {}, []
    for name, held in raw_names(dst_config).items():
        device = dst_adapter.device(dst, name)
        array = dst_adapter.place(dst_raw[name], device=device, copy=copy)
        shared = any(start <= buffer_pointer(array) < start + size for start, size in buffers)
        sources = tuple(dict.fromkeys(src_of[w] for w in held if w in src_of))
        how = ZERO_COPY if shared else (ZEROS if not sources else COPY)
        if copy is False and how != ZERO_COPY:
            raise BridgeError(
                f"port_weights(copy=False): {dst_config.kind}'s {name} cannot share {src_config.kind}'s"
                f" buffer ({', '.join(sources) or 'no source parameter'}): its layout differs from the source's"
                " (or the buffer is not aligned as XLA needs), so it takes an exact copy. Pass copy=None to copy"
                " what must be copied and share the rest"
            )
        placed[name] = array
        transfers.append(Transfer(name, sources, tuple(array.shape), dst_config.dtype, how))
    ported = dst_adapter.assign(dst, placed)
    if getattr(dst_adapter, "immutable", False):  # equinox: a new module, dst unchanged
        return ported
    return PortedWeights(src_config.kind, dst_config.kind, tuple(transfers))


def _nbytes(array) -> int:
    if framework_of(array) == "torch":
        return array.numel() * array.element_size()
    return int(array.nbytes)


def _zero_biases(weights: dict, config: LayerConfig, workspace: str) -> dict:
    # Of the widths, biases depend on the output width only (bo is (Eo,)), so Eo stands in for E.
    every = parameter_shapes(config.out_embed, config.heads, config.kv_heads, config.head_dim)
    shapes = {name: every[name] for name in BIASES}
    like = weights["wq"]
    if workspace == "torch":
        import torch

        return {name: torch.zeros(shape, dtype=like.dtype, device=like.device) for name, shape in shapes.items()}
    import jax.numpy as jnp

    return {name: jnp.zeros(shape, like.dtype) for name, shape in shapes.items()}
