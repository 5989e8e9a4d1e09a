#!/usr/bin/env python
"""xattn's bridge on CUDA: pointer identity and bit-exact values, torch -> JAX and JAX -> torch, per dtype.

Also checks the stream hand-off both ways: a producer's pending kernels (queued on a side stream
for torch, dispatched asynchronously for JAX) must be finished before the consumer reads, which
only holds if the consumer's stream went through ``__dlpack__(stream=...)``.

On a machine without CUDA (or whose JAX has no GPU backend) it says so and exits 0. Exit 1 means a
cell failed. Usage:

    python scripts/gpu_bridge_check.py
"""

from __future__ import annotations

import sys

import ml_dtypes
import numpy as np

DTYPES = (
    "float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool", "complex64",
    "complex128", "uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
    "float8_e8m0fnu",
)
SHAPE = (64, 33)


def random_bits(name: str) -> np.ndarray:
    dtype = np.dtype(getattr(ml_dtypes, name, None) or name)
    count = int(np.prod(SHAPE))
    raw = np.random.default_rng(0).integers(0, 256, count * dtype.itemsize, dtype=np.uint8)
    if name == "bool":
        raw &= 1
    return raw.view(dtype).reshape(SHAPE)


def torch_host_bytes(tensor) -> bytes:
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype.is_floating_point and tensor.element_size() <= 2:
        tensor = tensor.view({1: torch.uint8, 2: torch.int16}[tensor.element_size()])
    return tensor.numpy().tobytes()


def check_dtype(name: str, device, torch, jax, xattn) -> list[str]:
    """[dtype, t->j pointer, t->j bits, j->t pointer, j->t bits]"""
    values = random_bits(name)
    torch_dtype = getattr(torch, name, None)
    if not isinstance(torch_dtype, torch.dtype) or not hasattr(jax.numpy, name):
        return [name, "n/a: a framework lacks it", "", "", ""]
    row = [name]
    tensor = torch.frombuffer(bytearray(values.tobytes()), dtype=torch_dtype).reshape(SHAPE).to("cuda")
    try:
        array = xattn.to_jax(tensor, copy=False)
        row += ["same" if array.unsafe_buffer_pointer() == tensor.data_ptr() else "DIFFERENT",
                "exact" if np.asarray(array).tobytes() == values.tobytes() else "WRONG"]
    except xattn.BridgeError as error:
        row += [f"error: {str(error)[:60]}", ""]
    array = jax.device_put(values, device)
    try:
        shared = xattn.to_torch(array, copy=False)
        row += ["same" if shared.data_ptr() == array.unsafe_buffer_pointer() else "DIFFERENT",
                "exact" if torch_host_bytes(shared) == values.tobytes() else "WRONG"]
    except xattn.BridgeError as error:
        row += [f"error: {str(error)[:60]}", ""]
    return row


def check_streams(device, torch, jax, xattn) -> list[list[str]]:
    rows = []
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        tensor = torch.zeros(4096, 4096, device="cuda")
        for _ in range(200):
            tensor.add_(1.0)  # queued on the side stream, likely still running at the hand-off
        array = xattn.to_jax(tensor, copy=False)
    low = float(jax.numpy.min(array))
    rows.append(["torch side stream -> JAX", "exact" if low == 200.0 else f"WRONG (min {low}, expected 200)"])
    chain = jax.device_put(np.zeros((4096, 4096), np.float32), device)
    for _ in range(50):
        chain = chain + 1.0  # dispatched asynchronously
    shared = xattn.to_torch(chain, copy=False)
    low = float(shared.min())
    rows.append(["JAX async dispatch -> torch", "exact" if low == 50.0 else f"WRONG (min {low}, expected 50)"])
    return rows


def main() -> int:
    try:
        import jax
        import torch
    except ImportError as error:
        print(f"gpu_bridge_check needs JAX and torch ({error}); pip install 'xattn[jax,torch]'")
        return 2
    if not torch.cuda.is_available():
        print(f"no CUDA: torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False);"
              " nothing to check on this machine. Run this script on a machine with an NVIDIA GPU.")
        return 0
    try:
        device = jax.devices("gpu")[0]
    except RuntimeError:
        print(f"no CUDA for JAX: jax {jax.__version__} has no GPU backend here (devices: {jax.devices()}),"
              f" though torch sees {torch.cuda.get_device_name(0)}. Install jax[cuda12] to check the bridge.")
        return 0
    jax.config.update("jax_enable_x64", True)
    from tabulate import tabulate

    import xattn

    print(f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}, jax {jax.__version__}, JAX device {device}")
    rows = [check_dtype(name, device, torch, jax, xattn) for name in DTYPES]
    headers = ["dtype", "torch->jax pointer", "torch->jax bits", "jax->torch pointer", "jax->torch bits"]
    print(tabulate(rows, headers=headers, tablefmt="github"))
    streams = check_streams(device, torch, jax, xattn)
    print()
    print(tabulate(streams, headers=["stream hand-off", "values"], tablefmt="github"))
    failed = [row for row in rows if any(cell in ("DIFFERENT", "WRONG") for cell in row)]
    failed += [row for row in rows if row[1].startswith("error") and not row[0].startswith("float8")]
    failed += [row for row in streams if row[1] != "exact"]
    print(f"\n{len(failed)} failing row(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
