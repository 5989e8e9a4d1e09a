#!/usr/bin/env python
"""JAX ``tiled`` at several tile sizes against torch SDPA, interleaved in one run: how its sizes were chosen.

Each (query tile, logits tile MiB) pair is compiled ahead of time with those sizes (the module
constants QUERY_TILE and TILE_BYTES, read when the function is traced), checked against the
float64 oracle within the budget, then timed round by round beside torch's
F.scaled_dot_product_attention layer (``xattn.timing.measure_interleaved``: one clock, syncs,
the same thread count). Rows are sorted by their ratio to torch SDPA.

    python scripts/tune_tiled.py                              # seed shape, 128/256/512 x 1/2/4/8 MiB
    python scripts/tune_tiled.py --query-tiles 512 --tile-mib 2,4 --max-time 5

The ratios move by 0.05-0.15 between runs on a shared 2-core machine; run it twice before
trusting a difference smaller than that.
"""

from __future__ import annotations

import argparse
import sys

SEED = dict(batch=32, q_len=512, embed=128, heads=16, head_dim=8)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query-tiles", type=_ints, default=[128, 256, 512])
    parser.add_argument("--tile-mib", type=_ints, default=[1, 2, 4, 8])
    parser.add_argument("--min-time", type=float, default=1.0)
    parser.add_argument("--max-time", type=float, default=3.0, help="measured seconds per row at most")
    options = parser.parse_args()

    import numpy as np
    from tabulate import tabulate

    import xattn
    from xattn.backends import frameworks, jax_attention
    from xattn.backends.registry import get_backend
    from xattn.numerics.budget import naive_budget, within_budget
    from xattn.numerics.drift import drift_metrics
    from xattn.numerics.naive import naive_attention
    from xattn.timing import Candidate, measure_interleaved

    spec = xattn.AttentionSpec(**SEED)
    inputs = xattn.make_inputs(spec)
    oracle = xattn.reference(inputs.x, *inputs.weights())
    budget = naive_budget(naive_attention(inputs, dtype=spec.dtype), oracle, spec.dtype)
    jax_side, torch_side = frameworks.side("jax"), frameworks.side("torch")
    threads = jax_side.intra_op_threads()
    torch_side.torch.set_num_threads(threads)
    torch_side.torch.set_grad_enabled(False)

    candidates, checks = {}, []
    for backend in ("torch", "jax"):
        module = get_backend(backend)
        x, wq, wk, wv, wo = module.as_arrays(inputs.x, *inputs.weights())
        args = (x, x, wq, wk, wv, wo, None)
        sizes = [(None, None)]
        if backend == "jax":
            sizes = [(query_tile, mib) for query_tile in options.query_tiles for mib in options.tile_mib]
        for query_tile, mib in sizes:
            if backend == "torch":
                name, fn = "torch sdpa", xattn.build("torch", "sdpa", head_dim=spec.head_dim)
            else:
                jax_attention.QUERY_TILE, jax_attention.TILE_BYTES = query_tile, mib * 2**20
                jax_attention.build.cache_clear()
                name, fn = f"jax tiled {query_tile} x {mib} MiB", xattn.build("jax", "tiled", head_dim=spec.head_dim)
            print(f"compiling {name}", file=sys.stderr)
            runnable = fn.compile(*args)  # traced now, with these sizes
            actual = np.asarray(xattn.to_numpy(runnable(*args)))
            ok = within_budget(drift_metrics(actual, oracle, spec.dtype), budget)
            checks.append((name, ok))
            sync = jax_side.sync if backend == "jax" else torch_side.sync
            candidates[name] = Candidate(lambda runnable=runnable, args=args: runnable(*args), sync)
    print(f"timing {len(candidates)} rows, interleaved (max {options.max_time:g} s each)", file=sys.stderr)
    measured = measure_interleaved(candidates, min_time=options.min_time, max_time=options.max_time)
    base = measured["torch sdpa"].median_s
    rows = sorted(((name, "ok" if ok else "DRIFT", 1e3 * measured[name].median_s,
                    f"{100 * measured[name].iqr_s / measured[name].median_s:.0f}%",
                    measured[name].median_s / base) for name, ok in checks), key=lambda row: row[-1])
    print(f"seed shape {SEED}, float32, {threads} threads per framework; ratio = median / torch SDPA's median")
    headers = ["row", "check", "median ms", "IQR", "x torch sdpa"]
    print(tabulate(rows, headers=headers, floatfmt=(".1f", "", ".1f", "", ".2f")))
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
