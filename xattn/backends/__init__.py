"""Everything per framework: descriptors, the registry, each framework's attention code and run-time side.

:mod:`.frameworks` describes each framework once (import name, pip extra, implementation module,
module roots) and holds its *side*: devices, sync, threads, numerics switches, call and VJP.
:mod:`.protocol` writes down what a backend module and a side must offer. :mod:`.registry` loads
a backend by name (only then importing its framework) and builds variants. :mod:`.calls` runs a
user's function, and its VJP, in its own framework. :mod:`.env` is the environment block,
:mod:`.caches` the persistent compilation caches. :mod:`.jax_attention` and
:mod:`.torch_attention` are the only modules here that import a framework at module level.
"""
