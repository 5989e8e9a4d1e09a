"""Backend registry: maps a backend name to the module that holds that framework's code.

Framework modules are imported only when a backend is asked for, so ``import xattn`` stays
framework-free. A missing framework names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from xattn.errors import BackendUnavailableError

# name -> (module with the implementations, the framework modules it needs, the pip extra)
_BACKENDS = {
    "jax": ("xattn.backends.jax_attention", ("jax",), "jax"),
    "torch": ("xattn.backends.torch_attention", ("torch",), "torch"),
}
_loaded: dict[str, ModuleType] = {}


def backend_names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def get_backend(name: str) -> ModuleType:
    """The implementation module of backend ``name``; imports its framework on first use."""
    if name in _loaded:
        return _loaded[name]
    if name not in _BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(_BACKENDS)}; got {name!r}")
    module_name, frameworks, extra = _BACKENDS[name]
    for framework in frameworks:
        try:
            importlib.import_module(framework)
        except ImportError as error:
            raise BackendUnavailableError(
                f"backend {name!r} needs {framework}, which could not be imported ({error})."
                f" Install it with: pip install 'xattn[{extra}]'"
            ) from None
    module = importlib.import_module(module_name)
    _loaded[name] = module
    return module


def available_backends() -> tuple[str, ...]:
    """Backends whose frameworks import on this machine."""
    names = []
    for name in _BACKENDS:
        try:
            get_backend(name)
        except BackendUnavailableError:
            continue
        names.append(name)
    return tuple(names)
