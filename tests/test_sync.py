"""A timing measures work, not dispatch: every sync is exercised by work that outlasts its dispatch.

Each test starts an asynchronous computation whose duration is known without the sync under test
(a thread that sleeps; a JAX loop timed through a host copy, which waits by itself) and asserts
that the measured time is at least a fraction of it. A machine's noise only makes work slower,
so the lower bound holds however busy the machine is; a sync that does not wait measures the
dispatch, far below it. No upper bounds, no speed claims.
"""

import threading
import time

import numpy as np
import pytest

import xattn
import xattn.backends.registry
from xattn.backends import frameworks
from xattn.contract.spec import AttentionSpec
from xattn.timing import Candidate, measure_interleaved

from conftest import require_backend

SLEEP_S = 0.05
#: Share of the known work a synced measurement must reach (noise only adds; dispatch is ~1e-4 of it).
SHARE = 0.25


class _Sleeper:
    """``call()`` starts a thread that sleeps SLEEP_S and returns it at once; ``sync`` joins them."""

    def __init__(self):
        self.started = []

    def call(self):
        worker = threading.Thread(target=time.sleep, args=(SLEEP_S,))
        worker.start()
        self.started.append(worker)
        return worker

    def sync_outputs(self, outputs):
        for worker in outputs:
            worker.join()

    def sync_all(self, outputs):
        assert outputs == []  # a sync that needs no outputs is given none
        while self.started:
            self.started.pop().join()


@pytest.mark.parametrize("keep_outputs", [True, False])
def test_the_timer_waits_for_asynchronous_work(keep_outputs):
    sleeper = _Sleeper()
    sync = sleeper.sync_outputs if keep_outputs else sleeper.sync_all
    measured = measure_interleaved({"sleep": Candidate(sleeper.call, sync, keep_outputs)},
                                   min_time=0.0, max_time=0.0, warmup=0.0)["sleep"]
    assert measured.number == 1 and measured.n >= 3
    assert min(measured.times_s) >= SLEEP_S  # each sample holds a whole sleep: the sync was awaited


def _slow_jax_work():
    """A jitted JAX loop, its argument, and its duration measured through a host copy (min of two)."""
    require_backend("jax")
    import jax
    import jax.numpy as jnp

    @jax.jit
    def spin(x):
        return jax.lax.fori_loop(0, 100, lambda i, v: jnp.sin(v) * 1.0001, x)

    x = jnp.ones(1 << 18, jnp.float32)
    np.asarray(spin(x))  # compiled
    durations, dispatches = [], []
    for _ in range(2):
        start = time.perf_counter()
        out = spin(x)
        dispatches.append(time.perf_counter() - start)
        np.asarray(out)  # a host copy waits for the work without block_until_ready
        durations.append(time.perf_counter() - start)
    work = min(durations)
    # Without asynchronous dispatch a missing sync would go unseen here: say so rather than pass.
    assert min(dispatches) < SHARE * work, f"dispatch {min(dispatches):.4f} s, work {work:.4f} s: JAX ran it inline"
    return spin, x, work


def test_the_jax_side_waits_for_the_work():
    spin, x, work = _slow_jax_work()
    side = frameworks.side("jax")
    start = time.perf_counter()
    out = spin(x)
    side.sync([out])
    assert time.perf_counter() - start >= SHARE * work


class _Slow:
    """A JAX variant whose output waits on ``spin``: right values, and work that outlasts its dispatch."""

    def __init__(self, fn, spin, x):
        self.fn, self.spin, self.x = fn, spin, x

    def compile(self, *args):
        return self

    def __call__(self, *args):
        return self.fn(*args) + 0 * self.spin(self.x)[0]


def test_compare_times_the_work_not_the_dispatch(monkeypatch):
    spin, x, work = _slow_jax_work()
    real = xattn.backends.registry.build

    def build(backend, variant, **options):
        return _Slow(real(backend, variant, **options), spin, x)

    monkeypatch.setattr(xattn.backends.registry, "build", build)
    spec = AttentionSpec(batch=1, q_len=8, embed=16, heads=2)
    row = xattn.compare(backends="jax", variants="einsum", spec=spec, min_time=0.0, max_time=0.0,
                        warmup=0.0).row("jax", "einsum")
    assert row.verdict == "ok"
    assert row.first_call_s >= SHARE * work
    assert row.timing.median_s >= SHARE * work
