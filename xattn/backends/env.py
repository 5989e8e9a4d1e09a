"""The environment block: versions, devices, thread counts and every flag that changes numerics.

Recorded with every comparison (inside its settings, so the flags are the ones it ran under) and
printed by ``xattn env``, with the machine's load at that moment (a busy machine cannot
time). Versions come from package metadata, so they are known even for a
framework that is not imported; devices, threads and flags need the framework and import it.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from xattn._environ import available_cores
from xattn._version import __version__
from xattn.backends import frameworks
from xattn.backends.frameworks import FRAMEWORKS
from xattn.timing import machine_load

#: Distributions whose versions are recorded (import names differ for none of them).
PACKAGES = ("numpy", "ml_dtypes", "jax", "jaxlib", "flax", "torch", "einops")
#: Environment variables that change thread pools or numerics.
VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS", "JAX_ENABLE_X64", "JAX_DEFAULT_MATMUL_PRECISION",
             "CUDA_VISIBLE_DEVICES", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


#: Seconds of sleep over which the environment block measures what other processes take.
LOAD_SAMPLE_S = 0.1


def _load() -> dict:
    """The machine's load now: load average per core, other processes' CPU use, steal (``xattn.timing``)."""
    load = machine_load(sample_s=LOAD_SAMPLE_S)
    per_core = None if load.load_1m is None else round(load.load_1m / load.cores, 2)
    fields = {key: value for key, value in load.as_dict().items() if key != "warnings"}  # the reports say them
    return {**fields, "load_1m_per_core": per_core}


def environment(frameworks_to_inspect=None) -> dict:
    """The environment as a JSON-ready dict; inspects (imports) the named frameworks, default all installed."""
    if frameworks_to_inspect is None:
        frameworks_to_inspect = tuple(name for name in FRAMEWORKS if package_version(name) is not None)
    env = {
        "xattn": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {name: package_version(name) for name in PACKAGES},
        "cpu": {"cpu_count": os.cpu_count(), "cores_available": available_cores()},
        "load": _load(),
        "variables": {name: os.environ[name] for name in VARIABLES if name in os.environ},
        "devices": {},
        "threads": {},
        "numerics": {},
    }
    for name in FRAMEWORKS:
        if name not in frameworks_to_inspect:
            continue
        try:
            side = frameworks.side(name)
        except ImportError as error:
            env["devices"][name] = f"not installed ({error}); {FRAMEWORKS[name].install}"
            continue
        env["devices"][name] = side.devices()
        env["threads"].update(side.threads())
        env["numerics"][name] = side.numerics()
    return env
