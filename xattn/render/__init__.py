"""All rendering, in one place: tables, Markdown, CSV, JSON (and its schema) and plots.

Takes the frozen results of :mod:`xattn.comparison`, :mod:`xattn.porting` and :mod:`xattn.bridge`
and computes nothing; nothing here imports those parts back.
"""
