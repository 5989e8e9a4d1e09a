"""The attention contract: problem sizes and seeded inputs (:mod:`.spec`), shape checks (:mod:`.shapes`).

The bottom of the package: NumPy only, imports nothing else of xattn but its errors.
"""
