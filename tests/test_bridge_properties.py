"""Property tests of the bridge: random shapes, dtypes and strides; every round trip is bit-exact.

Values are random bits (NaN payloads, subnormals, negative zero included), so "bit-exact" is
checked on the bytes, never with ``==``. ``copy=False`` must either share the buffer (same pointer,
same bits) or raise :class:`~xattn.errors.BridgeError`, never copy quietly.
"""

from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xattn
from xattn import _compat
from xattn.bridge import buffer_pointer, rules
from xattn.bridge.matrix import canonical_bytes
from xattn.errors import BridgeError

from conftest import require_backend

DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool",
          "complex64", "complex128", "float8_e4m3fn", "float8_e5m2", "int4", "uint4")  # every tox env has these
#: Every sub-byte kind of the loaded ml_dtypes, those no framework takes included (float4, float6, int1).
SUB_BYTE = tuple(sorted(rules.sub_byte_names()))
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def frameworks():
    require_backend("jax")
    require_backend("torch")
    with _compat.jax_x64(True):  # so float64/int64/complex128 reach JAX unchanged
        yield


def numpy_dtype(name: str) -> np.dtype:
    return np.dtype(getattr(ml_dtypes, name, None) or name)


@dataclasses.dataclass(frozen=True)
class View:
    """A view of a random-bits base array: slices (start, stop, step per axis), then an axis order."""

    base: np.ndarray
    index: tuple
    order: tuple

    def numpy(self) -> np.ndarray:
        return self.base[self.index].transpose(self.order)

    def torch(self):
        """The same view, taken by torch itself of a torch copy of the base (positive steps only)."""
        import torch

        dtype = getattr(torch, self.base.dtype.name)
        # copied as bytes: torch has no kernels, not even clone, for its int4-like shell dtypes
        raw = torch.frombuffer(bytearray(self.base.tobytes()) or bytearray(8), dtype=torch.uint8).clone()
        base = raw[: self.base.nbytes].view(dtype).reshape(self.base.shape)
        return base[self.index].permute(self.order)


@st.composite
def strided_views(draw, negative_steps: bool = True) -> View:
    dtype = numpy_dtype(draw(st.sampled_from(DTYPES)))
    ndim = draw(st.integers(0, 4))
    shape = draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim))
    low = -3 if negative_steps else 1
    steps = draw(st.lists(st.integers(low, 3).filter(lambda step: step != 0), min_size=ndim, max_size=ndim))
    starts = draw(st.lists(st.integers(0, 2), min_size=ndim, max_size=ndim))
    base_shape = tuple(start + max(size, 1) * abs(step) for size, step, start in zip(shape, steps, starts))
    count = int(np.prod(base_shape, dtype=np.int64))
    seed = draw(st.integers(0, 2**32 - 1))
    raw = np.random.default_rng(seed).integers(0, 256, count * dtype.itemsize, dtype=np.uint8)
    if dtype == np.bool_:
        raw &= 1
    if dtype.name in rules.sub_byte_names():
        raw = canonical_bytes(raw.view(dtype)).view(np.uint8)  # JAX keeps values, not a byte's spare bits
    base = raw.view(dtype).reshape(base_shape)
    index = []
    for size, step, start in zip(shape, steps, starts):
        if step > 0:
            index.append(slice(start, start + size * step, step))
        else:
            first = start + (size - 1) * -step
            stop = first - size * -step
            index.append(slice(first, stop if stop >= 0 else None, step))
    return View(base, tuple(index), tuple(draw(st.permutations(range(ndim)))))


def convert_or_refuse_float8(convert, array):
    """``convert(array)``, or None where this JAX's DLPack has no float8 codes (a named refusal)."""
    try:
        return convert(array)
    except BridgeError as error:
        if "float8" in str(error) and "versions here" in str(error):
            return None
        raise


def bits(array) -> bytes:
    """Bytes, shape and dtype of ``array``, read through a bridge copy (checked against NumPy's own)."""
    values = array if xattn.bridge.framework_of(array) == "numpy" else xattn.to_numpy(array, copy=True)
    return np.ascontiguousarray(values).tobytes() + repr((values.shape, values.dtype.name)).encode()


@PROPERTY_SETTINGS
@given(case=strided_views(), target=st.sampled_from(["torch", "jax"]))
def test_numpy_round_trip_is_bit_exact(case, target):
    view = case.numpy()
    convert = xattn.to_torch if target == "torch" else xattn.to_jax
    there = convert(view)
    assert bits(xattn.to_numpy(there)) == bits(view)
    if target == "jax":
        import jax.numpy as jnp

        assert bits(jnp.copy(there)) == bits(view)  # JAX computes on what it got (a bit-exact op)
    assert bits(convert(xattn.to_numpy(there))) == bits(view)


@PROPERTY_SETTINGS
@given(case=strided_views(negative_steps=False), target=st.sampled_from(["numpy", "jax"]))
def test_torch_strided_round_trip_is_bit_exact(case, target):
    tensor = case.torch()
    convert = xattn.to_numpy if target == "numpy" else xattn.to_jax
    there = convert_or_refuse_float8(convert, tensor)
    if there is None:
        return
    if target == "jax":
        import jax.numpy as jnp

        assert bits(jnp.copy(there)) == bits(case.numpy())
    back = xattn.to_torch(there)
    assert back.shape == tensor.shape and back.dtype == tensor.dtype
    assert bits(back) == bits(case.numpy())


@PROPERTY_SETTINGS
@given(case=strided_views(), through=st.sampled_from(["torch", "numpy"]))
def test_jax_round_trip_is_bit_exact(case, through):
    import jax

    view = case.numpy()
    array = jax.device_put(np.array(view, order="C"))
    convert = xattn.to_torch if through == "torch" else xattn.to_numpy
    there = convert_or_refuse_float8(convert, array)
    if there is None:
        return
    back = xattn.to_jax(there)
    assert back.shape == array.shape and back.dtype == array.dtype
    assert bits(back) == bits(view)


@PROPERTY_SETTINGS
@given(case=strided_views(), target=st.sampled_from(["torch", "jax"]))
def test_copy_false_shares_or_refuses(case, target):
    view = case.numpy()
    convert = xattn.to_torch if target == "torch" else xattn.to_jax
    try:
        shared = convert(view, copy=False)
    except BridgeError:
        return
    if view.size:
        assert buffer_pointer(shared) == buffer_pointer(view)
    assert bits(shared) == bits(view)


@PROPERTY_SETTINGS
@given(dtype=st.sampled_from(SUB_BYTE), seed=st.integers(0, 2**32 - 1), size=st.integers(0, 9),
       source=st.sampled_from(["numpy", "torch", "jax"]), target=st.sampled_from(["numpy", "torch", "jax"]),
       copy=st.sampled_from([None, True, False]))
def test_sub_byte_kinds_keep_dtype_and_values_or_raise_bridge_error(dtype, seed, size, source, target, copy):
    """Issue 14: int4 through torch came back from JAX as int8 [1, 14, 15]. Never a dtype change."""
    numpy_type = numpy_dtype(dtype)
    raw = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    values = canonical_bytes(raw.view(numpy_type))
    try:
        array = values if source == "numpy" else {"torch": xattn.to_torch, "jax": xattn.to_jax}[source](values)
    except BridgeError:
        return  # that framework takes no such array here (float4/float6 in torch, int1 in JAX 0.10)
    convert = {"numpy": xattn.to_numpy, "torch": xattn.to_torch, "jax": xattn.to_jax}[target]
    try:
        result = convert(array, copy=copy)
    except BridgeError as error:
        assert "\n" not in str(error) and ("Pass copy=None" in str(error) or "Cast it to" in str(error)), error
        return
    assert rules.torch_dtype_name(result.dtype) == dtype
    assert bits(result) == bits(values)
