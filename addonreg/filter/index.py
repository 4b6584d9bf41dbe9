"""``latest.json``: the signed index naming the current base and delta files.

The index is a JSON object; its *canonical bytes* are the UTF-8 JSON of the
object without its ``signature`` member, keys sorted, no whitespace
(separators ``,`` and ``:``), integers and strings only. ``signature`` is the
base64 of the Ed25519 signature of those bytes by the key named ``key_id``
(``ed25519:`` + the first 8 bytes of SHA-256(raw public key), in hex).
The file on disk is the canonical JSON of the whole object (signature
included), so any changed byte is refused: bad JSON, bad signature, or not
canonical.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any, Dict, Iterable, Optional, Tuple, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

INDEX_FORMAT = "addonreg-filter-index"
INDEX_VERSION = 1

KeyData = Union[bytes, str]


class IndexVerificationError(ValueError):
    """An index that is malformed, unsigned, or signed by no trusted key."""


def _raw_or_pem(data: KeyData) -> bytes:
    return data.encode("ascii") if isinstance(data, str) else bytes(data)


def load_private_key(data: Union[KeyData, Ed25519PrivateKey]) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8) or the base64 of its raw 32 bytes."""
    if isinstance(data, Ed25519PrivateKey):
        return data
    raw = _raw_or_pem(data).strip()
    if raw.startswith(b"-----BEGIN"):
        key = serialization.load_pem_private_key(raw, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 private key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_b64_32(raw))


def load_public_key(data: Union[KeyData, Ed25519PublicKey]) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or the base64 of its raw 32 bytes."""
    if isinstance(data, Ed25519PublicKey):
        return data
    raw = _raw_or_pem(data).strip()
    if raw.startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(raw)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    return Ed25519PublicKey.from_public_bytes(_b64_32(raw))


def _b64_32(raw: bytes) -> bytes:
    try:
        key = base64.b64decode(raw, validate=True)
    except binascii.Error:
        raise ValueError("a key is PEM or the base64 of 32 raw bytes") from None
    if len(key) != 32:
        raise ValueError("a key is PEM or the base64 of 32 raw bytes")
    return key


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Union[Ed25519PublicKey, Ed25519PrivateKey]) -> str:
    """``ed25519:`` + hex of the first 8 bytes of SHA-256(raw public key)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return "ed25519:" + hashlib.sha256(raw_public_key(key)).digest()[:8].hex()


def _check_values(value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError("index keys are strings")
            _check_values(v)
    elif isinstance(value, list):
        for v in value:
            _check_values(v)
    elif isinstance(value, float) or not (value is None or isinstance(value, (str, int))):
        raise ValueError(f"index values are objects, lists, strings, integers or null: {value!r}")


def _dumps(obj: Dict[str, Any]) -> bytes:
    _check_values(obj)
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def canonical_bytes(index: Dict[str, Any]) -> bytes:
    """The signed bytes: canonical JSON of ``index`` without ``signature``."""
    return _dumps({k: v for k, v in index.items() if k != "signature"})


def index_bytes(index: Dict[str, Any]) -> bytes:
    """The bytes of ``latest.json``: canonical JSON of the whole signed index."""
    return _dumps(index)


def sign_index(
    index: Dict[str, Any], private_key: Union[KeyData, Ed25519PrivateKey]
) -> Dict[str, Any]:
    """A copy of ``index`` with ``key_id`` and ``signature`` (Ed25519 over the canonical bytes)."""
    key = load_private_key(private_key)
    signed = {k: v for k, v in index.items() if k != "signature"}
    signed["key_id"] = key_id(key)
    signed["signature"] = base64.b64encode(key.sign(canonical_bytes(signed))).decode("ascii")
    return signed


def _parse_index(data: Union[bytes, Dict[str, Any]]) -> Tuple[Dict[str, Any], bytes]:
    """The index and its signed bytes, once it is a canonical, signed-looking object."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            index = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise IndexVerificationError("latest.json is not JSON") from None
        if not isinstance(index, dict):
            raise IndexVerificationError("latest.json is not an object")
        if index_bytes(index) != bytes(data):
            raise IndexVerificationError("latest.json is not in canonical form")
    elif isinstance(data, dict):
        index = dict(data)
    else:
        raise IndexVerificationError(f"an index is bytes or a dict, not {type(data).__name__}")
    if not isinstance(index.get("signature"), str) or not isinstance(index.get("key_id"), str):
        raise IndexVerificationError("latest.json is not signed")
    return index, canonical_bytes(index)


def verify_index(
    data: Union[bytes, Dict[str, Any]], public_keys: Iterable[Union[KeyData, Ed25519PublicKey]]
) -> Dict[str, Any]:
    """The index, once its signature checks against one of ``public_keys``
    (else :class:`IndexVerificationError`).

    Bytes must also be canonical (exactly what ``index_bytes`` writes).
    """
    try:
        index, message = _parse_index(data)
    except RecursionError:  # JSON nested past the interpreter's limit
        raise IndexVerificationError("latest.json is nested too deeply") from None
    except ValueError as exc:  # values the canonical form does not allow
        raise IndexVerificationError(str(exc)) from None
    try:
        signature = base64.b64decode(index["signature"], validate=True)
    except binascii.Error:
        raise IndexVerificationError("bad signature encoding") from None
    kid = index["key_id"]
    for pk in public_keys:
        key = load_public_key(pk)
        if key_id(key) != kid:
            continue
        try:
            key.verify(signature, message)
        except InvalidSignature:
            raise IndexVerificationError("bad signature") from None
        version = index.get("version")  # not True, which equals 1 in Python
        if (
            index.get("format") != INDEX_FORMAT
            or type(version) is not int
            or version != INDEX_VERSION
        ):
            raise IndexVerificationError("unknown index format or version")
        return index
    raise IndexVerificationError(f"signed by {kid}, which is not a trusted key")


def file_entry(built: Any, built_at: str, path_prefix: str = "filter/") -> Dict[str, Any]:
    """The index entry of one built file (a ``build.Built``)."""
    f = built.file
    entry: Dict[str, Any] = {
        "path": f"{path_prefix}{built.sha256}.bin",
        "sha256": built.sha256,
        "size": len(built.data),
        "serial": f.serial,
        "entries": built.entries,
        "built_at": built_at,
    }
    if f.is_delta:
        entry["base_serial"] = f.base_serial
    else:
        entry["revoked"] = f.n_revoked
    return entry


def make_index(
    base: Any, base_built_at: str, delta: Optional[Any] = None, delta_built_at: Optional[str] = None
) -> Dict[str, Any]:
    """The unsigned index of a base and its newest delta (``build.Built`` objects)."""
    newest = delta if delta is not None else base
    return {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "serial": newest.serial,
        "built_at": delta_built_at if delta is not None else base_built_at,
        "base": file_entry(base, base_built_at),
        "delta": file_entry(delta, delta_built_at or base_built_at) if delta is not None else None,
    }
