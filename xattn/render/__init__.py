"""All rendering, in one place: tables, Markdown, CSV, JSON (and its schema) and plots.

Takes the frozen results of :mod:`xattn.comparison`, :mod:`xattn.porting` and :mod:`xattn.bridge`
and computes nothing; nothing here imports those parts back.

- :mod:`~xattn.render.text`: formats, the tabulate wrapper, number cells, notes, CSV, the format dispatch
- :mod:`~xattn.render.report`: ``xattn compare``'s report
- :mod:`~xattn.render.sweep_report`: ``xattn sweep``'s report and point labels
- :mod:`~xattn.render.plot`: the sweep plot (matplotlib)
- :mod:`~xattn.render.schema`: the JSON schemas of both reports
- :mod:`~xattn.render.environment`: ``xattn env``'s block
- :mod:`~xattn.render.port_report`: ``xattn.check_port``'s table
- :mod:`~xattn.render.bridge_matrix`: ``xattn bridge``'s matrix
"""
