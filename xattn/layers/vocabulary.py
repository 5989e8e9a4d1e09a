"""The contract's view of an attention layer, shared by every kind: :class:`LayerConfig` and the layouts.

Five layer kinds (shape letters as in :mod:`xattn.contract.spec`; Eq, Ek, Ev, Eo are the query,
key, value input widths and the output width, all E in the contract):

- ``xattn.FlaxAttention`` and ``xattn.TorchAttention``: wq (H,E,D), wk and wv (G,E,D), wo (H,D,E);
  bq (H,D), bk and bv (G,D), bo (E,).
- ``flax.nnx.MultiHeadAttention``: {query,key,value}.kernel (Eq|Ek,H|G,D) and .bias (H|G,D);
  out.kernel (H,D,Eo), out.bias (Eo,).
- ``torch.nn.MultiheadAttention``: in_proj_weight (3·H·D, E) = [Wq; Wk; Wv], row h·D+d of Wq
  being head h's feature d (q/k/v_proj_weight (H·D, Eq|Ek|Ev) instead when kdim/vdim != E);
  in_proj_bias (3·H·D,); out_proj.weight (Eo, H·D), out_proj.bias (Eo,).
- ``equinox.nn.MultiheadAttention``: {query,key,value}_proj.weight (H·D, Eq|Ek|Ev), torch's
  unpacked layout, and .bias (H·D,); output_proj.weight (Eo, H·D), output_proj.bias (Eo,).

:func:`to_contract` reads any kind's parameters into the contract's layout (the first item's
names) and :func:`from_contract` writes them back, with einops, so torch views and JAX arrays
alike pass through unchanged in every bit. :class:`XattnLayer` and :class:`XattnLayerAdapter`
are the framework-free half of xattn's two layers (options, parameter shapes, initial scales,
:func:`own_causal`). Imports no framework; :mod:`xattn.layers.weights`,
:mod:`xattn.layers.flax_layer`, :mod:`xattn.layers.torch_layer` and :mod:`xattn.layers.check`
all speak it.
"""

from __future__ import annotations

import dataclasses
import math

from einops import pack, rearrange

from xattn.contract.shapes import default_scale
from xattn.contract.spec import AttentionSpec

FLAX_ATTENTION = "xattn.FlaxAttention"
TORCH_ATTENTION = "xattn.TorchAttention"
NNX_MHA = "flax.nnx.MultiHeadAttention"
TORCH_MHA = "torch.nn.MultiheadAttention"
EQX_MHA = "equinox.nn.MultiheadAttention"
KINDS = (FLAX_ATTENTION, TORCH_ATTENTION, NNX_MHA, TORCH_MHA, EQX_MHA)
#: The kinds xattn builds itself, whose options (``causal`` included) are fixed when built.
XATTN_KINDS = (FLAX_ATTENTION, TORCH_ATTENTION)

#: The contract's weight names, in the order a layer function takes them.
WEIGHTS = ("wq", "wk", "wv", "wo")
BIASES = ("bq", "bk", "bv", "bo")

#: How a destination parameter was filled.
ZERO_COPY, COPY, ZEROS = "zero-copy", "copy", "zeros"


@dataclasses.dataclass(frozen=True)
class LayerConfig:
    """What a layer's weights mean, whatever its kind; two layers port when these agree.

    ``names`` maps each field to the layer's own word for it (``kdim``, ``num_kv_heads``...) so
    that an error speaks the user's vocabulary. ``unsupported`` lists what the layer does beyond
    the contract (``add_bias_kv``, dropout in training mode...), each as "what; what to do".
    """

    kind: str
    embed: int
    key_embed: int
    value_embed: int
    out_embed: int
    heads: int
    kv_heads: int
    head_dim: int
    bias: bool
    scale: float
    dtype: str
    names: dict = dataclasses.field(default_factory=dict, compare=False)
    unsupported: tuple[str, ...] = ()
    packed: bool = False  # torch MHA: one in_proj_weight rather than q/k/v_proj_weight

    def name(self, field: str) -> str:
        return self.names.get(field, field)


_FIELDS = (
    ("embed", "query input width"),
    ("key_embed", "key input width"),
    ("value_embed", "value input width"),
    ("out_embed", "output width"),
    ("heads", "query heads"),
    ("kv_heads", "key/value heads"),
    ("head_dim", "head width"),
    ("dtype", "parameter dtype"),
)




def incompatibilities(src: LayerConfig, dst: LayerConfig) -> list[str]:
    """Every reason ``src``'s weights cannot become ``dst``'s with the same outputs (empty if none)."""
    problems = [f"{config.kind}: {what}" for config in (src, dst) for what in config.unsupported]
    for field, meaning in _FIELDS:
        a, b = getattr(src, field), getattr(dst, field)
        if a != b:
            problems.append(
                f"{meaning}: {src.kind} has {src.name(field)}={a}; {dst.kind} has {dst.name(field)}={b}"
            )
    if src.bias and not dst.bias:
        problems.append(
            f"bias: {src.kind} has biases ({src.name('bias')}=True); {dst.kind} has none"
            f" ({dst.name('bias')}=False), so they would be dropped. Build the destination with biases"
        )
    if not math.isclose(src.scale, dst.scale, rel_tol=1e-12):
        problems.append(
            f"scale: {src.kind} scales logits by {src.name('scale')}={src.scale:.8g};"
            f" {dst.kind} by {dst.name('scale')}={dst.scale:.8g}"
        )
    return problems


def check_compatible(src: LayerConfig, dst: LayerConfig) -> None:
    problems = incompatibilities(src, dst)
    if problems:
        listed = "\n  - ".join(problems)
        raise ValueError(
            f"port_weights: expected a {dst.kind} that can hold this {src.kind}'s weights with the same"
            f" outputs; got {len(problems)} mismatch{'es' if len(problems) > 1 else ''}:\n  - {listed}\n"
            "Build the destination with matching options (see docs/porting.md for each kind's names)."
        )


# ------------------------------------------------------------------------------ xattn's layers


def layer_options(embed, heads, kv_heads=None, head_dim=None, scale=None) -> tuple[int, int, int, int, float | None]:
    """Validated ``(E, H, G, D, scale)`` for xattn's layers; ValueError naming the bad option."""
    spec = AttentionSpec(embed=embed, heads=heads, kv_heads=kv_heads, head_dim=head_dim, scale=scale)
    return spec.embed, spec.heads, spec.kv_heads, spec.head_dim, spec.scale


def parameter_shapes(embed: int, heads: int, kv_heads: int, head_dim: int) -> dict[str, tuple[int, ...]]:
    """The contract's parameters by name, in ``WEIGHTS + BIASES`` order, with their shapes."""
    E, H, G, D = embed, heads, kv_heads, head_dim
    return {"wq": (H, E, D), "wk": (G, E, D), "wv": (G, E, D), "wo": (H, D, E),
            "bq": (H, D), "bk": (G, D), "bv": (G, D), "bo": (E,)}


class XattnLayer:
    """What ``xattn.FlaxAttention`` and ``xattn.TorchAttention`` share: their options and initial scales.

    ``embed`` E is the width of queries, keys/values and output; ``heads`` H; ``kv_heads`` G
    (divides H; default H, 1 is multi-query); ``head_dim`` D (default E // H); ``causal`` masks
    future keys (needs T == S); ``scale`` multiplies the logits (default 1/sqrt(D)); ``bias`` adds
    bq, bk, bv, bo. Weights start as N(0, 1/fan_in), biases as zeros (the seed's scales).

    Each layer mixes this in and calls :meth:`_set_options` in ``__init__`` before making its parameters.
    """

    def _set_options(self, embed, heads, kv_heads, head_dim, causal, scale, bias) -> None:
        E, H, G, D, scale = layer_options(embed, heads, kv_heads, head_dim, scale)
        self.embed, self.heads, self.kv_heads, self.head_dim = E, H, G, D
        self.causal, self.scale, self.use_bias = bool(causal), scale, bool(bias)

    @property
    def effective_scale(self) -> float:
        return default_scale(self.head_dim, self.scale)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every contract parameter's shape (biases included, held or not), in ``WEIGHTS + BIASES`` order."""
        return parameter_shapes(self.embed, self.heads, self.kv_heads, self.head_dim)

    def init_std(self, weight: str) -> float:
        """The standard deviation ``weight`` starts with: 1/sqrt(fan_in), fan_in E for wq, wk, wv and H·D for wo."""
        fan_in = self.heads * self.head_dim if weight == "wo" else self.embed
        return 1.0 / math.sqrt(fan_in)


class XattnLayerAdapter:
    """The framework-free part of an xattn layer's adapter: its config, forward and call on given weights.

    A framework's subclass sets ``kind``, ``attend`` (that framework's ``attend``: the layer's math
    on explicit arrays) and ``param_dtype(layer)``, the dtype name of its parameters.
    """

    kind: str

    def config(self, layer) -> LayerConfig:
        E = layer.embed
        return LayerConfig(
            kind=self.kind, embed=E, key_embed=E, value_embed=E, out_embed=E, heads=layer.heads,
            kv_heads=layer.kv_heads, head_dim=layer.head_dim, bias=layer.use_bias, scale=layer.effective_scale,
            dtype=self.param_dtype(layer),
        )

    def forward(self, layer, x, kv=None, *, causal=None, key_lengths=None):
        own_causal(layer, causal)
        return layer(x, kv, key_lengths=key_lengths)

    def call_with(self, layer, raw, x, kv=None, *, causal=None, key_lengths=None):
        causal = own_causal(layer, causal)
        weights = [raw.get(name) for name in (*WEIGHTS, *BIASES)]
        kv = x if kv is None else kv
        return self.attend(x, kv, *weights, key_lengths, causal=causal, scale=layer.effective_scale)


def own_causal(layer, causal) -> bool:
    """An xattn layer's own ``causal`` (fixed when built); ValueError if ``causal`` (None: any) differs."""
    if causal is not None and bool(causal) != layer.causal:
        raise ValueError(
            f"causal: expected the layer's own causal={layer.causal} (xattn layers fix it when built);"
            f" got causal={causal}. Build the layer with causal={bool(causal)}, or pass causal=None"
        )
    return layer.causal


# ------------------------------------------------------------------------------------- layouts


#: Kinds with one parameter per contract parameter (renamed; transposed for flax.nnx's input kernels).
_ONE_TO_ONE = (*XATTN_KINDS, NNX_MHA)
#: flax.nnx's input kernels put the input width first; the contract puts the heads first.
_NNX_KERNELS = {"query.kernel": "E H D -> H E D", "key.kernel": "E G D -> G E D", "value.kernel": "E G D -> G E D"}


def _nnx_layout(array, name: str, *, inverse: bool = False):
    """``array``, the layer's parameter ``name``, in the contract's layout (``inverse``: from it)."""
    pattern = _NNX_KERNELS.get(name)
    if pattern is None:  # out.kernel (H,D,E), the biases and xattn's own layers share the contract's layout
        return array
    source, target = pattern.split(" -> ")
    return rearrange(array, f"{target} -> {source}" if inverse else pattern)


#: equinox's projections (``eqx.nn.Linear``, weight (out, in)) by the contract letter they hold.
_EQX_PROJECTIONS = {"query_proj": "q", "key_proj": "k", "value_proj": "v", "output_proj": "o"}
#: A ``Linear``'s weight (out, in) and bias (out,) as the contract's parameter; heads are the major part of H·D.
_LINEAR_LAYOUTS = {"wq": "(H D) E -> H E D", "wk": "(H D) E -> H E D", "wv": "(H D) E -> H E D",
                   "wo": "E (H D) -> H D E", "bq": "(H D) -> H D", "bk": "(H D) -> H D", "bv": "(H D) -> H D"}


def _linear_layout(array, held: str, heads: int, *, inverse: bool = False):
    """A linear layer's parameter holding the contract's ``held`` in the contract's layout (``inverse``: from it)."""
    pattern = _LINEAR_LAYOUTS.get(held)
    if pattern is None:  # bo (Eo,) is the contract's own layout
        return array
    source, target = pattern.split(" -> ")
    return rearrange(array, f"{target} -> {source}" if inverse else pattern, H=heads)


def _thirds(packed, rows: int):
    return packed[:rows], packed[rows : 2 * rows], packed[2 * rows :]


def raw_names(config: LayerConfig) -> dict[str, tuple[str, ...]]:
    """The layer's own parameter names, each with the contract names it holds."""
    if config.kind in XATTN_KINDS:
        names = {name: (name,) for name in WEIGHTS}
        names.update({name: (name,) for name in BIASES} if config.bias else {})
        return names
    if config.kind == NNX_MHA:
        parts = {"query": "q", "key": "k", "value": "v", "out": "o"}
        names = {f"{part}.kernel": (f"w{letter}",) for part, letter in parts.items()}
        names.update({f"{part}.bias": (f"b{letter}",) for part, letter in parts.items()} if config.bias else {})
        return names
    if config.kind == EQX_MHA:
        names = {f"{part}.weight": (f"w{letter}",) for part, letter in _EQX_PROJECTIONS.items()}
        if config.bias:
            names.update({f"{part}.bias": (f"b{letter}",) for part, letter in _EQX_PROJECTIONS.items()})
        return names
    if config.packed:
        names = {"in_proj_weight": ("wq", "wk", "wv")}
    else:
        names = {"q_proj_weight": ("wq",), "k_proj_weight": ("wk",), "v_proj_weight": ("wv",)}
    names["out_proj.weight"] = ("wo",)
    if config.bias:
        names.update({"in_proj_bias": ("bq", "bk", "bv"), "out_proj.bias": ("bo",)})
    return names


def to_contract(raw: dict, config: LayerConfig) -> dict:
    """A layer's parameters (its own names and layout) in the contract's names and layout."""
    H, D = config.heads, config.head_dim
    if config.kind in _ONE_TO_ONE:
        return {held: _nnx_layout(raw[name], name) for name, (held,) in raw_names(config).items()}
    if config.kind == EQX_MHA:
        return {held: _linear_layout(raw[name], held, H) for name, (held,) in raw_names(config).items()}
    if config.packed:
        projections = _thirds(raw["in_proj_weight"], H * D)
    else:
        projections = (raw["q_proj_weight"], raw["k_proj_weight"], raw["v_proj_weight"])
    weights = {name: rearrange(w, "(H D) E -> H E D", H=H) for name, w in zip(WEIGHTS, projections)}
    weights["wo"] = rearrange(raw["out_proj.weight"], "E (H D) -> H D E", H=H)
    if config.bias:
        biases = _thirds(raw["in_proj_bias"], H * D)
        weights.update({name: rearrange(b, "(H D) -> H D", H=H) for name, b in zip(BIASES, biases)})
        weights["bo"] = raw["out_proj.bias"]
    return weights


def from_contract(weights: dict, config: LayerConfig) -> dict:
    """The contract's weights in ``config``'s layer names and layout (the inverse of :func:`to_contract`)."""
    if config.kind in _ONE_TO_ONE:
        return {name: _nnx_layout(weights[held], name, inverse=True) for name, (held,) in raw_names(config).items()}
    if config.kind == EQX_MHA:
        return {name: _linear_layout(weights[held], held, config.heads, inverse=True)
                for name, (held,) in raw_names(config).items()}
    rows = [rearrange(weights[name], "H E D -> (H D) E") for name in ("wq", "wk", "wv")]
    if config.packed:
        raw = {"in_proj_weight": pack(rows, "* E")[0]}
    else:
        raw = dict(zip(("q_proj_weight", "k_proj_weight", "v_proj_weight"), rows))
    raw["out_proj.weight"] = rearrange(weights["wo"], "H D E -> E (H D)")
    if config.bias:
        raw["in_proj_bias"] = pack([weights[name] for name in ("bq", "bk", "bv")], "*")[0]
        raw["out_proj.bias"] = weights["bo"]
    return raw


def not_a_layer(layer) -> TypeError:
    kind = f"{type(layer).__module__}.{type(layer).__qualname__}"
    return TypeError(f"expected a layer of one of {', '.join(KINDS)}; got {kind}")

