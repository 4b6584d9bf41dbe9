"""Request and response bodies: JSON by default, MessagePack on request.

``decode`` turns a request body into Python values according to its
``Content-Type``; ``encode`` picks the response format from ``Accept``.
Both formats carry the same structures.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Tuple

import msgpack

__all__ = ["JSON", "MSGPACK", "DecodeError", "decode", "encode", "wants_msgpack"]

JSON = "application/json"
MSGPACK = "application/msgpack"
_MSGPACK_TYPES = (MSGPACK, "application/x-msgpack", "application/vnd.msgpack")

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode
_loads = json.loads


class DecodeError(ValueError):
    """The body is not valid in the format it claims."""


def media_type(content_type: Optional[str]) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_msgpack(content_type: Optional[str]) -> bool:
    return media_type(content_type) in _MSGPACK_TYPES


def wants_msgpack(accept: Optional[str]) -> bool:
    """True when the Accept header asks for msgpack (before or without JSON)."""
    if not accept or "msgpack" not in accept:
        return False
    for part in accept.split(","):
        kind = part.split(";", 1)[0].strip().lower()
        if kind in _MSGPACK_TYPES:
            return True
        if kind in (JSON, "application/*", "*/*"):
            return False
    return False


def decode(body: bytes, content_type: Optional[str]) -> Any:
    """Parse a request body; raise :class:`DecodeError` when it does not parse."""
    if is_msgpack(content_type):
        try:
            # unpackb bounds every length by len(body): no allocation bombs.
            return msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises many unrelated types
            raise DecodeError("body is not valid MessagePack") from exc
    try:
        return _loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise DecodeError("body is not valid JSON") from exc


def encode_json(value: Any) -> bytes:
    return _dumps(value).encode("utf-8")


def encode(value: Any, msgpack_wanted: bool) -> Tuple[bytes, str]:
    """The body and its Content-Type."""
    if msgpack_wanted:
        return msgpack.packb(value, use_bin_type=True), MSGPACK
    return _dumps(value).encode("utf-8"), JSON + "; charset=UTF-8"
