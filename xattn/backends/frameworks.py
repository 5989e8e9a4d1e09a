"""Every per-framework fact outside the attention code: one descriptor and one adapter ("side") each.

A :class:`Framework` is what xattn knows of a framework without importing it: its import name, the
pip extra that installs it, the module of its attention variants, and the top-level modules that
belong to it (what :func:`xattn.porting.infer.infer_framework` looks for in a user's code). A *side*
(:class:`JaxSide`, :class:`TorchSide`) is what the comparator and the porting checks need of it at
run time: placing inputs on a device (through :mod:`xattn.bridge`), waiting for results, thread
counts, the numerics switches (matmul precision, x64) set for a run and restored after it, calling
a function and its vector-Jacobian product, and notes on what it chose (torch's SDPA kernel). Each
side imports its framework in ``__init__``; importing this module imports none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import warnings

from xattn import _compat
from xattn._environ import available_cores


@dataclasses.dataclass(frozen=True)
class Framework:
    """What xattn knows of one framework without importing it."""

    #: The backend's name, which is also the framework's import name.
    name: str
    #: The pip extra that installs it: ``pip install 'xattn[<extra>]'``.
    extra: str
    #: The module of its attention variants (a :class:`xattn.backends.protocol.Backend`).
    implementation: str
    #: Top-level modules whose objects take this framework's arrays (the framework's own and its module libraries).
    roots: tuple[str, ...]

    @property
    def install(self) -> str:
        return f"pip install 'xattn[{self.extra}]'"


FRAMEWORKS = {
    "jax": Framework("jax", "jax", "xattn.backends.jax_attention", ("jax", "jaxlib", "flax", "equinox")),
    "torch": Framework("torch", "torch", "xattn.backends.torch_attention", ("torch",)),
}

#: Framework of each root module: ``"flax"`` -> ``"jax"``.
ROOTS = {root: framework.name for framework in FRAMEWORKS.values() for root in framework.roots}

#: matmul_precision choices; ``default`` leaves each framework's own setting untouched.
MATMUL_PRECISIONS = ("highest", "high", "default")
#: device choices; ``auto`` is cuda when every selected framework sees one.
DEVICES = ("cpu", "cuda", "auto")


def request_xla_threads(threads: int) -> bool:
    """Ask XLA's CPU client for ``threads`` intra-op threads; True if the request can take effect.

    XLA reads XLA_FLAGS once, when JAX starts, and offers one switch: ``--xla_cpu_multi_thread_eigen=false``
    (one thread). So only ``threads == 1`` before JAX is imported can be honoured; otherwise XLA
    keeps a thread per available core and the run records the mismatch.
    """
    import sys

    if "jax" in sys.modules or threads != 1:
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if "--xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    return True


class JaxSide:
    """JAX: arrays via the bridge, ``block_until_ready``, XLA's thread pool, jax.config flags, jax.vjp."""

    name = "jax"
    #: XLA fixes its intra-op thread count when JAX starts; a run can only record it.
    threads_fixed = True
    #: ``block_until_ready`` waits for the arrays it is given: a timed block keeps its outputs for it.
    sync_needs_outputs = True

    def __init__(self):
        import jax

        self.jax = jax

    def has_cuda(self) -> bool:
        try:
            return bool(self.jax.devices("gpu"))
        except RuntimeError:
            return False

    def device(self, kind: str):
        """The ``jax.Device`` for ``"cpu"`` or ``"cuda"``; ValueError naming what JAX sees otherwise."""
        platform = "gpu" if kind == "cuda" else kind
        try:
            return self.jax.devices(platform)[0]
        except RuntimeError:
            seen = ", ".join(str(d) for d in self.jax.devices())
            raise ValueError(
                f"device: expected a {kind} device for jax; got only {seen}. Install jax[cuda12] or run on the cpu"
            ) from None

    def put(self, arrays, device):
        from xattn.bridge import to_jax

        return tuple(None if a is None else to_jax(a, device=device) for a in arrays)

    def sync(self, outputs) -> None:
        self.jax.block_until_ready(outputs)

    def intra_op_threads(self) -> int:
        """Threads XLA's CPU client computes with: fixed when JAX starts, from XLA_FLAGS or the cores."""
        if re.search(r"--xla_cpu_multi_thread_eigen=(false|0)", os.environ.get("XLA_FLAGS", "")):
            return 1
        return available_cores()

    def threads(self) -> dict:
        return {"xla_cpu_intra_op": self.intra_op_threads()}

    def numerics(self) -> dict:
        config = self.jax.config
        return {
            "jax_default_matmul_precision": config.jax_default_matmul_precision,
            "jax_enable_x64": _compat.jax_x64_enabled(),
            "jax_default_backend": self.jax.default_backend(),
        }

    def devices(self) -> list[str]:
        return [f"{d.platform}:{d.id} {getattr(d, 'device_kind', '')}".strip() for d in self.jax.devices()]

    def x64_off(self) -> bool:
        """Whether a float64 run needs xattn to turn jax_enable_x64 on."""
        return not _compat.jax_x64_enabled()

    @contextlib.contextmanager
    def settings(self, *, matmul_precision: str, x64: bool, threads: int | None = None):
        """jax_default_matmul_precision and jax_enable_x64 for the block, restored after (``threads``: fixed)."""
        config = self.jax.config
        before = config.jax_default_matmul_precision
        with contextlib.ExitStack() as stack:
            if x64 and not _compat.jax_x64_enabled():
                stack.enter_context(_compat.jax_x64(True))
            if matmul_precision != "default":
                config.update("jax_default_matmul_precision", matmul_precision)
                stack.callback(config.update, "jax_default_matmul_precision", before)
            yield

    def notes(self, variant: str, spec, x) -> tuple[str, ...]:
        """What the framework chose for ``variant`` that the report should name: nothing for JAX."""
        return ()

    def call(self, fn, args):
        return fn(*args)

    def vjp(self, fn, args, wrt, cotangent) -> list:
        """Gradients of ⟨fn(*args), C⟩ for ``args[i]``, i in ``wrt``; ``cotangent(out)`` gives C's tree."""
        args = list(args)

        def of_differentiated(*values):
            full = list(args)
            for index, value in zip(wrt, values):
                full[index] = value
            return fn(*full)

        out, pullback = self.jax.vjp(of_differentiated, *[args[i] for i in wrt])
        return list(pullback(cotangent(out)))

    @contextlib.contextmanager
    def float64(self):
        """The block may compute in float64 (x64 on), restored after."""
        with _compat.jax_x64(True):
            yield


class TorchSide:
    """torch: tensors via the bridge, ``torch.cuda.synchronize``, intra-op threads, matmul precision, autograd."""

    name = "torch"
    threads_fixed = False
    #: CPU calls return finished and ``torch.cuda.synchronize`` waits for the whole device: no outputs needed.
    sync_needs_outputs = False

    def __init__(self):
        import torch

        self.torch = torch

    def has_cuda(self) -> bool:
        return bool(self.torch.cuda.is_available())

    def device(self, kind: str):
        if kind == "cuda" and not self.has_cuda():
            raise ValueError(
                f"device: expected a cuda device for torch; got torch.cuda.is_available() False"
                f" (torch {self.torch.__version__}). Install a CUDA build of torch or run on the cpu"
            )
        return self.torch.device(kind)

    def put(self, arrays, device):
        from xattn.bridge import to_torch

        return tuple(None if a is None else to_torch(a, device=device) for a in arrays)

    def sync(self, outputs) -> None:
        if self.torch.cuda.is_available() and self.torch.cuda.is_initialized():
            self.torch.cuda.synchronize()

    def intra_op_threads(self) -> int:
        return self.torch.get_num_threads()

    def threads(self) -> dict:
        return {
            "torch_intra_op": self.torch.get_num_threads(),
            "torch_inter_op": self.torch.get_num_interop_threads(),
        }

    def numerics(self) -> dict:
        torch = self.torch
        cuda = torch.backends.cuda
        with warnings.catch_warnings():  # allow_tf32 reads are deprecated in favour of fp32_precision
            warnings.simplefilter("ignore")
            flags = {
                "float32_matmul_precision": torch.get_float32_matmul_precision(),
                "cuda.matmul.allow_tf32": bool(cuda.matmul.allow_tf32),
                "cudnn.allow_tf32": bool(torch.backends.cudnn.allow_tf32),
                "cuda.matmul.allow_fp16_reduced_precision_reduction": bool(
                    cuda.matmul.allow_fp16_reduced_precision_reduction
                ),
                "cuda.matmul.allow_bf16_reduced_precision_reduction": bool(
                    cuda.matmul.allow_bf16_reduced_precision_reduction
                ),
            }
        flags["sdpa_enabled"] = {
            name: bool(getattr(cuda, f"{name}_sdp_enabled")())
            for name in ("flash", "mem_efficient", "math", "cudnn")
            if hasattr(cuda, f"{name}_sdp_enabled")
        }
        flags["deterministic_algorithms"] = bool(torch.are_deterministic_algorithms_enabled())
        return flags

    def devices(self) -> list[str]:
        names = ["cpu"]
        if self.has_cuda():
            names += [f"cuda:{i} {self.torch.cuda.get_device_name(i)}" for i in range(self.torch.cuda.device_count())]
        return names

    def x64_off(self) -> bool:
        return False

    def sdpa_kernel(self, q_BHTD, k_BHSD, v_BHSD, mask=None, causal=False) -> str | None:
        """The fused kernel torch's SDPA dispatcher picks for these tensors (a private query; None if gone)."""
        try:
            from torch.nn.attention import SDPBackend

            choice = self.torch._fused_sdp_choice(q_BHTD, k_BHSD, v_BHSD, mask, 0.0, causal)
            return SDPBackend(choice).name.lower()
        except Exception:  # torch._fused_sdp_choice is private: report nothing rather than fail
            return None

    def notes(self, variant: str, spec, x) -> tuple[str, ...]:
        """What torch chose for ``variant`` on ``spec`` (inputs like ``x``): the SDPA kernel of ``sdpa``."""
        if variant != "sdpa":
            return ()
        torch = self.torch
        q = torch.empty(spec.batch, spec.heads, spec.q_len, spec.head_dim, dtype=x.dtype, device=x.device)
        kv = torch.empty(spec.batch, spec.heads, spec.kv_len, spec.head_dim, dtype=x.dtype, device=x.device)
        mask = None
        if spec.key_lengths is not None:
            mask = torch.ones(spec.batch, 1, spec.q_len, spec.kv_len, dtype=torch.bool, device=x.device)
        kernel = self.sdpa_kernel(q, kv, kv, mask, spec.causal and mask is None)
        return (f"SDPA kernel: {kernel}",) if kernel else ()

    @contextlib.contextmanager
    def settings(self, *, matmul_precision: str, x64: bool = False, threads: int | None = None):
        """float32 matmul precision and intra-op threads for the block, restored after; autograd off."""
        torch = self.torch
        precision_before, threads_before = torch.get_float32_matmul_precision(), torch.get_num_threads()
        try:
            if matmul_precision != "default":
                torch.set_float32_matmul_precision(matmul_precision)
            if threads is not None and threads != threads_before:
                torch.set_num_threads(threads)
            with torch.no_grad():
                yield
        finally:
            torch.set_float32_matmul_precision(precision_before)
            if torch.get_num_threads() != threads_before:
                torch.set_num_threads(threads_before)

    def call(self, fn, args):
        with self.torch.no_grad():
            return fn(*args)

    def vjp(self, fn, args, wrt, cotangent) -> list:
        """Gradients of ⟨fn(*args), C⟩ for ``args[i]``, i in ``wrt`` (zeros where unused); ``cotangent(out)``: C."""
        torch = self.torch
        args = list(args)
        for index in wrt:
            args[index] = args[index].detach().requires_grad_(True)
        with torch.enable_grad():
            out = fn(*args)
        pairs = [(leaf, c) for leaf, c in zip(_leaves(out), _leaves(cotangent(out)))]
        grads = torch.autograd.grad([leaf for leaf, _ in pairs], [args[i] for i in wrt],
                                    grad_outputs=[c for _, c in pairs], allow_unused=True)
        return [torch.zeros_like(args[i]) if g is None else g.detach() for i, g in zip(wrt, grads)]

    @contextlib.contextmanager
    def float64(self):
        yield


def _leaves(tree) -> list:
    from xattn.bridge.trees import leaves

    return [leaf for _, leaf in leaves(tree)]


_SIDES = {"jax": JaxSide, "torch": TorchSide}
_made: dict[str, object] = {}


def side(name: str):
    """The adapter of framework ``name`` (its framework must import: see xattn.backends.registry)."""
    if name not in _made:
        _made[name] = _SIDES[name]()
    return _made[name]
