"""``python -m xattn``: the same as the ``xattn`` command."""

from xattn.cli import entry_point

if __name__ == "__main__":
    entry_point()
