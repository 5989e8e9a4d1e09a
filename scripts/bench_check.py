"""What a porting check costs, against the work it checks, measured side by side in one run.

Two ratios, each the median over alternating rounds (the check, then the work it checks, then
the check again...), so that the machine's load hits both alike:

- **layers**: ``xattn.check_layers(torch_mha, flax_mha, x, grad=True)`` (a torch.nn.MultiheadAttention
  and its flax.nnx.MultiHeadAttention port, biases on) against one forward and one backward of both
  layers, eager, as a user's training step runs them. Goal: 10x or less.
- **port**: ``xattn.check_port(jax_fn, torch_fn, *inputs, reference=xattn.reference)`` forward only
  (JAX einsum attention against torch SDPA attention) against one call of each function and of the
  float64 oracle. Goal: 5x or less.

    python scripts/bench_check.py                       # E=256 H=8 B=4 T=256, 5 rounds
    python scripts/bench_check.py --rounds 9 --profile  # and where the check's time goes (cProfile)
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

LAYERS_GOAL, PORT_GOAL = 10.0, 5.0


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def layer_pair(embed, heads, seed=0):
    import torch
    from flax import nnx

    import xattn

    torch.manual_seed(seed)
    torch_mha = torch.nn.MultiheadAttention(embed, heads, batch_first=True)
    with torch.no_grad():  # a fresh layer's zero biases would hide their gradients' cost and drift
        torch.nn.init.normal_(torch_mha.in_proj_bias, std=0.1)
        torch.nn.init.normal_(torch_mha.out_proj.bias, std=0.1)
    torch_mha.eval()
    flax_mha = nnx.MultiHeadAttention(num_heads=heads, in_features=embed, decode=False, rngs=nnx.Rngs(seed))
    xattn.port_weights(torch_mha, flax_mha)
    return torch_mha, flax_mha


def training_step(torch_mha, flax_mha, x):
    """One forward and one backward of both layers, eager, the gradients of ⟨out, C⟩ for x and every weight."""
    import jax
    import torch
    from flax import nnx

    cotangent = np.random.default_rng(1).standard_normal(x.shape).astype(x.dtype)
    x_torch, c_torch = torch.from_numpy(x), torch.from_numpy(cotangent)
    params = [p for p in torch_mha.parameters()]
    graphdef, state = nnx.split(flax_mha)
    x_jax, c_jax = jax.numpy.asarray(x), jax.numpy.asarray(cotangent)

    def flax_forward(state, x):
        return nnx.merge(graphdef, state)(x, decode=False)

    def step():
        leaf = x_torch.detach().requires_grad_(True)
        with torch.enable_grad():
            out = torch_mha(leaf, leaf, leaf, need_weights=False)[0]
        torch.autograd.grad(out, [leaf, *params], c_torch)
        out, pullback = jax.vjp(flax_forward, state, x_jax)
        jax.block_until_ready(pullback(c_jax))

    return step


def port_pair():
    import xattn

    def jax_einsum(x, wq, wk, wv, wo):
        return xattn.attention(x, wq, wk, wv, wo, backend="jax", variant="einsum")

    def torch_sdpa(x, wq, wk, wv, wo):
        return xattn.attention(x, wq, wk, wv, wo, backend="torch", variant="sdpa")

    return jax_einsum, torch_sdpa


def alternate(rounds, check, work):
    """Median per-round times of ``check`` and ``work``, in alternating order (ABBA), and the median ratio."""
    checks, works, ratios = [], [], []
    for i in range(rounds):
        if i % 2 == 0:
            c, w = seconds(check), seconds(work)
        else:
            w, c = seconds(work), seconds(check)
        checks.append(c)
        works.append(w)
        ratios.append(c / w)
    return statistics.median(checks), statistics.median(works), statistics.median(ratios)


def shape_arguments(parser: argparse.ArgumentParser) -> None:
    """The layer shape's options, E=256 H=8 B=4 T=256 by default (also scripts/repeat_cap.py's)."""
    parser.add_argument("--embed", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shape_arguments(parser)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top entries of one check_layers")
    args = parser.parse_args(argv)

    import jax
    import torch

    import xattn
    from xattn.bridge import to_jax, to_torch

    E, H, B, T = args.embed, args.heads, args.batch, args.length
    x = np.random.default_rng(0).standard_normal((B, T, E)).astype(np.float32)
    torch_mha, flax_mha = layer_pair(E, H)
    step = training_step(torch_mha, flax_mha, x)

    def check_layers():
        xattn.check_layers(torch_mha, flax_mha, x, grad=True).assert_ok()

    spec = xattn.AttentionSpec(batch=B, q_len=T, embed=E, heads=H)
    inputs = xattn.make_inputs(spec)
    host = (inputs.x, *inputs.weights())
    jax_fn, torch_fn = port_pair()
    jax_args, torch_args = [to_jax(a) for a in host], [to_torch(a) for a in host]

    def check_port():
        xattn.check_port(jax_fn, torch_fn, *host, reference=xattn.reference).assert_ok()

    def port_work():
        jax.block_until_ready(jax_fn(*jax_args))
        with torch.no_grad():
            torch_fn(*torch_args)
        xattn.reference(*(np.asarray(a, np.float64) for a in host))

    for fn in (step, check_layers, port_work, check_port):  # warm-up: compile caches, first-call costs
        fn()
    if args.profile:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.runcall(check_layers)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)

    print(f"B={B} T={T} E={E} H={H} float32; torch {torch.__version__} ({torch.get_num_threads()} threads),"
          f" jax {jax.__version__}; {args.rounds} alternating rounds, medians")
    results = [
        ("check_layers(grad=True)", "fwd+bwd of both layers", LAYERS_GOAL, alternate(args.rounds, check_layers, step)),
        ("check_port (forward)", "both functions + oracle", PORT_GOAL, alternate(args.rounds, check_port, port_work)),
    ]
    ok = True
    for name, against, goal, (check_s, work_s, ratio) in results:
        verdict = "within" if ratio <= goal else "OVER"
        ok &= ratio <= goal
        print(f"{name:<26}{check_s * 1e3:8.0f} ms   {against:<26}{work_s * 1e3:7.0f} ms"
              f"   ratio {ratio:5.2f}  ({verdict} the {goal:g}x goal)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
