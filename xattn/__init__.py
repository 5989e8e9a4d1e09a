"""xattn: do a JAX and a PyTorch attention compute the same thing, how far apart, whose fault, which is faster.

``import xattn`` imports NumPy only; each framework loads when a backend that needs it is first used.
Public names are resolved lazily from the submodules listed in ``_EXPORTS``.
"""

from __future__ import annotations

import importlib

from xattn._version import __version__
from xattn.errors import BackendUnavailableError, BridgeError, PortCallError, VariantUnsupportedError, XattnError

# public name -> submodule that defines it (imported on first access)
_EXPORTS = {
    "AttentionSpec": "xattn.contract.spec",
    "AttentionInputs": "xattn.contract.spec",
    "DTYPES": "xattn.contract.spec",
    "make_inputs": "xattn.contract.spec",
    "reference": "xattn.numerics.oracle",
    "fullrank_reference": "xattn.numerics.oracle",
    "bmm_reference": "xattn.numerics.oracle",
    "staged": "xattn.numerics.stages",
    "variants": "xattn.api",
    "attention": "xattn.api",
    "build": "xattn.api",
    "fullrank_attention": "xattn.api",
    "batched_matmul": "xattn.api",
    "backend_names": "xattn.backends.registry",
    "available_backends": "xattn.backends.registry",
    "get_backend": "xattn.backends.registry",
    "to_torch": "xattn.bridge",
    "to_jax": "xattn.bridge",
    "to_numpy": "xattn.bridge",
    "tree_to_torch": "xattn.bridge",
    "tree_to_jax": "xattn.bridge",
    "tree_to_numpy": "xattn.bridge",
    "bridge_matrix": "xattn.bridge.matrix",
    "BridgeCell": "xattn.bridge.matrix",
    "compare": "xattn.comparison.comparator",
    "RunSettings": "xattn.comparison.settings",
    "Report": "xattn.comparison.results",
    "sweep": "xattn.comparison.sweeper",
    "SweepReport": "xattn.comparison.results",
    "Row": "xattn.comparison.results",
    "Pair": "xattn.comparison.results",
    "Measurement": "xattn.timing",
    "DriftMetrics": "xattn.numerics.drift",
    "Budget": "xattn.numerics.drift",
    "check_port": "xattn.porting.check",
    "DriftReport": "xattn.porting.check",
    "locate": "xattn.porting.locate",
    "LocateReport": "xattn.porting.locate",
    "environment": "xattn.backends.env",
    "port_weights": "xattn.layers.weights",
    "PortedWeights": "xattn.layers.weights",
    "layer_config": "xattn.layers.weights",
    "FlaxAttention": "xattn.layers.flax_layer",
    "TorchAttention": "xattn.layers.torch_layer",
    "LayerFunction": "xattn.layers.check",
    "layer_function": "xattn.layers.check",
    "check_layers": "xattn.layers.check",
    "layer_reference": "xattn.numerics.layer_oracle",
    "reference_vjp": "xattn.numerics.layer_oracle",
}

__all__ = [
    "__version__",
    "XattnError",
    "BackendUnavailableError",
    "BridgeError",
    "VariantUnsupportedError",
    "PortCallError",
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
