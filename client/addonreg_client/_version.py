"""The client distribution's version (the server's ``addonreg.__version__`` is its own)."""

__version__ = "0.1.0"
