"""``python -m addonreg`` is the ``addonreg`` command."""

import sys

from .cli import main

sys.exit(main())
