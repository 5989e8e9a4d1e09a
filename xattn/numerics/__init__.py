"""Numerics, NumPy only: float64 oracles, the naive same-dtype computation, drift metrics, budgets, and the judge.

:mod:`.stages` rounds stage by stage; :mod:`.oracle` and :mod:`.layer_oracle` give exact answers
(and, given a dtype, the naive run); :mod:`.naive` rounds a computation stage
by stage as a framework would; :mod:`.drift` measures an output against its oracle; :mod:`.budget`
says how much drift rounding explains; :mod:`.judge` turns both into the one verdict vocabulary that
every report uses.
"""
