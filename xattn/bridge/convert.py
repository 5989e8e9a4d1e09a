"""The DLPack bridge: NumPy, JAX and torch arrays converted so that every framework reads the same bits.

``to_torch``, ``to_jax`` and ``to_numpy`` take an array of any of the three frameworks; the
``tree_*`` versions map them over dicts, lists and tuples (a ``state_dict``, say; the walk and its
error paths are :mod:`xattn.bridge.trees`). ``copy``:

- ``None`` (default): zero-copy where the consumer can take the buffer as it is, else an exact copy;
- ``False``: zero-copy, or a :class:`~xattn.errors.BridgeError` saying why not and what to do;
- ``True``: an independent copy.

Nothing changes silently: not a value, a dtype, a device, nor autograd. Every case that cannot be
converted exactly (float64 into JAX without x64, a tensor that requires grad, a sharded or deleted
JAX array, a device the target cannot reach...) has one outcome, listed in ``docs/bridge.md``.

Zero-copy means aliasing: an in-place torch op on ``to_torch(jax_array)`` changes the JAX array.
Pass ``copy=True`` when you will write.

Importing this module imports no framework: an array's framework is told from ``sys.modules``
(an array of a framework that was never imported cannot exist), and each conversion imports only
the frameworks at its two ends.
"""

from __future__ import annotations

import importlib
import sys

import numpy as np

from xattn import _compat
from xattn.bridge import paths, rules, trees
from xattn.errors import BackendUnavailableError, BridgeError

NUMPY, JAX, TORCH = "numpy", "jax", "torch"
FRAMEWORKS = (NUMPY, JAX, TORCH)
# Kinds that are arrays in a user's eyes but never get converted as they are.
_NUMPY_SCALAR, _MASKED, _TRACER, _OTHER = "numpy scalar", "masked", "tracer", "other"

_KIND_BY_TYPE: dict[type, str] = {np.ndarray: NUMPY}
_single_device_sharding: type | None = None  # jax.sharding.SingleDeviceSharding, once JAX is seen
#: The dtypes whose DLPack export the other framework reads as the same dtype, every supported version
#: alike: only these take the fast paths. 64-bit data (narrowed by JAX without x64), float8 (no DLPack
#: code in JAX 0.4.38) and the sub-byte kinds (torch.int4 arrives in JAX as int8) take the full path.
_FAST_NAMES = ("float16", "bfloat16", "float32", "int8", "int16", "int32", "uint8", "uint16", "uint32", "bool",
               "complex64")
_torch_fast: frozenset = frozenset()  # those dtypes of torch, once torch is seen
_jax_sub_byte: frozenset = frozenset()  # NumPy dtypes of the sub-byte kinds, once JAX is seen
_torch = None  # the torch module, once a conversion to torch has imported it
_jax_from_dlpack = None  # jax.dlpack.from_dlpack, once a conversion to JAX has imported it


def framework_of(x) -> str | None:
    """``"numpy"``, ``"jax"``, ``"torch"`` or ``None``; imports nothing."""
    kind = _kind(x)
    return kind if kind in FRAMEWORKS else None


def _kind(x) -> str:
    cls = type(x)
    kind = _KIND_BY_TYPE.get(cls)
    if kind is None:
        kind = _KIND_BY_TYPE[cls] = _classify(cls)
    return kind


def _classify(cls: type) -> str:
    global _single_device_sharding, _torch_fast, _jax_sub_byte
    if issubclass(cls, np.ma.MaskedArray):
        return _MASKED
    if issubclass(cls, np.ndarray):
        return NUMPY
    if issubclass(cls, np.generic):
        return _NUMPY_SCALAR
    torch = sys.modules.get("torch")
    if torch is not None and issubclass(cls, torch.Tensor):
        _torch_fast = frozenset(getattr(torch, name) for name in _FAST_NAMES if hasattr(torch, name))
        return TORCH
    jax = sys.modules.get("jax")
    if jax is not None:
        if issubclass(cls, _compat.jax_tracer_type()):
            return _TRACER
        if issubclass(cls, jax.Array):
            _single_device_sharding = _compat.jax_single_device_sharding_type()
            _jax_sub_byte = frozenset(np.dtype(getattr(_ml_dtypes(), name)) for name in rules.sub_byte_names())
            return JAX
    return _OTHER


def _ml_dtypes():
    import ml_dtypes

    return ml_dtypes


def buffer_pointer(x) -> int:
    """Address of the first element of a NumPy, JAX (single-device) or torch array's buffer."""
    kind = _kind(x)
    if kind == TORCH:
        return x.data_ptr()
    if kind == JAX:
        return _compat.jax_buffer_pointer(x)
    if kind in (NUMPY, _MASKED):
        return x.__array_interface__["data"][0]
    raise TypeError(f"buffer_pointer: expected a NumPy, JAX or torch array; got {type(x).__name__}")


def _check_copy(function: str, copy):
    if copy is not None and not isinstance(copy, bool):
        raise TypeError(f"{function}: expected copy=None, False or True; got copy={copy!r}")
    return copy


def _prepared(function: str, x, kind: str, copy):
    """``(x, kind)`` with NumPy scalars made arrays; refuses what no path may convert."""
    if kind == _NUMPY_SCALAR:
        if copy is False:
            raise rules.refuse(rules.call_name(function, copy), "a NumPy scalar owns no buffer to share",
                               "Pass copy=None, or convert np.asarray(x) yourself")
        return np.asarray(x), NUMPY
    if kind == _MASKED:
        raise rules.refuse(function, "a NumPy masked array would lose its mask",
                           "Pass x.filled(fill_value) or x.data, whichever you mean")
    if kind == _TRACER:
        raise rules.refuse(
            function,
            f"expected a concrete JAX array; got a tracer ({type(x).__name__}) from inside jit, grad or vmap,"
            " which has no buffer",
            "Convert outside the transformation, or call out with jax.pure_callback",
        )
    if kind == _OTHER:
        raise TypeError(f"{function}: expected a NumPy, JAX or torch array; got {type(x).__name__}")
    return x, kind


def to_torch(x, *, copy: bool | None = None, device=None):
    """``x`` (NumPy, JAX or torch) as a torch tensor; see the module docstring for ``copy``.

    ``device``: anything ``torch.device`` takes; ``None`` keeps the buffer's own device (host for
    NumPy). A JAX array that requires a device move is copied (or refused under ``copy=False``).
    """
    kind = _KIND_BY_TYPE.get(type(x)) or _kind(x)
    if (kind == JAX and copy is None and device is None and type(x.sharding) is _single_device_sharding
            and x.dtype not in _jax_sub_byte):
        # The hot path (a model output on its way to torch): the bare protocol call plus three checks.
        try:
            return (_torch or _load_torch()).from_dlpack(x)
        except Exception:
            pass  # the full path below says what went wrong
    x, kind = _prepared("to_torch", x, kind, _check_copy("to_torch", copy))
    _torch or _load_torch()  # without torch: BackendUnavailableError naming the extra, not an ImportError
    if kind == TORCH:
        return _torch_to_torch(x, copy, device)
    result = paths.jax_to_torch(x, copy, device) if kind == JAX else paths.numpy_to_torch(x, copy, device)
    return rules.same_dtype_or_refuse(rules.call_name("to_torch", copy), x.dtype.name, result,
                                      rules.torch_dtype_name(result.dtype))


def to_jax(x, *, copy: bool | None = None, device=None):
    """``x`` (NumPy, JAX or torch) as a JAX array; see the module docstring for ``copy``.

    ``device``: a ``jax.Device``, a single-device ``Sharding``, or a string ("cpu", "gpu", "cuda:1");
    ``None`` keeps the buffer's own device (host for NumPy). 64-bit dtypes need jax_enable_x64.
    """
    kind = _KIND_BY_TYPE.get(type(x)) or _kind(x)
    if kind == TORCH and copy is None and device is None:
        # The hot path: a row-major tensor, which every supported JAX reads as it is. torch's __dlpack__
        # itself refuses grad, conj and sparse tensors, and JAX what it cannot read; the full path below
        # then says why. A neg view (exported silently un-negated) and a dtype outside _FAST_NAMES
        # (64-bit data narrowed without x64, int4 read as int8) would slip through, so they are checked here.
        try:
            if not x.is_neg() and x.dtype in _torch_fast and x.is_contiguous() and 1 not in x.shape:
                return (_jax_from_dlpack or _load_jax_from_dlpack())(x)
        except Exception:
            pass
    x, kind = _prepared("to_jax", x, kind, _check_copy("to_jax", copy))
    _jax_from_dlpack or _load_jax_from_dlpack()  # without JAX: BackendUnavailableError naming the extra
    if kind == JAX:
        return _jax_to_jax(x, copy, device)
    if kind == TORCH:
        result, source = paths.torch_to_jax(x, copy, device), rules.torch_dtype_name(x.dtype)
    else:
        result, source = paths.numpy_to_jax(x, copy, device), x.dtype.name
    return rules.same_dtype_or_refuse(rules.call_name("to_jax", copy), source, result, result.dtype.name)


def to_numpy(x, *, copy: bool | None = None):
    """``x`` (NumPy, JAX or torch) as a NumPy array; see the module docstring for ``copy``.

    A zero-copy view of a JAX array is read-only (JAX arrays are immutable); ``copy=True`` gives a
    writable one. bfloat16 and float8 arrive as ml_dtypes arrays sharing the same bits.
    """
    kind = _KIND_BY_TYPE.get(type(x)) or _kind(x)
    x, kind = _prepared("to_numpy", x, kind, _check_copy("to_numpy", copy))
    if kind == TORCH:
        result = paths.torch_to_numpy(x, copy)
        return rules.same_dtype_or_refuse(rules.call_name("to_numpy", copy), rules.torch_dtype_name(x.dtype), result,
                                          result.dtype.name)
    if kind == JAX:
        return paths.jax_to_numpy(x, copy)
    return np.array(x, copy=True, order="K") if copy else x


def _load_jax_from_dlpack():
    global _jax_from_dlpack
    _jax_from_dlpack = _import("jax.dlpack", "jax").from_dlpack
    return _jax_from_dlpack


def _load_torch():
    global _torch
    _torch = _import("torch", "torch")
    return _torch


def _import(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise BackendUnavailableError(
            f"the bridge needs {extra}, which could not be imported ({error})."
            f" Install it with: pip install 'xattn[{extra}]'"
        ) from None


def _torch_to_torch(x, copy, device):
    return rules.torch_placed(rules.call_name("to_torch", copy), x, device, copy, False, f"the tensor is on {x.device}")


def _jax_to_jax(x, copy, device):
    import jax
    import jax.numpy as jnp

    call = rules.call_name("to_jax", copy)
    rules.check_jax_live(call, x)
    target = rules.jax_device_of(device)
    if target is not None:
        wanted = target.device_set if isinstance(target, jax.sharding.Sharding) else {target}
        if set(x.sharding.device_set) != set(wanted):
            if copy is False:
                raise rules.refuse(call, f"the array is on {x.sharding.device_set}, not {target}",
                                   "Pass copy=None to copy it there")
            return jax.device_put(x, target)
    return jnp.array(x, copy=True) if copy else x


# --------------------------------------------------------------------------------------- pytrees


def tree_to_torch(tree, *, copy: bool | None = None, device=None):
    """``to_torch`` on every array in nested dicts, lists and tuples; other leaves are kept as they are."""
    return _tree_map("tree_to_torch", tree, lambda leaf: to_torch(leaf, copy=copy, device=device))


def tree_to_jax(tree, *, copy: bool | None = None, device=None):
    """``to_jax`` on every array in nested dicts, lists and tuples; other leaves are kept as they are."""
    return _tree_map("tree_to_jax", tree, lambda leaf: to_jax(leaf, copy=copy, device=device))


def tree_to_numpy(tree, *, copy: bool | None = None):
    """``to_numpy`` on every array in nested dicts, lists and tuples; other leaves are kept as they are."""
    return _tree_map("tree_to_numpy", tree, lambda leaf: to_numpy(leaf, copy=copy))


def _tree_map(function: str, tree, convert):
    def converted(path: str, leaf):
        if _kind(leaf) == _OTHER:
            return leaf
        try:
            return convert(leaf)
        except BridgeError as error:
            raise BridgeError(f"{function}: at {path or 'the root'}: {error}") from None

    return trees.map_leaves(tree, converted)
