"""``python -m xattn``: the same as the ``xattn`` command."""

from xattn.cli import main

if __name__ == "__main__":
    main(prog_name="xattn")
