"""The rules the bridge's paths share: refusal messages, dtype, layout, alignment and device checks.

Framework-free at import; the functions that need a framework import it when called.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from xattn import _compat
from xattn.errors import BridgeError

#: dtypes JAX stores in 32 bits unless jax_enable_x64 is on (name -> what JAX would make of it).
X64_NAMES = {"float64": "float32", "int64": "int32", "uint64": "uint32", "complex128": "complex64"}
#: XLA aliases a host buffer only when it starts on this boundary (bytes).
XLA_HOST_ALIGNMENT = 64
NUMPY_BITS = {1: np.uint8, 2: np.uint16}
_X64_FIX = (
    "Run jax.config.update('jax_enable_x64', True) (or set JAX_ENABLE_X64=1) before converting, or"
    " cast it to {narrow} yourself if 32 bits are what you want"
)


def refuse(call: str, problem: str, fix: str) -> BridgeError:
    return BridgeError(f"{call}: {problem}. {fix}.")


def call_name(function: str, copy) -> str:
    return f"{function}(copy={copy})" if copy is not None else function


@functools.cache
def ml_names() -> frozenset[str]:
    return _compat.ml_dtypes_names()


@functools.cache
def sub_byte_names() -> frozenset[str]:
    """ml_dtypes kinds narrower than a byte (int4, uint2, float4_e2m1fn, float6_e2m3fn...).

    NumPy (ml_dtypes) and torch keep one value per byte; JAX stores them its own way, so every
    conversion into or out of JAX copies them, and DLPack has no code that says "one per byte".
    """
    import ml_dtypes

    def bits(name: str) -> int:
        for info in (ml_dtypes.iinfo, ml_dtypes.finfo):
            try:
                return info(getattr(ml_dtypes, name)).bits
            except (ValueError, TypeError):
                continue
        return 8
    return frozenset(name for name in ml_names() if bits(name) < 8)


#: torch's integer "shell" dtypes (torch.int1 ... torch.uint7): one value per byte, no kernels at all
#: (clone, copy and .to() raise NotImplementedError), so the bridge copies them as bytes.
_TORCH_SHELL = re.compile(r"u?int[1-7]")


def torch_dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def torch_shell(dtype) -> bool:
    return _TORCH_SHELL.fullmatch(torch_dtype_name(dtype)) is not None


def torch_clone(tensor, **options):
    """``tensor.clone(**options)``, also for the shell dtypes torch cannot clone (copied as bytes)."""
    if torch_shell(tensor.dtype):
        import torch

        return tensor.view(torch.uint8).clone(**options).view(tensor.dtype)
    return tensor.clone(**options)


def check_jax_dtype(call: str, name: str) -> None:
    """Refuses dtypes JAX lacks, and 64-bit ones it would silently narrow (jax_enable_x64 off)."""
    problem = _compat.jax_dtype_problem(name)
    if problem is not None:
        raise refuse(call, f"{problem}; versions here: {_compat.loaded_versions()}", cast_advice(name))
    narrow = X64_NAMES.get(name)
    if narrow is not None and not _compat.jax_x64_enabled():
        raise refuse(
            call,
            f"expected jax_enable_x64 for {name} data; got it disabled, and JAX would silently store it"
            f" as {narrow}",
            _X64_FIX.format(narrow=narrow),
        )


def compact_layout(shape, strides) -> bool:
    """Whether ``strides`` (in elements) are row-major or a permutation of it: what XLA can alias.

    Dimensions of size 1 are ignored (their stride is never used); sliced, stepped, broadcast and
    negative strides are not compact.
    """
    dims = sorted((stride, size) for size, stride in zip(shape, strides) if size != 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def row_major_strides(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def jax_takes_layout(shape, strides) -> bool:
    """Whether JAX can alias a buffer with these strides (in elements) and then compute on it.

    Row-major: always. A permutation of it (transposed, Fortran order) or odd strides on size-1
    dimensions: where the JAX in use computes on such imports (see _compat). Slices, steps,
    broadcasts and negative strides: never.
    """
    if tuple(strides) == row_major_strides(shape):
        return True
    return compact_layout(shape, strides) and _compat.jax_computes_on_strided_imports()


def numpy_element_strides(array: np.ndarray) -> tuple[int, ...] | None:
    """Strides in elements, or None where a stride is not a whole number of elements."""
    itemsize = array.dtype.itemsize
    if any(stride % itemsize for stride in array.strides):
        return None
    return tuple(stride // itemsize for stride in array.strides)


def _aligned(pointer: int) -> bool:
    return pointer % XLA_HOST_ALIGNMENT == 0


def check_zero_copy(call: str, result, source_pointer: int, size: int) -> None:
    """Under copy=False: prove by pointer identity that the JAX result aliases the source."""
    if size == 0 or _compat.jax_buffer_pointer(result) == source_pointer:
        return
    name = result.dtype.name
    if name in sub_byte_names():  # JAX 0.10.2 copies these whatever their alignment
        raise refuse(call, f"JAX copied the {name} buffer instead of aliasing it: it keeps sub-byte kinds in"
                     " buffers of its own", "Pass copy=None to accept the exact copy")
    if not _aligned(source_pointer):
        raise alignment_refusal(call, source_pointer)
    raise refuse(call, "JAX copied the buffer instead of aliasing it", "Pass copy=None to accept the exact copy")


def alignment_refusal(call: str, pointer: int) -> BridgeError:
    return refuse(
        call,
        f"XLA aliases a host buffer only when it starts on a {XLA_HOST_ALIGNMENT}-byte boundary; this one"
        f" starts at {pointer:#x} ({pointer % XLA_HOST_ALIGNMENT} bytes past one), so sharing it is impossible",
        "Pass copy=None for an exact copy, or allocate the array on its own (torch.empty, or a fresh NumPy"
        " array copied with xattn.to_jax(..., copy=True)) rather than slicing it at an offset",
    )


def layout_refusal(call: str, shape, strides) -> BridgeError:
    """``strides`` in elements (None: not a whole number of elements)."""
    if strides is not None and compact_layout(shape, strides):
        return refuse(
            call,
            f"this JAX fails every operation on a zero-copy import that is not row-major (shape {tuple(shape)},"
            f" strides {tuple(strides)} elements: XLA's 'Unexpected layout override'; {_compat.loaded_versions()})",
            "Pass copy=None for an exact row-major copy, or upgrade JAX (0.10 computes on such imports)",
        )
    return refuse(
        call,
        f"XLA can alias only compact buffers (row-major or a transposition of it); got shape {tuple(shape)}"
        f" with strides {strides} (elements): a slice, step, broadcast or reversed view",
        "Pass copy=None for an exact compact copy, or make it contiguous yourself",
    )


def version_refusal(call: str, name: str, reader: str, error: BaseException | None = None) -> BridgeError:
    if error is None:
        problem = f"{reader} has no {name} dtype"
    else:
        problem = f"{reader}'s DLPack has no code for {name} ({error})"
    return refuse(call, f"{problem}; versions here: {_compat.loaded_versions()}", cast_advice(name))


def cast_advice(name: str) -> str:
    """What to do with data of dtype ``name`` that a framework cannot take as it is."""
    if name.startswith("float8"):
        return ("Upgrade the framework that lacks it (DLPack got float8 codes in v1.1: JAX 0.4.38 has none, JAX"
                " 0.10 has them), or cast to a dtype both share first")
    if _TORCH_SHELL.fullmatch(name) and name not in ml_names():
        return (f"Nothing outside torch holds {name}; x.view(torch.uint8) hands over its bytes as they are,"
                " one value per byte")
    if name in sub_byte_names() or _TORCH_SHELL.fullmatch(name):
        wider = "float32" if name.startswith("float") else "uint8" if name.startswith("uint") else "int8"
        return f"Cast it to {wider} first, which holds every {name} value exactly"
    if name in ("float128", "complex256"):
        return "Cast it to float64 (complex128 for complex256) first, which rounds it to 64-bit precision"
    return "Cast it to a dtype both frameworks share first"


def same_dtype_or_refuse(call: str, source: str, result, result_name: str):
    """``result``, or a BridgeError when a conversion came out in another dtype than ``source``."""
    if result_name == source:
        return result
    raise refuse(call, f"expected the {source} data to arrive as {source}; got {result_name} from the framework"
                 f" ({_compat.loaded_versions()}), which would change its values' meaning", cast_advice(source))


def read_only_refusal(call: str) -> BridgeError:
    return refuse(
        call,
        "expected a writable NumPy array; got a read-only one, and torch has no read-only tensors, so a"
        " shared tensor would let torch write into memory NumPy promised not to change",
        "Pass copy=None for an exact copy, or make it writable yourself (np.array(x)) if sharing is what you mean",
    )


def wrap(call: str, error: BaseException) -> BridgeError:
    versions = _compat.loaded_versions()
    return BridgeError(f"{call}: the conversion failed with {type(error).__name__}: {error} ({versions})")


def check_jax_live(call: str, x) -> None:
    if x.is_deleted():
        raise refuse(call, "the JAX array was deleted or donated (x.is_deleted() is True), so its buffer is gone",
                     "Keep a live reference, and don't donate it (donate_argnums) if you still need it")


def jax_single_device(x) -> bool:
    return type(x.sharding) is _compat.jax_single_device_sharding_type() or len(x.sharding.device_set) == 1


def sharded_refusal(call: str, x) -> BridgeError:
    count = len(x.sharding.device_set)
    return refuse(
        call,
        f"the JAX array is spread over {count} devices ({type(x.sharding).__name__}); DLPack exports one"
        " buffer, and the bare protocol would silently hand over shard 0 alone",
        "Pass copy=None for an exact gathered host copy, or convert x.addressable_shards[i].data one by one",
    )


# ------------------------------------------------------------------------------------------ devices


def torch_moved(call: str, tensor, target):
    """``tensor.to(target)``, or a BridgeError when torch cannot reach that device here."""
    try:
        if torch_shell(tensor.dtype):
            import torch

            return tensor.view(torch.uint8).to(target).view(tensor.dtype)
        return tensor.to(target)
    except (RuntimeError, AssertionError) as error:
        raise refuse(call, f"torch cannot reach device {target} here ({error})",
                     "Pass device='cpu' (or a device torch lists), or leave device=None") from None


def torch_placed(call: str, tensor, device, copy, copied: bool, held_on: str):
    """How every path into torch ends: ``tensor`` on ``device`` and, under ``copy=True``, a copy.

    ``device=None`` leaves the tensor where it is; a tensor elsewhere is moved (a copy), or refused
    under ``copy=False``. ``copied`` says whether the path has already copied it, so that
    ``copy=True`` clones only when nothing did. ``held_on`` names where the buffer sits, for the
    refusal ("the tensor is on cuda:0").
    """
    import torch

    if device is not None and not same_torch_device(tensor.device, torch.device(device)):
        if copy is False:
            raise refuse(call, f"{held_on}, not {device}", "Pass copy=None to copy it there")
        return torch_moved(call, tensor, device)
    if copy is True and not copied:
        tensor = torch_clone(tensor)  # clone keeps autograd: the copy's gradient flows back to the source
    return tensor


def same_torch_device(actual, wanted) -> bool:
    return actual.type == wanted.type and (wanted.index is None or wanted.index == actual.index)


def jax_device_of(device):
    """A JAX device from a jax.Device/Sharding (as is) or a string: "cpu", "gpu", "cuda:1", "tpu:0"."""
    if device is None or not isinstance(device, str):
        return device
    import jax

    platform, _, index = device.partition(":")
    platform = {"cuda": "gpu", "rocm": "gpu"}.get(platform, platform)
    try:
        return jax.devices(platform)[int(index or 0)]
    except (RuntimeError, IndexError, ValueError) as error:
        raise BridgeError(f"to_jax: expected a device JAX can reach; got {device!r} ({error}). Pass one of"
                          f" {jax.devices()} or 'cpu'.") from None
