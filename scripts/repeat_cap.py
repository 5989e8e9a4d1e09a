"""What capping the random-rounding repeats of a large layer does to its budgets (numerics/stages.py).

A large problem makes at most ``MAX_REPEAT_ELEMENTS`` logits of repeats (4 repeats at the
default shape instead of the 15 its 256-element bias gradients want) and extrapolates their worst
error to 4096 draws (``numerics/budget.draws_scale``). For each seed, a torch.nn.MultiheadAttention
and its flax.nnx port (random biases) are checked with ``xattn.check_layers(grad=True)`` twice,
with every repeat and capped; printed per small gradient: the capped budget over the full one
(median, range), and for every row the largest err/bud and the count of rows not ok, capped and full.

    python scripts/repeat_cap.py --seeds 20                     # E=256 H=8 B=4 T=256, as scripts/bench_check.py
    python scripts/repeat_cap.py --seeds 10 --dtype bfloat16    # both layers and the input in bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from bench_check import layer_pair, shape_arguments  # noqa: E402


def in_dtype(torch_mha, heads: int, embed: int, dtype: str, seed: int):
    """The torch layer cast to ``dtype`` and a flax.nnx port of it built in ``dtype``."""
    import jax.numpy as jnp
    import torch
    from flax import nnx

    import xattn

    torch_mha = torch_mha.to(getattr(torch, dtype))
    flax_mha = nnx.MultiHeadAttention(num_heads=heads, in_features=embed, decode=False, rngs=nnx.Rngs(seed),
                                      dtype=getattr(jnp, dtype), param_dtype=getattr(jnp, dtype))
    xattn.port_weights(torch_mha, flax_mha)
    return torch_mha, flax_mha


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    shape_arguments(parser)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                        help="both layers' parameters and the input in this dtype")
    args = parser.parse_args(argv)

    import xattn
    from xattn.contract.spec import numpy_dtype
    from xattn.numerics import stages
    from xattn.numerics.judge import OK

    capped_at = stages.MAX_REPEAT_ELEMENTS
    ratios: dict[str, list[float]] = {}
    worst = {"capped": 0.0, "full": 0.0}
    not_ok = {"capped": 0, "full": 0}
    seconds = {"capped": 0.0, "full": 0.0}
    for seed in range(args.seeds):
        torch_mha, flax_mha = layer_pair(args.embed, args.heads, seed=seed)
        if args.dtype != "float32":
            torch_mha, flax_mha = in_dtype(torch_mha, args.heads, args.embed, args.dtype, seed)
        x = np.random.default_rng(100 + seed).standard_normal((args.batch, args.length, args.embed))
        x = x.astype(numpy_dtype(args.dtype))
        reports = {}
        for name, cap in (("full", 1 << 62), ("capped", capped_at)):
            stages.MAX_REPEAT_ELEMENTS = cap
            start = time.perf_counter()
            reports[name] = xattn.check_layers(torch_mha, flax_mha, x, grad=True)
            seconds[name] += time.perf_counter() - start
        stages.MAX_REPEAT_ELEMENTS = capped_at
        for name, report in reports.items():
            worst[name] = max(worst[name], max(side.budget_use for side in report.sides))
            not_ok[name] += sum(side.verdict != OK for side in report.sides)
        budgets = {name: {side.output: side.budget for side in report.sides} for name, report in reports.items()}
        for output, full in budgets["full"].items():
            if (full.naive_runs or 1) > 1:
                ratios.setdefault(output, []).append(budgets["capped"][output].max_abs / full.max_abs)
        print(f"seed {seed}: worst err/bud capped {max(s.budget_use for s in reports['capped'].sides):.2f},"
              f" full {max(s.budget_use for s in reports['full'].sides):.2f}", flush=True)
    print(f"\n{args.seeds} seeds, B={args.batch} T={args.length} E={args.embed} H={args.heads} {args.dtype};"
          f" capped at {capped_at} logits of repeats")
    for output, values in ratios.items():
        print(f"  {output:<8} capped budget / full budget: median {statistics.median(values):.3f},"
              f" range {min(values):.3f}-{max(values):.3f}")
    for name in ("capped", "full"):
        print(f"  {name:<6}: largest err/bud of any row {worst[name]:.2f}; rows not ok {not_ok[name]};"
              f" {seconds[name] / args.seeds:.2f} s per check")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
