"""A registration's status: one definition for the storage, the filter and the client.

A file is either ``registered`` or ``revoked``; the name is what the API,
the import and the records carry. Where bytes are tight it travels as a
small code: a SQL column, a bus message, a filter file's stage answer. The
codes are part of those formats (docs/filter.md, the schema), so they never
change.

This module imports nothing from the package: every floor may import it.
"""

from __future__ import annotations

from typing import Dict

__all__ = ["REGISTERED", "REVOKED", "REGISTERED_CODE", "REVOKED_CODE", "STATUS_CODE", "STATUS_NAME"]

REGISTERED = "registered"
REVOKED = "revoked"

REGISTERED_CODE = 1
REVOKED_CODE = 2

STATUS_CODE: Dict[str, int] = {REGISTERED: REGISTERED_CODE, REVOKED: REVOKED_CODE}
"""Name -> code, as stored (SQL), sent (bus) and answered by a filter stage."""
STATUS_NAME: Dict[int, str] = {code: name for name, code in STATUS_CODE.items()}
"""Code -> name."""
