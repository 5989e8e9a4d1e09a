"""How much memory a comparison will need, estimated before it runs, and the limit it must fit in.

A comparison holds its inputs, the float64 oracle's output and every variant's output throughout,
and on top of that one stage at a time: the float64 oracle and the naive same-dtype runs (NumPy),
then each variant's first call. Its peak is the held part plus the largest stage. Every stage is
dominated by the B·H·T·S logits, so each is written as bytes per logit plus its smaller terms:

- NumPy (measured with ``tracemalloc``, tests/test_memory.py holds the estimate above it): the
  oracle and naive runs hold about 28 bytes per logit (three float64 B·H·T·S buffers and a
  float32 one) and 9 per B·T·S mask element; with gradients, 52 and 12 (the backward's random-rounding
  repeats run at once, a chunk of seeds per core: up to 55 per logit measured).
- Variants (:data:`VARIANT_PEAKS`, from docs/performance.md's peak column at the seed shape): a
  variant that materialises the logits holds 2-4 buffers of them (softmax in float32 for 16-bit
  dtypes), a blocked one a few key or query blocks of 128, a tiled one a few 2 MiB tiles; all hold
  about three times their inputs, projections and output. Gradients multiply a variant's figure by
  :data:`GRAD_FACTOR` and add the logits buffers a loop saves for its backward (``Peak.grad_logits``).
  On a GPU the variants' memory is the device's: only the host stages count.

The limit (``max_memory``) is bytes, a size such as ``"8GiB"``, or a share of the memory available
now, ``"50%"``; the default is :data:`DEFAULT_SHARE` of it. Available memory is the smallest of
Linux's MemAvailable, the cgroup's limit less its usage, and the free pages ``sysconf`` reports.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path

from xattn._environ import available_cores
from xattn.contract.spec import AttentionSpec, numpy_dtype
from xattn.errors import MemoryLimitError

#: The default limit: this share of the memory available when the run starts.
DEFAULT_SHARE = 0.75
#: Bytes per logit (B·H·T·S element) and per mask element (B·T·S) of the float64 oracle and naive runs.
ORACLE_BYTES = (28, 9)
#: The same with gradients (the oracle's and the naive runs' backward, repeats at once in per-core chunks).
GRAD_ORACLE_BYTES = (52, 12)
#: Rows of keys (queries) per block of the blocked (tiled) variants, and JAX's tile size in bytes.
BLOCK, TILE_BYTES = 128, 2 * 2**20
#: A variant's gradients hold its forward residuals and their cotangents: this times its forward figure.
GRAD_FACTOR = 2.5


@dataclasses.dataclass(frozen=True)
class Peak:
    """A variant's memory beside its inputs: logits buffers, key blocks, query blocks, tiles (per thread).

    ``grad_logits``: logits buffers its gradient holds beyond :data:`GRAD_FACTOR` times the forward
    figure (residuals a blocked or tiled loop saves for its backward pass).
    """

    logits: float = 0.0
    key_blocks: float = 0.0
    query_blocks: float = 0.0
    tiles: float = 0.0
    grad_logits: float = 0.0


#: (backend, variant) -> its peak; docs/performance.md's measured peaks (forward at the seed shape,
#: gradients at a quarter of it), rounded up.
VARIANT_PEAKS = {
    ("jax", "einsum"): Peak(logits=2.5), ("jax", "packed"): Peak(logits=2.5), ("jax", "vmap"): Peak(logits=4),
    ("jax", "sdpa"): Peak(logits=2.5), ("jax", "blocked"): Peak(key_blocks=3, grad_logits=4.5),
    ("jax", "tiled"): Peak(tiles=4, grad_logits=3.5), ("jax", "threaded"): Peak(tiles=4, grad_logits=3.5),
    ("torch", "einsum"): Peak(logits=2.5), ("torch", "packed"): Peak(logits=2.5), ("torch", "vmap"): Peak(logits=2.5),
    ("torch", "sdpa"): Peak(), ("torch", "blocked"): Peak(key_blocks=5), ("torch", "tiled"): Peak(query_blocks=5),
    ("torch", "compiled"): Peak(grad_logits=1.5),
}
#: A variant not in the table: assumed to hold the logits four times.
UNKNOWN_PEAK = Peak(logits=4)
#: Inputs, projections and output a variant holds, as multiples of their size.
IO_FACTOR = 3

_UNITS = {"": 1, "b": 1, "k": 2**10, "kib": 2**10, "kb": 10**3, "m": 2**20, "mib": 2**20, "mb": 10**6,
          "g": 2**30, "gib": 2**30, "gb": 10**9, "t": 2**40, "tib": 2**40, "tb": 10**12}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_limit(value) -> tuple[str, float]:
    """``("bytes", n)`` or ``("share", fraction)`` for a ``max_memory`` value; ValueError for anything else.

    ``None``: the default share. A positive finite number: bytes. A string: ``"8GiB"``, ``"512M"``,
    ``"2e9"`` (K/M/G/T and KiB.. are powers of 1024, KB.. of 1000) or ``"60%"`` (of the memory available).
    """
    if value is None:
        return "share", DEFAULT_SHARE
    expected = "expected a positive size such as 8GiB, 512MiB or 2e9 (bytes), or a share such as 50%"
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%"):
            try:
                share = float(text[:-1]) / 100
            except ValueError:
                raise ValueError(f"max_memory: {expected}; got {value!r}") from None
            if not (math.isfinite(share) and 0 < share <= 1):
                raise ValueError(f"max_memory: expected a share in (0%, 100%]; got {value!r}")
            return "share", share
        match = _SIZE.match(text)
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(f"max_memory: {expected}; got {value!r}")
        number = float(match.group(1)) * _UNITS[match.group(2).lower()]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"max_memory: {expected}; got {value!r}")
    if not (math.isfinite(number) and number >= 1):
        raise ValueError(f"max_memory: {expected}; got {value!r}")
    return "bytes", number


#: The cgroup's (v2, then v1) memory limit and usage files, under /sys/fs/cgroup.
CGROUP_FILES = (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"))


def available_memory() -> int | None:
    """Bytes this process could allocate now without swapping, or None where nothing says."""
    found = []
    meminfo = _read(Path("/proc/meminfo"))
    match = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo or "", re.MULTILINE)
    if match:
        found.append(int(match.group(1)) * 1024)
    for limit, usage in CGROUP_FILES:
        cap, used = _read(Path("/sys/fs/cgroup") / limit), _read(Path("/sys/fs/cgroup") / usage)
        if cap and used and cap.strip().isdigit() and used.strip().isdigit() and int(cap) < 2**60:
            found.append(max(int(cap) - int(used), 0))
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            pass
    return min(found) if found else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


@dataclasses.dataclass(frozen=True)
class Limit:
    """The memory a run may use: ``bytes`` (None: unknown, no check) and how it was set."""

    bytes: float | None
    described: str


def resolve_limit(value) -> Limit:
    """The :class:`Limit` of a ``max_memory`` value, a share read against the memory available now."""
    kind, amount = parse_limit(value)
    if kind == "bytes":
        return Limit(amount, "set by max_memory")
    available = available_memory()
    if available is None:
        return Limit(None, "no limit: this system does not say how much memory is available")
    source = "the default" if value is None else "set by max_memory"
    return Limit(amount * available, f"{amount:.0%} of the {size_text(available)} available, {source}")


def size_text(count: float) -> str:
    """``"1.5 GiB"``, ``"640 MiB"``, ``"12 KiB"``, ``"100 B"``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count:.0f} B"


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes held throughout (``held``) and each stage's own (``stages``, name -> bytes); ``peak`` adds the largest."""

    held: float
    stages: dict

    @property
    def largest(self) -> str:
        return max(self.stages, key=self.stages.get)

    @property
    def peak(self) -> float:
        return self.held + max(self.stages.values())

    def describe(self) -> str:
        return f"{size_text(self.peak)} (largest stage: {self.largest}, {size_text(self.stages[self.largest])})"


def estimate(spec: AttentionSpec, runs, *, grad: bool = False, device: str = "cpu") -> MemoryEstimate:
    """The peak memory of comparing ``runs`` ((backend, variant) pairs) on ``spec``: see the module docstring."""
    B, T, S, E, H, G, D = (spec.batch, spec.q_len, spec.kv_len, spec.embed, spec.heads, spec.kv_heads,
                           spec.head_dim)
    item = numpy_dtype(spec.dtype).itemsize
    softmax_item = max(item, 4)
    logits, mask = B * H * T * S, B * T * S
    sources = B * T * E + (B * S * E if spec.is_cross else 0)
    weights = 2 * H * E * D + 2 * G * E * D
    io = sources + 2 * B * T * H * D + 2 * B * S * G * D
    outputs = B * T * E
    held = (sources + weights) * (8 + item) + outputs * (8 + item * (1 + len(runs)))
    per_logit, per_mask = GRAD_ORACLE_BYTES if grad else ORACLE_BYTES
    if grad:  # the gradients' oracle and naive run, held until the rows are judged
        held += (sources + weights) * (8 + item)
    stages = {"float64 oracle and naive runs": per_logit * logits + per_mask * mask + (32 if grad else 16) * io}
    if device == "cpu":
        threads = available_cores()  # the threaded variant's pool: XLA's intra-op count
        for backend, variant in runs:
            peak = VARIANT_PEAKS.get((backend, variant), UNKNOWN_PEAK)
            figure = (peak.logits * logits + peak.key_blocks * B * H * T * min(S, BLOCK)
                      + peak.query_blocks * B * H * min(T, BLOCK) * S) * softmax_item
            tile = min(TILE_BYTES, logits * softmax_item)
            figure += peak.tiles * tile * (threads if variant == "threaded" else 1) + IO_FACTOR * io * item
            if grad:
                figure = GRAD_FACTOR * figure + peak.grad_logits * logits * softmax_item
            stages[f"{backend}/{variant}"] = figure
    return MemoryEstimate(held, stages)


def check(specs, runs, limit: Limit, *, grad: bool = False, device: str = "cpu", names=None) -> None:
    """MemoryLimitError for the first spec whose estimate is over ``limit``, naming the largest shape that fits.

    ``specs``: one problem, or a sweep's points in order; ``names[i]`` labels point i in the message.
    """
    if limit.bytes is None:
        return
    specs = list(specs)
    for index, spec in enumerate(specs):
        found = estimate(spec, runs, grad=grad, device=device)
        if found.peak <= limit.bytes:
            continue
        where = f"sweep point {index + 1} of {len(specs)} ({names[index]}): " if names else ""
        raise MemoryLimitError(
            f"{where}memory: expected an estimated peak within the limit of {size_text(limit.bytes)}"
            f" ({limit.described}); got {found.describe()}. {_fits(spec, runs, limit.bytes, grad, device)}"
        )


def _fits(spec: AttentionSpec, runs, limit: float, grad: bool, device: str) -> str:
    """``"The largest that fits ...: batch=3 or q_len=kv_len=2048"``: the most one size may keep, the others fixed."""

    def fits(**changes) -> bool:
        try:
            changed = spec.replace(**changes)
        except ValueError:  # key lengths that no longer fit the batch or S
            return False
        return estimate(changed, runs, grad=grad, device=device).peak <= limit

    def largest(top: int, changes) -> int:
        low, high = 0, top
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(**changes(middle)) else (low, middle - 1)
        return low

    options = []
    batch = largest(spec.batch - 1, lambda n: {"batch": n})
    if batch:
        options.append(f"batch={batch}")
    self_attention = spec.kv_len == spec.q_len
    length = largest(spec.q_len - 1, lambda n: {"q_len": n, **({"kv_len": n} if self_attention else {})})
    if length:
        options.append(f"q_len{'=kv_len' if self_attention else ''}={length}")
    if not options:
        return "Nothing smaller along batch or q_len fits: raise max_memory or shrink the model widths."
    return f"The largest that fits, the other sizes kept: {' or '.join(options)}. Or raise max_memory."


def check_run(specs, plan, settings, names=None) -> None:
    """:func:`check` for a resolved ``plan`` and :class:`~xattn.comparison.settings.RunSettings` ``settings``."""
    check(specs, plan.runs, resolve_limit(settings.max_memory), grad=settings.grad, device=plan.device, names=names)
