"""Cross-check xattn's timer against torch.utils.benchmark.Timer on one function, in one run.

Both time the same torch attention call (a backend variant of xattn on one AttentionSpec), in
alternating rounds so that the machine's load hits both alike, and the script prints each one's
median and the ratio of the medians (xattn / torch.utils.benchmark). A ratio near 1 says xattn's
clock, blocks and sync add nothing of their own.

    python scripts/check_timer.py                      # torch einsum, B=4 T=256 E=128 H=8
    python scripts/check_timer.py --variant sdpa --rounds 5 --threads 1
"""

from __future__ import annotations

import argparse
import statistics


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="einsum")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--q-len", type=int, default=256)
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each timer")
    parser.add_argument("--max-time", type=float, default=1.0, help="seconds per timer per round")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: as is)")
    args = parser.parse_args(argv)

    import torch
    import torch.utils.benchmark as benchmark

    import xattn
    from xattn.bridge import to_torch
    from xattn.timing import measure

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = xattn.AttentionSpec(batch=args.batch, q_len=args.q_len, embed=args.embed, heads=args.heads)
    inputs = xattn.make_inputs(spec)
    tensors = [to_torch(a) for a in (inputs.x, inputs.kv, *inputs.weights())]
    fn = xattn.build("torch", args.variant, head_dim=spec.head_dim).compile(*tensors, None)

    def call():
        return fn(*tensors, None)

    def sync(outputs):
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    ours, theirs = [], []
    with torch.no_grad():
        for _ in range(args.rounds):
            measurement = measure(call, sync, min_time=args.max_time / 4, max_time=args.max_time)
            ours.append(measurement.median_s)
            timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=torch.get_num_threads())
            theirs.append(timer.adaptive_autorange(threshold=0.1, max_run_time=args.max_time).median)
    ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    ratio = ours_median / theirs_median
    print(f"function: torch/{args.variant} on B={spec.batch} T={spec.q_len} E={spec.embed} H={spec.heads}"
          f" {spec.dtype}, {torch.get_num_threads()} threads, {args.rounds} alternating rounds")
    for label, median, rounds in (("xattn.timing", ours_median, ours),
                                  ("torch.utils.benchmark", theirs_median, theirs)):
        listed = ", ".join(f"{t * 1e3:.4g}" for t in rounds)
        print(f"{label + ' median:':<32}{median * 1e3:.4g} ms  (rounds: {listed})")
    print(f"ratio xattn / torch.utils.benchmark: {ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
