"""The attention contract's sizes and the seeded inputs every comparison starts from.

Shape letters, one per logical axis: B batch, T query length, S key/value length, E model width,
H query heads, G key/value heads (H % G == 0), D head width.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

#: dtype names xattn runs in; bfloat16 comes from ml_dtypes so NumPy can hold its exact bits.
DTYPES = ("float32", "float16", "bfloat16", "float64")
#: The seed notebook's shape (shared/seed): B=32, T=512, E=128, H=16, D=8.
SEED_SHAPE = {"batch": 32, "q_len": 512, "embed": 128, "heads": 16, "head_dim": 8}


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype for one of :data:`DTYPES` (bfloat16 through ml_dtypes)."""
    if name not in DTYPES:
        raise ValueError(f"dtype: expected one of {', '.join(DTYPES)}; got {name!r}")
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    """Sizes, mask and dtype of one attention problem. Validated on construction.

    ``kv_len``/``kv_heads``/``head_dim`` default to ``q_len``/``heads``/``embed // heads``.
    ``key_lengths`` holds one valid-key count per batch row (key padding); ``None`` means no padding.
    """

    batch: int = 2
    q_len: int = 64
    kv_len: int | None = None
    embed: int = 64
    heads: int = 4
    kv_heads: int | None = None
    head_dim: int | None = None
    causal: bool = False
    key_lengths: tuple[int, ...] | None = None
    scale: float | None = None
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self):
        set_ = object.__setattr__
        if self.kv_len is None:
            set_(self, "kv_len", self.q_len)
        if self.kv_heads is None:
            set_(self, "kv_heads", self.heads)
        for name in ("batch", "q_len", "kv_len", "embed", "heads", "kv_heads"):
            _check_positive_int(name, getattr(self, name))
        if self.head_dim is None:
            if self.embed % self.heads:
                raise ValueError(
                    f"head_dim: expected embed divisible by heads to derive it; got embed={self.embed},"
                    f" heads={self.heads}. Pass head_dim explicitly."
                )
            set_(self, "head_dim", self.embed // self.heads)
        _check_positive_int("head_dim", self.head_dim)
        if self.heads % self.kv_heads:
            raise ValueError(
                f"kv_heads: expected a divisor of heads={self.heads}; got kv_heads={self.kv_heads}"
            )
        if self.causal and self.q_len != self.kv_len:
            raise ValueError(
                f"causal: expected q_len == kv_len; got q_len={self.q_len}, kv_len={self.kv_len}."
                " Drop causal or make the lengths equal."
            )
        if self.key_lengths is not None:
            lengths = tuple(int(n) for n in self.key_lengths)
            set_(self, "key_lengths", lengths)
            check_key_lengths(lengths, self.batch, self.kv_len)
        if self.scale is not None:
            set_(self, "scale", check_scale(self.scale))
        numpy_dtype(self.dtype)
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed: expected a non-negative integer; got {self.seed!r}")

    @property
    def is_cross(self) -> bool:
        return self.kv_len != self.q_len

    def replace(self, **changes) -> "AttentionSpec":
        return dataclasses.replace(self, **changes)


def check_scale(scale) -> float:
    """``scale`` as a float, or a ValueError: the one check of the logit scale (spec, CLI and API alike)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise TypeError(f"scale: expected a positive finite number or None; got {type(scale).__name__} {scale!r}")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale: expected a positive finite number; got {scale!r}."
                         " Omit it for the default, 1/sqrt(D).")
    return float(scale)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer; got {value!r}")


def check_key_lengths(lengths, batch: int, kv_len: int) -> None:
    """Raise ValueError unless ``lengths`` holds ``batch`` integers in [1, kv_len]."""
    lengths = list(np.asarray(lengths).reshape(-1).tolist())
    if len(lengths) != batch:
        raise ValueError(
            f"key_lengths: expected one length per batch row ({batch}); got {len(lengths)}: {lengths}"
        )
    bad = [n for n in lengths if not 1 <= n <= kv_len]
    if bad:
        raise ValueError(
            f"key_lengths: expected every length in [1, kv_len={kv_len}] so no query row is fully"
            f" masked; got {bad}"
        )


class AttentionInputs(NamedTuple):
    """Inputs of one problem as NumPy arrays in the run dtype: X_BTE, Y_BSE, WQ_HED, WK_GED, WV_GED, WO_HDE."""

    x: np.ndarray
    kv: np.ndarray
    wq: np.ndarray
    wk: np.ndarray
    wv: np.ndarray
    wo: np.ndarray
    key_lengths: np.ndarray | None

    def weights(self) -> tuple[np.ndarray, ...]:
        return self.wq, self.wk, self.wv, self.wo


def make_inputs(spec: AttentionSpec) -> AttentionInputs:
    """Seeded inputs for ``spec``: float64 masters drawn once, then cast to the run dtype.

    The scales keep logits O(1) so no dtype saturates: x ~ N(0, 1), projections ~ N(0, 1/fan_in).
    The same spec gives identical bits on every run and machine (NumPy's PCG64).
    """
    rng = np.random.default_rng(spec.seed)
    B, T, S, E = spec.batch, spec.q_len, spec.kv_len, spec.embed
    H, G, D = spec.heads, spec.kv_heads, spec.head_dim
    x = rng.standard_normal((B, T, E))
    kv = rng.standard_normal((B, S, E)) if spec.is_cross else x
    wq = rng.standard_normal((H, E, D)) / np.sqrt(E)
    wk = rng.standard_normal((G, E, D)) / np.sqrt(E)
    wv = rng.standard_normal((G, E, D)) / np.sqrt(E)
    wo = rng.standard_normal((H, D, E)) / np.sqrt(H * D)
    dtype = numpy_dtype(spec.dtype)
    x_run = x.astype(dtype)
    kv_run = kv.astype(dtype) if spec.is_cross else x_run
    lengths = None if spec.key_lengths is None else np.asarray(spec.key_lengths, dtype=np.int32)
    return AttentionInputs(
        x_run, kv_run, wq.astype(dtype), wk.astype(dtype), wv.astype(dtype), wo.astype(dtype), lengths
    )
