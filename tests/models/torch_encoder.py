"""A two-layer BERT-style encoder in torch: the original of the port in :mod:`models.nnx_encoder`.

Submodule paths (``named_modules``)::

    embeddings.word  embeddings.position  embeddings.norm
    encoder.layer.<k>.attention.{query,key,value,output}  encoder.layer.<k>.attention_norm
    encoder.layer.<k>.intermediate  encoder.layer.<k>.output  encoder.layer.<k>.output_norm
    classifier

Inputs: token ids ``ids_BT`` (int) and a key mask ``mask_BT`` (int, 1 = attend), as a Hugging Face
encoder takes them.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: The sizes of the worked example: vocabulary, positions, width, heads, feed-forward width, layers, classes.
SIZES = dict(vocab=50, positions=16, embed=32, heads=4, hidden=64, layers=2, classes=3)
EPSILON = 1e-5


class Embeddings(nn.Module):
    def __init__(self, vocab: int, positions: int, embed: int):
        super().__init__()
        self.word = nn.Embedding(vocab, embed)
        self.position = nn.Embedding(positions, embed)
        self.norm = nn.LayerNorm(embed, eps=EPSILON)

    def forward(self, ids_BT):
        positions_T = torch.arange(ids_BT.shape[1], device=ids_BT.device)
        return self.norm(self.word(ids_BT) + self.position(positions_T)[None])


class SelfAttention(nn.Module):
    def __init__(self, embed: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.output = (nn.Linear(embed, embed) for _ in range(4))

    def forward(self, x_BTE, mask_BT):
        B, T, E = x_BTE.shape
        H = self.heads
        D = E // H

        def split(y_BTE):
            return y_BTE.view(B, T, H, D).transpose(1, 2)  # BHTD

        q_BHTD, k_BHSD, v_BHSD = split(self.query(x_BTE)), split(self.key(x_BTE)), split(self.value(x_BTE))
        logits_BHTS = q_BHTD @ k_BHSD.transpose(-1, -2) / math.sqrt(D)
        logits_BHTS = logits_BHTS.masked_fill(mask_BT[:, None, None, :] == 0, float("-inf"))
        o_BHTD = torch.softmax(logits_BHTS, dim=-1) @ v_BHSD
        return self.output(o_BHTD.transpose(1, 2).reshape(B, T, E))


class Layer(nn.Module):
    def __init__(self, embed: int, heads: int, hidden: int):
        super().__init__()
        self.attention = SelfAttention(embed, heads)
        self.attention_norm = nn.LayerNorm(embed, eps=EPSILON)
        self.intermediate = nn.Linear(embed, hidden)
        self.output = nn.Linear(hidden, embed)
        self.output_norm = nn.LayerNorm(embed, eps=EPSILON)

    def forward(self, x_BTE, mask_BT):
        x_BTE = self.attention_norm(x_BTE + self.attention(x_BTE, mask_BT))
        return self.output_norm(x_BTE + self.output(F.gelu(self.intermediate(x_BTE))))


class Encoder(nn.Module):
    def __init__(self, embed: int, heads: int, hidden: int, layers: int):
        super().__init__()
        self.layer = nn.ModuleList(Layer(embed, heads, hidden) for _ in range(layers))

    def forward(self, x_BTE, mask_BT):
        for layer in self.layer:
            x_BTE = layer(x_BTE, mask_BT)
        return x_BTE


class TinyEncoder(nn.Module):
    """Embeddings, ``layers`` encoder layers, and a classifier on the first token: logits ``BC``."""

    def __init__(self, vocab: int, positions: int, embed: int, heads: int, hidden: int, layers: int, classes: int):
        super().__init__()
        self.embeddings = Embeddings(vocab, positions, embed)
        self.encoder = Encoder(embed, heads, hidden, layers)
        self.classifier = nn.Linear(embed, classes)

    def forward(self, ids_BT, mask_BT):
        return self.classifier(self.encoder(self.embeddings(ids_BT), mask_BT)[:, 0])


def make_model(seed: int = 0, **sizes) -> TinyEncoder:
    """A :class:`TinyEncoder` of :data:`SIZES` (overridden by ``sizes``) with seeded weights, in eval mode.

    Biases and norm weights are drawn too (torch starts them at 0 and 1), so that a port that drops
    or swaps one shows.
    """
    torch.manual_seed(seed)
    model = TinyEncoder(**{**SIZES, **sizes})
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                parameter.copy_(0.1 * torch.randn_like(parameter) + (1.0 if name.endswith("norm.weight") else 0.0))
    return model.eval()
