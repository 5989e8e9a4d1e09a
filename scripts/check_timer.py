"""Cross-check xattn's timer against torch.utils.benchmark.Timer on one function, run after run.

Both time the same torch attention call (a backend variant of xattn on one AttentionSpec), in
alternating rounds (ABBA) so that the machine's load hits both alike; each run prints each timer's median
of its rounds' medians and their ratio (xattn / torch.utils.benchmark). xattn times as its
comparator does (a torch sync needs no outputs: each is dropped as the next call starts; no
garbage collection inside a block). A ratio near 1 says xattn's clock, blocks and sync add
nothing of their own; the goal is 0.9-1.1 in every run. Each run also measures what other
processes took meanwhile (:func:`xattn.timing.machine_load`): on a busy machine a ratio means
little, and the line says so. Beside the ratio against ``adaptive_autorange`` (the band's), each
line gives the ratio against the same Timer run in blocks of ~50 ms (``Timer.timeit``), where its
``torch.set_num_threads`` around every block is paid once per many calls, not once per call.

    python scripts/check_timer.py                                   # 5 runs: sdpa, einsum x 1, 2 threads
    python scripts/check_timer.py --variants sdpa --threads 1 --runs 3 --rounds 5
"""

from __future__ import annotations

import argparse
import math
import statistics

BAND = (0.9, 1.1)
#: Block length of the second benchmark figure (Timer.timeit with that many calls a block).
BLOCK_S = 0.05


def pin_malloc() -> bool:
    """Keep glibc's large allocations on the heap and never trim it (``mallopt``), as the environment
    variables ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` would; False off glibc.

    By default glibc maps each allocation of 128 KiB or more afresh (its threshold then moves with
    what was freed) and gives the heap's top back to the system: a call whose temporaries are
    MiB-sized (torch einsum here: 8 MiB) then pays page faults in some stretches and not in others,
    depending on the heap's layout, which whatever ran just before (the other timer) decides. Pinned,
    that call takes 10 ms instead of 15 ms at 1 thread, and the two timers time the same call.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 1 << 30))


def one_run(call, rounds: int, max_time: float, threads: int):
    """``(xattn medians, benchmark medians, machine load)`` of ``rounds`` alternating rounds."""
    import torch.utils.benchmark as benchmark

    from xattn.timing import cpu_sample, machine_load, measure

    def xattn_timer():
        ours.append(measure(call, lambda outputs: None, keep_outputs=False, min_time=max_time / 4,
                            max_time=max_time).median_s)

    def benchmark_timer():
        timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=threads)
        theirs.append(timer.adaptive_autorange(threshold=0.1, max_run_time=max_time).median)
        # The same Timer with blocks of ~50 ms: its thread setting around each block is then paid
        # once per many calls instead of once per call (see docs/performance.md).
        number = max(1, math.ceil(BLOCK_S / theirs[-1]))
        blocks, spent = [], 0.0
        while spent < max_time / 2 or len(blocks) < 5:
            blocks.append(timer.timeit(number).median)
            spent += blocks[-1] * number
        long_blocks.append(statistics.median(blocks))

    ours, theirs, long_blocks = [], [], []
    before = cpu_sample()
    for index in range(rounds):  # ABBA: neither timer always goes first
        for timer in (xattn_timer, benchmark_timer) if index % 2 == 0 else (benchmark_timer, xattn_timer):
            timer()
    return ours, theirs, long_blocks, machine_load(since=before)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="sdpa,einsum", help="torch variants, comma-separated")
    parser.add_argument("--threads", default="1,2", help="torch intra-op thread counts, comma-separated")
    parser.add_argument("--runs", type=int, default=5, help="consecutive runs per (variant, threads)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--q-len", type=int, default=256)
    parser.add_argument("--embed", type=int, default=128)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=11, help="alternating rounds of each timer per run")
    parser.add_argument("--max-time", type=float, default=0.3, help="seconds per timer per round")
    parser.add_argument("--malloc", choices=("pinned", "default"), default="pinned",
                        help="pinned: glibc keeps large allocations on the heap (see pin_malloc); default: as it is")
    args = parser.parse_args(argv)
    pinned = args.malloc == "pinned" and pin_malloc()

    import torch

    import xattn
    from xattn.bridge import to_torch

    spec = xattn.AttentionSpec(batch=args.batch, q_len=args.q_len, embed=args.embed, heads=args.heads)
    inputs = xattn.make_inputs(spec)
    tensors = [to_torch(a) for a in (inputs.x, inputs.kv, *inputs.weights())]
    print(f"torch {torch.__version__}; B={spec.batch} T={spec.q_len} E={spec.embed} H={spec.heads} {spec.dtype};"
          f" {args.runs} runs of {args.rounds} alternating rounds; glibc malloc {'pinned' if pinned else 'as it is'};"
          f" goal {BAND[0]}-{BAND[1]} in every run")
    in_band = True
    for variant in args.variants.split(","):
        fn = xattn.build("torch", variant, head_dim=spec.head_dim).compile(*tensors, None)

        def call(fn=fn):
            return fn(*tensors, None)

        for threads in (int(n) for n in args.threads.split(",")):
            torch.set_num_threads(threads)
            ratios = []
            with torch.no_grad():
                for run in range(1, args.runs + 1):
                    ours, theirs, long_blocks, load = one_run(call, args.rounds, args.max_time, threads)
                    # Each round's two timers ran back to back: the median of their ratios round by
                    # round cancels the machine's drift between rounds, which a ratio of medians keeps.
                    ratio = statistics.median(a / b for a, b in zip(ours, theirs))
                    drift = max(ours) / min(ours)
                    long_ratio = statistics.median(ours) / statistics.median(long_blocks)
                    ratios.append(ratio)
                    inside = BAND[0] <= ratio <= BAND[1]
                    in_band &= inside
                    verdict = "in band" if inside else "OUT of band"
                    print(f"torch/{variant} {threads} thread{'s' if threads > 1 else ''} run {run}: ratio {ratio:.3f}"
                          f" ({verdict}; xattn {statistics.median(ours) * 1e3:.4g} ms, torch.utils.benchmark"
                          f" {statistics.median(theirs) * 1e3:.4g} ms; against its {BLOCK_S * 1e3:g} ms blocks"
                          f" {long_ratio:.3f}; xattn's rounds spanned {drift:.2f}x); {load.describe()}"
                          + ("  ! MACHINE BUSY: this ratio means little" if load.busy else ""))
            listed = ", ".join(f"{r:.3f}" for r in ratios)
            print(f"  torch/{variant} at {threads} threads: {listed}")
    return 0 if in_band else 1


if __name__ == "__main__":
    raise SystemExit(main())
