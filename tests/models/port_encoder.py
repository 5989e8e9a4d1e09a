"""Port :mod:`models.torch_encoder`'s weights into :mod:`models.nnx_encoder`, weight by weight.

The two models name their submodules alike, so each torch submodule's parameters go to the nnx
submodule at the same path, converted by kind: ``Linear`` weight ``(out, in)`` -> kernel ``(in,
out)``; ``Embedding`` weight -> embedding; ``LayerNorm`` weight/bias -> scale/bias.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx
from torch import nn

from models import nnx_encoder, torch_encoder
from xattn import _compat


def _nnx_submodule(model, path: str):
    for part in path.split("."):
        model = model[int(part)] if part.isdigit() else getattr(model, part)
    return model


def _set(variable, value: np.ndarray) -> None:
    if variable.shape != value.shape:
        raise ValueError(f"port: expected shape {variable.shape}; got {value.shape}")
    _compat.nnx_set_value(variable, jnp.asarray(value))


def port_weights(torch_model: nn.Module, nnx_model: nnx.Module) -> nnx.Module:
    """Copy every torch parameter into the nnx model at the same path; returns ``nnx_model``."""
    ported = 0
    for path, module in torch_model.named_modules():
        weights = {name: p.detach().numpy() for name, p in module.named_parameters(recurse=False)}
        if not weights:
            continue
        target = _nnx_submodule(nnx_model, path)
        if isinstance(module, nn.Linear):
            _set(target.kernel, weights["weight"].T)
            _set(target.bias, weights["bias"])
        elif isinstance(module, nn.Embedding):
            _set(target.embedding, weights["weight"])
        elif isinstance(module, nn.LayerNorm):
            _set(target.scale, weights["weight"])
            _set(target.bias, weights["bias"])
        else:
            raise TypeError(f"port: no rule for {path} ({type(module).__name__})")
        ported += len(weights)
    if ported != len(list(torch_model.parameters())):
        raise AssertionError(f"port: expected every parameter ported; ported {ported}")
    return nnx_model


def make_pair(seed: int = 0, bug: tuple[str, int] | None = None, **sizes):
    """``(torch_model, nnx_model)``: a seeded torch encoder and its nnx port (with ``bug`` planted, if any)."""
    torch_model = torch_encoder.make_model(seed, **sizes)
    return torch_model, port_weights(torch_model, nnx_encoder.make_model(bug, **sizes))


def make_inputs(seed: int = 0, batch: int = 2, length: int = 8, vocab: int = torch_encoder.SIZES["vocab"]):
    """``(ids_BT, mask_BT)``: int32 token ids and a key mask whose rows keep 1 to ``length`` keys (NumPy).

    int32, as JAX without x64 takes integers (the bridge refuses to narrow int64 silently).
    """
    rng = np.random.default_rng([seed, 7])
    ids_BT = rng.integers(0, vocab, size=(batch, length), dtype=np.int32)
    lengths_B = rng.integers(1, length + 1, size=batch)
    lengths_B[0] = length
    mask_BT = (np.arange(length)[None, :] < lengths_B[:, None]).astype(np.int32)
    return ids_BT, mask_BT
