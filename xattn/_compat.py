"""Every framework-version switch in xattn lives here, each with the version and the change behind it.

Supported (docs/compat.md lists what each was tested with): JAX 0.4.38 through 0.10.x with Flax
0.10.4 through 0.12.x, torch 2.13 and 2.14, NumPy >= 1.26, ml_dtypes >= 0.5.
Functions import their framework on call; importing this module imports none.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys


def version_tuple(version: str) -> tuple[int, ...]:
    """``"2.13.0+cpu"`` -> ``(2, 13, 0)``; ``"0.4.38.dev1"`` -> ``(0, 4, 38)``."""
    numbers = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(part) for part in numbers.group(0).split(".")) if numbers else ()


def loaded_versions() -> str:
    """Versions of the already-imported array libraries, e.g. ``"numpy 2.4.6, jax 0.10.2"``."""
    names = ("numpy", "ml_dtypes", "jax", "jaxlib", "torch")
    found = [(name, getattr(sys.modules.get(name), "__version__", None)) for name in names]
    return ", ".join(f"{name} {version}" for name, version in found if version)


# --------------------------------------------------------------------------------------------- JAX


def jax_x64_enabled() -> bool:
    import jax

    # jax.config.jax_enable_x64 reads the flag in every version from 0.4.38 to 0.10.x; newer
    # releases also offer jax.config.read("jax_enable_x64"), which 0.4.38 lacks.
    return bool(jax.config.jax_enable_x64)


@contextlib.contextmanager
def jax_x64(enabled: bool):
    """Set jax_enable_x64 inside the block and restore it after.

    jax.experimental.enable_x64 (the old context manager) is deprecated in newer JAX and
    jax.enable_x64 does not exist in 0.4.38, so the one spelling that works everywhere is
    jax.config.update.
    """
    import jax

    before = jax_x64_enabled()
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


#: NumPy's own dtypes JAX holds in every supported version (64-bit ones need jax_enable_x64).
_JAX_NUMPY_DTYPES = frozenset(("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                               "float16", "float32", "float64", "complex64", "complex128"))


def jax_has_dtype(name: str) -> bool:
    """Whether JAX can hold an array of dtype ``name`` and compute on it (see jax_dtype_problem)."""
    return jax_dtype_problem(name) is None


@functools.cache
def jax_dtype_problem(name: str) -> str | None:
    """None where JAX holds and computes on arrays of dtype ``name``, else what goes wrong.

    A name in jax.numpy proves little, so the ml_dtypes kinds are probed once each, on a two-element
    array: put on the device, then cast to float32 (the first thing anyone does with int4 weights).
    - JAX 0.4.38 has float8_e3m4 and float8_e4m3 but not float8_e8m0fnu or float4_e2m1fn, which 0.10 has.
    - JAX 0.10.2 names float6_e2m3fn and float6_e3m2fn, but its XLA holds no array of them
      ("Invalid XLA PrimitiveType: 36").
    - JAX 0.10.2 holds int1 and uint1 arrays but every operation on one fails
      ("RuntimeProgramInputMismatch ... pred[1,2] ... u1[1,2]", "Expected comparison type UNSIGNED").
    """
    if name in _JAX_NUMPY_DTYPES:
        return None
    if name not in ml_dtypes_names():
        return f"JAX has no {name} dtype"  # float128, torch's int3, bits8, complex32...
    import jax
    import jax.numpy as jnp
    import numpy as np

    dtype = getattr(jnp, name, None)
    if dtype is None:
        return f"JAX has no {name} dtype"
    array = np.zeros(2, np.dtype(dtype))
    try:
        held = jax.device_put(array).block_until_ready()
    except Exception as error:  # noqa: BLE001 - any refusal means "JAX holds no such array"
        return f"JAX names {name} but holds no array of it ({_first_line(error)})"
    try:
        held.astype(jnp.float32).block_until_ready()
    except Exception as error:  # noqa: BLE001 - any failure means "unusable once there"
        return f"JAX holds {name} arrays but fails every operation on them ({_first_line(error)})"
    return None


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


@functools.cache
def jax_computes_on_strided_imports() -> bool:
    """Whether JAX computes right on a zero-copy DLPack import whose strides are not row-major.

    It differs from release to release (tox's matrix, docs/compat.md):
    - JAX 0.4.38 imports a transposed buffer (or one with odd strides on size-1 dimensions) without
      a copy, but every operation on it then fails with "Unexpected XLA layout override".
    - JAX 0.5.3 reads it right.
    - JAX 0.6.2 imports it and silently reads the buffer as if it were row-major: wrong values.
    - JAX 0.7.2 refuses it ("from_dlpack got array with non-default layout").
    - JAX 0.8.3 through 0.10.x read it right.
    So this probes once, the first time such a layout is met: a 64-byte-aligned buffer of distinct
    values, viewed transposed (2-d) and permuted (3-d), must come back with the same values, both
    as imported and after an operation. Anything else means "copy to row-major first".
    """
    import jax
    import numpy as np

    def aligned(count: int) -> np.ndarray:
        raw = np.zeros(64 + 4 * count, np.uint8)
        start = (-raw.ctypes.data) % 64
        return raw[start:start + 4 * count].view(np.float32)

    transposed = aligned(8).reshape(2, 4).T
    transposed[...] = np.arange(8, dtype=np.float32).reshape(4, 2)
    permuted = aligned(24).reshape(3, 2, 4).transpose(1, 0, 2)
    permuted[...] = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    try:
        for source in (transposed, permuted):
            imported = jax.dlpack.from_dlpack(source)
            if not (np.array_equal(np.asarray(imported), source)
                    and np.array_equal(np.asarray((imported + 1).block_until_ready()), source + 1)):
                return False
        return True
    except Exception:  # noqa: BLE001 - any failure means "copy to row-major first"
        return False


@functools.cache
def jax_sdpa_runs_float16_on_cpu() -> bool:
    """Whether ``jax.nn.dot_product_attention`` compiles a float16 call on the CPU.

    JAX 0.4.38's XLA runs it; from JAX 0.5 on, XLA refuses it at compile time ("The precision
    'F16_F16_F32' is not supported by dot_general on CPU"), which xattn's JAX backend reports as a
    VariantUnsupportedError. Probed once, on a tiny input.
    """
    import jax
    import jax.numpy as jnp

    q_BTHD = jax.device_put(jnp.ones((1, 2, 1, 4), jnp.float16), jax.devices("cpu")[0])
    try:
        jax.jit(jax.nn.dot_product_attention)(q_BTHD, q_BTHD, q_BTHD).block_until_ready()
        return True
    except Exception:  # noqa: BLE001 - any refusal means "not on this JAX"
        return False


def jax_tracer_type() -> type:
    import jax

    return jax.core.Tracer  # public in 0.4.38 and 0.10.x alike


def jax_single_device_sharding_type() -> type:
    import jax

    return jax.sharding.SingleDeviceSharding


def jax_buffer_pointer(array) -> int:
    return array.unsafe_buffer_pointer()


def jax_from_dlpack(producer, *, copy: bool | None = None, device=None):
    """``jax.dlpack.from_dlpack`` with xattn's copy rules, the same in every supported JAX.

    - JAX 0.4.38 ignores ``copy=False`` when a buffer is not 64-byte aligned and copies
      silently; 0.10 raises. Callers that need zero-copy check the pointer afterwards.
    - JAX 0.4.38 fails an assertion ("Unexpected XLA layout override") for ``copy=True`` on a
      transposed buffer, so xattn never passes ``copy=True``: callers copy on the source side.
    - ``jax.dlpack.to_dlpack`` was removed in JAX 0.7; xattn only ever uses the ``__dlpack__``
      protocol, which 0.4.38 and 0.10 both consume and produce.
    - Both ends pass the consumer's stream through ``__dlpack__(stream=...)`` on GPU: JAX (0.4.38
      and 0.10 alike) asks its device for ``get_stream_for_external_ready_events()``.
    """
    import jax.dlpack

    if copy is True:
        raise AssertionError("xattn copies on the source side; see jax_from_dlpack's docstring")
    if copy is None and device is None:
        return jax.dlpack.from_dlpack(producer)
    return jax.dlpack.from_dlpack(producer, device=device, copy=copy)


def jax_dlpack_has_float8() -> bool:
    """Whether JAX's DLPack import and export know the float8 type codes (DLPack 1.1)."""
    import jax

    # JAX 0.4.38's DLPack has no float8 (see jax_dlpack_dtype_error); 0.5.3 and every later release
    # in tox's matrix map them both ways.
    return version_tuple(jax.__version__) >= (0, 5)


def jax_dlpack_dtype_error(error: BaseException) -> bool:
    """Whether a JAX DLPack failure means "this dtype has no DLPack code here"."""
    # JAX 0.4.38: "Unknown or invalid DLPack type code 10" (import) and "XLA type F8E4M3FN has no
    # DLPack equivalent" (export): its DLPack knows no float8. JAX 0.10 maps the float8 codes of
    # DLPack 1.1 both ways.
    text = str(error)
    return "DLPack type code" in text or "no DLPack equivalent" in text


def jax_dlpack_layout_error(error: BaseException) -> bool:
    return "trivial (compact) striding" in str(error)


def jax_dlpack_alignment_error(error: BaseException) -> bool:
    return "not aligned" in str(error)


# ---------------------------------------------------------------------------------------- Flax NNX


def nnx_value(variable):
    """The array an ``nnx.Variable`` (a Param) holds, never a copy."""
    # flax 0.12.8 deprecates ``variable.value`` (a DeprecationWarning on every access,
    # google/flax#5019) in favour of get_value()/set_value() and ``variable[...]``; releases
    # without get_value read and write ``.value``.
    getter = getattr(variable, "get_value", None)
    return getter() if callable(getter) else variable.value


def nnx_set_value(variable, value) -> None:
    """Make ``variable`` hold ``value`` itself (no copy, no cast)."""
    # flax 0.12's ``variable[...] = value`` copies through ``.at[...].set`` unless shape, dtype and
    # sharding all match; set_value(value) without an index stores the array as it is.
    setter = getattr(variable, "set_value", None)
    if callable(setter):
        setter(value)
    else:
        variable.value = value


def nnx_iter_modules(module):
    """``(path, submodule)`` for ``module`` and everything under it (flax < 0.11: the module's own method)."""
    walk = getattr(sys.modules["flax.nnx"], "iter_modules", None)  # flax 0.11+ deprecates the method for it
    return walk(module) if walk is not None else module.iter_modules()


def nnx_fresh_copy(module):
    """A copy of an nnx module with new Variable objects over the same arrays.

    flax 0.12.8's ``nnx.merge(*nnx.split(m))`` hands back m's own Variable objects, so setting a value
    on the result would change m; ``nnx.clone`` makes new ones (and, created inside a jax
    transformation, they may take that trace's values without a TraceContextError).
    """
    from flax import nnx

    return nnx.clone(module)


def nnx_mha_kv_heads(layer) -> int:
    """Key/value heads of an ``nnx.MultiHeadAttention``."""
    # flax 0.12.6 added num_kv_heads (grouped-query attention); before it there is one kv head per
    # query head.
    return int(getattr(layer, "num_kv_heads", None) or layer.num_heads)


def nnx_mha_kv_features(layer) -> int:
    """Input width of an ``nnx.MultiHeadAttention``'s keys and values."""
    # flax 0.10.7 added in_kv_features (keys/values of another width than queries); before it, the
    # key and value projections read in_features.
    return int(getattr(layer, "in_kv_features", None) or layer.in_features)


@functools.cache
def nnx_mha_takes(argument: str) -> bool:
    """Whether ``nnx.MultiHeadAttention(...)`` accepts ``argument``.

    flax 0.10.7 added ``in_kv_features`` and flax 0.12.6 ``num_kv_heads``; passing either to an
    older release is a TypeError, so callers that build such layers ask first.
    """
    import inspect

    from flax import nnx

    return argument in inspect.signature(nnx.MultiHeadAttention.__init__).parameters


def nnx_params(module) -> list:
    """``[(path, nnx.Param)]`` for every parameter of ``module``: its own Variables, not copies."""
    from flax import nnx

    # flax 0.10's nnx.state() holds VariableState copies (no .shape; writing them leaves the module
    # unchanged); flax 0.11 made State hold the Variables themselves. nnx.iter_graph yields the
    # module's own Params in 0.10 through 0.12 alike.
    return [(tuple(path), node) for path, node in nnx.iter_graph(module) if isinstance(node, nnx.Param)]


# ------------------------------------------------------------------------------------------- torch


def torch_dlpack_dtype_error(error: BaseException) -> bool:
    text = str(error)
    return "Unsupported dtype" in text or "DLPack type" in text or "not supported by dlpack" in text.lower()


# ------------------------------------------------------------------------------------------- NumPy


def numpy_from_dlpack(producer):
    """``np.from_dlpack``: zero-copy for CPU producers (NumPy >= 1.23; ``copy=`` only in 2.1+)."""
    import numpy as np

    return np.from_dlpack(producer)


def ml_dtypes_names() -> frozenset[str]:
    """Names of the ml_dtypes scalar types NumPy can hold (bfloat16, float8_*, float4_*, int4...)."""
    import ml_dtypes

    # ml_dtypes 0.4 has bfloat16, the float8 family (no e8m0fnu before 0.5) and int4/uint4;
    # 0.5 added float8_e8m0fnu, float6_* and float4_e2m1fn; 0.5.1 added int2/uint2.
    names = {name for name in dir(ml_dtypes) if name.startswith(("bfloat", "float", "int", "uint"))}
    return frozenset(name for name in names if isinstance(getattr(ml_dtypes, name), type))
