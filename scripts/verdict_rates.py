"""How often check_port false-alarms on a correct port, and the smallest planted error it catches.

For each run dtype and each problem shape (plain, causal multi-query, padded grouped cross-attention),
a correct port pair (JAX einsum vs torch sdpa) is checked with ``xattn.reference`` as the oracle over
many seeds: every "not ok" is a false alarm. Then one output element of the correct torch port is
moved by ``r`` times the output's largest magnitude, for ``r`` halving from 2**-1 down, and the
smallest ``r`` caught at every seed is printed, with the budget that caught it in ulps of the dtype.

    python scripts/verdict_rates.py --seeds 200
    python scripts/verdict_rates.py --seeds 200 --at-once   # the repeats as xattn's own references make them
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import xattn
from xattn.numerics.naive import repeats_at_once

CONFIGS = {
    "mha": dict(batch=2, q_len=16, embed=32, heads=4),
    "mqa-causal": dict(batch=1, q_len=12, embed=32, heads=4, kv_heads=1, causal=True),
    "gqa-cross-padded": dict(batch=2, q_len=8, kv_len=24, embed=16, heads=4, kv_heads=2, key_lengths=(5, 24)),
}


def run(backend, variant, spec, args, delta=None):
    x, kv, wq, wk, wv, wo, lengths = args
    out = xattn.to_numpy(xattn.attention(x, wq, wk, wv, wo, kv=kv, key_lengths=lengths, causal=spec.causal,
                                         backend=backend, variant=variant))
    if delta is None:
        return np.asarray(out)
    index, size = delta
    bent = np.asarray(out, np.float64).copy().reshape(-1)
    bent[index] += size
    return bent.reshape(out.shape).astype(out.dtype)


AT_ONCE = False  # --at-once: the naive repeats all at once (xattn's vectorised path), else seed by seed


def check(spec, args, delta=None):
    def reference(*inputs, dtype=None, rounding_seed=None):
        x, kv, wq, wk, wv, wo, lengths = inputs
        return xattn.reference(x, wq, wk, wv, wo, kv=kv, key_lengths=lengths, causal=spec.causal, dtype=dtype,
                               rounding_seed=rounding_seed)

    if AT_ONCE:
        reference = repeats_at_once(reference)

    def jax_port(*inputs):
        return run("jax", "einsum", spec, inputs)

    def torch_port(*inputs):
        return run("torch", "sdpa", spec, inputs, delta)

    return xattn.check_port(jax_port, torch_port, *args, reference=reference, frameworks=("numpy", "numpy"))


def case(config, dtype, seed):
    spec = xattn.AttentionSpec(**config, dtype=dtype, seed=seed)
    inputs = xattn.make_inputs(spec)
    return spec, (inputs.x, inputs.kv, *inputs.weights(), inputs.key_lengths)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50, help="seeds per (dtype, shape) for the false-alarm rate")
    parser.add_argument("--planted-seeds", type=int, default=10, help="seeds per dtype for the planted errors")
    parser.add_argument("--at-once", action="store_true",
                        help="the budget's random-rounding repeats computed all at once (as xattn's own references do)")
    args = parser.parse_args()
    global AT_ONCE
    AT_ONCE = args.at_once
    start = time.perf_counter()
    print(f"xattn {xattn.__version__}; false alarms of a correct port (jax einsum vs torch sdpa, xattn.reference)")
    for dtype in ("float32", "float16", "bfloat16"):
        for name, config in CONFIGS.items():
            alarms, uses = 0, []
            for seed in range(args.seeds):
                report = check(*case(config, dtype, seed))
                alarms += not report.ok
                uses += [side.budget_use for side in report.sides]
            print(f"  {dtype:8} {name:17} {alarms}/{args.seeds} false alarms;"
                  f" err/bud median {np.median(uses):.2f}, max {max(uses):.2f}")
    print("smallest planted single-element error caught at every seed (r x the output's largest magnitude)")
    for dtype in ("float32", "float16", "bfloat16"):
        eps = float(np.finfo(np.float32).eps) if dtype == "float32" else float(
            {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}[dtype])
        smallest = None
        for power in range(1, 40):
            r = 2.0 ** -power
            caught = True
            for seed in range(args.planted_seeds):
                spec, inputs = case(CONFIGS["mha"], dtype, seed)
                x, kv, wq, wk, wv, wo, _ = inputs
                scale = float(np.abs(xattn.reference(x, wq, wk, wv, wo, kv=kv, causal=spec.causal)).max())
                index = seed * 7919 % (spec.batch * spec.q_len * spec.embed)
                if check(spec, inputs, (index, r * scale)).ok:
                    caught = False
                    break
            if not caught:
                break
            smallest = r
        print(f"  {dtype:8} r = 2**{int(np.log2(smallest))} = {smallest:.2g} ({smallest / eps:.3g} eps of {dtype})")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
