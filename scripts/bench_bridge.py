#!/usr/bin/env python
"""Per-call cost of xattn's bridge against the bare framework call and a copy through NumPy.

For float32 arrays from 16 B to 64 MiB, both directions (JAX -> torch, torch -> JAX), one run:

    xattn     xattn.to_torch(x) / xattn.to_jax(t)
    bare      torch.from_dlpack(x) / jax.dlpack.from_dlpack(t)
    numpy     torch.from_numpy(np.array(x)) / jnp.array(t.numpy())   (a real copy)

xattn and bare are timed round by round in alternating order (ABBA, so machine drift hits both
alike), each after untimed warm-up calls; the NumPy copies are timed apart, after them, since a
large copy evicts the caches the next call needs. Each time is the median over rounds of the
per-call time. xattn/bare, the figure the target is checked on, is the median of the per-round
ratios (each round's pair ran back to back, so drift cancels); the ratio of the two fastest rounds
(min/min) is shown beside it.
Target: xattn within 1.2x of bare at every size, and flat in size. Usage:

    python scripts/bench_bridge.py [--rounds 41] [--budget-ms 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

SIZES = (16, 256, 4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20)  # bytes
TARGET_RATIO = 1.2


def human(nbytes: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"


def per_call(function, argument, calls: int) -> float:
    """Seconds per call of ``function(argument)``, over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        function(argument)
    return (time.perf_counter() - start) / calls


def calls_for(function, argument, budget_s: float) -> int:
    """How many calls fit in ``budget_s`` (at least 1, at most 2000)."""
    once = per_call(function, argument, 1)
    return max(1, min(2000, int(budget_s / max(once, 1e-7))))


def bench(rounds: int, budget_s: float):
    import jax
    import jax.numpy as jnp
    import torch

    import xattn

    rows = []
    for nbytes in SIZES:
        count = nbytes // 4
        array = jax.device_put(np.arange(count, dtype=np.float32))
        tensor = torch.arange(count, dtype=torch.float32)
        directions = {
            "jax->torch": (array, {
                "xattn": xattn.to_torch,
                "bare": torch.from_dlpack,
                "numpy": lambda x: torch.from_numpy(np.array(x)),
            }),
            "torch->jax": (tensor, {
                "xattn": xattn.to_jax,
                "bare": jax.dlpack.from_dlpack,
                "numpy": lambda t: jnp.array(t.numpy()),
            }),
        }
        for direction, (source, functions) in directions.items():
            calls = {name: calls_for(function, source, budget_s) for name, function in functions.items()}
            times = {name: [] for name in functions}
            for name in ("xattn", "bare"):  # settle after this size's allocations before timing
                per_call(functions[name], source, calls[name])
            for round_index in range(rounds):
                # xattn and bare alternate which goes first (ABBA); each gets untimed warm-up calls
                # first, since whatever runs right after a large copy pays for the evicted caches.
                pair = ("xattn", "bare") if round_index % 2 == 0 else ("bare", "xattn")
                for name in pair:
                    per_call(functions[name], source, max(1, calls[name] // 10))
                    times[name].append(per_call(functions[name], source, calls[name]))
            for _ in range(max(3, rounds // 3)):  # the copies last, apart: they evict caches
                times["numpy"].append(per_call(functions["numpy"], source, calls["numpy"]))
            ratios = [x / b for x, b in zip(times["xattn"], times["bare"])]
            rows.append({
                "size": human(nbytes), "bytes": nbytes, "direction": direction,
                "xattn_us": statistics.median(times["xattn"]) * 1e6,
                "bare_us": statistics.median(times["bare"]) * 1e6,
                "ratio": statistics.median(ratios),
                "ratio_of_minima": min(times["xattn"]) / min(times["bare"]),
                "numpy_copy_us": statistics.median(times["numpy"]) * 1e6,
            })
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=41, help="rounds per size and direction (default 41)")
    parser.add_argument("--budget-ms", type=float, default=5.0, help="time per method per round (default 5 ms)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    try:
        import jax
        import torch
    except ImportError as error:
        print(f"bench_bridge needs JAX and torch ({error}); pip install 'xattn[jax,torch]'", file=sys.stderr)
        return 2
    from tabulate import tabulate

    rows = bench(args.rounds, args.budget_ms / 1e3)
    table = [
        [row["size"], row["direction"], f"{row['xattn_us']:.2f}", f"{row['bare_us']:.2f}", f"{row['ratio']:.3f}",
         f"{row['ratio_of_minima']:.3f}", f"{row['numpy_copy_us']:.1f}",
         f"{row['numpy_copy_us'] / row['xattn_us']:.1f}x", "ok" if row["ratio"] <= TARGET_RATIO else "OVER"]
        for row in rows
    ]
    headers = ["size", "direction", "xattn us", "bare us", "xattn/bare", "min/min",
               "numpy copy us", "copy/xattn", "<=1.2x"]
    print(f"jax {jax.__version__}, torch {torch.__version__}, numpy {np.__version__}, float32, CPU;"
          f" {args.rounds} rounds; times are medians")
    print(tabulate(table, headers=headers, tablefmt="github", disable_numparse=True))
    for direction in ("jax->torch", "torch->jax"):
        times = [row["xattn_us"] for row in rows if row["direction"] == direction]
        bare = [row["bare_us"] for row in rows if row["direction"] == direction]
        print(f"{direction}, {human(SIZES[0])}..{human(SIZES[-1])}: xattn {min(times):.2f}..{max(times):.2f} us per"
              f" call (max/min {max(times) / min(times):.2f}); bare {min(bare):.2f}..{max(bare):.2f} us"
              f" (max/min {max(bare) / min(bare):.2f})")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)
    return 0 if all(row["ratio"] <= TARGET_RATIO for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
