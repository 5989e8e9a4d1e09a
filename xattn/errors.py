"""One exception family for library failures.

Bad arguments raise ``ValueError``/``TypeError``; failures of the library or of an installed
framework raise a subclass of :class:`XattnError`. Every message says what was expected, what was
got, and what to do.
"""


class XattnError(Exception):
    """Base class of every failure xattn raises on its own behalf."""


class BackendUnavailableError(XattnError, ImportError):
    """A framework backend was asked for but is not importable."""


class VariantUnsupportedError(XattnError):
    """A variant cannot express the requested case on the installed framework version."""


class BridgeError(XattnError):
    """A DLPack bridge conversion was refused rather than done silently wrong."""


class PlotUnavailableError(XattnError, ImportError):
    """A plot was asked for but matplotlib (the ``plot`` extra) is not importable."""


class PortCallError(XattnError):
    """A function under check raised on the arrays xattn guessed it takes; the message says what was guessed."""
