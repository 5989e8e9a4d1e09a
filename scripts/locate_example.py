"""The worked example of docs/porting.md, "Porting a whole model": xattn.locate on a torch encoder and its nnx port.

The models are tests/models' two-layer BERT-style encoder in torch and its flax.nnx port with the
same submodule names, ported weight by weight, fed int32 token ids and a key mask (so the run dtype
comes from the parameters and the oracle is the torch model's float64 rerun). It prints:

1. the locate table of a port with a bug planted in layer 1 (``--bug``, default ``epsilon``: the
   layer's norms keep flax's default epsilon 1e-6 instead of torch's 1e-5);
2. over ``--seeds`` seeds (weights and inputs): how often locate flags a *correct* port (the false
   alarm rate) with the largest err/bud any intermediate reached, and how often each planted bug
   is located in layer 1, the layer it is in, with the smallest err/bud at the first pair.

    python scripts/locate_example.py [--seeds 20] [--reference a|b] [--bug epsilon|gelu|scale]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def layer_of(name: str) -> str | None:
    parts = name.replace("/", ".").split(".")
    return parts[2] if parts[:2] == ["encoder", "layer"] and len(parts) > 2 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--reference", choices=("a", "b"), default="a")
    parser.add_argument("--bug", default="epsilon")
    args = parser.parse_args()

    import torch
    from models.nnx_encoder import BUGS
    from models.port_encoder import make_inputs, make_pair

    import xattn

    # One torch thread: the models are tiny, and a 2-core machine shared with other work makes
    # torch's thread pool wait for cores on every small matmul. Nothing here is timed.
    torch.set_num_threads(1)
    if args.bug not in BUGS:
        parser.error(f"--bug: expected one of {sorted(BUGS)}; got {args.bug!r}")

    torch_model, nnx_model = make_pair(0, bug=(args.bug, 1))
    ids, mask = make_inputs(0)
    print(f"bug planted in layer 1: {BUGS[args.bug]}\n")
    print(xattn.locate(torch_model, nnx_model, ids, mask, reference=args.reference))

    started = time.perf_counter()
    alarms, worst = 0, 0.0
    located = {bug: [] for bug in BUGS}
    for seed in range(args.seeds):
        ids, mask = make_inputs(seed)
        report = xattn.locate(*make_pair(seed), ids, mask, reference=args.reference)
        alarms += report.first is not None
        worst = max(worst, max(pair.budget_use for pair in report.pairs))
        for bug in BUGS:
            first = xattn.locate(*make_pair(seed, bug=(bug, 1)), ids, mask, reference=args.reference).first
            located[bug].append((first is not None and layer_of(first.names[0]) == layer_of(first.names[1]) == "1",
                                 first.budget_use if first is not None else 0.0))
    print(f"correct ports, {args.seeds} seeds, reference {args.reference}: {alarms} false alarms"
          f" ({alarms / args.seeds:.0%}); largest err/bud of any intermediate {worst:.2f}")
    for bug, found in located.items():
        hits = sum(hit for hit, _ in found)
        print(f"bug {bug!r} in layer 1: located in layer 1 in {hits}/{len(found)} seeds;"
              f" smallest err/bud at the first pair {min(use for _, use in found):.3g}")
    print(f"({time.perf_counter() - started:.0f} s for {args.seeds * (1 + len(BUGS))} locate calls)")


if __name__ == "__main__":
    main()
