"""``xattn.check_port``: do two functions (JAX, torch or NumPy, any mix) compute the same thing?

:mod:`.check` runs both on the same input bits and judges every output leaf; :mod:`.calls` guesses
and calls a function in its own framework; :mod:`.gradients` adds the ``grad/<input>`` rows.
"""
