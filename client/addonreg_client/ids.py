"""The identifier rules of the API contract (``docs/api.md``, "Identifiers").

One set of rules for both sides of the wire: the service (``addonreg.ids``
imports them from here) checks everything a client sends before it reaches
the cache or storage, and the client checks what it is about to ask, and what
the service answers, by the same rules. Standard library only: the client
distribution carries this module.

* ``addon_id``: 1-255 characters, either a GUID in braces
  (``{8-4-4-4-12 hex}``) or an e-mail-like ``local@domain`` whose parts use
  ``[a-z0-9._-]`` (the local part may be empty); letters match in any case.
  The id is kept exactly as given: ids are compared exactly.
* ``sha256``: 64 hex digits in any case, optionally prefixed ``sha256:``;
  normalised to 64 lowercase hex digits.
* ``version``: optional, 1-255 printable characters.
"""

from __future__ import annotations

import re
from typing import Any, List, Optional, Tuple

__all__ = [
    "InvalidIdentifier",
    "is_addon_id",
    "normalize_sha256",
    "valid_keys",
    "check_addon_id",
    "check_sha256",
    "check_version",
]

# Letters of either case spelt out: with re.IGNORECASE the bulk match below
# took several times as long (in the addonreg repository: bench/results/README.md).
_H = "[0-9a-fA-F]"
_ADDON_ID_RULE = (
    rf"\{{{_H}{{8}}-{_H}{{4}}-{_H}{{4}}-{_H}{{4}}-{_H}{{12}}\}}"
    r"|[a-zA-Z0-9._-]*@[a-zA-Z0-9._-]+"
)
_ADDON_ID = re.compile(_ADDON_ID_RULE, re.ASCII).fullmatch
# Printable: no control characters (C0, DEL, C1), nor lone surrogates (no
# UTF-8 holds them: text storage would refuse them); any other Unicode is fine.
_VERSION = re.compile(r"[^\x00-\x1f\x7f-\x9f\ud800-\udfff]{1,255}").fullmatch


# The same rule for many ids at once, newline-separated (no id may contain one).
_ADDON_IDS = re.compile(f"(?:(?:{_ADDON_ID_RULE})\\n)*", re.ASCII).fullmatch


class InvalidIdentifier(ValueError):
    """A value breaks the identifier rules (a ``400``): ``field`` names which one,
    ``index`` the item of a list it is in (None: not in a list)."""

    def __init__(self, field: str, message: str, index: Optional[int] = None) -> None:
        super().__init__(message if index is None else f"item {index}: {message}")
        self.field = field
        self.index = index

    def at(self, index: int) -> "InvalidIdentifier":
        """The same error, about item ``index`` of a list."""
        return InvalidIdentifier(self.field, self.args[0], index)


def is_addon_id(value: Any) -> bool:
    """True when ``value`` is a string that is a valid add-on id."""
    return type(value) is str and len(value) <= 255 and _ADDON_ID(value) is not None


_HEX_DIGITS = "0123456789abcdefABCDEF"


def normalize_sha256(value: Any) -> Optional[str]:
    """The 64 lowercase hex digits of ``value``, or None when it is not a SHA-256."""
    # On every item of a bulk lookup: str methods in C rather than a regex.
    if type(value) is not str:
        return None
    if len(value) == 71 and value[:7].lower() == "sha256:":
        value = value[7:]
    if len(value) != 64 or value.strip(_HEX_DIGITS):
        return None
    return value.lower()


def valid_keys(addon_ids: List[Any], hashes: List[Any]) -> Optional[List[Tuple[str, str]]]:
    """``(addon_id, normalised sha256)`` pairs when every one of them is valid, else None.

    The bulk lookup's fast path: one regex over all the ids and one scan over
    all the hashes instead of two checks per item. None says only "not all
    valid": check them one by one to find out which.
    """
    # No per-item type checks: join() refuses anything but str (TypeError).
    try:
        joined_ids = "\n".join(addon_ids) + "\n"
        joined = "".join(hashes)
    except TypeError:
        return None
    if (
        not addon_ids
        or len(addon_ids) != len(hashes)
        or max(map(len, addon_ids)) > 255
        or set(map(len, hashes)) != {64}
    ):
        return None
    # An id holding a newline of its own would pass as two ids.
    if joined_ids.count("\n") != len(addon_ids) or _ADDON_IDS(joined_ids) is None:
        return None
    try:
        # C speed; fromhex skips whitespace, which the byte count then gives away.
        if len(bytes.fromhex(joined)) != 32 * len(hashes):
            return None
    except ValueError:
        return None
    if joined.lower() != joined:
        hashes = [h.lower() for h in hashes]
    return list(zip(addon_ids, hashes))


def check_addon_id(value: Any) -> str:
    """Return ``value`` unchanged, or raise :class:`InvalidIdentifier`."""
    if not is_addon_id(value):
        raise InvalidIdentifier(
            "addon_id",
            "addon_id must be a {GUID} or an id of the form local@domain "
            "(letters, digits, '.', '_', '-'), 1 to 255 characters",
        )
    return value


def check_sha256(value: Any) -> str:
    """Return the normalised hash, or raise :class:`InvalidIdentifier`."""
    sha = normalize_sha256(value)
    if sha is None:
        raise InvalidIdentifier(
            "sha256", "sha256 must be 64 hex digits, optionally prefixed 'sha256:'"
        )
    return sha


def check_version(value: Any) -> Optional[str]:
    """Return ``value`` (None allowed), or raise :class:`InvalidIdentifier`."""
    if value is None:
        return None
    if type(value) is not str or _VERSION(value) is None:
        raise InvalidIdentifier("version", "version must be 1 to 255 printable characters, or null")
    return value
