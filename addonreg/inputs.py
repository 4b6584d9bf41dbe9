"""What a request brings, decoded and checked: bodies, lists with their limits,
operations, the 2013 API's items, query integers.

Beside :mod:`addonreg.ids` (the identifier rules): everything here either
returns trusted values or raises :class:`~addonreg.errors.APIError` (or
:class:`~addonreg.ids.InvalidIdentifier`, a ``400`` naming its field and
item), so handlers only parse, call the registry and write.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import msgspec

from . import media
from .errors import ERRNO, APIError
from .ids import (
    InvalidIdentifier,
    check_addon_id,
    check_sha256,
    check_version,
    is_addon_id,
    normalize_sha256,
    valid_keys,
)
from .storage import Key, Operation

__all__ = [
    "bad_request",
    "body_object",
    "checked_list",
    "lookup_pairs",
    "legacy_pairs",
    "checked_keys",
    "lookup_keys",
    "operation_items",
    "operations",
    "legacy_pair",
    "legacy_key",
    "int_argument",
    "put_version",
]


def bad_request(
    message: str, errno: ERRNO = ERRNO.INVALID_REQUEST_BODY, **details: Any
) -> APIError:
    return APIError(400, errno, message, details or None)


def body_object(
    raw: bytes,
    content_type: Optional[str],
    msgpack_allowed: bool = False,
    exact: bool = False,
    write: bool = False,
) -> Dict[str, Any]:
    """The decoded body, which must be an object (a map).

    JSON; MessagePack too where the contract says so (``msgpack_allowed``);
    ``exact`` for answers that echo what was sent (see :func:`media.decode`).
    A write's body must say what it is: any other ``Content-Type`` is a 415
    (reads stay lenient: the 2013 API's clients send what they send).
    """
    if (
        write
        and not media.is_json(content_type)
        and not (msgpack_allowed and media.is_msgpack(content_type))
    ):
        kinds = "application/json" + (" or application/msgpack" if msgpack_allowed else "")
        raise APIError(
            415,
            ERRNO.UNSUPPORTED_MEDIA_TYPE,
            f"a write's body must be sent as {kinds}",
            {"content_type": (content_type or "")[:100]},
        )
    try:
        value = media.decode(raw, content_type, msgpack_allowed, exact)
    except media.DecodeError as exc:
        raise bad_request(str(exc)) from None
    if not isinstance(value, dict):
        raise bad_request("body must be an object")
    return value


def checked_list(
    value: Any, name: str, max_items: int, limit: str, empty_ok: bool = False
) -> List[Any]:
    """``value`` as a list of 1 (0 with ``empty_ok``) to ``max_items`` items, else 400/413.

    ``limit`` names the setting in the 413's details (``max_lookup``, ``max_write``).
    """
    if not isinstance(value, list):
        raise bad_request(f"'{name}' must be a list", field=name)
    if not value and not empty_ok:
        raise bad_request(
            f"'{name}' must hold at least one item", ERRNO.MISSING_PARAMETERS, field=name
        )
    if len(value) > max_items:
        raise APIError(
            413, ERRNO.TOO_MANY_ITEMS, f"at most {max_items} {name} per request", {limit: max_items}
        )
    return value


# Bulk lookups in their canonical shape, decoded and typed in one C pass (msgspec): no
# dict per item, and the two strings of each item are all that is built. Any other body
# (an extra field, a value of another type, a body that does not parse) is None here
# and goes the general way (body_object, then lookup_keys), which names what is wrong.


class _File(msgspec.Struct, forbid_unknown_fields=True):
    addon_id: str
    sha256: str


class _Lookup(msgspec.Struct, forbid_unknown_fields=True):
    files: List[_File]


class _LegacyFile(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    sha256: str


class _LegacyLookup(msgspec.Struct, forbid_unknown_fields=True):
    addons: List[_LegacyFile]


_LOOKUP_JSON = msgspec.json.Decoder(_Lookup)
_LOOKUP_MSGPACK = msgspec.msgpack.Decoder(_Lookup)
_LEGACY_JSON = msgspec.json.Decoder(_LegacyLookup)


def lookup_pairs(raw: bytes, content_type: Optional[str]) -> Optional[List[Tuple[str, str]]]:
    """The ``(addon_id, sha256)`` of each item of a ``POST /v1/lookup`` body in its
    canonical shape, as sent (not yet checked: :func:`checked_keys`); None for any other
    body. JSON, or MessagePack by its Content-Type, as :func:`body_object` decides."""
    decoder = _LOOKUP_MSGPACK if media.is_msgpack(content_type) else _LOOKUP_JSON
    try:
        files = decoder.decode(raw).files
    except msgspec.DecodeError:  # ValidationError included: not the canonical shape
        return None
    return [(f.addon_id, f.sha256) for f in files]


def legacy_pairs(raw: bytes) -> Optional[List[Tuple[str, str]]]:
    """:func:`lookup_pairs` for the 2013 ``POST /addons`` body (JSON, ``{id, sha256}``)."""
    try:
        files = _LEGACY_JSON.decode(raw).addons
    except msgspec.DecodeError:
        return None
    return [(f.id, f.sha256) for f in files]


def checked_keys(pairs: List[Tuple[str, str]]) -> List[Key]:
    """The keys of :func:`lookup_pairs`' pairs, normalised, or the first bad one's 400."""
    keys = valid_keys([a for a, _ in pairs], [s for _, s in pairs])
    if keys is not None:
        return keys
    return lookup_keys([{"addon_id": a, "sha256": s} for a, s in pairs])


def lookup_keys(items: List[Any]) -> List[Key]:
    """The keys of a bulk lookup's ``{addon_id, sha256}`` items (a checked list)."""
    try:
        keys = valid_keys([item["addon_id"] for item in items], [item["sha256"] for item in items])
    except (TypeError, KeyError, IndexError):  # an item that is not an object, or lacks one
        keys = None
    if keys is not None:
        return keys
    # Something is wrong: find the first bad item, and say what.
    found = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "addon_id" not in item or "sha256" not in item:
            raise bad_request(f"item {i} must be an object with addon_id and sha256", index=i)
        try:
            found.append((check_addon_id(item["addon_id"]), check_sha256(item["sha256"])))
        except InvalidIdentifier as exc:
            raise exc.at(i) from None
    return found


class _Operation(msgspec.Struct, forbid_unknown_fields=True):
    op: str
    addon_id: str
    sha256: str
    version: Optional[str] = None


class _Registrations(msgspec.Struct, forbid_unknown_fields=True):
    operations: List[_Operation]


_REGISTRATIONS_JSON = msgspec.json.Decoder(_Registrations)
_REGISTRATIONS_MSGPACK = msgspec.msgpack.Decoder(_Registrations)


def operation_items(raw: bytes, content_type: Optional[str]) -> Optional[List[_Operation]]:
    """The operations of a ``POST /v1/registrations`` body in its canonical shape, decoded
    and typed in one C pass, as :func:`lookup_pairs` does; None for any other body."""
    decoder = _REGISTRATIONS_MSGPACK if media.is_msgpack(content_type) else _REGISTRATIONS_JSON
    try:
        return decoder.decode(raw).operations
    except msgspec.DecodeError:
        return None


def operations(items: List[Any]) -> List[Operation]:
    """The operations of ``POST /v1/registrations`` (a checked list), decoded items or
    :func:`operation_items`; the first bad one is named (its index, and its field)."""
    ops = []
    op: Any
    for i, item in enumerate(items):
        if isinstance(item, _Operation):
            op, addon_id, sha256, version = item.op, item.addon_id, item.sha256, item.version
        elif isinstance(item, dict) and "addon_id" in item and "sha256" in item:
            op, addon_id, sha256 = item.get("op"), item["addon_id"], item["sha256"]
            version = item.get("version")
        else:
            op = None
        if op not in ("register", "revoke"):
            raise bad_request(
                f"operation {i} must be an object with op (register or revoke), "
                "addon_id and sha256",
                index=i,
            )
        try:
            version = check_version(version)
            if op == "revoke":
                # The contract lets any operation carry a version; a revocation keeps
                # the stored one, so a revoke's version is checked, then not used.
                version = None
            ops.append(Operation(op, check_addon_id(addon_id), check_sha256(sha256), version))
        except InvalidIdentifier as exc:
            raise exc.at(i) from None
    return ops


def put_version(raw: bytes, content_type: Optional[str]) -> Optional[str]:
    """The optional ``{"version": …}`` body of a ``PUT`` (None: keep the stored one)."""
    if not raw.strip():
        return None
    return check_version(body_object(raw, content_type, write=True).get("version"))


def legacy_pair(item: Any) -> Tuple[Any, Any]:
    """The 2013 API's ``{id, sha256}`` item, as sent (echoed back unchanged)."""
    if not isinstance(item, dict) or "id" not in item or "sha256" not in item:
        raise bad_request(
            "each add-on must be an object with id and sha256", ERRNO.MISSING_PARAMETERS
        )
    return item["id"], item["sha256"]


def legacy_items(items: List[Any]) -> Tuple[List[Tuple[Any, Any]], List[Optional[Key]]]:
    """The 2013 ``{id, sha256}`` items as sent, and their keys (None: ``registered: false``);
    all ids and hashes checked at once when they are all valid (:func:`valid_keys`)."""
    try:
        pairs = [(item["id"], item["sha256"]) for item in items]
    except (TypeError, KeyError, IndexError):  # not an object, or lacks one: say so
        pairs = [legacy_pair(item) for item in items]
    keys: Optional[List[Optional[Key]]] = (
        list(valid_keys([a for a, _ in pairs], [s for _, s in pairs]) or ()) or None
    )
    return pairs, keys if keys is not None else [legacy_key(a, s) for a, s in pairs]


def legacy_key(addon_id: Any, sha256: Any) -> Optional[Key]:
    """The key of a 2013 lookup item, or None when it breaks the rules (``registered: false``)."""
    if not is_addon_id(addon_id):
        return None
    sha = normalize_sha256(sha256)
    return None if sha is None else (addon_id, sha)


def int_argument(raw: Optional[str], name: str, default: int, lowest: int, highest: int) -> int:
    """A query argument that must be an integer in ``[lowest, highest]``."""
    if raw is None:
        return default
    # ASCII digits only: no sign, no "_", no other scripts; and no int() of
    # thousands of digits (Python refuses over 4,300): leading zeros go first.
    digits = raw.lstrip("0") or "0"
    if raw.isascii() and raw.isdigit() and len(digits) <= 20 and lowest <= int(digits) <= highest:
        return int(digits)
    raise bad_request(
        f"{name} must be an integer from {lowest} to {highest}",
        ERRNO.INVALID_PARAMETERS,
        field=name,
    )
