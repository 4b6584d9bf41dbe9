"""The identifier rules of the API contract, as the service applies them.

The rules live in :mod:`addonreg_client.ids` (standard library only), so that
the client distribution applies exactly the same ones before it asks; the
service imports them from there.
"""

from addonreg_client.ids import (
    InvalidIdentifier,
    check_addon_id,
    check_sha256,
    check_version,
    is_addon_id,
    normalize_sha256,
    valid_keys,
)

__all__ = [
    "InvalidIdentifier",
    "is_addon_id",
    "normalize_sha256",
    "valid_keys",
    "check_addon_id",
    "check_sha256",
    "check_version",
]
