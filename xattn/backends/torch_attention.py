"""PyTorch implementations of the attention contract. Imported only through the backend registry.

The twin of :mod:`xattn.backends.jax_attention`: same names, same variants (plus ``compiled``).
Shape letters as in :mod:`xattn.contract.spec`; R = H // G is the number of query heads per kv head, so
query head h = g·R + r reads kv head g (the contract's h // (H/G)). C is a key block's length.
Nothing here runs under ``torch.no_grad``: autograd works through every variant.
"""

from __future__ import annotations

import functools
import types

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from xattn.bridge import to_torch
from xattn.errors import VariantUnsupportedError

#: Key block length of the ``blocked`` variant (online softmax over key blocks).
BLOCK = 128
#: Query tile length of the ``tiled`` variant.
QUERY_TILE = 128

#: The eager variant ``compiled`` hands to torch.compile: the fastest one on this project's 2-core
#: CPU (torch 2.13, B=8 T=512 E=128 H=16 D=8, float32 and bfloat16), compiled or not; compiling it
#: also costs least (inductor keeps SDPA as one fused kernel and fuses only the projections).
COMPILED_BASE = "sdpa"

VARIANTS = {
    "einsum": "per-head einsums (seed attn_eins3)",
    "packed": "one GEMM per projection for all heads (seed attn_eins2)",
    "vmap": "nested torch.func.vmap over heads and batch (seed attn_vmap)",
    "sdpa": "torch.nn.functional.scaled_dot_product_attention (torch's fused attention)",
    "blocked": f"online softmax over key blocks of {BLOCK}; never holds B·H·T·S logits",
    "tiled": f"query tiles of {QUERY_TILE}, each an exact softmax over all keys; never holds B·H·T·S logits",
    "compiled": f"torch.compile(dynamic=False) of the {COMPILED_BASE!r} variant (inductor)",
}

_LOW_PRECISION = (torch.bfloat16, torch.float16)

def as_arrays(*arrays):
    """NumPy, JAX or torch arrays -> tensors through the bridge: zero-copy where possible, same bits.

    Tensors pass through untouched, so autograd keeps working on the caller's leaves.
    """
    return tuple(to_torch(a) for a in arrays)


def as_lengths(key_lengths):
    lengths = key_lengths if isinstance(key_lengths, torch.Tensor) else to_torch(np.asarray(key_lengths))
    return lengths.to(torch.int64)


def mask_BTS(T, S, causal, lengths_B, device):
    """Where query t may attend key s: a boolean mask that broadcasts to (B,T,S); None when nothing is masked.

    ``causal`` keeps keys s <= t, giving (1,T,S); ``lengths_B`` (B,) integers keep keys s < the row's
    length, giving (B,1,S); both give (B,T,S), on ``device``.
    """
    mask = None
    if causal:
        mask = torch.ones(T, S, dtype=torch.bool, device=device).tril()[None]
    if lengths_B is not None:
        padding = (torch.arange(S, device=device)[None, :] < lengths_B.to(device)[:, None])[:, None, :]
        mask = padding if mask is None else mask & padding
    return mask


def _probs_BGRTS(Q_BTGRD, K_BSGD, valid_BTS, scale):
    logits_BGRTS = torch.einsum("BTGRD,BSGD->BGRTS", Q_BTGRD, K_BSGD) * scale
    if valid_BTS is not None:
        logits_BGRTS = logits_BGRTS.masked_fill(~valid_BTS[:, None, None], -torch.inf)
    return torch.softmax(logits_BGRTS, dim=-1)


def core_BTGRD(Q_BTGRD, K_BSGD, V_BSGD, valid_BTS, scale):
    """Softmax attention of projected heads: O (B,T,G,R,D) from Q (B,T,G,R,D), K and V (B,S,G,D).

    Query head (g, r) reads kv head g. Logits are multiplied by ``scale``, and set to -inf where
    ``valid_BTS`` (from :func:`mask_BTS`; None masks nothing) is False, before the softmax over S.
    """
    return torch.einsum("BGRTS,BSGD->BTGRD", _probs_BGRTS(Q_BTGRD, K_BSGD, valid_BTS, scale), V_BSGD)


def einsum_attention(x, kv, wq, wk, wv, wo, lengths, *, causal, scale, bq=None, bk=None, bv=None, bo=None):
    """The ``einsum`` variant, out (B,T,E); with biases (bq (H,D), bk and bv (G,D) added to the
    projections, bo (E,) to the output) it is xattn's layer, :class:`xattn.TorchAttention`."""
    G = wk.shape[0]
    Q_BTHD = _biased(torch.einsum("BTE,HED->BTHD", x, wq), bq)
    K_BSGD = _biased(torch.einsum("BSE,GED->BSGD", kv, wk), bk)
    V_BSGD = _biased(torch.einsum("BSE,GED->BSGD", kv, wv), bv)
    Q_BTGRD = rearrange(Q_BTHD, "B T (G R) D -> B T G R D", G=G)
    valid_BTS = mask_BTS(x.shape[1], kv.shape[1], causal, lengths, x.device)
    O_BTHD = rearrange(core_BTGRD(Q_BTGRD, K_BSGD, V_BSGD, valid_BTS, scale), "B T G R D -> B T (G R) D")
    return _biased(torch.einsum("BTHD,HDE->BTE", O_BTHD, wo), bo)


def _biased(projected, bias):
    return projected if bias is None else projected + bias


def _packed(x, kv, wq, wk, wv, wo, lengths, *, causal, scale):
    G, D = wk.shape[0], wk.shape[2]
    Q_BTGRD = rearrange(x @ rearrange(wq, "H E D -> E (H D)"), "B T (G R D) -> B T G R D", G=G, D=D)
    K_BSGD = rearrange(kv @ rearrange(wk, "G E D -> E (G D)"), "B S (G D) -> B S G D", G=G)
    V_BSGD = rearrange(kv @ rearrange(wv, "G E D -> E (G D)"), "B S (G D) -> B S G D", G=G)
    valid_BTS = mask_BTS(x.shape[1], kv.shape[1], causal, lengths, x.device)
    O_BTGRD = core_BTGRD(Q_BTGRD, K_BSGD, V_BSGD, valid_BTS, scale)
    return rearrange(O_BTGRD, "B T G R D -> B T (G R D)") @ rearrange(wo, "H D E -> (H D) E")


def _vmap(x, kv, wq, wk, wv, wo, lengths, *, causal, scale):
    B, T, S = x.shape[0], x.shape[1], kv.shape[1]
    R = wq.shape[0] // wk.shape[0]
    wk_HED, wv_HED = wk.repeat_interleave(R, dim=0), wv.repeat_interleave(R, dim=0)
    lengths_B = torch.full((B,), S, device=x.device) if lengths is None else lengths.to(x.device)
    key_S = torch.arange(S, device=x.device)
    causal_TS = torch.ones(T, S, dtype=torch.bool, device=x.device).tril()

    def _attn_2d(X_TE, Y_SE, WQ_ED, WK_ED, WV_ED, length):
        logits_TS = (X_TE @ WQ_ED) @ (Y_SE @ WK_ED).mT * scale
        valid_TS = key_S[None, :] < length
        if causal:
            valid_TS = valid_TS & causal_TS
        logits_TS = logits_TS.masked_fill(~valid_TS, -torch.inf)
        return torch.softmax(logits_TS, dim=-1) @ (Y_SE @ WV_ED)

    over_batch = torch.func.vmap(_attn_2d, in_dims=(0, 0, None, None, None, 0))
    over_heads = torch.func.vmap(over_batch, in_dims=(None, None, 0, 0, 0, None))
    O_HBTD = over_heads(x, kv, wq, wk_HED, wv_HED, lengths_B)
    return rearrange(O_HBTD, "H B T D -> B T (H D)") @ rearrange(wo, "H D E -> (H D) E")


def _sdpa(x, kv, wq, wk, wv, wo, lengths, *, causal, scale):
    H, G = wq.shape[0], wk.shape[0]
    Q_BHTD = torch.einsum("BTE,HED->BHTD", x, wq)
    K_BGSD = torch.einsum("BSE,GED->BGSD", kv, wk)
    V_BGSD = torch.einsum("BSE,GED->BGSD", kv, wv)
    # Padding folds causality into one boolean mask: SDPA's math backend refuses is_causal with an
    # attn_mask ("Explicit attn_mask should not be set"), though torch 2.13's CPU flash kernel takes both.
    mask_B1TS = None
    if lengths is not None:
        mask_B1TS = mask_BTS(x.shape[1], kv.shape[1], causal, lengths, x.device)[:, None]
    O_BHTD = F.scaled_dot_product_attention(
        Q_BHTD, K_BGSD, V_BGSD, attn_mask=mask_B1TS, is_causal=causal and mask_B1TS is None, scale=scale,
        enable_gqa=G != H,  # query head h reads kv head h // (H/G), as repeat_interleave would give
    )
    return torch.einsum("BHTD,HDE->BTE", O_BHTD, wo)


def _blocked(x, kv, wq, wk, wv, wo, lengths, *, causal, scale):
    B, T, S = x.shape[0], x.shape[1], kv.shape[1]
    G, D = wk.shape[0], wk.shape[2]
    R = wq.shape[0] // G
    acc_dtype = torch.float32 if x.dtype in _LOW_PRECISION else x.dtype
    Q_BTGRD = rearrange(torch.einsum("BTE,HED->BTHD", x, wq), "B T (G R) D -> B T G R D", G=G)
    K_BSGD = torch.einsum("BSE,GED->BSGD", kv, wk)
    V_BSGD = torch.einsum("BSE,GED->BSGD", kv, wv)
    # Low-precision inputs are rounded once, then every block accumulates in float32 (FlashAttention's choice).
    Q_acc = Q_BTGRD.to(acc_dtype)
    query_T = torch.arange(T, device=x.device)
    lengths_B = None if lengths is None else lengths.to(x.device)
    m_BGRT = torch.full((B, G, R, T), -torch.inf, dtype=acc_dtype, device=x.device)
    l_BGRT = torch.zeros((B, G, R, T), dtype=acc_dtype, device=x.device)
    acc_BGRTD = torch.zeros((B, G, R, T, D), dtype=acc_dtype, device=x.device)
    for start in range(0, S, BLOCK):  # the last block is simply shorter: no padding keys to mask
        K_BCGD = K_BSGD[:, start : start + BLOCK].to(acc_dtype)
        V_BCGD = V_BSGD[:, start : start + BLOCK].to(acc_dtype)
        key_C = torch.arange(start, start + K_BCGD.shape[1], device=x.device)
        logits_BGRTC = torch.einsum("BTGRD,BCGD->BGRTC", Q_acc, K_BCGD) * scale
        valid_BTC = None
        if causal:
            valid_BTC = (key_C[None, :] <= query_T[:, None])[None]
        if lengths_B is not None:
            padding_B1C = (key_C[None, :] < lengths_B[:, None])[:, None, :]
            valid_BTC = padding_B1C if valid_BTC is None else valid_BTC & padding_B1C
        if valid_BTC is not None:
            logits_BGRTC = logits_BGRTC.masked_fill(~valid_BTC[:, None, None], -torch.inf)
        m_new = torch.maximum(m_BGRT, logits_BGRTC.amax(dim=-1))
        m_safe = torch.where(torch.isfinite(m_new), m_new, 0.0)  # a row with no key seen yet stays empty
        P_BGRTC = torch.exp(logits_BGRTC - m_safe[..., None])
        correction = torch.exp(m_BGRT - m_safe)
        l_BGRT = l_BGRT * correction + P_BGRTC.sum(dim=-1)
        update_BGRTD = torch.einsum("BGRTC,BCGD->BGRTD", P_BGRTC, V_BCGD)
        acc_BGRTD = acc_BGRTD * correction[..., None] + update_BGRTD
        m_BGRT = m_new
    O_BGRTD = (acc_BGRTD / l_BGRT[..., None]).to(x.dtype)
    return torch.einsum("BGRTD,GRDE->BTE", O_BGRTD, wo.reshape(G, R, D, -1))


def _tiled(x, kv, wq, wk, wv, wo, lengths, *, causal, scale):
    """The twin of JAX's ``tiled``: exact softmax per query tile, batch axes (B, G) leading."""
    T, S = x.shape[1], kv.shape[1]
    H, G, D = wq.shape[0], wk.shape[0], wk.shape[2]
    R = H // G
    acc_dtype = torch.float32 if x.dtype in _LOW_PRECISION else x.dtype
    Q_BGRTD = torch.einsum("BTE,GRED->BGRTD", x, wq.reshape(G, R, -1, D)).to(acc_dtype)
    K_BGSD = torch.einsum("BSE,GED->BGSD", kv, wk).to(acc_dtype)
    V_BGSD = torch.einsum("BSE,GED->BGSD", kv, wv).to(acc_dtype)
    key_S = torch.arange(S, device=x.device)
    padding_B11S = None if lengths is None else (key_S[None, :] < lengths[:, None])[:, None, None, :]
    tiles = []
    for start in range(0, T, QUERY_TILE):
        Q_BGRQD = Q_BGRTD[:, :, :, start : start + QUERY_TILE]
        logits_BGRQS = torch.einsum("BGRQD,BGSD->BGRQS", Q_BGRQD, K_BGSD) * scale
        valid = padding_B11S
        if causal:
            query_Q = torch.arange(start, start + Q_BGRQD.shape[3], device=x.device)
            future_QS = (key_S[None, :] <= query_Q[:, None])[None, None]
            valid = future_QS if valid is None else valid & future_QS
        if valid is not None:
            logits_BGRQS = logits_BGRQS.masked_fill(~valid[:, :, None], -torch.inf)
        P_BGRQS = torch.exp(logits_BGRQS - logits_BGRQS.amax(dim=-1, keepdim=True))
        O_BGRQD = torch.einsum("BGRQS,BGSD->BGRQD", P_BGRQS, V_BGSD) / P_BGRQS.sum(dim=-1, keepdim=True)
        tiles.append(O_BGRQD)
    O_BGRTD = torch.cat(tiles, dim=3).to(x.dtype)
    return torch.einsum("BGRTD,GRDE->BTE", O_BGRTD, wo.reshape(G, R, D, -1))


#: The variants that are one function each (``compiled`` hands COMPILED_BASE to torch.compile).
_IMPLEMENTATIONS = dict(einsum=einsum_attention, packed=_packed, vmap=_vmap, sdpa=_sdpa, blocked=_blocked, tiled=_tiled)


class _Eager:
    """An eager variant whose "no kernel for this dtype" failures become VariantUnsupportedError.

    ``compile(*args)`` exists so a timer can treat every backend alike; eager has nothing to compile,
    which ``compiles = False`` tells a report (its compile time is shown as "eager", not measured).
    """

    compiles = False
    _UNSUPPORTED_MARKERS = ("not implemented for", "No available kernel")

    def __init__(self, variant, fn):
        self.variant, self._fn = variant, fn

    def __call__(self, *args):
        try:
            return self._fn(*args)
        except RuntimeError as error:
            if not any(marker in str(error) for marker in self._UNSUPPORTED_MARKERS):
                raise
            raise VariantUnsupportedError(
                f"variant {self.variant!r} (torch {torch.__version__}) cannot run {args[0].dtype} on"
                f" {args[0].device}: torch says {str(error).splitlines()[0]!r}. Expected a dtype this"
                " device's kernels support; use float32, or another variant."
            ) from None

    def compile(self, *args):
        return self


def _fresh_copy(fn, **keyword_defaults):
    """``fn`` with its own code object and ``keyword_defaults`` bound, ready for torch.compile.

    Dynamo keeps its cache, and counts recompiles against torch._dynamo.config.recompile_limit
    (8), per code object; past the limit it silently runs eager. A functools.partial does not
    help: torch.compile runs every callable that is not a function through one shared ``inner``
    frame. A real function with a code object of its own, per input signature, compiles once.
    """
    fresh = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    fresh.__kwdefaults__ = {**(fn.__kwdefaults__ or {}), **keyword_defaults}
    return fresh


@functools.cache  # torch._dynamo and torch._inductor take seconds to import; only a compile needs them
def _compile_failures():
    """What a platform that cannot compile raises: no C++ compiler, a failing compiler, inductor errors."""
    import torch._dynamo.exc
    import torch._inductor.exc

    names = [
        (torch._dynamo.exc, "BackendCompilerFailed"),
        (torch._inductor.exc, "InductorError"),  # torch 2.13 wraps compiler failures in this
        (torch._inductor.exc, "CppCompileError"),
        (torch._inductor.exc, "InvalidCxxCompiler"),
    ]
    return tuple(getattr(module, name) for module, name in names if hasattr(module, name))


class _Compiled:
    """torch.compile(dynamic=False) of COMPILED_BASE, one compiled function per input signature.

    The first call with a new signature (shapes, dtypes, device, requires_grad, grad mode) compiles;
    ``compile(*args)`` makes that call ahead of time so compile time is measured apart. A platform
    that cannot compile raises VariantUnsupportedError, remembered so it is not retried.
    """

    variant = "compiled"

    def __init__(self, *, causal, scale):
        self._causal, self._scale = causal, scale
        self._compiled = {}  # signature -> compiled function
        self._failures = {}  # signature -> why it cannot compile

    @staticmethod
    def _signature(args):
        tensors = tuple(None if a is None else (tuple(a.shape), a.dtype, a.device, a.requires_grad) for a in args)
        return tensors + (torch.is_grad_enabled(),)

    def _unavailable(self, error):
        return VariantUnsupportedError(
            f"variant 'compiled' (torch {torch.__version__}): torch.compile is unavailable here"
            f" ({type(error).__name__}: {str(error).strip().splitlines()[0]}). Expected a working"
            " inductor toolchain (a C++ compiler on PATH or named by $CXX, a Python torch.compile"
            f" supports); install one, or use the eager {COMPILED_BASE!r} variant."
        )

    def __call__(self, *args):
        key = self._signature(args)
        if key in self._failures:
            raise self._unavailable(self._failures[key])
        compiled = self._compiled.get(key)
        if compiled is None:
            base = _fresh_copy(_IMPLEMENTATIONS[COMPILED_BASE], causal=self._causal, scale=self._scale)
            try:
                compiled = torch.compile(base, dynamic=False)
            except RuntimeError as error:  # some platforms are refused outright ("not supported on Python 3.x")
                self._failures[key] = error
                raise self._unavailable(error) from None
            self._compiled[key] = compiled
        try:
            return compiled(*args)
        except Exception as error:
            if not isinstance(error, _compile_failures()):
                raise
            del self._compiled[key]
            self._failures[key] = error
            raise self._unavailable(error) from None

    def compile(self, *args):
        """Compile for these inputs now (by running once); return the callable, ready to time."""
        self(*args)
        return self


@functools.cache
def build(variant: str, *, causal: bool, scale: float, padded: bool):
    """``fn(x, kv, wq, wk, wv, wo, key_lengths)``; ``fn.compile(*args)`` compiles ahead of time."""
    del padded  # part of the cache key only: a None vs tensor key_lengths takes its own path anyway
    if variant == "compiled":
        return _Compiled(causal=causal, scale=scale)
    if variant not in _IMPLEMENTATIONS:
        raise ValueError(f"variant: expected one of {', '.join(VARIANTS)}; got {variant!r}")
    return _Eager(variant, functools.partial(_IMPLEMENTATIONS[variant], causal=causal, scale=scale))


def _fullrank(x, kv, wq, wk, wh, lengths, *, causal, scale):
    G = wk.shape[0]
    Q_BTGRD = rearrange(torch.einsum("BTE,HED->BTHD", x, wq), "B T (G R) D -> B T G R D", G=G)
    K_BSGD = torch.einsum("BSE,GED->BSGD", kv, wk)
    valid_BTS = mask_BTS(x.shape[1], kv.shape[1], causal, lengths, x.device)
    P_BHTS = rearrange(_probs_BGRTS(Q_BTGRD, K_BSGD, valid_BTS, scale), "B G R T S -> B (G R) T S")
    return torch.einsum("BHTS,BSE,HEF->BTF", P_BHTS, kv, wh)


@functools.cache
def build_fullrank(*, causal: bool, scale: float, padded: bool):
    del padded
    return functools.partial(_fullrank, causal=causal, scale=scale)


@functools.cache
def build_bmm(equation: str):
    return functools.partial(torch.einsum, equation)
