"""JAX's ``threaded`` variant: ``tiled`` on batch slices in host threads, and plain ``tiled`` under transformations."""

import threading

import numpy as np
import pytest

import xattn
from xattn.contract.spec import AttentionSpec, make_inputs

from conftest import require_backend

SPEC = AttentionSpec(batch=3, q_len=20, embed=16, heads=4, kv_heads=2, causal=True, key_lengths=(20, 3, 11))


@pytest.fixture
def jax_module(monkeypatch):
    module = require_backend("jax")
    monkeypatch.setattr(module, "_host_threads", lambda: 2)  # two slices whatever this machine has
    module.build.cache_clear()
    yield module
    module.build.cache_clear()


def arguments(module, spec=SPEC):
    inputs = make_inputs(spec)
    x, wq, wk, wv, wo = module.as_arrays(inputs.x, *inputs.weights())
    lengths = None if inputs.key_lengths is None else module.as_lengths(inputs.key_lengths)
    return (x, x, wq, wk, wv, wo, lengths)


def build(variant, spec=SPEC):
    return xattn.build("jax", variant, causal=spec.causal, head_dim=spec.head_dim, padded=spec.key_lengths is not None)


def test_the_batch_is_cut_into_one_slice_per_thread(jax_module):
    assert jax_module._Threaded._slices(arguments(jax_module)) == [(0, 2), (2, 3)]


def test_each_slice_is_tiled_on_its_rows_and_runs_in_a_pool_thread(jax_module, monkeypatch):
    seen, finished = [], jax_module._finished

    def recording(run, args):
        seen.append(threading.current_thread().name)
        return finished(run, args)

    monkeypatch.setattr(jax_module, "_finished", recording)
    args = arguments(jax_module)
    out = np.asarray(build("threaded")(*args))
    assert len(seen) == 2 and all(name.startswith("xattn-jax") for name in seen)
    tiled = build("tiled")
    for start, stop in [(0, 2), (2, 3)]:  # bit for bit the tiled executable on those rows
        part = jax_module._Threaded._part(args, start, stop)
        np.testing.assert_array_equal(out[start:stop], np.asarray(tiled(*part)))


def test_compile_returns_the_same_computation_ahead_of_time(jax_module):
    args = arguments(jax_module)
    fn = build("threaded")
    runnable = fn.compile(*args)
    np.testing.assert_array_equal(np.asarray(runnable(*args)), np.asarray(fn(*args)))


def test_under_jit_and_vjp_it_is_tiled_as_one_function(jax_module):
    import jax

    args = arguments(jax_module)
    threaded, tiled = build("threaded"), build("tiled")

    def loss(fn):
        return lambda x, wq: fn(x, x, wq, *args[3:]).sum()

    np.testing.assert_array_equal(jax.jit(loss(threaded))(args[0], args[2]), jax.jit(loss(tiled))(args[0], args[2]))
    grads = jax.grad(loss(threaded), argnums=(0, 1))(args[0], args[2])
    expected = jax.grad(loss(tiled), argnums=(0, 1))(args[0], args[2])
    for got, want in zip(grads, expected):
        np.testing.assert_array_equal(got, want)


def test_one_row_or_one_thread_runs_whole(jax_module, monkeypatch):
    one_row = AttentionSpec(batch=1, q_len=8, embed=16, heads=4)
    assert jax_module._Threaded._slices(arguments(jax_module, one_row)) is None
    monkeypatch.setattr(jax_module, "_host_threads", lambda: 1)
    assert jax_module._Threaded._slices(arguments(jax_module)) is None
    out = build("threaded")(*arguments(jax_module))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(build("tiled")(*arguments(jax_module))))
