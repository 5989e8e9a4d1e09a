"""xattn: do a JAX and a PyTorch attention compute the same thing, how far apart, whose fault, which is faster.

``import xattn`` imports NumPy only; each framework loads when a backend that needs it is first used.
Public names are resolved lazily from the submodules listed in ``_EXPORTS``.
"""

from __future__ import annotations

import importlib

from xattn._version import __version__
from xattn.errors import BackendUnavailableError, BridgeError, VariantUnsupportedError, XattnError

# public name -> submodule that defines it (imported on first access)
_EXPORTS = {
    "AttentionSpec": "xattn.spec",
    "AttentionInputs": "xattn.spec",
    "DTYPES": "xattn.spec",
    "make_inputs": "xattn.spec",
    "reference": "xattn.oracle",
    "fullrank_reference": "xattn.oracle",
    "bmm_reference": "xattn.oracle",
    "variants": "xattn.api",
    "attention": "xattn.api",
    "build": "xattn.api",
    "fullrank_attention": "xattn.api",
    "batched_matmul": "xattn.api",
    "backend_names": "xattn.registry",
    "available_backends": "xattn.registry",
    "get_backend": "xattn.registry",
    "to_torch": "xattn.bridge",
    "to_jax": "xattn.bridge",
    "to_numpy": "xattn.bridge",
    "tree_to_torch": "xattn.bridge",
    "tree_to_jax": "xattn.bridge",
    "tree_to_numpy": "xattn.bridge",
    "bridge_matrix": "xattn._bridge_matrix",
    "BridgeCell": "xattn._bridge_matrix",
    "compare": "xattn.comparator",
    "Report": "xattn.results",
    "sweep": "xattn.sweeper",
    "SweepReport": "xattn.results",
    "Row": "xattn.results",
    "Pair": "xattn.results",
    "Measurement": "xattn.timing",
    "DriftMetrics": "xattn.drift",
    "Budget": "xattn.drift",
    "check_port": "xattn.port",
    "DriftReport": "xattn.port",
    "environment": "xattn.env",
    "port_weights": "xattn.porting",
    "PortedWeights": "xattn.porting",
    "layer_config": "xattn.porting",
    "FlaxAttention": "xattn.nnx_module",
    "TorchAttention": "xattn.torch_module",
    "LayerFunction": "xattn.layer_check",
    "layer_function": "xattn.layer_check",
    "check_layers": "xattn.layer_check",
    "layer_reference": "xattn.layer_oracle",
    "reference_vjp": "xattn.layer_oracle",
}

__all__ = [
    "__version__",
    "XattnError",
    "BackendUnavailableError",
    "BridgeError",
    "VariantUnsupportedError",
    *_EXPORTS,
]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xattn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
