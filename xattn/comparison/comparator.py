"""``xattn.compare``: every (backend, variant) on one problem, against the float64 oracle, timed fairly.

1. Seeded inputs in the run dtype; the float64 oracle and the naive same-dtype computation
   (:func:`xattn.numerics.drift.naive_attention`) on those very bits give each row's budget.
2. Inside the run's numerics settings (matmul precision for both frameworks, JAX x64 for float64,
   torch's threads equal to XLA's), each variant is compiled (timed apart), called once, and its
   output bridged back to NumPy for the drift metrics. A variant that raises becomes an ``error``
   row carrying the message; nothing stops the others.
3. The variants that ran are timed together, interleaved round by round (:mod:`xattn.timing`).
4. Rows of the same variant in two backends are paired: |a-b| beside each side's error.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Callable, Iterable

from xattn.backends import frameworks
from xattn.comparison.results import OUTPUT, Pair, Report, Row
from xattn.contract.spec import AttentionSpec, make_inputs
from xattn.errors import VariantUnsupportedError
from xattn.numerics.budget import naive_budget, within_budget
from xattn.numerics.drift import drift_metrics
from xattn.numerics.judge import DRIFT, ERROR, NOT_RUN, OK, UNSUPPORTED, attribute
from xattn.numerics.naive import naive_attention, naive_runs
from xattn.timing import DEFAULT_MAX_TIME, DEFAULT_MIN_TIME, DEFAULT_WARMUP, Candidate, attention_flops, timed


def resolve_backends(backends: Iterable[str] | str | None) -> tuple[str, ...]:
    """Backend names, validated and importable; ``None`` means every backend installed here."""
    from xattn.backends.registry import available_backends, backend_names, get_backend
    from xattn.errors import BackendUnavailableError

    if backends is None:
        names = available_backends()
        if not names:
            raise BackendUnavailableError(
                f"compare: expected at least one installed backend of {', '.join(backend_names())}; got none."
                " Install one with: pip install 'xattn[jax]' or pip install 'xattn[torch]'"
            )
        return names
    names = _split(backends)
    if not names:
        raise ValueError(f"backends: expected one or more of {', '.join(backend_names())}; got none")
    unknown = [name for name in names if name not in backend_names()]
    if unknown:
        raise ValueError(f"backends: expected names from {', '.join(backend_names())}; got {', '.join(unknown)}")
    for name in names:
        get_backend(name)  # BackendUnavailableError names the extra to install
    return names


#: ``variants=ALL`` runs every variant of every backend, the one-backend ones (JAX's ``threaded``, torch's
#: ``compiled``) included.
ALL = "all"


def resolve_variants(backends: tuple[str, ...], variants: Iterable[str] | str | None) -> tuple[tuple[str, str], ...]:
    """(backend, variant) pairs to run.

    ``None``: the variants every selected backend implements, so each row has a partner in the
    other framework (with one backend, all of its variants). ``"all"``: every variant of every
    backend. Named variants: a variant only some backends implement (torch's ``compiled``) runs
    where it exists; a name no selected backend implements is a ValueError listing the valid ones.
    """
    from xattn.api import variants as variants_of

    available = {backend: variants_of(backend) for backend in backends}
    if variants is None:
        shared = [v for v in available[backends[0]] if all(v in names for names in available.values())]
        return tuple((b, v) for b in backends for v in shared)
    wanted = _split(variants)
    if wanted == (ALL,):
        return tuple((b, v) for b in backends for v in available[b])
    valid = list(dict.fromkeys(v for names in available.values() for v in names))
    unknown = [v for v in wanted if v not in valid]
    if unknown or not wanted:
        raise ValueError(
            f"variants: expected names from {', '.join(valid)}, or {ALL} (backends {', '.join(backends)});"
            f" got {', '.join(unknown) or 'none'}"
        )
    return tuple((b, v) for b in backends for v in wanted if v in available[b])


def _split(names) -> tuple[str, ...]:
    if isinstance(names, str):
        names = names.split(",")
    return tuple(dict.fromkeys(name.strip() for name in names if name.strip()))


def resolve_device(device: str, backends: tuple[str, ...]) -> str:
    if device not in frameworks.DEVICES:
        raise ValueError(f"device: expected one of {', '.join(frameworks.DEVICES)}; got {device!r}")
    if device == "auto":
        return "cuda" if all(frameworks.side(b).has_cuda() for b in backends) else "cpu"
    for backend in backends:
        frameworks.side(backend).device(device)  # ValueError naming what the framework sees
    return device


def compare(
    backends: Iterable[str] | str | None = None,
    variants: Iterable[str] | str | None = None,
    spec: AttentionSpec | None = None,
    *,
    device: str = "cpu",
    matmul_precision: str = "highest",
    min_time: float = DEFAULT_MIN_TIME,
    max_time: float = DEFAULT_MAX_TIME,
    warmup: float = DEFAULT_WARMUP,
    timing: bool = True,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
    grad: bool = False,
) -> Report:
    """Run every (backend, variant) on ``spec``'s inputs; a :class:`~xattn.comparison.results.Report`.

    ``backends``/``variants``: names or a comma-separated string (``backends=None``: every one
    installed; ``variants=None``: those every backend has, ``"all"``: all; see
    :func:`resolve_variants`). ``device``: cpu,
    cuda or auto. ``matmul_precision``: highest, high or default (leave both frameworks as they
    are), applied to both frameworks for the run and restored after. ``min_time``/``max_time``:
    measured seconds per variant (see :mod:`xattn.timing`); ``timing=False`` skips the timed loop.
    ``threads``: intra-op threads for every framework (default: torch gets XLA's count); XLA's
    can only be set before JAX is first imported. ``progress``: called with one line per step.
    ``grad``: also compare each variant's gradients of ⟨out, C⟩ with respect to x (and kv) and
    wq, wk, wv, wo against the float64 oracle, as ``grad/<input>`` rows (see :mod:`xattn.porting.gradients`).
    """
    from xattn.backends.env import environment
    from xattn.numerics.oracle import reference
    from xattn.timing import measure_interleaved

    say = progress or (lambda line: None)
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads: expected a positive integer; got {threads!r}")
        frameworks.request_xla_threads(threads)
    spec = AttentionSpec() if spec is None else spec
    if not isinstance(spec, AttentionSpec):
        raise TypeError(f"spec: expected an xattn.AttentionSpec; got {type(spec).__name__}")
    if matmul_precision not in frameworks.MATMUL_PRECISIONS:
        raise ValueError(
            f"matmul_precision: expected one of {', '.join(frameworks.MATMUL_PRECISIONS)}; got {matmul_precision!r}"
        )
    names = resolve_backends(backends)
    plan = resolve_variants(names, variants)
    device = resolve_device(device, names)
    inputs = make_inputs(spec)
    oracle = reference(
        inputs.x, *inputs.weights(), kv=inputs.kv, causal=spec.causal, key_lengths=inputs.key_lengths, scale=spec.scale
    )
    naive = naive_runs(lambda seed: naive_attention(inputs, causal=spec.causal, scale=spec.scale, dtype=spec.dtype,
                                                    rounding_seed=seed), oracle.size, spec.dtype)
    budget = naive_budget(naive, oracle, spec.dtype)

    threads = _equal_threads(names, threads)
    settings = {
        "backends": list(names),
        "variants": [v for v in dict.fromkeys(v for _, v in plan)],
        "device": device,
        "matmul_precision": matmul_precision,
        "min_time_s": min_time,
        "max_time_s": max_time,
        "warmup_s": warmup,
        "timing": timing,
        "threads": threads,
        "threads_equal": len(set(threads.values())) <= 1,
        "jax_enable_x64_set_by_xattn": spec.dtype == "float64" and "jax" in names and not _jax_x64_on(names),
        "grad": bool(grad),
    }
    with _run_settings(names, matmul_precision, spec.dtype == "float64", threads):
        env = environment(names)
        runs = []
        for backend, variant in plan:
            say(f"compiling and checking {backend}/{variant}")
            runs.append(_first_run(backend, variant, spec, inputs, oracle, budget, device))
        candidates = {run.row.label: run.candidate for run in runs if run.candidate is not None}
        measurements = {}
        if timing and candidates:
            say(f"timing {len(candidates)} variants, interleaved (max {max_time:g} s each)")
            measurements = measure_interleaved(candidates, min_time=min_time, max_time=max_time, warmup=warmup)
        grad_rows, grad_pairs = (), ()
        if grad:
            from xattn.porting.gradients import compare_gradients

            ran = [(run.row.backend, run.row.variant) for run in runs if run.row.verdict not in NOT_RUN]
            grad_rows, grad_pairs = compare_gradients(ran, spec, inputs, device, progress=say)
    flops = attention_flops(spec)
    rows = tuple(_with_timing(run.row, measurements.get(run.row.label), flops) for run in runs)
    outputs = {run.row.label: run.output for run in runs}
    pairs = _pairs(rows, outputs, spec.dtype) + tuple(grad_pairs)
    return Report(env=env, spec=spec, settings=settings, results=rows + tuple(grad_rows), pairs=pairs)


def _jax_x64_on(names) -> bool:
    from xattn import _compat

    return "jax" in names and _compat.jax_x64_enabled()


def _equal_threads(names, threads: int | None) -> dict:
    """Intra-op threads per framework: torch gets ``threads``, else XLA's count (fixed when JAX starts)."""
    counts = {}
    if "jax" in names:
        counts["jax"] = frameworks.side("jax").intra_op_threads()
    if "torch" in names:
        counts["torch"] = threads or counts.get("jax") or frameworks.side("torch").torch.get_num_threads()
    return counts


@contextlib.contextmanager
def _run_settings(names, matmul_precision: str, x64: bool, threads: dict):
    with contextlib.ExitStack() as stack:
        if "jax" in names:
            stack.enter_context(frameworks.side("jax").settings(matmul_precision=matmul_precision, x64=x64))
        if "torch" in names:
            torch_side = frameworks.side("torch")
            stack.enter_context(torch_side.settings(matmul_precision=matmul_precision, threads=threads["torch"]))
            stack.enter_context(torch_side.torch.no_grad())
        yield


class _Run:
    def __init__(self, row: Row, output=None, candidate: Candidate | None = None):
        self.row, self.output, self.candidate = row, output, candidate


def _first_run(backend, variant, spec, inputs, oracle, budget, device) -> _Run:
    """Compile (timed apart), call once, measure drift; an exception becomes an ``error`` row."""
    from xattn.api import build
    from xattn.backends.registry import get_backend
    from xattn.bridge import to_numpy

    side = frameworks.side(backend)
    base = dict(backend=backend, variant=variant, dtype=spec.dtype, device=device, quantity=OUTPUT, budget=budget)
    try:
        target = side.device(device)
        x, wq, wk, wv, wo = side.put((inputs.x, *inputs.weights()), target)
        kv = x if inputs.kv is inputs.x else side.put((inputs.kv,), target)[0]
        lengths = None
        if inputs.key_lengths is not None:
            lengths = side.put((get_backend(backend).as_lengths(inputs.key_lengths),), target)[0]
        args = (x, kv, wq, wk, wv, wo, lengths)
        fn = build(backend, variant, causal=spec.causal, scale=spec.scale, head_dim=spec.head_dim,
                   padded=lengths is not None)
        runnable, compile_s = timed(lambda: fn.compile(*args), lambda outputs: None)
        output, first_call_s = timed(lambda: runnable(*args), side.sync)
        actual = to_numpy(output)
    except Exception as error:  # one variant's failure is a row, never the end of the comparison
        # A variant that says it cannot run this case (VariantUnsupportedError) is a refusal, not a failure.
        verdict = UNSUPPORTED if isinstance(error, VariantUnsupportedError) else ERROR
        return _Run(Row(**base, verdict=verdict, error=_one_line(error), error_type=type(error).__name__))
    metrics = drift_metrics(actual, oracle, spec.dtype)
    notes = _notes(backend, variant, spec, actual, side, args)
    row = Row(
        **base,
        verdict=OK if within_budget(metrics, budget) else DRIFT,
        drift=metrics,
        compile_s=compile_s,
        first_call_s=first_call_s,
        notes=notes,
    )
    return _Run(row, actual, Candidate(lambda: runnable(*args), side.sync))


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 600 else text[:597] + "..."


def _notes(backend, variant, spec, actual, side, args) -> tuple[str, ...]:
    notes = []
    if str(actual.dtype) != spec.dtype:
        notes.append(f"returned {actual.dtype}, expected {spec.dtype}")
    if backend == "torch" and variant == "sdpa":
        torch = side.torch
        x = args[0]
        q = torch.empty(spec.batch, spec.heads, spec.q_len, spec.head_dim, dtype=x.dtype, device=x.device)
        kv = torch.empty(spec.batch, spec.heads, spec.kv_len, spec.head_dim, dtype=x.dtype, device=x.device)
        mask = None
        if spec.key_lengths is not None:
            mask = torch.ones(spec.batch, 1, spec.q_len, spec.kv_len, dtype=torch.bool, device=x.device)
        kernel = side.sdpa_kernel(q, kv, kv, mask, spec.causal and mask is None)
        if kernel:
            notes.append(f"SDPA kernel: {kernel}")
    return tuple(notes)


def _with_timing(row: Row, measurement, flops: float) -> Row:
    if measurement is None:
        return row
    import dataclasses

    gflops = flops / measurement.median_s / 1e9 if measurement.median_s > 0 else None
    return dataclasses.replace(row, timing=measurement, gflops=gflops, notes=row.notes + measurement.warnings)


def _pairs(rows: tuple[Row, ...], outputs: dict, dtype: str) -> tuple[Pair, ...]:
    """Each variant that two or more backends ran, backend against backend."""
    by_variant: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        by_variant.setdefault((row.variant, row.quantity), []).append(row)
    pairs = []
    for (_, quantity), group in by_variant.items():
        for a, b in itertools.combinations(group, 2):
            pairs.append(_pair(a, b, quantity, outputs, dtype))
    return tuple(pairs)


def _pair(a: Row, b: Row, quantity: str, outputs: dict, dtype: str) -> Pair:
    budget = a.budget.max_abs if a.budget is not None else None
    not_run = [row for row in (a, b) if row.verdict in NOT_RUN]
    if not_run:
        why = " and ".join(f"{row.label} {row.verdict}" for row in not_run)
        return Pair(a.label, b.label, quantity, None, None, _err(a), _err(b), budget,
                    tuple(row.label for row in not_run if row.verdict == ERROR), f"n/a: {why}")
    between = drift_metrics(outputs[a.label], outputs[b.label], dtype)
    over, attribution = attribute(a.label, a.ok, b.label, b.ok)
    return Pair(a.label, b.label, quantity, between.max_abs_err, between.rel_l2_err, _err(a), _err(b), budget,
                over, attribution)


def _err(row: Row) -> float | None:
    return None if row.drift is None else row.drift.max_abs_err
