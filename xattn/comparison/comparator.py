"""``xattn.compare``: every (backend, variant) on one problem, against the float64 oracle, timed fairly.

1. Seeded inputs in the run dtype; the float64 oracle and the naive same-dtype computation on
   those very bits (:func:`xattn.reference` without and with the run dtype) give each row's budget.
2. Inside the run's numerics settings (matmul precision for every framework, x64 for float64,
   torch's threads equal to XLA's), each variant is compiled (timed apart), called once, and its
   output bridged back to NumPy for the drift metrics. A variant that raises becomes an ``error``
   row carrying the message; nothing stops the others.
3. The variants that ran are timed together, interleaved round by round (:mod:`xattn.timing`).
4. With ``grad``, each variant that ran gets gradient rows (:mod:`xattn.comparison.gradients`).
5. Rows of the same variant and quantity in two backends are paired: |a-b| beside each side's error.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Iterable

from xattn.backends import frameworks
from xattn.comparison import rows as judged_rows
from xattn.comparison.memory import check_run
from xattn.comparison.results import OUTPUT, Report, Row, RunRecord
from xattn.comparison.settings import Plan, RunSettings, make_plan, settle_threads
from xattn.contract.spec import AttentionSpec, make_inputs
from xattn.numerics.budget import naive_budget
from xattn.numerics.judge import NOT_RUN
from xattn.numerics.naive import naive_runs
from xattn.timing import Candidate, attention_flops, timed


def compare(
    backends: Iterable[str] | str | None = None,
    variants: Iterable[str] | str | None = None,
    spec: AttentionSpec | None = None,
    *,
    settings: RunSettings | None = None,
    progress: Callable[[str], None] | None = None,
    **options,
) -> Report:
    """Run every (backend, variant) on ``spec``'s inputs; a :class:`~xattn.comparison.results.Report`.

    ``backends``/``variants``: names or a comma-separated string (``backends=None``: every one
    installed; ``variants=None``: those every backend has, ``"all"``: all; see
    :func:`xattn.comparison.settings.resolve_variants`). ``settings``: a
    :class:`~xattn.comparison.settings.RunSettings`; its fields may also be given as keywords
    (``device``, ``matmul_precision``, ``min_time``, ``max_time``, ``warmup``, ``timing``,
    ``threads``, ``grad``), which override it. ``grad``: also compare each variant's gradients of
    ⟨out, C⟩ with respect to x (and kv) and wq, wk, wv, wo against the float64 oracle, as
    ``grad/<input>`` rows. ``progress``: called with one line per step. ``max_memory``: the limit
    the estimated peak must fit in (:mod:`xattn.comparison.memory`); over it, MemoryLimitError
    before anything runs.
    """
    settings = RunSettings.of(settings, options, "compare")
    settings = settle_threads(settings)  # before anything imports JAX
    spec = AttentionSpec() if spec is None else spec
    if not isinstance(spec, AttentionSpec):
        raise TypeError(f"spec: expected an xattn.AttentionSpec; got {type(spec).__name__}")
    plan = make_plan(backends, variants, settings.device)
    check_run([spec], plan, settings)
    return run(plan, spec, settings, progress)


def run(plan: Plan, spec: AttentionSpec, settings: RunSettings, progress=None) -> Report:
    """One comparison of a resolved ``plan`` on ``spec`` (what :func:`compare` and each sweep point run)."""
    from xattn.backends.env import environment
    from xattn.comparison.gradients import compare_gradients
    from xattn.numerics.blas import check_threads
    from xattn.numerics.oracle import reference
    from xattn.timing import cpu_sample, machine_load, measure_interleaved

    say = progress or (lambda line: None)
    inputs = make_inputs(spec)
    problem = dict(kv=inputs.kv, causal=spec.causal, key_lengths=inputs.key_lengths, scale=spec.scale)
    with check_threads():
        oracle = reference(inputs.x, *inputs.weights(), **problem)
        naive = naive_runs(lambda seed: reference(inputs.x, *inputs.weights(), **problem, dtype=spec.dtype,
                                                  rounding_seed=seed), oracle.size, spec.dtype, at_once=True)
    budget = naive_budget(naive, oracle, spec.dtype)
    record = _record(plan, spec, settings)
    with _run_settings(plan.backends, settings.matmul_precision, spec.dtype == "float64", record.threads):
        env = environment(plan.backends)
        runs = []
        for backend, variant in plan.runs:
            say(f"compiling and checking {backend}/{variant}")
            runs.append(_first_run(backend, variant, spec, inputs, oracle, budget, plan.device))
        candidates = {run.row.label: run.candidate for run in runs if run.candidate is not None}
        measurements = {}
        if settings.timing and candidates:
            say(f"timing {len(candidates)} variants, interleaved (max {settings.max_time:g} s each)")
            before = cpu_sample()
            measurements = measure_interleaved(candidates, min_time=settings.min_time, max_time=settings.max_time,
                                               warmup=settings.warmup)
            record = dataclasses.replace(record, machine=machine_load(since=before).as_dict())
        grad_rows, values = (), {(run.row.label, OUTPUT): run.output for run in runs if run.output is not None}
        if settings.grad:
            ran = [(run.row.backend, run.row.variant) for run in runs if run.row.verdict not in NOT_RUN]
            grad_rows, grads = compare_gradients(ran, spec, inputs, plan.device, progress=say)
            values.update(grads)
    flops = attention_flops(spec)
    rows = tuple(_with_timing(run.row, measurements.get(run.row.label), flops) for run in runs) + tuple(grad_rows)
    return Report(env=env, spec=spec, settings=record, results=rows,
                  pairs=judged_rows.pairs(rows, values, spec.dtype))


def failed_run(plan: Plan, spec: AttentionSpec, settings: RunSettings, error: Exception) -> Report:
    """The report of a problem that failed before its variants ran (the oracle out of memory): an error row each."""
    from xattn.backends.env import environment

    rows = tuple(judged_rows.failed(error, backend=backend, variant=variant, device=plan.device, quantity=OUTPUT,
                                    dtype=spec.dtype, notes=("failed before any variant ran",))
                 for backend, variant in plan.runs)
    return Report(env=environment(plan.backends), spec=spec, settings=_record(plan, spec, settings), results=rows,
                  pairs=())


def _record(plan: Plan, spec: AttentionSpec, settings: RunSettings) -> RunRecord:
    threads = _equal_threads(plan.backends, settings.threads)
    x64_set = spec.dtype == "float64" and any(frameworks.side(name).x64_off() for name in plan.backends)
    return RunRecord(
        backends=plan.backends, variants=plan.variants, device=plan.device, matmul_precision=settings.matmul_precision,
        min_time_s=settings.min_time, max_time_s=settings.max_time, warmup_s=settings.warmup, timing=settings.timing,
        threads=threads, threads_equal=len(set(threads.values())) <= 1, jax_enable_x64_set_by_xattn=x64_set,
        grad=settings.grad, threads_requested=None if settings.threads_note else settings.threads,
        threads_note=settings.threads_note,
    )


def _equal_threads(names, threads: int | None) -> dict[str, int]:
    """Intra-op threads per framework: a settable pool gets ``threads``, else the fixed pools' count (XLA's)."""
    sides = {name: frameworks.side(name) for name in names}
    fixed = [side.intra_op_threads() for side in sides.values() if side.threads_fixed]
    target = threads or (min(fixed) if fixed else None)
    return {name: side.intra_op_threads() if side.threads_fixed or target is None else target
            for name, side in sides.items()}


@contextlib.contextmanager
def _run_settings(names, matmul_precision: str, x64: bool, threads: dict):
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(frameworks.side(name).settings(matmul_precision=matmul_precision, x64=x64,
                                                               threads=threads[name]))
        yield


@dataclasses.dataclass
class _Run:
    row: Row
    output: object = None
    candidate: Candidate | None = None


def _first_run(backend, variant, spec, inputs, oracle, budget, device) -> _Run:
    """Compile (timed apart), call once, measure drift; an exception becomes an ``error`` row."""
    from xattn.backends import registry
    from xattn.bridge import to_numpy

    side = frameworks.side(backend)
    fields = dict(backend=backend, variant=variant, device=device, quantity=OUTPUT)
    try:
        target = side.device(device)
        x, wq, wk, wv, wo = side.put((inputs.x, *inputs.weights()), target)
        kv = x if inputs.kv is inputs.x else side.put((inputs.kv,), target)[0]
        lengths = None
        if inputs.key_lengths is not None:
            lengths = side.put((registry.get_backend(backend).as_lengths(inputs.key_lengths),), target)[0]
        args = (x, kv, wq, wk, wv, wo, lengths)
        fn = registry.build(backend, variant, causal=spec.causal, scale=spec.scale, head_dim=spec.head_dim,
                            padded=lengths is not None)
        runnable, compile_s = timed(lambda: fn.compile(*args), lambda outputs: None)
        eager = not getattr(fn, "compiles", True)
        output, first_call_s = timed(lambda: runnable(*args), side.sync)
        actual = to_numpy(output)
    except Exception as error:  # one variant's failure is a row, never the end of the comparison
        return _Run(judged_rows.failed(error, **fields, dtype=spec.dtype, budget=budget))
    notes = side.notes(variant, spec, x)
    if str(actual.dtype) != spec.dtype:
        notes = (f"returned {actual.dtype}, expected {spec.dtype}", *notes)
    row = judged_rows.judged(actual, oracle, budget=budget, dtype=spec.dtype, **fields,
                             compile_s=None if eager else compile_s, eager=eager,
                             first_call_s=first_call_s, notes=notes)
    return _Run(row, actual, Candidate(lambda: runnable(*args), side.sync, side.sync_needs_outputs))


def _with_timing(row: Row, measurement, flops: float) -> Row:
    if measurement is None:
        return row
    gflops = flops / measurement.median_s / 1e9 if measurement.median_s > 0 else None
    return dataclasses.replace(row, timing=measurement, gflops=gflops, notes=row.notes + measurement.warnings)
