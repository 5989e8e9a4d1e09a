"""What a backend must offer, written down: :class:`Backend` (its attention code) and :class:`Side` (the rest).

A backend is a module (``xattn.backends.jax_attention``, ``xattn.backends.torch_attention``) that
satisfies :class:`Backend` structurally, plus a side class in :mod:`xattn.backends.frameworks`
that satisfies :class:`Side`, and a :class:`~xattn.backends.frameworks.Framework` descriptor
naming both. ``tests/test_backends.py`` checks every registered backend against both protocols.
Shape letters as in :mod:`xattn.contract.spec`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping, Protocol, runtime_checkable


@runtime_checkable
class Backend(Protocol):
    """A framework's implementations of the attention contract."""

    #: variant name -> one-line description
    VARIANTS: Mapping[str, str]

    def build(self, variant: str, *, causal: bool, scale: float, padded: bool) -> Callable:
        """``fn(x, kv, wq, wk, wv, wo, key_lengths)`` -> out (B,T,E); ``fn.compile(*args)`` compiles ahead."""

    def build_fullrank(self, *, causal: bool, scale: float, padded: bool) -> Callable:
        """The seed's full-rank model ``fn(x, kv, wq, wk, wh, key_lengths)``."""

    def build_bmm(self, equation: str) -> Callable:
        """The seed's batched-GEMM experiment ``fn(m1, m2)`` for an einsum equation."""

    def as_arrays(self, *arrays) -> tuple:
        """NumPy or any framework's arrays as this framework's, through the bridge."""

    def as_lengths(self, key_lengths) -> Any:
        """Key lengths (B,) as this framework's int32 array."""

    def mask_BTS(self, T: int, S: int, causal: bool, lengths_B, *device) -> Any:
        """Where query t may attend key s (broadcasts to (B,T,S)); None when nothing is masked (torch: + device)."""

    def core_BTGRD(self, Q_BTGRD, K_BSGD, V_BSGD, valid_BTS, scale: float) -> Any:
        """Softmax attention of projected heads: O (B,T,G,R,D); what the layers build on."""

    def einsum_attention(self, x, kv, wq, wk, wv, wo, lengths, *, causal, scale, bq=None, bk=None, bv=None,
                         bo=None) -> Any:
        """The ``einsum`` variant, with the layers' optional biases: xattn's Flax and torch layers."""


@runtime_checkable
class Side(Protocol):
    """Everything the comparator and the porting checks need of a framework beyond its attention code."""

    name: str
    #: Whether its intra-op thread count is fixed when the framework starts (XLA) or settable (torch).
    threads_fixed: bool
    #: Whether ``sync`` needs the outputs to wait for (else a timed block drops each one as it goes).
    sync_needs_outputs: bool

    def has_cuda(self) -> bool: ...

    def device(self, kind: str) -> Any:
        """The framework's device for ``"cpu"``/``"cuda"``; ValueError naming what it sees otherwise."""

    def devices(self) -> list[str]: ...

    def put(self, arrays, device) -> tuple:
        """NumPy arrays (or None) on ``device`` as this framework's arrays."""

    def sync(self, outputs) -> None:
        """Wait until ``outputs`` are computed."""

    def intra_op_threads(self) -> int: ...

    def threads(self) -> dict: ...

    def numerics(self) -> dict:
        """Every flag of this framework that changes numerics, for the environment block."""

    def x64_off(self) -> bool:
        """Whether a float64 run needs xattn to turn 64-bit support on for the run."""

    def settings(self, *, matmul_precision: str, x64: bool,
                 threads: int | None = None) -> contextlib.AbstractContextManager:
        """The run's numerics settings for a block, restored after."""

    def notes(self, variant: str, spec, x) -> tuple[str, ...]:
        """What the framework chose for a variant that a report should name (e.g. a fused kernel)."""

    def call(self, fn, args) -> Any:
        """``fn(*args)`` as a forward pass (no autograd bookkeeping)."""

    def vjp(self, fn, args, wrt, cotangent) -> list:
        """Gradients of ⟨fn(*args), C⟩ for the arguments at ``wrt``; ``cotangent(out)`` gives C's tree."""

    def float64(self) -> contextlib.AbstractContextManager:
        """A block in which the framework may compute in float64."""
