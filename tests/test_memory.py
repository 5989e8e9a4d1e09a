"""The memory estimate and --max-memory: checked before anything runs, tested without allocating much."""

import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import xattn
import xattn.comparison.comparator
import xattn.comparison.sweeper
from xattn.backends.calls import cotangent_like
from xattn.cli import main
from xattn.comparison import memory
from xattn.comparison.gradients import _budgets
from xattn.contract.spec import SEED_SHAPE, AttentionSpec, make_inputs
from xattn.errors import MemoryLimitError
from xattn.numerics.naive import naive_runs
from xattn.numerics.oracle import reference

from conftest import require_backend

PERFORMANCE = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def no_work(*args, **kwargs):
    raise AssertionError("the run started although its estimate is over the limit")


def numpy_peak(spec: AttentionSpec, grad: bool) -> int:
    """Bytes NumPy held at most while making the inputs, the oracle and the naive runs as the comparator does."""
    tracemalloc.start()
    try:
        inputs = make_inputs(spec)
        problem = dict(kv=inputs.kv, causal=spec.causal, key_lengths=inputs.key_lengths, scale=spec.scale)
        oracle = reference(inputs.x, *inputs.weights(), **problem)
        naive_runs(lambda seed: reference(inputs.x, *inputs.weights(), **problem, dtype=spec.dtype,
                                          rounding_seed=seed), oracle.size, spec.dtype)
        if grad:  # the gradient oracle and its naive runs, as xattn.comparison.gradients makes them
            cross = inputs.kv is not inputs.x
            labels = ["x", *(["kv"] if cross else []), "wq", "wk", "wv", "wo"]
            C = cotangent_like(np.zeros(inputs.x.shape, inputs.x.dtype))
            _budgets(spec, inputs, cross, labels, C)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("spec", [
    AttentionSpec(batch=2, q_len=128, embed=64, heads=4),
    AttentionSpec(batch=2, q_len=128, kv_len=256, embed=64, heads=1, key_lengths=(3, 250), dtype="bfloat16"),
    AttentionSpec(batch=1, q_len=256, embed=64, heads=8, kv_heads=2, causal=True, dtype="float16"),
    AttentionSpec(batch=3, q_len=64, embed=32, heads=2, dtype="float64"),
], ids=["mha", "cross-padded-bf16", "gqa-causal-f16", "f64"])
@pytest.mark.parametrize("grad", [False, True], ids=["forward", "grad"])
def test_the_numpy_estimate_is_above_what_numpy_holds_and_within_twice_it(spec, grad):
    measured = numpy_peak(spec, grad)
    estimated = memory.estimate(spec, (), grad=grad).peak
    assert measured <= estimated <= 2 * measured, (measured, estimated)


def documented_peaks() -> dict:
    """(backend, variant) -> peak MiB from docs/performance.md's seed-shape table."""
    peaks = {}
    for line in PERFORMANCE.read_text().splitlines():
        cells = [cell.strip(" *") for cell in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0] in ("jax", "torch") and cells[5].isdigit():
            peaks[(cells[0], cells[1])] = int(cells[5])
    return peaks


def test_every_variant_estimate_covers_its_documented_peak_at_the_seed_shape():
    peaks = documented_peaks()
    assert set(peaks) == set(memory.VARIANT_PEAKS)
    spec = AttentionSpec(**SEED_SHAPE)
    stages = memory.estimate(spec, tuple(peaks)).stages
    for run, mib in peaks.items():
        estimated = stages[f"{run[0]}/{run[1]}"] / 2**20
        assert mib <= estimated <= max(3 * mib, 160), (run, mib, estimated)


def measured_gradient_peaks() -> dict:
    """stage -> gradient peak MiB from docs/performance.md's table of stages (B=8 T=S=512 E=128 H=16)."""
    peaks = {}
    for line in PERFORMANCE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and "/" in cells[0] and cells[3].isdigit():
            peaks[cells[0]] = int(cells[3])
    return peaks


def test_every_gradient_estimate_covers_its_measured_peak():
    peaks = measured_gradient_peaks()
    assert set(peaks) == {f"{backend}/{variant}" for backend, variant in memory.VARIANT_PEAKS}
    spec = AttentionSpec(batch=8, q_len=512, embed=128, heads=16)
    stages = memory.estimate(spec, tuple(memory.VARIANT_PEAKS), grad=True).stages
    for stage, mib in peaks.items():
        assert mib <= stages[stage] / 2**20 <= 3 * mib, (stage, mib, stages[stage] / 2**20)


def test_the_variants_memory_is_the_devices_on_a_gpu():
    spec = AttentionSpec(**SEED_SHAPE)
    assert list(memory.estimate(spec, (("torch", "einsum"),), device="cuda").stages) == \
        ["float64 oracle and naive runs"]


@pytest.mark.parametrize("value, expected", [
    (None, ("share", memory.DEFAULT_SHARE)), ("8GiB", ("bytes", 8 * 2**30)), ("512M", ("bytes", 512 * 2**20)),
    ("1.5GB", ("bytes", 1.5e9)), ("2e9", ("bytes", 2e9)), (4096, ("bytes", 4096)), (" 60% ", ("share", 0.6)),
    ("100%", ("share", 1.0)),
])
def test_limits_read_as_sizes_or_shares(value, expected):
    assert memory.parse_limit(value) == expected


def test_the_default_limit_is_the_documented_share_of_the_memory_available(monkeypatch):
    assert memory.available_memory() > 0
    monkeypatch.setattr(memory, "available_memory", lambda: 2**30)
    limit = memory.resolve_limit(None)
    assert limit.bytes == memory.DEFAULT_SHARE * 2**30 == 0.75 * 2**30
    assert limit.described == "75% of the 1 GiB available, the default"
    assert memory.resolve_limit("10%").bytes == 0.1 * 2**30
    monkeypatch.setattr(memory, "available_memory", lambda: None)
    assert memory.resolve_limit(None).bytes is None  # nothing to go by: no check rather than a guess


def test_over_the_limit_names_the_estimate_the_limit_and_the_largest_shape_that_fits():
    spec = AttentionSpec(batch=8, q_len=512, embed=64, heads=4)
    runs = (("jax", "einsum"), ("torch", "sdpa"))
    limit = memory.Limit(64 * 2**20, "set by max_memory")
    with pytest.raises(MemoryLimitError) as caught:
        memory.check([spec], runs, limit)
    message = str(caught.value)
    peak = memory.estimate(spec, runs).peak
    assert f"within the limit of 64 MiB (set by max_memory); got {memory.size_text(peak)}" in message
    batch = int(re.search(r"batch=(\d+)", message).group(1))
    length = int(re.search(r"q_len=kv_len=(\d+)", message).group(1))
    assert memory.estimate(spec.replace(batch=batch), runs).peak <= limit.bytes
    assert memory.estimate(spec.replace(batch=batch + 1), runs).peak > limit.bytes
    assert memory.estimate(spec.replace(q_len=length, kv_len=length), runs).peak <= limit.bytes
    assert memory.estimate(spec.replace(q_len=length + 1, kv_len=length + 1), runs).peak > limit.bytes
    memory.check([spec.replace(batch=batch)], runs, limit)  # fits: no error


def test_the_api_refuses_before_anything_runs(monkeypatch):
    require_backend("jax")
    monkeypatch.setattr(xattn.comparison.comparator, "run", no_work)
    monkeypatch.setattr(xattn.comparison.sweeper, "run", no_work)
    spec = AttentionSpec(batch=2, q_len=64)
    with pytest.raises(MemoryLimitError, match="memory: expected an estimated peak within the limit of 1 MiB"):
        xattn.compare("jax", "einsum", spec, max_memory="1MiB")
    with pytest.raises(ValueError, match=r"sweep point 2 of 2 \(seq=1024\): memory"):
        xattn.sweep("jax", "einsum", spec, {"seq": [8, 1024]}, max_memory="4MiB")


def test_the_cli_refuses_with_exit_2_and_one_line(monkeypatch):
    require_backend("jax")
    monkeypatch.setattr(xattn.comparison.comparator, "run", no_work)
    result = CliRunner().invoke(main, ["compare", "--backends", "jax", "--variants", "einsum", "--batch", "8",
                                       "--q-len", "512", "--max-memory", "64MiB"])
    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "within the limit of 64 MiB (set by --max-memory); got" in line and "largest stage:" in line
    assert "The largest that fits, the other sizes kept: batch=" in line and "Or raise --max-memory." in line


def test_a_sweep_point_over_the_limit_stops_the_sweep_before_it_starts(monkeypatch):
    require_backend("jax")
    monkeypatch.setattr(xattn.comparison.sweeper, "run", no_work)
    result = CliRunner().invoke(main, ["sweep", "--backends", "jax", "--variants", "einsum", "--batch", "8",
                                       "--seq", "16,32,16384", "--no-timing"])
    assert result.exit_code == 2, result.output
    assert "sweep point 3 of 3 (seq=16384): memory: expected an estimated peak within the limit of" in \
        " ".join(result.output.split())


@pytest.mark.parametrize("flag, message", [
    ("nan", "expected a positive size such as 8GiB"), ("inf", "expected a positive size"),
    ("0", "expected a positive size"), ("-1GiB", "expected a positive size"), ("200%", "expected a share in"),
])
def test_a_bad_limit_is_a_usage_error(flag, message):
    require_backend("jax")
    result = CliRunner().invoke(main, ["compare", "--backends", "jax", "--q-len", "4", "--max-memory", flag])
    assert result.exit_code == 2 and "Invalid value for --max-memory" in result.output
    assert message in " ".join(result.output.split())
