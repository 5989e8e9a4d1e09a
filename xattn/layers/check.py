"""Check a layer port, outputs and gradients: :func:`check_layers` and :class:`LayerFunction`.

A :class:`LayerFunction` is a layer (any kind :func:`xattn.port_weights` knows) seen as a function
of its input and its weights in the contract's layout, ``fn(x, wq, wk, wv, wo[, bq, bk, bv, bo])``.
Two layers of different kinds and frameworks then take the very same arguments, so
:func:`xattn.check_port` can compare their outputs *and* their gradients with respect to the
input and every weight (``grad/wq`` is d loss / d wq whatever the layer calls it: for
``torch.nn.MultiheadAttention`` it is rows 0 to H·D of ``in_proj_weight``'s gradient, per head
transposed). The float64 oracles are :func:`xattn.numerics.layer_oracle.layer_reference` and
the backward of the same staged forward (each forward runs once per check: the
gradients go on from the output's). NumPy only at import: a layer's framework
module loads when the layer is handed over (:func:`xattn.layers.weights.adapter`).
"""

from __future__ import annotations

import inspect

import numpy as np

from xattn.layers.vocabulary import BIASES, WEIGHTS, XATTN_KINDS, from_contract, own_causal, to_contract
from xattn.layers.weights import adapter
from xattn.numerics.layer_oracle import (
    forward_output,
    layer_backward,
    layer_forward,
    repeated_gradients,
    seed_chunks,
)
from xattn.numerics.parallel import run_chunks
from xattn.numerics.stages import repeats_at_once


class LayerFunction:
    """``layer`` as ``fn(x, [kv,] wq, wk, wv, wo[, bq, bk, bv, bo])`` in its own framework's arrays.

    ``causal`` and ``key_lengths`` (B,) are fixed for every call (xattn's layers fix ``causal``
    when built: ``None`` takes theirs). ``cross=True`` adds a ``kv`` (B,S,E) argument after x.
    ``weights()`` gives the layer's current weights in the contract's layout as NumPy arrays;
    ``reference``/``reference_vjp`` are the float64 oracles of the same arguments.
    """

    def __init__(self, layer, *, causal=None, key_lengths=None, cross=False):
        self.layer, self.adapter = layer, adapter(layer)
        self.config = self.adapter.config(layer)
        if self.config.unsupported:
            raise ValueError(f"{self.config.kind}: expected a layer within the contract; got "
                             + "; ".join(self.config.unsupported))
        self.framework = self.adapter.framework
        if self.config.kind in XATTN_KINDS:
            causal = own_causal(layer, causal)
        self.causal = bool(causal)
        self.key_lengths = None if key_lengths is None else np.asarray(key_lengths, dtype=np.int32)
        self.cross = bool(cross)
        self.weight_names = WEIGHTS + (BIASES if self.config.bias else ())
        self.names = ("x", "kv")[: 1 + self.cross] + self.weight_names
        self.__name__ = self.config.kind
        parameter = inspect.Parameter.POSITIONAL_OR_KEYWORD
        self.__signature__ = inspect.Signature([inspect.Parameter(name, parameter) for name in self.names])
        self._forwards: dict[str, tuple] = {}  # run dtype -> (arguments, deterministic forward state)

    def _split(self, args):
        if len(args) != len(self.names):
            raise TypeError(f"{self.__name__}: expected {len(self.names)} arguments ({', '.join(self.names)});"
                            f" got {len(args)}")
        data = args[: 1 + self.cross]
        return data[0], (data[1] if self.cross else None), dict(zip(self.weight_names, args[len(data):]))

    def __call__(self, *args):
        x, kv, weights = self._split(args)
        raw = from_contract(weights, self.config)
        lengths = None if self.key_lengths is None else self.adapter.lengths_like(self.key_lengths, x)
        return self.adapter.call_with(self.layer, raw, x, kv, causal=self.causal, key_lengths=lengths)

    def weights(self) -> tuple[np.ndarray, ...]:
        """The layer's weights now, in the contract's layout and names (``weight_names``), as NumPy copies."""
        from xattn.bridge import to_numpy

        contract = to_contract(self.adapter.raw(self.layer), self.config)
        return tuple(np.array(to_numpy(contract[name]), copy=True) for name in self.weight_names)

    def _keywords(self, args):
        x, kv, weights = self._split(args)
        return x, dict(weights, kv=kv, causal=self.causal, key_lengths=self.key_lengths, scale=self.config.scale)

    def _forward(self, args, rounding_seed, output=True, exact=None) -> dict:
        """The staged forward of these arguments, kept when deterministic so that the gradients go on from it.

        check_port asks for the output and then for the gradients of the same arguments (float64
        copies for the oracle, the inputs as they are for the naive run): each forward runs once.
        """
        x, keywords = self._keywords(args)
        dtype = None if np.asarray(x).dtype == np.float64 else x.dtype
        if rounding_seed is not None:  # a random run's stages draw as they go: nothing to keep
            return layer_forward(x, **keywords, dtype=dtype, rounding_seed=rounding_seed, output=output, exact=exact)
        key = str(np.asarray(x).dtype)
        kept = self._forwards.get(key)
        if kept is not None and _same_arrays(kept[0], args):
            return kept[1]
        state = layer_forward(x, **keywords, dtype=dtype)
        self._forwards[key] = (tuple(np.array(a, copy=True) for a in args), state)
        return state

    @repeats_at_once
    def reference(self, *args, rounding_seed=None) -> np.ndarray:
        """The float64 oracle of these arguments (the naive computation when they are not float64).

        ``rounding_seed``: the naive computation with random rounding (:mod:`xattn.numerics.naive`;
        a tuple of seeds: the list of those runs).
        """
        if isinstance(rounding_seed, tuple):
            x, keywords = self._keywords(args)
            exact = {}  # the chunks' shared products
            chunks = seed_chunks(rounding_seed, x, keywords["kv"], keywords["wq"])
            outs = run_chunks(lambda chunk: forward_output(self._forward(args, chunk, exact=exact)), chunks)
            return [out for chunk_outs in outs for out in chunk_outs]
        return forward_output(self._forward(args, rounding_seed))

    @repeats_at_once
    def reference_vjp(self, *args, cotangent, rounding_seed=None) -> tuple[np.ndarray, ...]:
        """The float64 gradients of ⟨out, cotangent⟩ for every argument, in argument order.

        A tuple of seeds gives the list of those random-rounding runs, each holding only the
        gradients small enough to need repeats (None for the others).
        """
        if isinstance(rounding_seed, tuple):
            x, keywords = self._keywords(args)
            weights = [keywords[name] for name in ("wq", "wk", "wv", "wo")]
            biases = [keywords.get(name) for name in BIASES]
            wanted = repeated_gradients(x, keywords["kv"], weights, biases)
            exact = {}  # the chunks' shared products

            def run(chunk):
                state = self._forward(args, chunk, output="wo" in wanted, exact=exact)
                return layer_backward(state, cotangent, cross=self.cross, wanted=wanted)

            chunks = seed_chunks(rounding_seed, x, keywords["kv"], keywords["wq"])
            runs = []
            for chunk, grads in zip(chunks, run_chunks(run, chunks)):
                runs += [tuple(grads[name][index] if name in grads else None for name in self.names)
                         for index in range(len(chunk))]
            return runs
        grads = layer_backward(self._forward(args, rounding_seed), cotangent, cross=self.cross)
        return tuple(grads[name] for name in self.names)


def _same_arrays(kept, args) -> bool:
    return len(kept) == len(args) and all(
        np.shape(a) == b.shape and np.asarray(a).dtype == b.dtype and np.array_equal(a, b) for a, b in zip(args, kept))


def layer_function(layer, *, causal=None, key_lengths=None, cross=False) -> LayerFunction:
    """``layer`` as a :class:`LayerFunction` (see there)."""
    return LayerFunction(layer, causal=causal, key_lengths=key_lengths, cross=cross)


def check_layers(layer_a, layer_b, x, kv=None, *, causal=None, key_lengths=None, grad=True, names=None,
                 rtol=None, atol=None):
    """Do two layers (after :func:`xattn.port_weights`) compute the same outputs and gradients?

    ``x`` (B,T,E) and ``kv`` (B,S,E) are NumPy arrays in the run dtype; ``causal=None`` takes an
    xattn layer's own setting (else no mask), ``key_lengths`` (B,) pads keys. Both layers must hold the
    same weights bit for bit (ValueError naming the first that differs otherwise); then both run as
    :class:`LayerFunction` on those very bits against the float64 oracles, and with ``grad`` the
    gradients of ⟨out, C⟩ with respect to x (and kv) and every weight get rows of their own.
    Returns :class:`xattn.porting.check.DriftReport`; ``report.assert_ok()`` raises with the table.
    """
    from xattn.porting.check import check_port

    cross = kv is not None
    fn_a = LayerFunction(layer_a, causal=causal, key_lengths=key_lengths, cross=cross)
    fn_b = LayerFunction(layer_b, causal=causal, key_lengths=key_lengths, cross=cross)
    if causal is None:  # an xattn layer's own setting (fixed when built) decides for both
        fixed = [fn.causal for fn in (fn_a, fn_b) if fn.config.kind in XATTN_KINDS]
        if fixed:
            fn_a = LayerFunction(layer_a, causal=fixed[0], key_lengths=key_lengths, cross=cross)
            fn_b = LayerFunction(layer_b, causal=fixed[0], key_lengths=key_lengths, cross=cross)
    if fn_a.causal != fn_b.causal:
        raise ValueError(f"causal: expected both layers to mask alike; got {fn_a.__name__} causal={fn_a.causal},"
                         f" {fn_b.__name__} causal={fn_b.causal}")
    if fn_a.weight_names != fn_b.weight_names:
        raise ValueError(f"bias: expected both layers with or without biases; got {fn_a.__name__}"
                         f" {fn_a.config.bias}, {fn_b.__name__} {fn_b.config.bias}")
    weights = fn_a.weights()
    for name, mine, theirs in zip(fn_a.weight_names, weights, fn_b.weights()):
        if mine.shape != theirs.shape or mine.dtype != theirs.dtype or not np.array_equal(mine, theirs):
            raise ValueError(
                f"{name}: expected {fn_b.__name__} to hold {fn_a.__name__}'s weights bit for bit; they differ"
                f" (shapes {mine.shape} and {theirs.shape}). Port them first: xattn.port_weights(layer_a, layer_b)"
            )
    inputs = (x, kv, *weights) if cross else (x, *weights)
    return check_port(
        fn_a, fn_b, *inputs, reference=fn_a.reference, grad=grad, grad_reference=fn_a.reference_vjp,
        names=names or (fn_a.__name__, fn_b.__name__), frameworks=(fn_a.framework, fn_b.framework),
        rtol=rtol, atol=atol,
    )
