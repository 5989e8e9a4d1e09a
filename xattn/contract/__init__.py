"""The attention contract: problem sizes and seeded inputs (:mod:`.spec`), shape checks (:mod:`.shapes`).

NumPy only, importing no framework. It sits just above the bridge: of xattn it imports its errors
and :func:`xattn.bridge.framework_of`, the one test of which framework an array belongs to (the
bridge itself imports only ``xattn._compat`` and ``xattn.errors``).
"""
