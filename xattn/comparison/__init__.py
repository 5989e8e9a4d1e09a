"""``xattn.compare`` and ``xattn.sweep``: every (backend, variant) on one problem or a grid of them.

:mod:`.settings` validates a run's options once; :mod:`.comparator` runs one problem (outputs and,
through :mod:`.gradients`, gradients); :mod:`.sweeper` runs a grid; :mod:`.results` holds the frozen
results, rendered by :mod:`xattn.render`. The module names are not ``compare``/``sweep`` so that
nothing shadows the public functions of those names.
"""
