"""Backend registry: a backend's name to its implementation module, and the calls every entry point shares.

Framework modules are imported only when a backend is asked for, so ``import xattn`` stays
framework-free. A missing framework names the extra to install. The backends are described once,
in :data:`xattn.backends.frameworks.FRAMEWORKS`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from xattn.backends.frameworks import FRAMEWORKS
from xattn.contract.shapes import default_scale
from xattn.errors import BackendUnavailableError

_loaded: dict[str, ModuleType] = {}


def backend_names() -> tuple[str, ...]:
    return tuple(FRAMEWORKS)


def get_backend(name: str) -> ModuleType:
    """The implementation module of backend ``name`` (a :class:`~.protocol.Backend`); imports its framework."""
    if name in _loaded:
        return _loaded[name]
    if name not in FRAMEWORKS:
        raise ValueError(f"backend: expected one of {', '.join(FRAMEWORKS)}; got {name!r}")
    framework = FRAMEWORKS[name]
    try:
        importlib.import_module(framework.name)
    except ImportError as error:
        raise BackendUnavailableError(
            f"backend {name!r} needs {framework.name}, which could not be imported ({error})."
            f" Install it with: {framework.install}"
        ) from None
    module = importlib.import_module(framework.implementation)
    _loaded[name] = module
    return module


def available_backends() -> tuple[str, ...]:
    """Backends whose frameworks import on this machine."""
    names = []
    for name in FRAMEWORKS:
        try:
            get_backend(name)
        except BackendUnavailableError:
            continue
        names.append(name)
    return tuple(names)


def variants(backend: str) -> tuple[str, ...]:
    """Names of the contract's attention variants that ``backend`` implements."""
    return tuple(get_backend(backend).VARIANTS)


def check_variant(backend: str, variant: str) -> ModuleType:
    """The backend's module, or ValueError naming its variants when ``variant`` is not one of them."""
    module = get_backend(backend)
    if variant not in module.VARIANTS:
        raise ValueError(
            f"variant: expected one of {', '.join(module.VARIANTS)} for backend {backend!r}; got {variant!r}"
        )
    return module


def build(backend: str, variant: str, *, causal=False, scale=None, head_dim=None, padded=False):
    """The backend's callable ``fn(x, kv, wq, wk, wv, wo, key_lengths)`` for one configuration.

    Built once per configuration and cached by the backend (JAX: a jitted function whose
    ``lower(...).compile()`` the timer can call apart). ``padded`` says whether key_lengths is given.
    """
    module = check_variant(backend, variant)
    if scale is None and head_dim is None:
        raise ValueError("build: expected scale or head_dim (the default scale is 1/sqrt(head_dim)); got neither")
    return module.build(variant, causal=bool(causal), scale=default_scale(head_dim, scale), padded=bool(padded))
