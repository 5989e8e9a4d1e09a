"""``xattn.check_port``: do two functions (JAX, torch or NumPy, any mix) compute the same thing?

:mod:`.check` runs both on the same input bits and judges every output leaf; :mod:`.infer` guesses
which framework a function takes; :mod:`.gradients` adds the ``grad/<input>`` rows; :mod:`.rows`
judges and pairs them all. Calling a function in its framework is :mod:`xattn.backends.calls`.
"""
