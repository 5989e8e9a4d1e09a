"""Worked example: port a trained ``torch.nn.MultiheadAttention`` to ``flax.nnx.MultiHeadAttention``.

    python scripts/port_mha.py                      # E=64, H=8, B=2, T=32, causal + key padding
    python scripts/port_mha.py --no-mask --embed 32 --heads 4

1. A torch MHA stands in for a trained layer: its packed ``in_proj_weight`` and ``out_proj`` get
   random values, biases included (a fresh layer's biases are zeros and would hide a misplaced one).
2. ``xattn.port_weights`` copies it into a Flax NNX MHA built with the matching options, and
   prints where each Flax parameter came from and whether it shares the torch buffer.
3. ``xattn.check_layers`` runs both layers on the same input bits and compares the outputs and the
   gradients of ⟨out, C⟩ with respect to the input and every weight (torch.autograd against
   jax.vjp), each against the float64 oracle, and prints the drift table.
4. The Flax weights go back into a fresh torch MHA (``batch_first`` flipped) and must be bit-identical.

Exit status 0 when every row is within its budget and the round trip is exact, 1 otherwise.
See docs/porting.md for a walk through the output.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed", type=int, default=64, help="E, the model width")
    parser.add_argument("--heads", type=int, default=8, help="H, attention heads")
    parser.add_argument("--batch", type=int, default=2, help="B")
    parser.add_argument("--length", type=int, default=32, help="T, the sequence length")
    parser.add_argument("--no-mask", action="store_true", help="no causal mask and no key padding")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    from flax import nnx

    import xattn

    torch.manual_seed(args.seed)
    E, H, B, T = args.embed, args.heads, args.batch, args.length

    # 1. The "trained" torch layer (sequence-first, torch's default layout).
    torch_mha = torch.nn.MultiheadAttention(E, H, batch_first=False)
    with torch.no_grad():
        torch.nn.init.normal_(torch_mha.in_proj_bias, std=0.1)
        torch.nn.init.normal_(torch_mha.out_proj.bias, std=0.1)
        torch.nn.init.normal_(torch_mha.out_proj.weight, std=E ** -0.5)
    torch_mha.eval()

    # 2. The Flax layer with the same options, and the port.
    flax_mha = nnx.MultiHeadAttention(num_heads=H, in_features=E, decode=False, rngs=nnx.Rngs(args.seed))
    print(xattn.port_weights(torch_mha, flax_mha), end="\n\n")

    # 3. Forward and backward on the very same input bits.
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((B, T, E)).astype(np.float32)
    masks = {} if args.no_mask else {"causal": True, "key_lengths": rng.integers(T // 2, T + 1, size=B)}
    report = xattn.check_layers(torch_mha, flax_mha, x, grad=True, names=("torch MHA", "flax MHA"), **masks)
    print(report)

    # 4. Back to torch, the other batch layout: every bit must survive the round trip.
    back = torch.nn.MultiheadAttention(E, H, batch_first=True)
    xattn.port_weights(flax_mha, back)
    original, returned = torch_mha.state_dict(), back.state_dict()
    exact = all(torch.equal(original[name], returned[name]) for name in original)
    print(f"round trip torch -> flax -> torch (batch_first flipped): {'bit-exact' if exact else 'NOT EXACT'}")
    return 0 if report.ok and exact else 1


if __name__ == "__main__":
    sys.exit(main())
