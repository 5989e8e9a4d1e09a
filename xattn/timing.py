"""A fair timer: one clock for every framework, blocks that end in a sync, adaptive repeats, interleaving.

A *sample* is one block of ``number`` calls timed with ``time.perf_counter`` and closed by the
framework's sync (``jax.block_until_ready``, ``torch.cuda.synchronize``), so it measures work, not
dispatch. Candidates are measured round by round, each taking one block per round (forwards, then
backwards, so no candidate always follows the same one), so a change in the machine's load hits
them all alike. A candidate leaves the rotation once its samples have converged
(IQR/median < :data:`NOISE_THRESHOLD` with at least :data:`MIN_SAMPLES` and ``min_time`` spent)
or ``max_time`` of measured time is spent; one stopped by the cap while still spread is *noisy*,
and says so. Python's garbage collector is off inside a block, as in ``timeit``, and a block
drops each output as the next call starts unless its sync needs them (``Candidate.keep_outputs``).

Where the machine itself cannot give stable times, :func:`machine_load` says so: the CPU time
other processes took over the run (``/proc/stat`` less this process's own) and what the
hypervisor stole. Where a call's time holds the kernel handing it fresh memory (glibc's malloc
maps each allocation of 128 KiB or more afresh and gives it back at ``free``, so a call with
MiB-sized temporaries page-faults on every call), its measurement says so: the minor page faults
per call (``getrusage``), at :data:`PAGE_FAULTS_PER_CALL` or more a warning with the fix.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import time
from typing import Any, Callable, NamedTuple

import numpy as np

from xattn._environ import available_cores

try:
    import resource
except ImportError:  # not on Windows: no page-fault counts
    resource = None

#: IQR/median at or above which a measurement is flagged noisy.
NOISE_THRESHOLD = 0.1
#: Samples a candidate needs before it may converge.
MIN_SAMPLES = 5
#: Samples every candidate gets, whatever the time cap (an IQR needs a few).
HARD_MIN_SAMPLES = 3
#: No candidate takes more samples than this.
MAX_SAMPLES = 10_000
#: Shortest block worth timing: blocks are at least this long, or min_time / 20 if longer.
MIN_BLOCK_S = 1e-3

#: Library defaults for min_time / max_time / warm-up (seconds of measured time per candidate).
DEFAULT_MIN_TIME = 0.2
DEFAULT_MAX_TIME = 2.0
DEFAULT_WARMUP = 0.05
#: Minor page faults per call at or above which a measurement warns that the call's time holds the
#: kernel mapping fresh memory (torch einsum at B=4 T=256 E=128: 1400 a call and a quarter of its
#: time; with glibc's malloc thresholds pinned, 3).
PAGE_FAULTS_PER_CALL = 256
#: How to keep glibc's large allocations mapped, for that warning.
PINNED_MALLOC = "MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824"


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Per-call times of one candidate: one entry per sample (block time / ``number``)."""

    times_s: tuple[float, ...]
    number: int
    warnings: tuple[str, ...] = ()
    #: Minor page faults of this process per timed call (None where ``getrusage`` is missing).
    faults_per_call: float | None = None

    @property
    def n(self) -> int:
        return len(self.times_s)

    @property
    def median_s(self) -> float:
        return float(np.median(self.times_s))

    @property
    def iqr_s(self) -> float:
        q25, q75 = np.percentile(self.times_s, [25, 75])
        return float(q75 - q25)

    @property
    def min_s(self) -> float:
        return float(min(self.times_s))

    @property
    def spread(self) -> float:
        """IQR / median."""
        median = self.median_s
        return self.iqr_s / median if median > 0 else 0.0

    @property
    def noisy(self) -> bool:
        return self.spread >= NOISE_THRESHOLD

    def __repr__(self):
        text = (
            f"Measurement(median={self.median_s * 1e3:.4g} ms, IQR={self.iqr_s * 1e3:.3g} ms,"
            f" min={self.min_s * 1e3:.4g} ms, n={self.n}x{self.number})"
        )
        for warning in self.warnings:
            text += f"\n  WARNING: {warning}"
        return text


class Candidate(NamedTuple):
    """What to time: ``call()`` runs the work once and returns its output; ``sync(outputs)`` waits for them.

    ``keep_outputs``: whether ``sync`` needs the block's outputs (JAX's ``block_until_ready`` does;
    torch's sync waits for the whole device and needs none). Without, each output is dropped as the
    next call starts, as ``timeit`` and ``torch.utils.benchmark`` do: the allocator then reuses its
    memory, where holding a block's outputs made every call touch fresh pages.
    """

    call: Callable[[], Any]
    sync: Callable[[list], None]
    keep_outputs: bool = True


def timed(call: Callable[[], Any], sync: Callable[[list], None]) -> tuple[Any, float]:
    """Run ``call`` once and sync; return its output and the seconds taken."""
    start = time.perf_counter()
    output = call()
    sync([output])
    return output, time.perf_counter() - start


def _block(candidate: Candidate, number: int) -> float:
    call = candidate.call
    if candidate.keep_outputs:
        start = time.perf_counter()
        outputs = [call() for _ in range(number)]
        candidate.sync(outputs)
        return time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(number):
        call()
    candidate.sync([])
    return time.perf_counter() - start


class _NoCollection:
    """Python's garbage collector off for a block, as ``timeit`` has it: a collection is no part of the work."""

    def __enter__(self):
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.was_enabled:
            gc.enable()


def check_times(min_time: float, max_time: float, warmup: float) -> None:
    for name, value in (("min_time", min_time), ("max_time", max_time), ("warmup", warmup)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}: expected a finite non-negative number of seconds; got {value!r}")
    if max_time < min_time:
        raise ValueError(f"max_time: expected at least min_time={min_time}; got {max_time}")


def minor_faults() -> int | None:
    """This process's minor page faults so far (every thread's), or None without ``getrusage``."""
    return None if resource is None else resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class _State:
    def __init__(self, number: int):
        self.number, self.times, self.spent = number, [], 0.0
        self.faults: int | None = None if resource is None else 0

    def spread(self) -> float:
        q25, median, q75 = np.percentile(self.times, [25, 50, 75])
        return (q75 - q25) / median if median > 0 else 0.0

    def done(self, min_time: float, max_time: float) -> bool:
        n = len(self.times)
        if n >= MAX_SAMPLES:
            return True
        if n >= MIN_SAMPLES and self.spent >= min_time and self.spread() < NOISE_THRESHOLD:
            return True
        return n >= HARD_MIN_SAMPLES and self.spent >= max_time


def _calibrate(candidate: Candidate, warmup: float, block_s: float) -> int:
    """Warm up for ``warmup`` seconds (at least one call); return calls per block."""
    spent, per_call = 0.0, math.inf
    while True:
        seconds = _block(candidate, 1)
        spent += seconds
        per_call = min(per_call, seconds)
        if spent >= warmup:
            break
    return max(1, math.ceil(block_s / per_call * (1 - 1e-9))) if per_call > 0 else 1


def measure_interleaved(
    candidates: dict[str, Candidate],
    *,
    min_time: float = DEFAULT_MIN_TIME,
    max_time: float = DEFAULT_MAX_TIME,
    warmup: float = DEFAULT_WARMUP,
) -> dict[str, Measurement]:
    """Time every candidate, round by round; ``min_time``/``max_time`` are measured seconds per candidate."""
    check_times(min_time, max_time, warmup)
    block_s = max(MIN_BLOCK_S, min_time / 20)
    gc.collect()
    with _NoCollection():
        states = {name: _State(_calibrate(candidate, warmup, block_s)) for name, candidate in candidates.items()}
    order = list(candidates)
    active = set(order)
    forwards = True
    while active:
        for name in order if forwards else reversed(order):
            if name not in active:
                continue
            state = states[name]
            before = minor_faults()
            with _NoCollection():
                seconds = _block(candidates[name], state.number)
            if before is not None:
                state.faults += minor_faults() - before
            state.times.append(seconds / state.number)
            state.spent += seconds
            if state.done(min_time, max_time):
                active.discard(name)
        forwards = not forwards
    return {name: _finish(state, max_time) for name, state in states.items()}


def _finish(state: _State, max_time: float) -> Measurement:
    warnings = []
    if state.spread() >= NOISE_THRESHOLD:
        warnings.append(
            f"noisy: IQR/median = {state.spread():.2f} >= {NOISE_THRESHOLD} after {len(state.times)} samples"
            f" ({state.spent:.2f} s measured, cap max_time={max_time:g} s); raise max_time or quiet the machine"
        )
    faults = None if state.faults is None else state.faults / (len(state.times) * state.number)
    if faults is not None and faults >= PAGE_FAULTS_PER_CALL:
        warnings.append(
            f"page faults: {faults:.0f} a call: its time holds the kernel mapping and clearing fresh memory for"
            " the allocator's large temporaries on every call, which a long-running process may not pay; to"
            f" time without it, run with {PINNED_MALLOC} (glibc)"
        )
    return Measurement(times_s=tuple(state.times), number=state.number, warnings=tuple(warnings),
                       faults_per_call=faults)


def measure(call: Callable[[], Any], sync: Callable[[list], None] = lambda outputs: None, *,
            keep_outputs: bool = True, **options) -> Measurement:
    """Time one callable (see :class:`Candidate` for ``keep_outputs``, :func:`measure_interleaved` for the options)."""
    return measure_interleaved({"only": Candidate(call, sync, keep_outputs)}, **options)["only"]


# ------------------------------------------------------------------ can this machine time at all?

#: CPU time of other processes, in cores, at or above which the machine is too busy to time on.
BUSY_CORES = 0.5
#: Share of CPU time taken by the hypervisor (steal) at or above which times are unreliable.
STEAL_THRESHOLD = 0.05


@dataclasses.dataclass(frozen=True)
class CpuSample:
    """CPU counters at one moment: the machine's busy and stolen seconds (all CPUs), this process's own."""

    wall_s: float
    busy_s: float | None
    steal_s: float | None
    total_s: float | None
    own_s: float


def cpu_sample() -> CpuSample:
    """The counters now, from ``/proc/stat`` (None off Linux) and ``os.times()``."""
    busy = steal = total = None
    try:
        with open("/proc/stat") as stat:
            fields = [float(v) for v in stat.readline().split()[1:]]
        tick = os.sysconf("SC_CLK_TCK")
        user, nice, system, idle, iowait, irq, softirq, stolen = (fields + [0.0] * 8)[:8]
        busy, steal = (user + nice + system + irq + softirq) / tick, stolen / tick
        total = busy + steal + (idle + iowait) / tick
    except (OSError, ValueError):
        pass
    own = os.times()
    return CpuSample(time.perf_counter(), busy, steal, total, own.user + own.system)


@dataclasses.dataclass(frozen=True)
class MachineLoad:
    """How busy the machine was over an interval: what other processes took and the hypervisor stole."""

    cores: int
    seconds: float
    #: CPU time of every other process over the interval, in cores (None where /proc/stat is missing).
    others_cores: float | None
    #: Share of all CPU time the hypervisor stole over the interval.
    steal: float | None
    load_1m: float | None

    @property
    def busy(self) -> bool:
        return bool((self.others_cores or 0) >= BUSY_CORES or (self.steal or 0) >= STEAL_THRESHOLD)

    def describe(self) -> str:
        parts = []
        if self.others_cores is not None:
            parts.append(f"other processes used {self.others_cores:.1f} of {self.cores} cores")
        if self.steal is not None:
            parts.append(f"the hypervisor stole {self.steal:.0%} of the CPU time")
        if self.load_1m is not None:
            parts.append(f"load average {self.load_1m:.1f}")
        return ", ".join(parts) + f" (over {self.seconds:.1f} s)"

    @property
    def warnings(self) -> tuple[str, ...]:
        if not self.busy:
            return ()
        return (f"machine busy: {self.describe()}; times are unreliable and ratios between frameworks may"
                " reflect the contention (an intra-op thread pool spins while a peer thread is descheduled),"
                " not the code: time on a quiet machine (one thread per framework suffers least)",)

    def as_dict(self) -> dict:
        rounded = {"seconds": 3, "others_cores": 2, "steal": 4, "load_1m": 2}
        fields = {key: value if value is None or key not in rounded else round(value, rounded[key])
                  for key, value in dataclasses.asdict(self).items()}
        return {**fields, "busy": self.busy, "warnings": list(self.warnings)}


def machine_load(since: CpuSample | None = None, sample_s: float = 0.2) -> MachineLoad:
    """The load from ``since`` to now; without it, over ``sample_s`` seconds of sleep from now."""
    if since is None:
        since = cpu_sample()
        time.sleep(sample_s)
    now = cpu_sample()
    wall = max(now.wall_s - since.wall_s, 1e-9)
    others = steal = None
    if now.busy_s is not None and since.busy_s is not None:
        others = max(0.0, (now.busy_s - since.busy_s) - (now.own_s - since.own_s)) / wall
        total = now.total_s - since.total_s
        steal = (now.steal_s - since.steal_s) / total if total > 0 else 0.0
    try:
        load_1m = os.getloadavg()[0]
    except OSError:
        load_1m = None
    return MachineLoad(cores=available_cores(), seconds=wall, others_cores=others, steal=steal, load_1m=load_1m)


def attention_flops(spec) -> float:
    """Floating-point operations of one forward call of ``spec`` (an AttentionSpec).

    Core: 4·B·H·T·S·D (Q·Kᵀ and P·V, two flops per multiply-add), halved when causal.
    Projections: 2·B·T·E·H·D for Q and for the output, 2·B·S·E·G·D for K and for V.
    Softmax and masking are not counted.
    """
    B, T, S, E = spec.batch, spec.q_len, spec.kv_len, spec.embed
    H, G, D = spec.heads, spec.kv_heads, spec.head_dim
    core = 4.0 * B * H * T * S * D
    if spec.causal:
        core /= 2
    projections = 2.0 * B * T * E * H * D * 2 + 2.0 * B * S * E * G * D * 2
    return core + projections
