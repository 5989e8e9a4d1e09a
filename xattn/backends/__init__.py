"""Per-framework implementations, loaded only through :mod:`xattn.backends.registry`.

Each backend module exposes the same names: ``VARIANTS`` (name -> description), ``build(variant,
*, causal, scale, padded)``, ``build_fullrank``, ``build_bmm``, ``as_arrays``, ``as_lengths``.
"""
