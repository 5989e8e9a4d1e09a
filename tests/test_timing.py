"""The adaptive, interleaved timer on a fake clock (structure and behaviour, never speed); its page-fault counts."""

import itertools

import numpy as np
import pytest

from xattn import timing
from xattn.contract.spec import AttentionSpec
from xattn.timing import Candidate, Measurement, attention_flops, measure, measure_interleaved


class FakeClock:
    """perf_counter that moves only when a fake call runs; each call costs the next duration."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def candidate(self, name, durations, log):
        durations = itertools.cycle(durations)

        def call():
            self.now += next(durations)
            log.append(name)
            return name

        def sync(outputs):
            log.append(f"sync {name} {len(outputs)}")

        return Candidate(call, sync)


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", fake)
    return fake


def test_steady_candidate_converges_after_min_samples(clock):
    log = []
    m = measure_interleaved({"a": clock.candidate("a", [1e-3], log)}, min_time=0.004, max_time=1.0, warmup=0.002)
    assert m["a"].n == timing.MIN_SAMPLES
    assert m["a"].median_s == pytest.approx(1e-3)
    assert m["a"].iqr_s == pytest.approx(0, abs=1e-12)
    assert not m["a"].noisy and m["a"].warnings == ()


def test_blocks_hold_enough_calls_and_end_in_one_sync(clock):
    log = []
    candidate = clock.candidate("a", [1e-4], log)
    m = measure(candidate.call, candidate.sync, min_time=0.04, max_time=1.0, warmup=0.001)
    assert m.number == max(timing.MIN_BLOCK_S, 0.04 / 20) / 1e-4 == 20
    assert m.median_s == pytest.approx(1e-4)
    timed_blocks = "".join("x" if entry == "a" else "|" for entry in log[2 * 10:])  # after 10 warm-up calls
    assert timed_blocks == ("x" * 20 + "|") * m.n
    assert log[-1] == "sync a 20"


def test_spread_candidate_stops_at_the_cap_and_is_flagged(clock):
    log = []
    m = measure_interleaved({"a": clock.candidate("a", [1e-3, 5e-3], log)}, min_time=0.0, max_time=0.05, warmup=0.0)
    a = m["a"]
    assert a.number == 1
    assert a.noisy and a.spread >= timing.NOISE_THRESHOLD
    assert "noisy" in a.warnings[0] and "max_time=0.05" in a.warnings[0]
    assert "WARNING: noisy" in repr(a)
    assert sum(a.times_s) >= 0.05


def test_the_cap_still_leaves_a_few_samples(clock):
    log = []
    m = measure_interleaved({"a": clock.candidate("a", [1.0], log)}, min_time=0.0, max_time=0.0, warmup=0.0)
    assert m["a"].n == timing.HARD_MIN_SAMPLES


def test_candidates_interleave_round_by_round_alternating_direction(clock):
    log = []
    candidates = {name: clock.candidate(name, [1e-3], log) for name in "abc"}
    measure_interleaved(candidates, min_time=0.0, max_time=1.0, warmup=0.0)
    blocks = [entry.split()[1] for entry in log if entry.startswith("sync")]
    blocks = blocks[3:]  # after the three calibration calls
    assert blocks[:6] == ["a", "b", "c", "c", "b", "a"]


def test_converged_candidates_leave_the_rotation(clock):
    log = []
    candidates = {"steady": clock.candidate("steady", [1e-3], log),
                  "noisy": clock.candidate("noisy", [1e-3, 4e-3], log)}
    m = measure_interleaved(candidates, min_time=0.0, max_time=0.2, warmup=0.0)
    assert m["steady"].n == timing.MIN_SAMPLES
    assert m["noisy"].n > m["steady"].n and m["noisy"].noisy


def test_measurement_statistics():
    m = Measurement(times_s=(1.0, 2.0, 3.0, 4.0, 100.0), number=2)
    assert (m.n, m.median_s, m.min_s) == (5, 3.0, 1.0)
    assert m.iqr_s == 2.0
    assert m.spread == pytest.approx(2 / 3)
    assert "median=3000 ms" in repr(m) and "n=5x2" in repr(m)


@pytest.mark.parametrize("options, message", [
    ({"min_time": -1}, "min_time: expected a finite non-negative number"),
    ({"min_time": 2.0, "max_time": 1.0}, "max_time: expected at least min_time"),
    ({"warmup": float("nan")}, "warmup: expected"),
])
def test_bad_options_are_value_errors(options, message):
    with pytest.raises(ValueError, match=message):
        measure(lambda: None, **options)


def test_attention_flops():
    spec = AttentionSpec(batch=2, q_len=8, kv_len=16, embed=32, heads=4, kv_heads=2, head_dim=8)
    core = 4 * 2 * 4 * 8 * 16 * 8
    projections = 2 * 2 * 8 * 32 * 4 * 8 * 2 + 2 * 2 * 16 * 32 * 2 * 8 * 2
    assert attention_flops(spec) == core + projections
    causal = AttentionSpec(batch=2, q_len=8, embed=32, heads=4, causal=True)
    plain = causal.replace(causal=False)
    assert attention_flops(plain) - attention_flops(causal) == 4 * 2 * 4 * 8 * 8 * 8 / 2


def test_real_clock_smoke():
    m = measure(lambda: sum(range(100)), min_time=0.001, max_time=0.01, warmup=0.0)
    assert m.n >= timing.HARD_MIN_SAMPLES and m.median_s > 0 and m.number >= 1


def test_a_block_drops_outputs_its_sync_does_not_need_and_collects_no_garbage(clock):
    import gc
    import weakref

    alive, collector = [], []

    class Output:
        pass

    def call():
        clock.now += 1e-3
        collector.append(gc.isenabled())
        output = Output()
        alive.append(weakref.ref(output))
        return output

    def sync(outputs):
        assert outputs == []
        assert sum(ref() is not None for ref in alive) <= 1  # each output gone once the next call began

    was_enabled = gc.isenabled()
    measure_interleaved({"a": Candidate(call, sync, keep_outputs=False)}, min_time=0.01, max_time=0.1, warmup=0.0)
    assert collector and not any(collector)  # the collector was off in every call
    assert gc.isenabled() == was_enabled


def _sample(wall, busy, steal, total, own):
    return timing.CpuSample(wall_s=wall, busy_s=busy, steal_s=steal, total_s=total, own_s=own)


def test_machine_load_counts_other_processes_and_steal_not_our_own_time(monkeypatch):
    monkeypatch.setattr(timing, "cpu_sample", lambda: _sample(11.0, 118.0, 1.0, 200.0, 6.0))
    # over 1 s of a 2-core box: 3 busy core-seconds of which 1.5 our own, and 0.1 of 2 stolen
    load = timing.machine_load(since=_sample(10.0, 115.0, 0.9, 198.0, 4.5))
    assert load.others_cores == pytest.approx(1.5) and load.steal == pytest.approx(0.05)
    assert load.busy and "other processes used 1.5" in load.warnings[0] and "quiet machine" in load.warnings[0]
    quiet = timing.machine_load(since=_sample(10.0, 116.5, 1.0, 198.0, 4.5))
    assert quiet.others_cores == pytest.approx(0.0) and not quiet.busy and quiet.warnings == ()
    assert quiet.as_dict()["busy"] is False and quiet.as_dict()["warnings"] == []


def test_machine_load_reads_this_machine():
    load = timing.machine_load(sample_s=0.01)
    assert load.cores >= 1 and load.seconds > 0
    assert load.others_cores is None or load.others_cores >= 0


def test_a_call_that_maps_fresh_memory_each_time_says_so():
    """A call that maps 16 MiB afresh and writes it (as glibc's malloc does for large temporaries) warns."""
    import mmap

    def fresh():  # small pages, whatever transparent huge pages are set to: one fault a page
        memory = mmap.mmap(-1, 16 << 20)
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            memory.madvise(mmap.MADV_NOHUGEPAGE)
        view = np.frombuffer(memory, np.uint8)
        view[::mmap.PAGESIZE] = 1
        del view
        memory.close()

    kept = np.ones(4 << 20, np.float32)
    faulting = timing.measure(fresh, keep_outputs=False, min_time=0.02, max_time=0.1)
    quiet = timing.measure(lambda: kept.sum(), keep_outputs=False, min_time=0.02, max_time=0.1)
    assert faulting.faults_per_call >= (16 << 20) // mmap.PAGESIZE
    assert any(w.startswith("page faults:") and "MALLOC_MMAP_THRESHOLD_" in w for w in faulting.warnings)
    assert quiet.faults_per_call < timing.PAGE_FAULTS_PER_CALL
    assert not any(w.startswith("page faults:") for w in quiet.warnings)
