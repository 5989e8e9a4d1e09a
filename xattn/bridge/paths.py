"""The six conversion paths behind :mod:`xattn.bridge`, one function per (source, target) pair.

Each takes an array already known to come from its source framework, ``copy`` (None, False or
True) and, where the target has devices, ``device``. Frameworks are imported inside the functions:
a path only runs once its source framework is in ``sys.modules``. The checks and messages they
share live in :mod:`xattn.bridge.rules`; the rules they keep are in ``docs/bridge.md``.
"""

from __future__ import annotations

import numpy as np

from xattn import _compat
from xattn.bridge.rules import (
    NUMPY_BITS,
    alignment_refusal,
    call_name,
    cast_advice,
    check_jax_dtype,
    check_jax_live,
    check_zero_copy,
    jax_device_of,
    jax_single_device,
    jax_takes_layout,
    layout_refusal,
    ml_names,
    numpy_element_strides,
    read_only_refusal,
    refuse,
    row_major_strides,
    sharded_refusal,
    sub_byte_names,
    torch_clone,
    torch_dtype_name,
    torch_placed,
    version_refusal,
    wrap,
)

# ------------------------------------------------------------------------------------ torch source


def torch_resolved(x, call: str, copy):
    """``x`` made exportable, and whether that already copied it; refuses what has no exact export.

    A conj or neg view shares its buffer with the *unconjugated / unnegated* values: torch's own
    ``__dlpack__`` exports those bits and silently drops the neg bit, so the view is resolved first.
    """
    import torch

    if x.layout is not torch.strided:
        raise refuse(call, f"expected a dense (strided) tensor; got layout {x.layout}, and DLPack carries dense"
                     " buffers only", "Call x.to_dense() first if the dense size is what you want")
    if x.is_meta:
        raise refuse(call, "expected a tensor with data; got a meta tensor, which has none",
                     "Materialize it first, e.g. torch.empty_like(x, device='cpu')")
    if x.requires_grad:
        raise refuse(
            call,
            "expected a tensor that does not require grad; got requires_grad=True, and the target cannot"
            " carry torch autograd, so converting it would cut the graph without telling you",
            "Pass x.detach() to share its values (gradients stop at that point), or module.state_dict(),"
            " whose tensors are already detached",
        )
    if x.is_conj() or x.is_neg():
        bit = "conj" if x.is_conj() else "neg"
        if copy is False:
            raise refuse(call, f"a torch {bit} view (x.is_{bit}() is True) stores unresolved values, so no"
                         " zero-copy view of it has the right values", f"Pass copy=None for an exact copy,"
                         f" or call x.resolve_{bit}() yourself")
        return x.resolve_conj().resolve_neg(), True
    return x, False


def torch_to_jax(x, copy, device):
    import torch

    call = call_name("to_jax", copy)
    name = torch_dtype_name(x.dtype)
    check_jax_dtype(call, name)
    x, copied = torch_resolved(x, call, copy)
    if name in sub_byte_names():
        return _torch_sub_byte_to_jax(x, call, name, copy, device)
    if x.numel() == 0:
        x, copied = x.contiguous(), True  # nothing to alias
    elif copy is True and not copied:
        x, copied = torch_clone(x, memory_format=torch.contiguous_format), True  # see _compat.jax_from_dlpack
    elif not jax_takes_layout(x.shape, x.stride()):
        if copy is False:
            raise layout_refusal(call, x.shape, x.stride())
        x, copied = torch_clone(x, memory_format=torch.contiguous_format), True
    jax_device = jax_device_of(device)
    # An empty tensor has no bytes to share: asking JAX for strict aliasing would only make the
    # answer depend on where the allocator happened to put it (XLA's alignment rule).
    strict = False if copy is False and x.numel() else None
    try:
        result = _compat.jax_from_dlpack(x, copy=strict, device=jax_device)
    except Exception as error:
        if _compat.jax_dlpack_dtype_error(error):
            raise version_refusal(call, name, "JAX", error) from None
        if _compat.jax_dlpack_alignment_error(error):
            raise alignment_refusal(call, x.data_ptr()) from None
        if copy is not False and _compat.jax_dlpack_layout_error(error):
            result = _compat.jax_from_dlpack(x.clone(memory_format=torch.contiguous_format), device=jax_device)
        elif copy is not False and x.device.type != "cpu" and getattr(jax_device, "platform", None) == "cpu":
            result = _compat.jax_from_dlpack(x.cpu(), device=jax_device)  # JAX cannot see that GPU
        elif x.device.type != "cpu" and jax_device is None:
            raise refuse(call, f"JAX cannot reach torch's {x.device} here ({error})",
                         "Pass device='cpu' for an exact host copy, or install a JAX with that platform") from None
        else:
            raise wrap(call, error) from None
    if copy is False:
        check_zero_copy(call, result, x.data_ptr(), x.numel())
    return result


def _torch_sub_byte_to_jax(x, call: str, name: str, copy, device):
    """torch's one-value-per-byte buffer read as the ml_dtypes array it is, then put into JAX.

    torch's DLPack export calls int4 "4-bit integers" and JAX reads that as int8 (wrong values), so
    these kinds never cross by DLPack: JAX gets them from NumPy, as it would from a user.
    """
    import ml_dtypes
    import torch

    if x.device.type != "cpu" and device is None:
        raise refuse(call, f"JAX takes {name} data through host memory only, so device=None cannot keep it on"
                     f" torch's {x.device}", "Pass device='cpu', or the JAX device it should go to")
    array = x.view(torch.uint8).cpu().numpy().view(getattr(ml_dtypes, name))
    return numpy_to_jax(array, copy, device)


def torch_to_numpy(x, copy):
    import ml_dtypes
    import torch

    call = call_name("to_numpy", copy)
    x, copied = torch_resolved(x, call, copy)
    name = torch_dtype_name(x.dtype)
    if name in ml_names():
        # NumPy's DLPack has no bfloat16/float8/int4 codes: share the bits as unsigned ints, re-view them.
        x = x.view({1: torch.uint8, 2: torch.int16}[x.element_size()])
    if x.device.type != "cpu":
        if copy is False:
            raise refuse(call, f"NumPy reads host memory only; got a tensor on {x.device}",
                         "Pass copy=None for an exact host copy (x.cpu())")
        x, copied = x.cpu(), True
    try:
        array = x.numpy()
    except (TypeError, RuntimeError) as error:
        raise refuse(call, f"NumPy has no counterpart of torch.{name} ({error})", cast_advice(name)) from None
    if name in ml_names():
        array = array.view(getattr(ml_dtypes, name))
    if copy is True and not copied:
        array = np.array(array, copy=True, order="K")
    return array


# -------------------------------------------------------------------------------------- JAX source


def jax_to_torch(x, copy, device):
    import torch

    call = call_name("to_torch", copy)
    check_jax_live(call, x)
    target = torch.device(device) if device is not None else None
    name = x.dtype.name
    if not isinstance(getattr(torch, name, None), torch.dtype):
        raise version_refusal(call, name, "torch")
    copied = False
    if name in sub_byte_names():
        tensor, copied = _jax_sub_byte_to_torch(x, call, name, copy, target), True
    elif not jax_single_device(x):
        if copy is False:
            raise sharded_refusal(call, x)
        tensor, copied = numpy_to_torch(np.array(x), None, None), True  # a private host copy, shared
    else:
        try:
            tensor = torch.from_dlpack(x)  # torch passes its current stream to x.__dlpack__
        except Exception as error:
            if _compat.jax_dlpack_dtype_error(error):
                raise version_refusal(call, name, "JAX", error) from None
            if _compat.torch_dlpack_dtype_error(error):
                raise version_refusal(call, name, "torch", error) from None
            platform = next(iter(x.devices())).platform
            if copy is not False and platform != "cpu" and target is not None and target.type == "cpu":
                tensor, copied = numpy_to_torch(np.array(x), None, None), True
            elif platform != "cpu":
                raise refuse(call, f"this torch cannot reach JAX's {platform} buffer ({error})",
                             "Pass device='cpu' for an exact host copy") from None
            else:
                raise wrap(call, error) from None
    return torch_placed(call, tensor, target, copy, copied, f"the buffer is on {tensor.device}")


def _jax_sub_byte_to_torch(x, call: str, name: str, copy, target):
    """An exact host copy of a JAX sub-byte array, shared with torch (see _torch_sub_byte_to_jax)."""
    if copy is False and x.size:  # an empty array has no bytes to share: nothing to refuse
        raise refuse(call, f"JAX exports no {name} buffer torch could share (DLPack has no code for one {name}"
                     " per byte, and JAX's NumPy view of one is a copy)", "Pass copy=None for an exact copy")
    platform = next(iter(x.devices())).platform
    if platform != "cpu" and target is None:
        raise refuse(call, f"torch takes JAX's {name} data through host memory only, so device=None cannot keep"
                     f" it on JAX's {platform}", "Pass device='cpu', or the torch device it should go to")
    return numpy_to_torch(np.array(x), None, None)


def jax_to_numpy(x, copy):
    call = call_name("to_numpy", copy)
    check_jax_live(call, x)
    if jax_single_device(x) and next(iter(x.devices())).platform == "cpu":
        if x.dtype.name in ml_names():
            array = np.asarray(x)  # NumPy's DLPack lacks these dtypes; __array__ shares a default layout
        else:
            array = _compat.numpy_from_dlpack(x)  # never a stale cached copy, any layout
        if copy is True:
            return np.array(array, copy=True, order="K")
        if copy is False and array.size and array.ctypes.data != _compat.jax_buffer_pointer(x):
            raise refuse(call, f"JAX copied this {x.dtype.name} buffer on its way to NumPy (a non-default layout,"
                         " or a sub-byte kind JAX stores its own way)", "Pass copy=None to accept the exact copy")
        return array
    if copy is False:
        if not jax_single_device(x):
            raise sharded_refusal(call, x)
        raise refuse(call, f"NumPy reads host memory only; got an array on {next(iter(x.devices()))}",
                     "Pass copy=None for an exact host copy")
    return np.array(x, copy=True) if copy else np.asarray(x)


# ------------------------------------------------------------------------------------ NumPy source


def numpy_dtype_check(call: str, array: np.ndarray) -> str:
    name = array.dtype.name
    if array.dtype.kind not in "biufc" and name not in ml_names():
        raise refuse(call, f"expected a numeric or bool dtype; got {array.dtype}, which DLPack cannot carry",
                     "Convert it to a numeric dtype first")
    return name


def numpy_native(call: str, array: np.ndarray, copy):
    """``array`` in native byte order (DLPack carries no byte order), and whether that copied it."""
    if array.dtype.isnative:
        return array, False
    if copy is False:
        raise refuse(call, f"DLPack carries native byte order only; got {array.dtype.str}",
                     "Pass copy=None for an exact native-order copy, or convert it yourself with"
                     " array.astype(array.dtype.newbyteorder('='))")
    return array.astype(array.dtype.newbyteorder("=")), True


def numpy_to_torch(x, copy, device):
    import torch

    call = call_name("to_torch", copy)
    name = numpy_dtype_check(call, x)
    torch_dtype = getattr(torch, name, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise version_refusal(call, name, "torch")
    x, copied = numpy_native(call, x, copy)
    if any(stride < 0 or stride % x.dtype.itemsize for stride in x.strides):
        if copy is False:
            raise refuse(call, f"torch tensors cannot have negative or fractional strides; got {x.strides} bytes",
                         "Pass copy=None for an exact copy, or call np.ascontiguousarray yourself")
        x, copied = x.copy(order="C"), True
    if not x.flags.writeable:
        # torch has no read-only tensors: sharing would let torch write where NumPy promised no change.
        if copy is False:
            raise read_only_refusal(call)
        x, copied = np.array(x, copy=True, order="K"), True
    if name in ml_names():
        tensor = torch.from_numpy(x.view(NUMPY_BITS[x.dtype.itemsize])).view(torch_dtype)
    else:
        tensor = torch.from_numpy(x)
    return torch_placed(call, tensor, device, copy, copied, "NumPy memory is on the host")


def numpy_to_jax(x, copy, device):
    import jax

    call = call_name("to_jax", copy)
    name = numpy_dtype_check(call, x)
    check_jax_dtype(call, name)
    x, copied = numpy_native(call, x, copy)
    if copy is True and not copied:
        x, copied = np.array(x, copy=True, order="K"), True
    jax_device = jax_device_of(device)
    # NumPy's __dlpack__ refuses ml_dtypes (no bfloat16/float8 codes) and read-only arrays (that needs
    # DLPack 1.0, which JAX does not ask for); device_put aliases an aligned row-major host buffer.
    through_device_put = name in ml_names() or not x.flags.writeable
    strides = numpy_element_strides(x)
    if through_device_put:
        takes = strides == row_major_strides(x.shape)
    else:
        takes = strides is not None and jax_takes_layout(x.shape, strides)
    if x.size and not takes:
        if copy is False:
            raise layout_refusal(call, x.shape, strides)
        x = x.copy(order="C")
    if through_device_put:
        result = jax.device_put(x, jax_device if jax_device is not None else jax.devices("cpu")[0])
    else:
        try:
            # empty arrays: nothing to alias, so no alignment refusal (see the torch path)
            strict = False if copy is False and x.size else None
            result = _compat.jax_from_dlpack(x, copy=strict, device=jax_device)
        except Exception as error:
            if _compat.jax_dlpack_alignment_error(error):
                raise alignment_refusal(call, x.ctypes.data) from None
            raise wrap(call, error) from None
    if copy is False:
        check_zero_copy(call, result, x.ctypes.data, x.size)
    return result
