"""The flax.nnx port of :mod:`models.torch_encoder`, with the same submodule names, and planted bugs.

Paths (``nnx.iter_modules``) match the torch ones with ``/`` for ``.``:
``encoder/layer/1/attention/query`` is torch's ``encoder.layer.1.attention.query``.

``bug=(kind, k)`` plants one porting mistake in layer ``k`` only (:data:`BUGS`), the kind a port by
hand makes: the rest of the model stays a correct port.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from models.torch_encoder import EPSILON, SIZES

#: The bugs :class:`TinyEncoder` can plant in one layer, and what each one does.
BUGS = {
    "scale": "the attention logits are not scaled by 1/sqrt(D)",
    "epsilon": "the layer's norms keep flax's default epsilon 1e-6 instead of torch's 1e-5",
    "gelu": "the feed-forward uses flax's default, tanh-approximated GELU instead of torch's exact one",
}


class Embeddings(nnx.Module):
    def __init__(self, vocab: int, positions: int, embed: int, *, rngs: nnx.Rngs):
        self.word = nnx.Embed(vocab, embed, rngs=rngs)
        self.position = nnx.Embed(positions, embed, rngs=rngs)
        self.norm = nnx.LayerNorm(embed, epsilon=EPSILON, rngs=rngs)

    def __call__(self, ids_BT):
        return self.norm(self.word(ids_BT) + self.position(jnp.arange(ids_BT.shape[1]))[None])


class SelfAttention(nnx.Module):
    def __init__(self, embed: int, heads: int, *, scaled: bool = True, rngs: nnx.Rngs):
        self.heads, self.scaled = heads, scaled
        self.query, self.key, self.value, self.output = (nnx.Linear(embed, embed, rngs=rngs) for _ in range(4))

    def __call__(self, x_BTE, mask_BT):
        B, T, E = x_BTE.shape
        H = self.heads
        D = E // H
        q_BTHD, k_BSHD, v_BSHD = (projection(x_BTE).reshape(B, T, H, D)
                                  for projection in (self.query, self.key, self.value))
        logits_BHTS = jnp.einsum("BTHD,BSHD->BHTS", q_BTHD, k_BSHD)
        if self.scaled:
            logits_BHTS = logits_BHTS / math.sqrt(D)
        logits_BHTS = jnp.where(mask_BT[:, None, None, :] == 0, -jnp.inf, logits_BHTS)
        o_BTHD = jnp.einsum("BHTS,BSHD->BTHD", jax.nn.softmax(logits_BHTS, axis=-1), v_BSHD)
        return self.output(o_BTHD.reshape(B, T, E))


class Layer(nnx.Module):
    def __init__(self, embed: int, heads: int, hidden: int, *, bug: str | None = None, rngs: nnx.Rngs):
        epsilon = 1e-6 if bug == "epsilon" else EPSILON
        self.approximate_gelu = bug == "gelu"
        self.attention = SelfAttention(embed, heads, scaled=bug != "scale", rngs=rngs)
        self.attention_norm = nnx.LayerNorm(embed, epsilon=epsilon, rngs=rngs)
        self.intermediate = nnx.Linear(embed, hidden, rngs=rngs)
        self.output = nnx.Linear(hidden, embed, rngs=rngs)
        self.output_norm = nnx.LayerNorm(embed, epsilon=epsilon, rngs=rngs)

    def __call__(self, x_BTE, mask_BT):
        x_BTE = self.attention_norm(x_BTE + self.attention(x_BTE, mask_BT))
        hidden = jax.nn.gelu(self.intermediate(x_BTE), approximate=self.approximate_gelu)
        return self.output_norm(x_BTE + self.output(hidden))


class Encoder(nnx.Module):
    def __init__(self, embed: int, heads: int, hidden: int, layers: int, *, bug=None, rngs: nnx.Rngs):
        layers_ = [Layer(embed, heads, hidden, bug=bug[0] if bug and bug[1] == k else None, rngs=rngs)
                   for k in range(layers)]
        self.layer = getattr(nnx, "List", list)(layers_)  # flax < 0.11 holds a plain list of modules

    def __call__(self, x_BTE, mask_BT):
        for layer in self.layer:
            x_BTE = layer(x_BTE, mask_BT)
        return x_BTE


class TinyEncoder(nnx.Module):
    """Embeddings, ``layers`` encoder layers, and a classifier on the first token: logits ``BC``."""

    def __init__(self, vocab: int, positions: int, embed: int, heads: int, hidden: int, layers: int, classes: int,
                 *, bug: tuple[str, int] | None = None, rngs: nnx.Rngs):
        if bug is not None and (bug[0] not in BUGS or not 0 <= bug[1] < layers):
            raise ValueError(f"bug: expected (one of {sorted(BUGS)}, a layer below {layers}); got {bug!r}")
        self.embeddings = Embeddings(vocab, positions, embed, rngs=rngs)
        self.encoder = Encoder(embed, heads, hidden, layers, bug=bug, rngs=rngs)
        self.classifier = nnx.Linear(embed, classes, rngs=rngs)

    def __call__(self, ids_BT, mask_BT):
        return self.classifier(self.encoder(self.embeddings(ids_BT), mask_BT)[:, 0])


def make_model(bug: tuple[str, int] | None = None, **sizes) -> TinyEncoder:
    """A :class:`TinyEncoder` of :data:`SIZES` (overridden by ``sizes``); its weights are for the port to set."""
    return TinyEncoder(**{**SIZES, **sizes}, bug=bug, rngs=nnx.Rngs(0))
