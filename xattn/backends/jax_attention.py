"""JAX implementations of the attention contract. Imported only through the backend registry.

Shape letters as in :mod:`xattn.contract.spec`; R = H // G is the number of query heads per kv head, so
query head h = g·R + r reads kv head g (the contract's h // (H/G)). C is a key block's length.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from einops import einsum, rearrange

from xattn import _compat
from xattn.bridge import to_jax
from xattn.errors import VariantUnsupportedError

#: Key block length of the ``blocked`` variant (online softmax over key blocks).
BLOCK = 128
#: Query tile length of the ``tiled`` variant. 512 beat 128 and 256 at the seed shape (T=512: a tile
#: is then a few kv-head rows x every query, so each row's K/V is sliced once); docs/performance.md.
QUERY_TILE = 512
#: Largest logits tile of the ``tiled`` variant: small enough to stay in cache between its passes
#: (max, exp, sum, P·V), which is what makes it fast on CPU. 2 MiB (twice this machine's per-core
#: L2) edged out 1, 4 and 8 MiB at the seed shape; docs/performance.md.
TILE_BYTES = 2 * 2**20

VARIANTS = {
    "einsum": "per-head einsums (seed attn_eins3)",
    "packed": "one GEMM per projection for all heads (seed attn_eins2)",
    "vmap": "nested jax.vmap over heads and batch (seed attn_vmap)",
    "sdpa": "jax.nn.dot_product_attention (XLA's fused attention)",
    "blocked": f"online softmax over key blocks of {BLOCK} under lax.scan; never holds B·H·T·S logits",
    "tiled": f"query tiles of {QUERY_TILE} x kv-head rows under lax.map, each a cache-sized exact softmax",
    "threaded": "tiled, with the batch split across host threads (one per XLA CPU thread), one executable each",
}

_LOW_PRECISION = (jnp.bfloat16, jnp.float16)


def as_arrays(*arrays):
    """NumPy, JAX or torch arrays -> JAX arrays through the bridge: zero-copy where possible.

    64-bit inputs without jax_enable_x64 raise a BridgeError naming the flag (JAX alone would
    silently make them 32-bit). Tracers (inside jax.jit, grad, vjp, vmap) pass through untouched,
    as tensors do on the torch side: the bridge refuses them, having no buffer to share.
    """
    tracer = _compat.jax_tracer_type()
    return tuple(a if isinstance(a, tracer) else to_jax(a) for a in arrays)


def as_lengths(key_lengths):
    lengths = key_lengths if isinstance(key_lengths, jax.Array) else np.asarray(key_lengths)
    return jnp.asarray(lengths, jnp.int32)


def mask_BTS(T, S, causal, lengths_B):
    """Where query t may attend key s: a boolean mask that broadcasts to (B,T,S); None when nothing is masked.

    ``causal`` keeps keys s <= t, giving (1,T,S); ``lengths_B`` (B,) integers keep keys s < the row's
    length, giving (B,1,S); both give (B,T,S).
    """
    mask = None
    if causal:
        mask = jnp.tril(jnp.ones((T, S), dtype=bool))[None]
    if lengths_B is not None:
        padding = (jnp.arange(S)[None, :] < lengths_B[:, None])[:, None, :]
        mask = padding if mask is None else mask & padding
    return mask


def core_BTGRD(Q_BTGRD, K_BSGD, V_BSGD, valid_BTS, scale):
    """Softmax attention of projected heads: O (B,T,G,R,D) from Q (B,T,G,R,D), K and V (B,S,G,D).

    Query head (g, r) reads kv head g. Logits are multiplied by ``scale``, and set to -inf where
    ``valid_BTS`` (from :func:`mask_BTS`; None masks nothing) is False, before the softmax over S.
    """
    logits_BGRTS = jnp.einsum("BTGRD,BSGD->BGRTS", Q_BTGRD, K_BSGD) * scale
    if valid_BTS is not None:
        logits_BGRTS = jnp.where(valid_BTS[:, None, None], logits_BGRTS, -jnp.inf)
    P_BGRTS = jax.nn.softmax(logits_BGRTS, axis=-1)
    return jnp.einsum("BGRTS,BSGD->BTGRD", P_BGRTS, V_BSGD)


def einsum_attention(x, kv, wq, wk, wv, wo, lengths, *, causal, scale, bq=None, bk=None, bv=None, bo=None):
    """The ``einsum`` variant, out (B,T,E); with biases (bq (H,D), bk and bv (G,D) added to the
    projections, bo (E,) to the output) it is xattn's layer, :class:`xattn.FlaxAttention`."""
    G = wk.shape[0]
    Q_BTHD = _biased(einsum(x, wq, "B T E, H E D -> B T H D"), bq)
    K_BSGD = _biased(einsum(kv, wk, "B S E, G E D -> B S G D"), bk)
    V_BSGD = _biased(einsum(kv, wv, "B S E, G E D -> B S G D"), bv)
    Q_BTGRD = rearrange(Q_BTHD, "B T (G R) D -> B T G R D", G=G)
    valid_BTS = mask_BTS(x.shape[1], kv.shape[1], causal, lengths)
    O_BTHD = rearrange(core_BTGRD(Q_BTGRD, K_BSGD, V_BSGD, valid_BTS, scale), "B T G R D -> B T (G R) D")
    return _biased(einsum(O_BTHD, wo, "B T H D, H D E -> B T E"), bo)


def _biased(projected, bias):
    return projected if bias is None else projected + bias


def _packed(x, kv, wq, wk, wv, wo, lengths, *, causal, scale):
    G = wk.shape[0]
    Q_BTHD = rearrange(x @ rearrange(wq, "H E D -> E (H D)"), "B T (G R D) -> B T G R D", G=G, D=wq.shape[2])
    K_BSGD = rearrange(kv @ rearrange(wk, "G E D -> E (G D)"), "B S (G D) -> B S G D", G=G)
    V_BSGD = rearrange(kv @ rearrange(wv, "G E D -> E (G D)"), "B S (G D) -> B S G D", G=G)
    valid_BTS = mask_BTS(x.shape[1], kv.shape[1], causal, lengths)
    O_BTGRD = core_BTGRD(Q_BTHD, K_BSGD, V_BSGD, valid_BTS, scale)
    return rearrange(O_BTGRD, "B T G R D -> B T (G R D)") @ rearrange(wo, "H D E -> (H D) E")


def _vmap(x, kv, wq, wk, wv, wo, lengths, *, causal, scale):
    T, S = x.shape[1], kv.shape[1]
    R = wq.shape[0] // wk.shape[0]
    wk_HED, wv_HED = jnp.repeat(wk, R, axis=0), jnp.repeat(wv, R, axis=0)
    lengths_B = jnp.full((x.shape[0],), S, jnp.int32) if lengths is None else lengths

    @functools.partial(jax.vmap, in_axes=(None, None, 0, 0, 0, None))  # over heads
    @functools.partial(jax.vmap, in_axes=(0, 0, None, None, None, 0))  # over batch
    def _attn_2d(X_TE, Y_SE, WQ_ED, WK_ED, WV_ED, length):
        logits_TS = (X_TE @ WQ_ED) @ (Y_SE @ WK_ED).T * scale
        valid_TS = jnp.arange(S)[None, :] < length
        if causal:
            valid_TS = valid_TS & jnp.tril(jnp.ones((T, S), dtype=bool))
        logits_TS = jnp.where(valid_TS, logits_TS, -jnp.inf)
        return jax.nn.softmax(logits_TS, axis=-1) @ (Y_SE @ WV_ED)

    O_HBTD = _attn_2d(x, kv, wq, wk_HED, wv_HED, lengths_B)
    return rearrange(O_HBTD, "H B T D -> B T (H D)") @ rearrange(wo, "H D E -> (H D) E")


def _sdpa(x, kv, wq, wk, wv, wo, lengths, *, causal, scale):
    if x.dtype == jnp.float64:
        # Its XLA path casts the logits to float32 before the softmax, whatever the input dtype.
        raise VariantUnsupportedError(
            f"variant 'sdpa': jax.nn.dot_product_attention (jax {jax.__version__}) always computes its"
            " softmax in float32, so it cannot give a float64 answer. Expected float32/bfloat16/float16"
            " for this variant; got float64. Use einsum, packed, vmap or blocked for float64."
        )
    Q_BTHD = einsum(x, wq, "B T E, H E D -> B T H D")
    K_BSGD = einsum(kv, wk, "B S E, G E D -> B S G D")
    V_BSGD = einsum(kv, wv, "B S E, G E D -> B S G D")
    O_BTHD = jax.nn.dot_product_attention(
        Q_BTHD, K_BSGD, V_BSGD, scale=scale, is_causal=causal, key_value_seq_lengths=lengths
    )
    return einsum(O_BTHD, wo, "B T H D, H D E -> B T E")


def _blocked(x, kv, wq, wk, wv, wo, lengths, *, causal, scale):
    B, T, S = x.shape[0], x.shape[1], kv.shape[1]
    G, D = wk.shape[0], wk.shape[2]
    C = min(BLOCK, S)
    N = -(-S // C)
    acc_dtype = jnp.float32 if x.dtype in _LOW_PRECISION else x.dtype
    Q_BTGRD = rearrange(einsum(x, wq, "B T E, H E D -> B T H D"), "B T (G R) D -> B T G R D", G=G)
    K_BSGD = einsum(kv, wk, "B S E, G E D -> B S G D")
    V_BSGD = einsum(kv, wv, "B S E, G E D -> B S G D")
    padding = ((0, 0), (0, N * C - S), (0, 0), (0, 0))
    K_NBCGD = rearrange(jnp.pad(K_BSGD, padding), "B (N C) G D -> N B C G D", C=C)
    V_NBCGD = rearrange(jnp.pad(V_BSGD, padding), "B (N C) G D -> N B C G D", C=C)
    query_T = jnp.arange(T)
    # Low-precision inputs are rounded once, then every block accumulates in float32 (FlashAttention's choice).
    Q_acc = Q_BTGRD.astype(acc_dtype)

    def step(carry, block):
        m_BGRT, l_BGRT, acc_BGRTD = carry
        n, K_BCGD, V_BCGD = block
        logits_BGRTC = jnp.einsum("BTGRD,BCGD->BGRTC", Q_acc, K_BCGD.astype(acc_dtype)) * scale
        key_C = n * C + jnp.arange(C)
        valid_BTC = jnp.broadcast_to(key_C < S, (1, T, C))
        if causal:
            valid_BTC = valid_BTC & (key_C[None, :] <= query_T[:, None])[None]
        if lengths is not None:
            valid_BTC = valid_BTC & (key_C[None, :] < lengths[:, None])[:, None, :]
        logits_BGRTC = jnp.where(valid_BTC[:, None, None], logits_BGRTC, -jnp.inf)
        m_new = jnp.maximum(m_BGRT, logits_BGRTC.max(axis=-1))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)  # a row with no key seen yet stays empty
        P_BGRTC = jnp.exp(logits_BGRTC - m_safe[..., None])
        correction = jnp.exp(m_BGRT - m_safe)
        l_BGRT = l_BGRT * correction + P_BGRTC.sum(axis=-1)
        update_BGRTD = jnp.einsum("BGRTC,BCGD->BGRTD", P_BGRTC, V_BCGD.astype(acc_dtype))
        return (m_new, l_BGRT, acc_BGRTD * correction[..., None] + update_BGRTD), None

    R = Q_BTGRD.shape[3]
    init = (
        jnp.full((B, G, R, T), -jnp.inf, acc_dtype),
        jnp.zeros((B, G, R, T), acc_dtype),
        jnp.zeros((B, G, R, T, D), acc_dtype),
    )
    (_, l_BGRT, acc_BGRTD), _ = jax.lax.scan(step, init, (jnp.arange(N), K_NBCGD, V_NBCGD))
    O_BGRTD = (acc_BGRTD / l_BGRT[..., None]).astype(x.dtype)
    return einsum(O_BGRTD, wo.reshape(G, R, D, -1), "B G R T D, G R D E -> B T E")


def _tile_rows(rows: int, tile_rows: int, S: int, itemsize: int) -> int:
    """Largest divisor of ``rows`` whose logits tile (divisor x tile_rows x S) fits TILE_BYTES; at least 1."""
    fits = max(1, TILE_BYTES // (tile_rows * S * itemsize))
    return max(n for n in range(1, min(rows, fits) + 1) if rows % n == 0)


def _tiled(x, kv, wq, wk, wv, wo, lengths, *, causal, scale):
    """Exact softmax attention over tiles of (kv-head rows) x (query tile) under ``lax.map``.

    X = B·G rows, each with its own keys; a tile holds XC rows x all R query heads of the group x
    TQ queries (M = R·TQ), so K/V are shared inside it and both products are plain batched GEMMs
    with the batch axis leading (the seed's bmm experiment: leading batch axes run 2x faster).
    """
    B, T, S = x.shape[0], x.shape[1], kv.shape[1]
    H, G, D = wq.shape[0], wk.shape[0], wk.shape[2]
    R, X = H // G, B * G
    if X == 0:  # an empty batch has no tile, and lax.map traces its body even for zero of them
        return jnp.zeros((0, T, wo.shape[-1]), x.dtype)
    TQ = min(QUERY_TILE, T)
    N = -(-T // TQ)
    acc_dtype = jnp.float32 if x.dtype in _LOW_PRECISION else x.dtype
    XC = _tile_rows(X, R * TQ, S, jnp.dtype(acc_dtype).itemsize)
    Q_BGRTD = einsum(x, wq.reshape(G, R, -1, D), "B T E, G R E D -> B G R T D")
    Q_BGRTD = jnp.pad(Q_BGRTD, ((0, 0), (0, 0), (0, 0), (0, N * TQ - T), (0, 0))).astype(acc_dtype)
    # tile index i = c·N + n: row chunk c, query tile n
    Q_IXMD = rearrange(Q_BGRTD.reshape(X // XC, XC, R, N, TQ, D), "C X R N Q D -> (C N) X (R Q) D")
    K_CXSD = einsum(kv, wk, "B S E, G E D -> B G S D").reshape(X // XC, XC, S, D).astype(acc_dtype)
    V_CXSD = einsum(kv, wv, "B S E, G E D -> B G S D").reshape(X // XC, XC, S, D).astype(acc_dtype)
    lengths_CX = None if lengths is None else jnp.repeat(lengths, G).reshape(X // XC, XC)
    query_M = jnp.tile(jnp.arange(TQ), R)
    key_S = jnp.arange(S)

    def tile(args):
        i, Q_XMD = args
        c, n = i // N, i % N
        K_XSD = jax.lax.dynamic_index_in_dim(K_CXSD, c, keepdims=False)
        V_XSD = jax.lax.dynamic_index_in_dim(V_CXSD, c, keepdims=False)
        logits_XMS = jnp.einsum("XMD,XSD->XMS", Q_XMD, K_XSD) * scale
        valid = None
        if causal:
            valid = (key_S[None, :] <= (n * TQ + query_M)[:, None])[None]
        if lengths_CX is not None:
            length_X = jax.lax.dynamic_index_in_dim(lengths_CX, c, keepdims=False)
            padding = (key_S[None, :] < length_X[:, None])[:, None, :]
            valid = padding if valid is None else valid & padding
        if valid is not None:
            logits_XMS = jnp.where(valid, logits_XMS, -jnp.inf)
        P_XMS = jnp.exp(logits_XMS - logits_XMS.max(axis=-1, keepdims=True))
        return jnp.einsum("XMS,XSD->XMD", P_XMS, V_XSD) / P_XMS.sum(axis=-1, keepdims=True)

    O_IXMD = jax.lax.map(tile, (jnp.arange(X // XC * N), Q_IXMD))
    O_BGRTD = rearrange(O_IXMD, "(C N) X (R Q) D -> C X R (N Q) D", N=N, R=R)
    O_BGRTD = O_BGRTD.reshape(B, G, R, N * TQ, D)[:, :, :, :T].astype(x.dtype)
    return einsum(O_BGRTD, wo.reshape(G, R, D, -1), "B G R T D, G R D E -> B T E")


#: The variants that are one function each (``threaded`` runs ``tiled`` on slices of the batch).
_IMPLEMENTATIONS = dict(einsum=einsum_attention, packed=_packed, vmap=_vmap, sdpa=_sdpa, blocked=_blocked, tiled=_tiled)


class _Jitted:
    """A jitted variant whose XLA "not supported" failures become VariantUnsupportedError.

    XLA refuses some dtype/platform pairs only at compile time (float16 dots in
    jax.nn.dot_product_attention on CPU: 'F16_F16_F32 is not supported'), so the guard wraps both
    the call and ``lower(...).compile()``.
    """

    def __init__(self, variant, fn):
        self.variant, self._jitted = variant, jax.jit(fn)

    def _translate(self, error, args):
        dtype = getattr(args[0], "dtype", "?")
        return VariantUnsupportedError(
            f"variant {self.variant!r} (jax {jax.__version__}) cannot run {dtype} on"
            f" {jax.default_backend()}: XLA says {str(error).splitlines()[0]!r}."
            " Expected a dtype this platform's kernels support; use float32 or bfloat16, or another variant."
        )

    def __call__(self, *args):
        try:
            return self._jitted(*args)
        except ValueError as error:
            if "not supported" not in str(error):
                raise
            raise self._translate(error, args) from None

    def compile(self, *args):
        """``lower(*args).compile()``: the compiled executable, compile time measurable apart."""
        try:
            return self._jitted.lower(*args).compile()
        except ValueError as error:
            if "not supported" not in str(error):
                raise
            raise self._translate(error, args) from None


class _Threaded:
    """``threaded``: the ``tiled`` executable run on slices of the batch, one host thread per slice.

    XLA's CPU runtime runs one executable's tile loop on one core (pinned to one CPU, ``tiled``
    takes as long as on two), but executables called from different threads run at once. So on
    CPU, outside any JAX transformation, the batch is cut into as many slices as XLA has intra-op
    threads (the count torch is given too), each slice runs the compiled ``tiled`` in a thread of
    its own, and the outputs are concatenated. Under jit, vjp or any tracer, and on other devices,
    it is ``tiled`` as one function, so gradients and compositions see plain JAX.
    """

    variant = "threaded"

    def __init__(self, *, causal, scale):
        self._whole = _Jitted(self.variant, functools.partial(_tiled, causal=causal, scale=scale))

    @staticmethod
    def _slices(args):
        """(start, stop) batch slices, or None where the variant runs as one function."""
        x = args[0]
        if isinstance(x, jax.core.Tracer) or not isinstance(x, jax.Array) or len(x.devices()) != 1:
            return None
        if next(iter(x.devices())).platform != "cpu":
            return None
        parts = min(_host_threads(), x.shape[0])
        if parts < 2:
            return None
        stops = np.cumsum([len(part) for part in np.array_split(np.arange(x.shape[0]), parts)])
        return [(int(start), int(stop)) for start, stop in zip([0, *stops[:-1]], stops)]

    @staticmethod
    def _part(args, start, stop):
        x, kv, wq, wk, wv, wo, lengths = args
        return x[start:stop], kv[start:stop], wq, wk, wv, wo, None if lengths is None else lengths[start:stop]

    def _run(self, runners, slices, *args):
        parts = [self._part(args, start, stop) for start, stop in slices]
        futures = [_thread_pool().submit(_finished, run, part) for run, part in zip(runners, parts)]
        return jnp.concatenate([future.result() for future in futures], axis=0)

    def __call__(self, *args):
        slices = self._slices(args)
        if slices is None:
            return self._whole(*args)
        return self._run([self._whole] * len(slices), slices, *args)

    def compile(self, *args):
        """Compile the executable of every slice's shape ahead of time; returns the runnable."""
        slices = self._slices(args)
        if slices is None:
            return self._whole.compile(*args)
        executables = {}
        for start, stop in slices:
            if stop - start not in executables:
                executables[stop - start] = self._whole.compile(*self._part(args, start, stop))
        runners = [executables[stop - start] for start, stop in slices]
        return functools.partial(self._run, runners, slices)


def _finished(run, args):
    return run(*args).block_until_ready()


@functools.lru_cache(maxsize=None)
def _host_threads() -> int:
    from xattn.backends.frameworks import side

    return side("jax").intra_op_threads()


@functools.lru_cache(maxsize=None)
def _thread_pool():
    import concurrent.futures

    return concurrent.futures.ThreadPoolExecutor(max_workers=_host_threads(), thread_name_prefix="xattn-jax")


@functools.lru_cache(maxsize=None)
def build(variant: str, *, causal: bool, scale: float, padded: bool):
    """``fn(x, kv, wq, wk, wv, wo, key_lengths)``, jitted; ``fn.compile(*args)`` compiles ahead of time."""
    del padded  # part of the cache key only: jit retraces on None vs array anyway
    if variant == "threaded":
        return _Threaded(causal=causal, scale=scale)
    return _Jitted(variant, functools.partial(_IMPLEMENTATIONS[variant], causal=causal, scale=scale))


def _fullrank(x, kv, wq, wk, wh, lengths, *, causal, scale):
    G = wk.shape[0]
    Q_BTGRD = rearrange(einsum(x, wq, "B T E, H E D -> B T H D"), "B T (G R) D -> B T G R D", G=G)
    K_BSGD = einsum(kv, wk, "B S E, G E D -> B S G D")
    logits_BGRTS = jnp.einsum("BTGRD,BSGD->BGRTS", Q_BTGRD, K_BSGD) * scale
    valid_BTS = mask_BTS(x.shape[1], kv.shape[1], causal, lengths)
    if valid_BTS is not None:
        logits_BGRTS = jnp.where(valid_BTS[:, None, None], logits_BGRTS, -jnp.inf)
    P_BHTS = rearrange(jax.nn.softmax(logits_BGRTS, axis=-1), "B G R T S -> B (G R) T S")
    return einsum(P_BHTS, kv, wh, "B H T S, B S E, H E F -> B T F")


@functools.lru_cache(maxsize=None)
def build_fullrank(*, causal: bool, scale: float, padded: bool):
    del padded
    return jax.jit(functools.partial(_fullrank, causal=causal, scale=scale))


@functools.lru_cache(maxsize=None)
def build_bmm(equation: str):
    return jax.jit(functools.partial(jnp.einsum, equation))
