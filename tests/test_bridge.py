"""The DLPack bridge: zero-copy proven by pointers, values proven bit for bit, every refusal named.

Frameworks come through ``require_backend``, so CI (XATTN_REQUIRE_BACKENDS=jax,torch) fails rather
than skips when one is missing. CUDA tests run only where CUDA exists.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings

import ml_dtypes
import numpy as np
import pytest

import xattn
from xattn import _compat
from xattn.bridge import buffer_pointer, framework_of, rules
from xattn.errors import BridgeError, XattnError

from conftest import require_backend

SHARED = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool",
          "complex64", "complex128", "uint16", "uint32", "uint64")
#: float8 kinds that torch 2.5+ and ml_dtypes >= 0.5 both have.
FLOAT8_SHARED = ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu")
DIRECTIONS = [(s, t) for s in ("numpy", "jax", "torch") for t in ("numpy", "jax", "torch") if s != t]
CONVERT = {"numpy": xattn.to_numpy, "jax": xattn.to_jax, "torch": xattn.to_torch}


@pytest.fixture
def jax():
    require_backend("jax")
    import jax

    return jax


@pytest.fixture
def torch():
    require_backend("torch")
    import torch

    return torch


@pytest.fixture
def x64(jax):
    with _compat.jax_x64(True):
        yield


@pytest.fixture
def no_x64(jax):
    with _compat.jax_x64(False):
        yield


def aligned(values: np.ndarray) -> np.ndarray:
    """A copy of ``values`` starting on a 64-byte boundary (XLA aliases only such host buffers)."""
    raw = np.empty(values.nbytes + 64, np.uint8)
    start = (-raw.ctypes.data) % 64
    out = raw[start:start + values.nbytes].view(values.dtype).reshape(values.shape)
    out[...] = values
    return out


def random_bits(dtype_name: str, shape=(3, 5), seed=0) -> np.ndarray:
    dtype = np.dtype(getattr(ml_dtypes, dtype_name, None) or dtype_name)
    count = int(np.prod(shape))
    raw = np.random.default_rng(seed).integers(0, 256, count * dtype.itemsize, dtype=np.uint8)
    if dtype_name == "bool":
        raw &= 1
    return aligned(raw.view(dtype).reshape(shape))


def host(array) -> np.ndarray:
    """Values read by the array's own framework (not by the bridge), C-contiguous."""
    if framework_of(array) == "torch":
        array = array.detach().cpu().resolve_conj().resolve_neg().contiguous()
        name = str(array.dtype).removeprefix("torch.")
        if hasattr(ml_dtypes, name):
            import torch

            bits = {1: torch.uint8, 2: torch.int16}[array.element_size()]
            return array.view(bits).numpy().view(getattr(ml_dtypes, name))
        return array.numpy()
    return np.asarray(array, order="C")


def assert_same_bits(result, expected: np.ndarray):
    values = host(result)
    assert values.shape == expected.shape
    assert values.dtype == expected.dtype
    assert values.tobytes() == np.asarray(expected, order="C").tobytes()


def make(framework: str, values: np.ndarray):
    """The same bits as a fresh array of ``framework`` (built without the bridge)."""
    if framework == "numpy":
        return values
    if framework == "torch":
        import torch

        dtype = getattr(torch, values.dtype.name, None)
        if not isinstance(dtype, torch.dtype):
            pytest.skip(f"torch {torch.__version__} has no {values.dtype.name}: no tensor of it can exist")
        if values.size == 0:
            return torch.empty(values.shape, dtype=dtype)
        # copied as bytes: torch has no kernels, not even clone, for its int4-like shell dtypes
        raw = torch.frombuffer(bytearray(values.tobytes()), dtype=torch.uint8).clone()
        return raw.view(dtype).reshape(values.shape)
    import jax

    if not _compat.jax_has_dtype(values.dtype.name):
        pytest.skip(f"JAX {jax.__version__} has no {values.dtype.name}: no JAX array of it can exist")
    return jax.device_put(values.copy())  # no per-dtype compilation, unlike jnp.array


# ------------------------------------------------------------------------------------ the basics


def test_import_pulls_in_no_framework():
    code = """
        import sys, numpy as np, xattn, xattn.bridge, xattn.bridge.matrix, xattn._compat
        xattn.to_torch, xattn.tree_to_jax, xattn.bridge_matrix, xattn.BridgeCell
        assert xattn.bridge.framework_of(np.zeros(2)) == "numpy"
        assert xattn.bridge.framework_of([1]) is None
        loaded = [name for name in ("jax", "torch", "flax") if name in sys.modules]
        assert not loaded, loaded
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True)


def test_a_refusal_is_caught_as_an_xattn_error():
    # A real refusal, caught the way a user catches the family (no framework needed to reach it).
    with pytest.raises(XattnError, match="a NumPy masked array would lose its mask") as caught:
        xattn.to_torch(np.ma.masked_array([1.0, 2.0], mask=[False, True]))
    assert type(caught.value) is xattn.BridgeError


def test_bad_arguments_are_type_errors(torch):
    with pytest.raises(TypeError, match="copy=None, False or True"):
        xattn.to_numpy(np.zeros(2), copy="yes")
    with pytest.raises(TypeError, match="expected a NumPy, JAX or torch array; got list"):
        xattn.to_torch([1.0, 2.0])


@pytest.mark.parametrize("source,target", DIRECTIONS)
@pytest.mark.parametrize("dtype", SHARED + FLOAT8_SHARED)
def test_zero_copy_every_dtype_every_direction(source, target, dtype, jax, torch, x64):
    values = random_bits(dtype)
    array = make(source, values)
    try:
        result = CONVERT[target](array, copy=False)
    except BridgeError as error:
        # Only float8 may be refused, and only by a framework version without DLPack float8 codes.
        assert dtype.startswith("float8") and not _compat.jax_dlpack_has_float8(), error
        assert "versions here" in str(error) and dtype in str(error)
        return
    assert buffer_pointer(result) == buffer_pointer(array)
    assert_same_bits(result, values)
    assert xattn.to_numpy(result).dtype == values.dtype


@pytest.mark.parametrize("dtype", ["float8_e3m4", "float8_e4m3", "float8_e4m3b11fnuz"])
def test_float8_kinds_torch_lacks_are_refused_naming_versions(dtype, jax, torch):
    if isinstance(getattr(torch, dtype, None), torch.dtype) or not hasattr(ml_dtypes, dtype):
        pytest.skip(f"torch {torch.__version__} has {dtype} or ml_dtypes lacks it: nothing to refuse")
    for array in (random_bits(dtype), jax.numpy.array(random_bits(dtype))):
        expected = f"torch has no {dtype} dtype; versions here: .*torch {re.escape(torch.__version__)}"
        with pytest.raises(BridgeError, match=expected):
            xattn.to_torch(array)


# ------------------------------------------------------------------------------------------ layouts


def test_layouts_arrive_exactly(jax, torch):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    # JAX 0.4.38 cannot compute on a zero-copy import that is not row-major: xattn copies it there.
    permuted = "zero-copy" if _compat.jax_computes_on_strided_imports() else "copy"
    cases = {
        "transposed": (base.T, permuted),
        "row-slice (offset 40 bytes)": (base[1:], "copy"),
        "col-slice": (base[:, 2:7], "copy"),
        "strided": (base[:, ::3], "copy"),
        "0-d": (torch.tensor(3.5), "zero-copy"),
        "0-d view at an offset": (base[2, 3], "copy"),
        "empty": (base[:0], "either"),
        "size-1 dims": (base[:1, None, :], "zero-copy"),
        "size-1 dim with an odd stride": (torch.as_strided(base, (1, 6), (7, 1)), permuted),
        "3-d permutation": (base.reshape(2, 3, 10).permute(2, 0, 1), permuted),
    }
    for name, (tensor, expected) in cases.items():
        result = xattn.to_jax(tensor)
        assert_same_bits(result, tensor.numpy()), name
        assert_same_bits(result + 0, tensor.numpy())  # JAX can compute on what it got
        shared = tensor.numel() > 0 and buffer_pointer(result) == tensor.data_ptr()
        if expected != "either":
            assert shared == (expected == "zero-copy"), name
        if expected == "copy":
            with pytest.raises(BridgeError, match="copy=None"):
                xattn.to_jax(tensor, copy=False)
        back = xattn.to_torch(result)
        assert torch.equal(back, tensor), name


def test_jax_array_with_transposed_layout_goes_back_zero_copy(jax, torch):
    tensor = torch.arange(12, dtype=torch.float32).reshape(3, 4).T
    if not _compat.jax_computes_on_strided_imports():
        with pytest.raises(BridgeError, match="upgrade JAX"):
            xattn.to_jax(tensor, copy=False)
        return
    array = xattn.to_jax(tensor, copy=False)
    for target in (xattn.to_torch, xattn.to_numpy):
        result = target(array, copy=False)
        assert buffer_pointer(result) == tensor.data_ptr()
        assert_same_bits(result, tensor.numpy())


def test_numpy_negative_strides_copy_exactly_and_never_crash(jax, torch):
    values = np.arange(24, dtype=np.float32).reshape(4, 6)
    reversed_view = values[::-1, ::-2]
    for convert in (xattn.to_torch, xattn.to_jax):
        assert_same_bits(convert(reversed_view), np.ascontiguousarray(reversed_view))
        with pytest.raises(BridgeError, match="copy=None"):
            convert(reversed_view, copy=False)


def test_numpy_unaligned_buffer_copies_into_jax_and_refuses_under_copy_false(jax):
    values = aligned(np.arange(17, dtype=np.float32))[1:]  # 4 bytes past a 64-byte boundary
    result = xattn.to_jax(values)
    assert buffer_pointer(result) != buffer_pointer(values)
    assert_same_bits(result, values)
    with pytest.raises(BridgeError, match="64-byte boundary"):
        xattn.to_jax(values, copy=False)


def test_numpy_fortran_order_is_zero_copy_into_jax(jax):
    values = aligned(np.arange(12, dtype=np.float32).reshape(4, 3)).T
    if not _compat.jax_computes_on_strided_imports():
        assert_same_bits(xattn.to_jax(values) + 0, values)
        return
    result = xattn.to_jax(values, copy=False)
    assert_same_bits(result + 0, values)
    assert buffer_pointer(result) == buffer_pointer(values)
    assert_same_bits(result, values)


def test_non_native_byte_order_is_copied_exactly(jax, torch):
    values = np.arange(6, dtype=">f4").reshape(2, 3)
    for convert in (xattn.to_torch, xattn.to_jax):
        assert_same_bits(convert(values), values.astype("<f4"))
        with pytest.raises(BridgeError, match="native byte order"):
            convert(values, copy=False)


def test_bfloat16_numpy_is_shared_through_bit_views(jax, torch):
    values = random_bits("bfloat16", (4, 6))
    for convert in (xattn.to_torch, xattn.to_jax):
        result = convert(values, copy=False)
        assert buffer_pointer(result) == buffer_pointer(values)
        assert_same_bits(result, values)
    column_view = values[:, 1::2]
    tensor = xattn.to_torch(column_view, copy=False)  # torch takes any positive stride
    assert tensor.data_ptr() == buffer_pointer(column_view)
    assert_same_bits(tensor, np.ascontiguousarray(column_view))


# --------------------------------------------------------------------------- never a silent change


@pytest.mark.parametrize("dtype", ["float64", "int64", "uint64", "complex128"])
@pytest.mark.parametrize("copy", [None, False, True])
def test_64_bit_into_jax_without_x64_is_refused(dtype, copy, jax, torch, no_x64):
    values = random_bits(dtype)
    for source in (values, make("torch", values)):
        with pytest.raises(BridgeError, match="jax_enable_x64"):
            xattn.to_jax(source, copy=copy)


def test_64_bit_into_jax_with_x64_keeps_its_dtype(jax, torch, x64):
    tensor = torch.tensor([1 / 3, 2.0**-1070], dtype=torch.float64)
    result = xattn.to_jax(tensor)
    assert result.dtype == np.float64
    assert_same_bits(result, tensor.numpy())


def test_requires_grad_is_refused_naming_detach(jax, torch):
    weight = torch.ones(3, requires_grad=True)
    for convert in (xattn.to_jax, xattn.to_numpy):
        for copy in (None, False, True):
            with pytest.raises(BridgeError, match=r"requires_grad=True.*x\.detach\(\)"):
                convert(weight, copy=copy)
    assert_same_bits(xattn.to_jax(weight.detach()), np.ones(3, np.float32))


def test_to_torch_of_a_torch_tensor_keeps_autograd(torch):
    weight = torch.ones(3, requires_grad=True)
    assert xattn.to_torch(weight) is weight
    copied = xattn.to_torch(weight, copy=True)
    assert copied.data_ptr() != weight.data_ptr()
    (copied * 2).sum().backward()
    assert torch.equal(weight.grad, torch.full((3,), 2.0))


def test_pytree_of_parameters_names_the_leaf_that_needs_detach(jax, torch):
    model = torch.nn.Linear(2, 3)
    with pytest.raises(BridgeError, match=r"tree_to_jax: at \['weight'\]: .*detach"):
        xattn.tree_to_jax(dict(model.named_parameters()))
    converted = xattn.tree_to_jax(model.state_dict())  # state_dict tensors are detached
    assert_same_bits(converted["weight"], model.weight.detach().numpy())


def test_conj_and_neg_views_arrive_resolved(jax, torch):
    values = torch.tensor([1 + 2j, -3 + 0.5j], dtype=torch.complex64)
    conj = values.conj()
    neg = torch._neg_view(torch.tensor([1.0, -2.0]))  # torch's own __dlpack__ drops the neg bit
    for view, truth in ((conj, np.conj(values.numpy())), (neg, np.array([-1.0, 2.0], np.float32))):
        for convert in (xattn.to_jax, xattn.to_numpy):
            assert_same_bits(convert(view), truth)
            with pytest.raises(BridgeError, match=r"resolve_(conj|neg)\(\)"):
                convert(view, copy=False)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_and_meta_tensors_are_refused_naming_the_fix(jax, torch):
    for convert in (xattn.to_jax, xattn.to_numpy):
        for sparse in (torch.eye(3).to_sparse(), torch.eye(3).to_sparse_csr()):
            with pytest.raises(BridgeError, match=r"to_dense\(\)"):
                convert(sparse)
        with pytest.raises(BridgeError, match="meta tensor"):
            convert(torch.empty(3, device="meta"))


def test_deleted_jax_array_is_refused(jax):
    array = jax.numpy.ones(3)
    array.delete()
    for convert in (xattn.to_torch, xattn.to_numpy, xattn.to_jax):
        with pytest.raises(BridgeError, match="deleted or donated"):
            convert(array)


def test_tracer_inside_jit_is_refused(jax, torch):
    @jax.jit
    def leak(array):
        xattn.to_torch(array)
        return array

    with pytest.raises(BridgeError, match="tracer"):
        leak(jax.numpy.ones(2))


def test_masked_array_and_numpy_scalar(jax, torch):
    with pytest.raises(BridgeError, match="lose its mask"):
        xattn.to_torch(np.ma.masked_array([1.0, 2.0], mask=[0, 1]))
    assert xattn.to_jax(np.float32(2.5)).shape == ()
    with pytest.raises(BridgeError, match="scalar owns no buffer"):
        xattn.to_torch(np.float32(2.5), copy=False)


def test_sharded_jax_array_is_gathered_or_refused():
    require_backend("jax")
    require_backend("torch")
    code = """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import jax, numpy as np, torch, xattn
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        mesh = Mesh(np.array(jax.devices()[:2]), ("x",))
        full = np.arange(8, dtype=np.float32)
        array = jax.device_put(full, NamedSharding(mesh, PartitionSpec("x")))
        assert len(array.sharding.device_set) == 2
        for convert in (xattn.to_torch, xattn.to_numpy):
            np.testing.assert_array_equal(np.asarray(convert(array)), full)  # all of it, not shard 0
            try:
                convert(array, copy=False)
            except xattn.BridgeError as error:
                assert "spread over 2 devices" in str(error), error
            else:
                raise AssertionError("copy=False shared a sharded array")
        print("ok")
    """
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-3000:]


def test_devices(jax, torch):
    tensor = torch.arange(4.0)
    cpu = jax.devices("cpu")[0]
    for device in ("cpu", cpu):
        result = xattn.to_jax(tensor, device=device)
        assert result.devices() == {cpu}
    assert xattn.to_torch(jax.numpy.ones(2), device="cpu").device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(BridgeError, match="cannot reach device cuda"):
            xattn.to_torch(jax.numpy.ones(2), device="cuda")
        with pytest.raises(BridgeError, match="cuda"):
            xattn.to_torch(np.ones(2), device="cuda", copy=False)
    if not any(device.platform == "gpu" for device in jax.devices()):
        with pytest.raises(BridgeError, match="expected a device JAX can reach"):
            xattn.to_jax(tensor, device="gpu")


# ------------------------------------------------------------------------- sub-byte kinds and shells

SUB_BYTE = tuple(sorted(rules.sub_byte_names()))


def every_value(dtype_name: str) -> np.ndarray:
    """Every value of a sub-byte kind once, each in its one canonical byte, 64-byte aligned."""
    dtype = np.dtype(getattr(ml_dtypes, dtype_name))
    raw = np.arange(256, dtype=np.uint8).view(dtype)
    wider = np.float32 if dtype_name.startswith("float") else np.int8
    values = np.unique(raw.astype(wider)).astype(dtype)  # -0.0 and 0.0 are one value to np.unique
    return aligned(values.reshape(1, -1))


def lacks(framework: str, dtype_name: str, torch) -> bool:
    if framework == "torch":
        return not isinstance(getattr(torch, dtype_name, None), torch.dtype)
    return framework == "jax" and not _compat.jax_has_dtype(dtype_name)


@pytest.mark.parametrize("copy", [None, True, False])
@pytest.mark.parametrize("source,target", DIRECTIONS)
@pytest.mark.parametrize("dtype", SUB_BYTE)
def test_sub_byte_kinds_convert_exactly_or_refuse_naming_why(dtype, source, target, copy, jax, torch):
    values = every_value(dtype)
    if lacks(source, dtype, torch):
        pytest.skip(f"{source} has no {dtype}: no such source array can exist")
    array = make(source, values)
    if lacks(target, dtype, torch):
        with pytest.raises(BridgeError, match=f"{dtype}.*; versions here: .*Cast it to (float32|u?int8) first"):
            CONVERT[target](array, copy=copy)
        return
    if copy is False and "jax" in (source, target):
        # JAX stores these its own way: every crossing copies, so copy=False has nothing to share.
        why = {"jax": "it keeps sub-byte kinds in buffers of its own", "numpy": f"JAX copied this {dtype} buffer",
               "torch": f"JAX exports no {dtype} buffer torch could share"}[target]
        with pytest.raises(BridgeError, match=rf"copy=False\): .*{why}.*Pass copy=None"):
            CONVERT[target](array, copy=copy)
        return
    result = CONVERT[target](array, copy=copy)
    assert framework_of(result) == target
    assert rules.torch_dtype_name(result.dtype) == dtype  # never int8/uint8
    assert_same_bits(result, values)
    if target == "jax":
        assert_same_bits(jax.numpy.copy(result), values)  # JAX computes on the values it was given


@pytest.mark.parametrize("dtype, values", [
    ("int4", [1, -2, -1, 7, -8]), ("int2", [1, -2, -1, 0]), ("uint4", [15, 0, 9]), ("uint2", [3, 0, 2]),
])
def test_the_issue_repro_keeps_sub_byte_values_through_torch_and_jax(dtype, values, jax, torch):
    array = np.array(values, getattr(ml_dtypes, dtype))
    there = xattn.to_jax(xattn.to_torch(array))  # the default path: issue 14 saw int8 [1, 14, 15] here
    assert there.dtype.name == dtype and np.asarray(there).astype(np.int8).tolist() == values
    back = xattn.to_torch(there)
    assert back.dtype == getattr(torch, dtype)
    assert xattn.to_numpy(back).astype(np.int8).tolist() == values


@pytest.mark.parametrize("dtype", ["int3", "uint5", "int7", "bits8", "float4_e2m1fn_x2", "complex32", "quint8"])
def test_torch_dtypes_nobody_else_has_are_refused_not_reinterpreted(dtype, jax, torch):
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        pytest.skip(f"torch {torch.__version__} has no {dtype}")
    tensor = torch.frombuffer(bytearray(range(1, 9)), dtype=torch.uint8).clone().view(torch_dtype)
    with pytest.raises(BridgeError, match=f"to_jax: JAX has no {dtype} dtype"):
        xattn.to_jax(tensor)  # torch 2.13's DLPack export of int3 made JAX int8 before
    with pytest.raises(BridgeError, match=f"to_numpy: NumPy has no counterpart of torch.{dtype}"):
        xattn.to_numpy(tensor)
    if rules.torch_shell(torch_dtype):
        with pytest.raises(BridgeError, match=r"x.view\(torch.uint8\) hands over its bytes"):
            xattn.to_jax(tensor)
        copied = xattn.to_torch(tensor, copy=True)  # torch itself has no clone for these
        assert copied.data_ptr() != tensor.data_ptr() and copied.dtype == torch_dtype
        assert copied.view(torch.uint8).tolist() == list(range(1, 9))


def test_numpy_dtypes_no_framework_has_are_refused_with_the_cast_to_make(jax, torch):
    for name in ("longdouble", "clongdouble"):
        array = np.zeros(3, name)
        if array.dtype.name in ("float64", "complex128"):
            continue  # a platform whose longdouble is float64: nothing to refuse
        for convert in (xattn.to_jax, xattn.to_torch):
            with pytest.raises(BridgeError, match=f"has no {array.dtype.name} dtype.*Cast it to float64"):
                convert(array)


# ------------------------------------------------------------------------------ aliasing and copies


def test_torch_write_through_a_zero_copy_view_is_seen_by_jax(jax, torch):
    array = jax.numpy.arange(4.0)
    shared = xattn.to_torch(array)
    isolated = xattn.to_torch(array, copy=True)
    shared.mul_(10)  # documented aliasing: JAX's "immutable" array changes
    assert (array + 0).tolist() == [0.0, 10.0, 20.0, 30.0]
    isolated.add_(1)
    assert (array + 0).tolist() == [0.0, 10.0, 20.0, 30.0]


def test_torch_write_after_to_jax_is_seen_by_jax_unless_copied(jax, torch):
    tensor = torch.zeros(3)
    shared, isolated = xattn.to_jax(tensor), xattn.to_jax(tensor, copy=True)
    tensor.fill_(7)
    assert (shared + 0).tolist() == [7.0, 7.0, 7.0]
    assert (isolated + 0).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("source,target", DIRECTIONS)
def test_copy_true_is_independent(source, target, jax, torch):
    values = random_bits("float32")
    array = make(source, values)
    result = CONVERT[target](array, copy=True)
    assert buffer_pointer(result) != buffer_pointer(array)
    assert_same_bits(result, values)
    if target == "numpy":
        assert result.flags.writeable


def test_jax_to_numpy_view_is_read_only_and_reaches_torch_as_a_copy(jax, torch):
    array = jax.numpy.arange(3.0)
    view = xattn.to_numpy(array)
    assert not view.flags.writeable and buffer_pointer(view) == buffer_pointer(array)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable tensors" warning from torch: nothing is shared
        tensor = xattn.to_torch(view)
    assert tensor.data_ptr() != buffer_pointer(array) and tensor.tolist() == [0.0, 1.0, 2.0]
    tensor.fill_(7)  # a write through torch must not reach the read-only view, nor the JAX array
    assert view.tolist() == [0.0, 1.0, 2.0] and (array + 0).tolist() == [0.0, 1.0, 2.0]
    assert buffer_pointer(xattn.to_jax(view, copy=False)) == buffer_pointer(array)  # JAX never writes


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int4"])
def test_read_only_numpy_becomes_a_torch_copy_and_copy_false_refuses(dtype, torch):
    values = random_bits(dtype)
    values.flags.writeable = False
    tensor = xattn.to_torch(values)
    assert tensor.data_ptr() != buffer_pointer(values)
    assert_same_bits(tensor, values)
    assert buffer_pointer(xattn.to_torch(values, copy=True)) != buffer_pointer(values)
    with pytest.raises(BridgeError, match="expected a writable NumPy array; got a read-only one.*Pass copy=None"):
        xattn.to_torch(values, copy=False)
    writable = np.array(values)
    assert xattn.to_torch(writable, copy=False).data_ptr() == buffer_pointer(writable)


# ---------------------------------------------------------------------------------------- pytrees


def test_tree_conversion_keeps_structure_and_other_leaves(jax, torch):
    Pair = collections.namedtuple("Pair", "first second")
    state = torch.nn.Linear(2, 2).state_dict()
    pair = Pair(np.zeros(2, np.float32), (jax.numpy.ones(1),))
    tree = {"state": state, "list": [torch.ones(2), 3, None, "name"], "pair": pair}
    converted = xattn.tree_to_jax(tree)
    assert type(converted["state"]) is type(state) and converted["state"]._metadata == state._metadata
    assert list(converted["state"]) == list(state)
    assert converted["list"][1:] == [3, None, "name"]
    assert isinstance(converted["pair"], Pair) and isinstance(converted["pair"].second, tuple)
    assert all(framework_of(leaf) == "jax" for leaf in (converted["list"][0], converted["pair"].first))
    back = xattn.tree_to_torch(converted, copy=False)
    assert back["state"]["weight"].data_ptr() == state["weight"].data_ptr()
    numpy_tree = xattn.tree_to_numpy(back)
    assert all(framework_of(value) == "numpy" for value in numpy_tree["state"].values())


# --------------------------------------------------------------------------- the matrix and the CLI


def test_matrix_keeps_every_promise_with_x64(jax, torch, x64):
    from xattn import bridge_matrix

    cells = bridge_matrix()
    assert not [cell for cell in cells if cell.problems]
    by_key = {(cell.direction, cell.dtype, cell.layout): cell for cell in cells}
    assert by_key["torch->jax", "float64", "contiguous"].outcome == "zero-copy"
    permuted = "zero-copy" if _compat.jax_computes_on_strided_imports() else "copy"
    assert by_key["torch->jax", "float32", "transposed"].outcome == permuted
    assert by_key["torch->jax", "float32", "col-slice"].outcome == "copy"
    assert by_key["numpy->torch", "float32", "reversed"].outcome == "copy"
    assert by_key["numpy->jax", "float32", "unaligned"].outcome == "copy"
    read_only = by_key["numpy->torch", "float32", "read-only"]
    assert (read_only.outcome, read_only.strict) == ("copy", "error")
    assert by_key["numpy->jax", "float32", "read-only"].outcome == "zero-copy"  # JAX never writes
    for direction in ("torch->jax", "jax->torch", "numpy->jax", "jax->numpy"):
        cell = by_key[direction, "int4", "contiguous"]
        assert (cell.outcome, cell.strict) == ("copy", "error"), cell  # exact values, never int8
    assert by_key["numpy->torch", "int4", "contiguous"].outcome == "zero-copy"
    contiguous = [cell for cell in cells if cell.layout == "contiguous" and cell.dtype in SHARED]
    assert {cell.outcome for cell in contiguous} == {"zero-copy"}


def test_matrix_without_x64_refuses_64_bit_into_jax(jax, torch, no_x64):
    from xattn import bridge_matrix

    cells = bridge_matrix(dtypes=["float64", "int64"], layouts=["contiguous", "strided"])
    assert not [cell for cell in cells if cell.problems]
    into_jax = [cell for cell in cells if cell.target == "jax"]
    assert into_jax and all(cell.outcome == "error" and "jax_enable_x64" in cell.detail for cell in into_jax)


def test_cli_bridge_command(jax, torch):
    from click.testing import CliRunner

    from xattn.cli import main

    result = CliRunner().invoke(main, ["bridge", "--dtype", "float32", "--layout", "contiguous", "--format", "json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert len(records) == 6 and {record["outcome"] for record in records} == {"zero-copy"}
    table = CliRunner().invoke(main, ["bridge", "--dtype", "bfloat16", "--layout", "strided"])
    assert table.exit_code == 0 and "torch->jax" in table.output and "copy" in table.output
    assert CliRunner().invoke(main, ["bridge", "--layout", "diagonal"]).exit_code == 2


# ------------------------------------------------------------------------------------------- CUDA


def _cuda(torch):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (scripts/gpu_bridge_check.py covers GPUs)")


def test_cuda_torch_to_jax_and_back_zero_copy(jax, torch):
    _cuda(torch)
    if not any(device.platform == "gpu" for device in jax.devices()):
        pytest.skip("JAX has no GPU backend here")
    tensor = torch.arange(1024, dtype=torch.float32, device="cuda")
    tensor.mul_(3)  # queued on torch's stream: the consumer's stream must wait for it
    array = xattn.to_jax(tensor, copy=False)
    assert buffer_pointer(array) == tensor.data_ptr()
    assert np.array_equal(np.asarray(array), np.arange(1024, dtype=np.float32) * 3)
    back = xattn.to_torch(array, copy=False)
    assert back.data_ptr() == tensor.data_ptr() and back.device == tensor.device


def test_cuda_tensor_to_numpy_copies_or_refuses(torch):
    _cuda(torch)
    tensor = torch.arange(4.0, device="cuda")
    assert_same_bits(xattn.to_numpy(tensor), np.arange(4, dtype=np.float32))
    with pytest.raises(BridgeError, match="host memory only"):
        xattn.to_numpy(tensor, copy=False)


def test_compat_version_tuple():
    assert _compat.version_tuple("2.13.0+cpu") == (2, 13, 0)
    assert _compat.version_tuple("0.4.38.dev20241201") == (0, 4, 38)


# ---------------------------------------------------------------------------------------- scripts

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(SCRIPTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_bridge_check_says_no_cuda_on_a_cpu_machine(jax, torch, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: run scripts/gpu_bridge_check.py itself")
    assert load_script("gpu_bridge_check").main() == 0
    assert "no CUDA" in capsys.readouterr().out


def test_bench_bridge_prints_its_table(jax, torch, capsys):
    script = load_script("bench_bridge")
    script.SIZES = (16, 4096)  # the 64 MiB rows are for real runs, not the test suite
    script.main(["--rounds", "2", "--budget-ms", "0.5"])
    out = capsys.readouterr().out
    assert "jax->torch" in out and "torch->jax" in out and "xattn/bare" in out


@pytest.mark.parametrize("source", ["numpy", "torch"])
def test_empty_arrays_convert_under_copy_false_wherever_they_start(source, jax, torch):
    # An empty slice may start anywhere; with no bytes to share, XLA's 64-byte alignment rule must
    # not turn copy=False into a refusal that depends on where the allocator put the buffer.
    base = np.zeros(40, np.float16) if source == "numpy" else torch.zeros(40, dtype=torch.float16)
    for offset in range(8):
        result = xattn.to_jax(base[offset:offset], copy=False)
        assert result.shape == (0,) and str(result.dtype) == "float16"


def test_a_dtype_change_from_any_framework_is_refused_naming_both():
    # The last guard of every full path: whatever a framework version hands back in another dtype.
    with pytest.raises(BridgeError, match="to_jax: expected the int4 data to arrive as int4; got int8 .*Cast it to"
                                          " int8 first"):
        rules.same_dtype_or_refuse("to_jax", "int4", object(), "int8")
    kept = object()
    assert rules.same_dtype_or_refuse("to_jax", "int4", kept, "int4") is kept
