"""Small models written in two frameworks with parallel names, for the porting tests and scripts.

``encoder``: a two-layer BERT-style transformer encoder (token and position embeddings, post-norm
layers of self-attention and a GELU feed-forward, a classifier on the first token) in torch
(:mod:`models.torch_encoder`) and flax.nnx (:mod:`models.nnx_encoder`), and the weight-by-weight
port between them (:mod:`models.port_encoder`). Each module imports its framework at the top:
import it after ``require_backend``.
"""
