"""The client library, as the server's commands (``check``, ``register``…) use it.

The library is its own distribution, :mod:`addonreg_client` (``client/`` in
this repository; ``pip install ./client`` installs it alone, with no server
dependency). This module re-exports it, so that ``from addonreg.client import
LookupClient`` keeps working wherever the server is installed.
"""

from typing import TYPE_CHECKING

import addonreg_client
from addonreg_client import *  # noqa: F403
from addonreg_client import __all__  # noqa: F401

if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        try:  # addonreg_client's deprecated names (FilterReader…), each warning as there
            return getattr(addonreg_client, name)
        except AttributeError:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
