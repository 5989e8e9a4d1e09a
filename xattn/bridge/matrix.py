"""What the bridge does on this machine: one :class:`BridgeCell` per (source, target, dtype, layout).

Each cell converts a fresh array three times (``copy=None``, ``False``, ``True``) and records what
happened, proven by buffer pointers and bit-exact comparison, never assumed. ``xattn bridge``
prints it; the test suite asserts that no cell lists a problem.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from xattn import _compat
from xattn.bridge import convert as bridge
from xattn.bridge.rules import XLA_HOST_ALIGNMENT, ml_names, sub_byte_names
from xattn.errors import BridgeError

#: The dtypes of the issue: every one NumPy (with ml_dtypes), JAX and torch all have.
SHARED_DTYPES = (
    "float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool",
    "complex64", "complex128",
)
#: Unsigned types torch has held since 2.3 with few ops ("shell" dtypes).
EXTRA_DTYPES = ("uint16", "uint32", "uint64")
LAYOUTS = (
    "contiguous", "transposed", "row-slice", "col-slice", "strided", "reversed", "unaligned", "0-d", "empty",
    "size-1-dim", "read-only",
)
#: layout -> (shape of the fresh base array, view taken of it)
_VIEWS = {
    "contiguous": ((4, 6), lambda a: a),
    "transposed": ((6, 4), lambda a: a.T),
    "row-slice": ((5, 6), lambda a: a[1:]),
    "col-slice": ((4, 8), lambda a: a[:, 1:7]),
    "strided": ((4, 12), lambda a: a[:, ::2]),
    "reversed": ((4, 6), lambda a: a[::-1]),
    "0-d": ((), lambda a: a),
    "empty": ((0, 6), lambda a: a),
    "size-1-dim": ((4, 6), lambda a: a[:, None, :]),
    "read-only": ((4, 6), lambda a: a),  # NumPy's flag is set in _make; JAX arrays are immutable anyway
}
_ZERO_COPY, _COPY, _ERROR, _NA = "zero-copy", "copy", "error", "n/a"
_CONVERT = {"numpy": bridge.to_numpy, "jax": bridge.to_jax, "torch": bridge.to_torch}


@dataclasses.dataclass(frozen=True)
class BridgeCell:
    """One conversion, run under each ``copy`` mode.

    ``outcome`` (copy=None) and ``strict`` (copy=False) are "zero-copy", "copy", "error" or "n/a";
    ``problems`` lists every broken promise (wrong bits, copy=False copying, copy=True aliasing).
    """

    source: str
    target: str
    dtype: str
    layout: str
    outcome: str
    strict: str
    detail: str = ""
    problems: tuple[str, ...] = ()

    @property
    def direction(self) -> str:
        return f"{self.source}->{self.target}"


def float8_dtypes() -> tuple[str, ...]:
    """float8 kinds of the loaded ml_dtypes and torch: shared ones convert, the others are refused."""
    names = {name for name in ml_names() if name.startswith("float8")}
    torch = sys.modules.get("torch")
    if torch is not None:
        names |= {name for name in dir(torch)
                  if name.startswith("float8") and isinstance(getattr(torch, name), torch.dtype)}
    return tuple(sorted(names))


def sub_byte_dtypes() -> tuple[str, ...]:
    """The sub-byte kinds of the loaded ml_dtypes (int4, uint2, float4_e2m1fn...), one value per byte."""
    return tuple(sorted(sub_byte_names()))


def all_dtypes() -> tuple[str, ...]:
    return (*SHARED_DTYPES, *EXTRA_DTYPES, *float8_dtypes(), *sub_byte_dtypes())


def bridge_matrix(*, frameworks=None, dtypes=None, layouts=None) -> tuple[BridgeCell, ...]:
    """Every cross-framework direction x dtype x layout, measured here.

    ``frameworks`` defaults to NumPy plus whichever of JAX and torch import; ``dtypes`` to
    :func:`all_dtypes`, ``layouts`` to :data:`LAYOUTS`.
    """
    frameworks = tuple(frameworks or _importable())
    dtypes = tuple(dtypes or all_dtypes())
    layouts = tuple(layouts or LAYOUTS)
    for kind, wanted, known in (("dtypes", dtypes, all_dtypes()), ("layouts", layouts, LAYOUTS)):
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise ValueError(f"bridge_matrix: expected {kind} among {', '.join(known)}; got {', '.join(unknown)}")
    cells = []
    for dtype in dtypes:
        for layout in layouts:
            for source in frameworks:
                made = _make(source, dtype, layout)
                for target in frameworks:
                    if target != source:
                        cells.append(_cell(source, target, dtype, layout, made))
    return tuple(cells)


def _importable() -> tuple[str, ...]:
    found = ["numpy"]
    for name in ("jax", "torch"):
        try:
            __import__(name)
        except ImportError:
            continue
        found.append(name)
    return tuple(found)


def _numpy_dtype(name: str):
    import ml_dtypes

    return np.dtype(getattr(ml_dtypes, name)) if name in ml_names() else np.dtype(name)


def _master(dtype: str, shape) -> np.ndarray | None:
    """Random bits (NaN payloads and subnormals included) in a 64-byte-aligned C-contiguous array."""
    try:
        numpy_dtype = _numpy_dtype(dtype)
    except TypeError:
        return None  # a torch-only dtype: no NumPy or JAX array of it can exist
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * numpy_dtype.itemsize
    raw = np.random.default_rng(count).integers(0, 256, nbytes, dtype=np.uint8)
    if dtype == "bool":
        raw &= 1
    if dtype in sub_byte_names():
        raw = canonical_bytes(raw.view(numpy_dtype)).view(np.uint8)
    return _aligned_copy(raw, offset=0).view(numpy_dtype).reshape(shape)


def canonical_bytes(values: np.ndarray) -> np.ndarray:
    """Sub-byte values in the one byte pattern each has (JAX keeps a value, not the byte's spare bits)."""
    wider = np.float32 if values.dtype.name.startswith("float") else np.int8
    return values.astype(wider).astype(values.dtype)


def _aligned_copy(raw: np.ndarray, offset: int) -> np.ndarray:
    buffer = np.empty(raw.nbytes + 2 * XLA_HOST_ALIGNMENT, np.uint8)
    start = (-buffer.ctypes.data) % XLA_HOST_ALIGNMENT + offset
    result = buffer[start:start + raw.nbytes]
    result[...] = raw
    return result


def _make(framework: str, dtype: str, layout: str):
    """(source array, its bits as a C-contiguous NumPy array), or (None, why it cannot exist)."""
    if layout == "unaligned":
        if framework != "numpy":
            return None, "only NumPy hands out unaligned buffers"
        master = _master(dtype, (4, 6))
        if master is None:
            return None, f"NumPy has no {dtype}"
        shifted = _aligned_copy(master.reshape(-1).view(np.uint8), offset=16)
        return shifted.view(master.dtype).reshape(master.shape), master
    shape, view = _VIEWS[layout]
    master = _master(dtype, shape)
    if framework == "numpy":
        if master is None:
            return None, f"NumPy has no {dtype}"
        source = view(master)
        if layout == "read-only":
            source = source.view()
            source.flags.writeable = False
    elif framework == "torch":
        source = _make_torch(dtype, layout, master, view)
    else:
        source = _make_jax(dtype, layout, master)
    if isinstance(source, str):
        return None, source
    expected = np.asarray(view(master), order="C")
    return source, expected


def _make_torch(dtype, layout, master, view):
    import torch

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        return f"torch {torch.__version__} has no {dtype}"
    if master is None:
        return f"NumPy has no {dtype} to fill it from"
    if layout == "reversed":
        return "torch tensors have no negative strides"
    if layout == "read-only":
        return "torch has no read-only tensors"
    if master.size == 0:
        base = torch.empty(master.shape, dtype=torch_dtype)
    else:  # copied as bytes: torch has no kernels (not even clone) for its int4-like shell dtypes
        raw = torch.frombuffer(bytearray(master.tobytes()), dtype=torch.uint8).clone()
        base = raw.view(torch_dtype).reshape(master.shape)
    if layout == "size-1-dim":
        return base.unsqueeze(1)
    return view(base)


def _make_jax(dtype, layout, master):
    import jax

    if master is None or not _compat.jax_has_dtype(dtype):
        return f"JAX {jax.__version__} has no {dtype}"
    if dtype in ("float64", "int64", "uint64", "complex128") and not jax.config.jax_enable_x64:
        return "JAX holds no 64-bit arrays with jax_enable_x64 off"
    if layout == "read-only":
        return "JAX arrays are all immutable: the read-only case is NumPy's"
    if layout in ("contiguous", "0-d", "empty", "size-1-dim"):
        # device_put of a private copy: no compilation per dtype, unlike jnp.array or indexing
        return jax.device_put(np.array(master[:, None, :] if layout == "size-1-dim" else master, order="C"))
    if layout == "transposed":
        # Only a DLPack import makes a JAX array with a non-default (transposed) layout.
        torch = sys.modules.get("torch")
        if torch is None or not isinstance(getattr(torch, dtype, None), torch.dtype):
            return "a transposed JAX buffer is made here by importing a transposed torch tensor"
        if not _compat.jax_computes_on_strided_imports():
            return f"JAX {jax.__version__} cannot compute on a transposed import, so xattn never makes one"
        if dtype in sub_byte_names():
            return f"JAX imports no {dtype} buffer by DLPack, so no transposed one can be made"
        base = torch.frombuffer(bytearray(master.tobytes()), dtype=getattr(torch, dtype)).reshape(master.shape)
        try:
            return jax.dlpack.from_dlpack(base.clone().T)
        except Exception as error:  # a dtype this JAX's DLPack lacks
            return f"JAX cannot import it: {error}"
    return "JAX arrays have no views (slices and steps make new arrays)"


def _host(array) -> np.ndarray:
    """An array's values as a C-contiguous NumPy array, read by each framework's own means."""
    kind = bridge.framework_of(array)
    if kind == "torch":
        array = array.detach().cpu().resolve_conj().resolve_neg()
        if str(array.dtype).removeprefix("torch.") in ml_names():
            import ml_dtypes
            import torch

            bits = {1: torch.uint8, 2: torch.int16}[array.element_size()]
            dtype = getattr(ml_dtypes, str(array.dtype).removeprefix("torch."))
            return array.view(bits).contiguous().numpy().view(dtype)
        return array.contiguous().numpy()
    return np.asarray(array, order="C")  # ascontiguousarray would make a 0-d array 1-d


def _same_bits(result, expected: np.ndarray) -> bool:
    values = _host(result)
    return (
        values.shape == expected.shape
        and values.dtype == expected.dtype
        and values.tobytes() == np.ascontiguousarray(expected).tobytes()
    )


def _run(source, target: str, copy):
    try:
        return _CONVERT[target](source, copy=copy), None
    except BridgeError as error:
        return None, str(error)


def _cell(source_name, target, dtype, layout, made) -> BridgeCell:
    source, expected = made
    row = {"source": source_name, "target": target, "dtype": dtype, "layout": layout}
    if source is None:
        return BridgeCell(**row, outcome=_NA, strict=_NA, detail=expected)
    pointer = bridge.buffer_pointer(source)
    has_data = expected.size > 0
    problems = []

    def shared(result) -> bool:
        return has_data and bridge.buffer_pointer(result) == pointer

    result, error = _run(source, target, None)
    if result is None:
        outcome, detail = _ERROR, error
    else:
        outcome, detail = (_ZERO_COPY if shared(result) or not has_data else _COPY), ""
        if not _same_bits(result, expected):
            problems.append("copy=None changed the values")
    strict_result, strict_error = _run(source, target, False)
    if strict_result is None:
        strict = _ERROR
        if outcome == _ZERO_COPY:
            problems.append(f"copy=False refused what copy=None shared: {strict_error}")
    else:
        strict = _ZERO_COPY
        if has_data and not shared(strict_result):
            problems.append("copy=False copied")
        if not _same_bits(strict_result, expected):
            problems.append("copy=False changed the values")
    copied, copy_error = _run(source, target, True)
    if copied is None:
        if outcome != _ERROR:
            problems.append(f"copy=True refused what copy=None converted: {copy_error}")
    elif shared(copied) or not _same_bits(copied, expected):
        problems.append("copy=True aliased the source or changed the values")
    return BridgeCell(**row, outcome=outcome, strict=strict, detail=detail, problems=tuple(problems))

