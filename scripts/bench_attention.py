#!/usr/bin/env python
"""Every attention variant of both frameworks at the seed shape, in one run, side by side.

Times come from ``xattn.compare`` (one clock, syncs, backends interleaved round by round); each
row gets its ratio to torch's F.scaled_dot_product_attention layer measured in the same run, its
GFLOP/s, and its peak memory: the extra resident memory of its first call after compiling,
measured in a fresh process per variant (Linux: /proc/self/clear_refs resets the high-water mark), plus XLA's own
temp-buffer figure for JAX. The full B·H·T·S float32 logits are printed for scale.

    python scripts/bench_attention.py                    # seed shape, float32, ~2-4 min on 2 cores
    python scripts/bench_attention.py --max-time 1 --no-memory
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

SEED = dict(batch=32, q_len=512, embed=128, heads=16, head_dim=8)
#: Issue 7's targets: the fastest JAX variant at most this fraction of torch SDPA's time.
JAX_TARGET = 0.6


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_memory(backend: str, variant: str, dtype: str) -> None:
    """Child process: print the extra peak RSS (bytes) of one warm call, and XLA's temp bytes."""
    import xattn
    from xattn.backends.registry import get_backend

    spec = xattn.AttentionSpec(dtype=dtype, **SEED)
    inputs = xattn.make_inputs(spec)
    module = get_backend(backend)
    x, wq, wk, wv, wo = module.as_arrays(inputs.x, *inputs.weights())
    fn = xattn.build(backend, variant, head_dim=spec.head_dim)
    args = (x, x, wq, wk, wv, wo, None)
    compiled = fn.compile(*args)
    temp = ""
    if backend == "jax" and hasattr(compiled, "memory_analysis"):  # threaded runs several executables
        temp = str(compiled.memory_analysis().temp_size_in_bytes)

    def call():
        out = compiled(*args)
        return out.block_until_ready() if backend == "jax" else out

    if backend == "torch":
        import torch

        torch.set_grad_enabled(False)
    # The first call after compiling: a warm-up call would leave its freed buffers in the
    # allocator's pools, and the measured call would reuse them without raising the RSS.
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    output = call()
    peak = _status_kib("VmHWM")
    del output
    print(f"{(peak - before) * 1024} {temp}")


def memory_of(backend: str, variant: str, dtype: str) -> tuple[float | None, float | None]:
    result = subprocess.run(
        [sys.executable, __file__, "--memory-of", backend, variant, "--dtype", dtype],
        capture_output=True, text=True, timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    if result.returncode != 0:
        print(f"  memory of {backend}/{variant} failed: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None, None
    peak, *temp = result.stdout.split()
    return float(peak), float(temp[0]) if temp else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--variants", default="all", help="comma-separated; default: all, torch's compiled included")
    parser.add_argument("--min-time", type=float, default=0.5)
    parser.add_argument("--max-time", type=float, default=3.0, help="measured seconds per variant at most")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant memory processes")
    parser.add_argument("--memory-of", nargs=2, metavar=("BACKEND", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        measure_memory(*args.memory_of, args.dtype)
        sys.stdout.flush()
        os._exit(0)  # XLA's thread pools can abort an ordinary interpreter teardown; the answer is out

    from tabulate import tabulate

    import xattn
    from xattn.backends.env import environment

    spec = xattn.AttentionSpec(dtype=args.dtype, **SEED)
    report = xattn.compare(("jax", "torch"), args.variants, spec, min_time=args.min_time, max_time=args.max_time,
                           progress=lambda line: print(f"  {line}", file=sys.stderr))
    baseline = report.row("torch", "sdpa").timing.median_s
    logits_mib = spec.batch * spec.heads * spec.q_len * spec.kv_len * 4 / 2**20
    rows = []
    if not args.no_memory:
        print("  measuring peak memory, one fresh process per variant", file=sys.stderr)
    for row in report.results:
        skip = args.no_memory or row.timing is None
        peak, temp = (None, None) if skip else memory_of(row.backend, row.variant, args.dtype)
        median = row.timing.median_s if row.timing else None
        rows.append([
            row.backend, row.variant, row.verdict,
            f"{median * 1e3:.1f}" if median else "-",
            f"{row.timing.spread:.0%}{'!' if row.timing.noisy else ''}" if row.timing else "-",
            f"{median / baseline:.2f}" if median else "-",
            f"{row.gflops:.1f}" if row.gflops else "-",
            f"{peak / 2**20:.0f}" if peak is not None else "-",
            f"{temp / 2**20:.0f}" if temp is not None else "-",
        ])
    env = environment()
    versions = env.get("versions", {})
    print(f"seed shape B=32 T=512 E=128 H=16 D=8 {args.dtype}; {env['platform']}, {os.cpu_count()} cpus;"
          f" python {env['python']}, jax {versions.get('jax')}, torch {versions.get('torch')};"
          f" threads {env['threads']}")
    print(tabulate(rows, headers=["backend", "variant", "verdict", "median ms", "IQR", "x torch sdpa", "GFLOP/s",
                                  "peak MiB", "XLA temp MiB"], disable_numparse=True))
    print(f"full B·H·T·S float32 logits: {logits_mib:.0f} MiB;"
          " peak = extra resident memory of the first call after compiling")
    timed = [row for row in report.results if row.timing is not None]
    best_jax = min((r for r in timed if r.backend == "jax"), key=lambda r: r.timing.median_s)
    best_torch = min((r for r in timed if r.backend == "torch"), key=lambda r: r.timing.median_s)
    jax_ratio = best_jax.timing.median_s / baseline
    torch_ratio = best_torch.timing.median_s / baseline
    print(f"fastest jax: {best_jax.variant} at {jax_ratio:.2f}x torch sdpa (target <= {JAX_TARGET}):"
          f" {'met' if jax_ratio <= JAX_TARGET else 'NOT met'}")
    print(f"fastest torch: {best_torch.variant} at {torch_ratio:.2f}x torch sdpa (target <= 1.0):"
          f" {'met' if torch_ratio <= 1.0 else 'NOT met'}")
    return 0 if report.exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
