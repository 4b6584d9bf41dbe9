"""The HTTP API's media types: JSON by default, MessagePack on request.

``decode`` turns a request body into Python values according to its
``Content-Type``; ``encode`` picks the response format from ``Accept``.
Both formats carry the same structures. (The other encodings of the code
base are the cache's packed entries, ``cache.RecordPacking``, and the bus's
wire format, ``bus.redis.encode``.)
"""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence, Tuple

import msgpack
import orjson

__all__ = [
    "JSON",
    "MSGPACK",
    "DecodeError",
    "decode",
    "encode",
    "wants_msgpack",
    "file_body",
    "addon_files_body",
]

JSON = "application/json"
JSON_UTF8 = JSON + "; charset=UTF-8"
MSGPACK = "application/msgpack"
_MSGPACK_TYPES = (MSGPACK, "application/x-msgpack", "application/vnd.msgpack")

# ensure_ascii: a lone surrogate a client sent (valid JSON, not valid UTF-8)
# can still be echoed back.
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


# Strict JSON: no NaN/Infinity, and no number that only parses to infinity.
_strict_loads = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float).decode


def _loads(body: bytes) -> Any:
    # orjson first: several times faster, and as strict. What it refuses that
    # JSON allows (lone surrogate escapes) goes to the standard library's
    # strict decoder, which also settles real errors.
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _strict_loads(body.decode("utf-8"))


def _exact_loads(body: bytes) -> Any:
    return _strict_loads(body.decode("utf-8"))


def _json_bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # a lone surrogate or a huge integer a client sent: ASCII-safe
        return _dumps(value).encode("ascii")


class DecodeError(ValueError):
    """The body is not valid in the format it claims."""


def media_type(content_type: Optional[str]) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(content_type: Optional[str]) -> bool:
    """``application/json`` or a ``+json`` type (``application/merge-patch+json``…)."""
    kind = media_type(content_type)
    return kind == JSON or (kind.startswith("application/") and kind.endswith("+json"))


def is_msgpack(content_type: Optional[str]) -> bool:
    return media_type(content_type) in _MSGPACK_TYPES


def wants_msgpack(accept: Optional[str]) -> bool:
    """True when the Accept header asks for msgpack (before or without JSON)."""
    if not accept or "msgpack" not in accept.lower():
        return False
    for part in accept.split(","):
        kind = part.split(";", 1)[0].strip().lower()
        if kind in _MSGPACK_TYPES:
            return True
        if kind in (JSON, "application/*", "*/*"):
            return False
    return False


def decode(
    body: bytes, content_type: Optional[str], msgpack_allowed: bool = True, exact: bool = False
) -> Any:
    """Parse a request body; raise :class:`DecodeError` when it does not parse.

    MessagePack only where ``msgpack_allowed``: elsewhere the body is JSON
    whatever its Content-Type says. ``exact``: values come back exactly as
    sent, for answers that echo them (orjson reads integers past 64 bits as
    floats).
    """
    if msgpack_allowed and is_msgpack(content_type):
        try:
            # unpackb bounds every length by len(body): no allocation bombs.
            return msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises many unrelated types
            raise DecodeError("body is not valid MessagePack") from exc
    try:
        return _exact_loads(body) if exact else _loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise DecodeError("body is not valid JSON") from exc


def encode_json(value: Any) -> bytes:
    return _json_bytes(value)


def file_body(record: Any) -> bytes:
    """The body of ``GET /v1/addons/{addon_id}/files/{sha256}`` (200) for a record.

    The service and the static publisher both use this, so a published file
    is byte for byte what the service answers.
    """
    return encode_json(record.to_dict())


def addon_files_body(addon_id: str, records: Any) -> bytes:
    """The body of ``GET /v1/addons/{addon_id}/files`` (records sorted by sha256)."""
    return encode_json({"addon_id": addon_id, "files": [r.to_dict() for r in records]})


def lookup_item(
    addon_id: str, sha256: str, status: str, version: Optional[str]
) -> Tuple[bytes, bytes]:
    """One result item of ``POST /v1/lookup`` (status ``unknown`` for a file storage does
    not have), as JSON and as msgpack, to be joined by :func:`lookup_results`."""
    item = {"addon_id": addon_id, "sha256": sha256, "status": status, "version": version}
    return _json_bytes(item), msgpack.packb(item, use_bin_type=True)


def legacy_item(key: Tuple[str, str], registered: bool) -> bytes:
    """One item of the 2013 ``POST /addons`` answer for a checked key (its id and hash
    echoed), to be joined by :func:`legacy_results`."""
    return _json_bytes({"id": key[0], "sha256": key[1], "registered": registered})


def legacy_results(items: Sequence[bytes]) -> bytes:
    """``{"addons": [items…]}`` from items already encoded."""
    return b'{"addons":[' + b",".join(items) + b"]}"


def lookup_results(items: Sequence[bytes], msgpack_wanted: bool) -> bytes:
    """``{"results": [items…]}`` from items already encoded (hand-joined: encoding the
    whole list again was most of a bulk lookup's answer)."""
    if not msgpack_wanted:
        return b'{"results":[' + b",".join(items) + b"]}"
    n = len(items)
    head = (
        bytes([0x90 | n])
        if n < 16
        else (b"\xdc" + n.to_bytes(2, "big") if n < 65536 else b"\xdd" + n.to_bytes(4, "big"))
    )
    return b"\x81\xa7results" + head + b"".join(items)


def encode(value: Any, msgpack_wanted: bool) -> Tuple[bytes, str]:
    """The body and its Content-Type."""
    if msgpack_wanted:
        return msgpack.packb(value, use_bin_type=True), MSGPACK
    return _json_bytes(value), JSON + "; charset=UTF-8"
