"""``xattn.compare`` and ``xattn.sweep``: every (backend, variant) on one problem or on a grid of them.

:mod:`.settings` validates a run's options once (RunSettings) and resolves names (Plan);
:mod:`.comparator` runs one problem; :mod:`.gradients` adds gradient rows; :mod:`.rows` judges and
pairs every row, outputs and gradients alike; :mod:`.sweeper` runs a grid; :mod:`.results` holds
the frozen results, rendered by :mod:`xattn.render`. The module names are not ``compare``/``sweep``
so that nothing shadows the public functions of those names.
"""
