"""Measured peak memory of each comparison stage beside xattn's estimate of it (--max-memory's model).

Each stage runs in a fresh child process: the float64 oracle with its naive runs, and each
variant's first call (forward, and with --grad its VJP), measured as the growth of the process's
peak resident set (VmHWM, reset just before; Linux only). The ratio estimate / measured should
stay at or above 1: below it, xattn.comparison.memory under-estimates that stage.

    python scripts/memory_estimate.py [--batch 8 --q-len 512 --embed 128 --heads 16] [--grad]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def _kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(spec_fields: dict, stage: str, grad: bool) -> None:
    """Run one stage once, measured (a forward compiled first, as xattn times compiles apart); print its growth.

    The first run, since memory freed after it stays resident: a second would reuse those pages.
    A gradient's first call includes its tracing, so its figure errs high.
    """
    import numpy as np

    import xattn
    from xattn.backends import calls, frameworks, registry
    from xattn.comparison.gradients import _budgets, _differentiable
    from xattn.contract.spec import make_inputs
    from xattn.numerics.naive import naive_runs

    spec = xattn.AttentionSpec(**spec_fields)
    inputs = make_inputs(spec)
    problem = dict(kv=inputs.kv, causal=spec.causal, key_lengths=inputs.key_lengths, scale=spec.scale)
    cross = inputs.kv is not inputs.x
    labels = ["x", *(["kv"] if cross else []), "wq", "wk", "wv", "wo"]
    if stage == "oracle":
        def run():
            oracle = xattn.reference(inputs.x, *inputs.weights(), **problem)
            naive_runs(lambda seed: xattn.reference(inputs.x, *inputs.weights(), **problem, dtype=spec.dtype,
                                                    rounding_seed=seed), oracle.size, spec.dtype)
            if grad:
                _budgets(spec, inputs, cross, labels, calls.cotangent_like(np.zeros(inputs.x.shape, inputs.x.dtype)))
    else:
        backend, variant = stage.split("/")
        side = frameworks.side(backend)
        device = side.device("cpu")
        if grad:
            host = [inputs.x, *([inputs.kv] if cross else []), *inputs.weights()]
            cotangent = calls.cotangent_like(np.zeros(inputs.x.shape, inputs.x.dtype))
            call = _differentiable(backend, variant, spec, inputs, "cpu", cross)

            def run():
                calls.vjp(call, backend, host, {calls.OUTPUT: cotangent}, range(len(host)), device="cpu")
        else:
            fn = registry.build(backend, variant, causal=spec.causal, scale=spec.scale, head_dim=spec.head_dim)
            x, wq, wk, wv, wo = side.put((inputs.x, *inputs.weights()), device)
            runnable = fn.compile(x, x, wq, wk, wv, wo, None)  # compiled before the measurement starts

            def run():
                side.sync(runnable(x, x, wq, wk, wv, wo, None))
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset VmHWM to the current RSS
    before = _kib("VmRSS")
    run()
    print((_kib("VmHWM") - before) * 1024, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("batch", 8), ("q-len", 512), ("embed", 128), ("heads", 16)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--grad", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("SPEC", "STAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child[0]), args.child[1], args.grad)
        sys.stdout.flush()
        os._exit(0)  # XLA's thread pools can abort an ordinary interpreter teardown; the answer is out

    import xattn
    from xattn.comparison import memory

    fields = dict(batch=args.batch, q_len=args.q_len, embed=args.embed, heads=args.heads, dtype=args.dtype)
    spec = xattn.AttentionSpec(**fields)
    runs = tuple(memory.VARIANT_PEAKS)
    estimate = memory.estimate(spec, runs, grad=args.grad)
    logits_mib = spec.batch * spec.heads * spec.q_len ** 2 * 4 / 2**20
    print(f"B={spec.batch} T=S={spec.q_len} E={spec.embed} H={spec.heads} D={spec.head_dim} {spec.dtype}"
          f"{' with gradients' if args.grad else ''}; logits {logits_mib:.0f} MiB in float32")
    print(f"{'stage':32} {'measured MiB':>13} {'estimated MiB':>14} {'estimate/measured':>18}")
    for stage in ("oracle", *(f"{b}/{v}" for b, v in runs)):
        command = [sys.executable, __file__, "--child", json.dumps(fields), stage] + (["--grad"] if args.grad else [])
        result = subprocess.run(command, capture_output=True, text=True, timeout=900,
                                env={**os.environ, "JAX_PLATFORMS": "cpu"})
        key = "float64 oracle and naive runs" if stage == "oracle" else stage
        if result.returncode != 0 or not result.stdout.strip():
            print(f"{stage:32} failed: {(result.stderr.strip().splitlines() or ['?'])[-1][:80]}")
            continue
        measured = int(result.stdout.split()[-1])
        estimated = estimate.stages[key]
        ratio = estimated / measured if measured > 0 else float("inf")
        print(f"{stage:32} {measured / 2**20:13.0f} {estimated / 2**20:14.0f} {ratio:18.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
