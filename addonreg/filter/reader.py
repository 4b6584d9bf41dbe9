"""The reference reader: check the signed index and the files, answer lookups.

Answers (docs/filter.md, "What an answer means"):

* ``revoked``: the file is not registered (always true);
* ``registered``: registered *if the file is known to the registry* at the
  reader's serial. A client acts on it only for a file whose membership it
  has established otherwise; for any other file it asks the service once;
* ``not-in-filter``: certainly not known at the serial (only with a
  membership layer).

Every load checks each file against the content hash the signed index names
for it (:meth:`FilterReader.from_index` reads the hashes from the index;
:meth:`FilterReader.from_bytes`, for a client that keeps files and the index
it verified, takes them as arguments), and every malformed input is
:class:`FilterRejected`, never another exception.
"""

from __future__ import annotations

import hashlib
import re
import struct
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np

from ..ids import normalize_sha256
from ..status import REGISTERED, REGISTERED_CODE, REVOKED, REVOKED_CODE
from . import filterfile, keys
from .filterfile import FilterFile, FormatError
from .index import IndexVerificationError, verify_index

if TYPE_CHECKING:
    from addonreg_client import OfflineFilter

NOT_IN_FILTER = "not-in-filter"
_NOT_IN = 3
_NAMES = {REGISTERED_CODE: REGISTERED, REVOKED_CODE: REVOKED, _NOT_IN: NOT_IN_FILTER}
_NAME_LIST = [None, REGISTERED, REVOKED, NOT_IN_FILTER]


class FilterRejected(ValueError):
    """Files or an index that fail a check: hash, size, signature, format, pairing."""


class FilterReader:
    """A base plus (optionally) its newest cumulative delta, ready to answer.

    Build it with :meth:`from_index` (checks everything) or :meth:`from_bytes`
    (files checked against the SHA-256 an index verified earlier names). The
    constructor takes :class:`~addonreg.filter.filterfile.FilterFile` objects as they
    are (built in this process; nothing is checked but their pairing).

    The lookup clients take one as their ``filter``: it offers their protocol,
    :class:`addonreg_client.OfflineFilter` (mypy checks it, below).
    """

    def __init__(
        self,
        base: FilterFile,
        delta: Optional[FilterFile] = None,
        index: Optional[Dict[str, Any]] = None,
    ) -> None:
        if base.is_delta:
            raise FilterRejected("the base file is a delta")
        if delta is not None and (not delta.is_delta or delta.base_serial != base.serial):
            raise FilterRejected("the delta is not one over this base")
        self.base = base
        self.delta = delta
        self.index = index

    @classmethod
    def from_bytes(
        cls,
        base: bytes,
        delta: Optional[bytes] = None,
        *,
        base_sha256: str,
        delta_sha256: Optional[str] = None,
    ) -> "FilterReader":
        """A reader of files kept from an earlier :meth:`from_index`: each must hash
        to the SHA-256 (hex) the signed index named for it (``index["base"]["sha256"]``,
        ``index["delta"]["sha256"]``), else :class:`FilterRejected`.

        The format has no checksum of its own: the signed index's hash is what
        tells a changed byte (a cache on disk, a mirror) from the file built.
        """
        b = _parse(_hashed(base, base_sha256, "base"), "base")
        d = None
        if delta is not None:
            d = _parse(_hashed(delta, delta_sha256, "delta"), "delta")
            if d.base_sha256 != hashlib.sha256(base).digest():
                raise FilterRejected("the delta was built over another base")
        return cls(b, d)

    @classmethod
    def from_index(
        cls,
        index_data: bytes,
        files: Union[Mapping[str, bytes], Callable[[str], bytes]],
        public_keys: Iterable[Any],
    ) -> "FilterReader":
        """Check ``latest.json`` against the trusted keys, then each file against it.

        ``files`` maps an index ``path`` (``filter/<sha256>.bin``) to its bytes,
        or is a function fetching it.
        """
        if not isinstance(index_data, (bytes, bytearray, memoryview)):
            # A str may be a path given by mistake: say so rather than parse it.
            raise FilterRejected(f"latest.json is read as bytes, not {type(index_data).__name__}")
        try:
            index = verify_index(index_data, public_keys)
        except IndexVerificationError as exc:
            raise FilterRejected(str(exc)) from None
        _check_index(index)
        get = files if callable(files) else files.__getitem__
        base = _fetched(index["base"], get, "base")
        delta = _fetched(index["delta"], get, "delta") if index["delta"] is not None else None
        reader = cls.from_bytes(
            base,
            delta,
            base_sha256=index["base"]["sha256"],
            delta_sha256=index["delta"]["sha256"] if delta is not None else None,
        )
        newest = reader.delta or reader.base
        if (
            reader.base.serial != index["base"]["serial"]
            or newest.serial != index["serial"]
            or (delta is not None and index["delta"]["serial"] != newest.serial)
            or (delta is not None and index["delta"]["base_serial"] != reader.base.serial)
        ):
            raise FilterRejected("the files' serials differ from the index")
        reader.index = index
        return reader

    @property
    def serial(self) -> int:
        """The serial the answers are exact at (the delta's, else the base's)."""
        return (self.delta or self.base).serial

    @property
    def base_serial(self) -> int:
        return self.base.serial

    @property
    def built_at(self) -> Optional[str]:
        return self.index.get("built_at") if self.index else None

    # -- answers -----------------------------------------------------------

    def status(self, addon_id: str, sha256: str) -> str:
        """``registered`` | ``revoked`` | ``not-in-filter`` for one file (pure Python)."""
        a = keys.split(keys.addon_key(addon_id))
        return _NAMES[self.status_key(a, keys.file_words(a, keys.sha256_bytes(sha256)))]

    def status_key(self, a: Tuple[int, int], f: Tuple[int, int]) -> int:
        """The answer code (1 registered, 2 revoked, 3 not-in-filter) of hashed keys."""
        if self.delta is not None:
            d = self.delta.answer_one(a, f)
            if d != filterfile.UNCHANGED:
                return d
        if not self.base.member_one(f):
            return _NOT_IN
        return self.base.answer_one(a, f)

    def status_many(self, pairs: Sequence[Tuple[str, str]]) -> List[str]:
        """Answers for many ``(addon_id, sha256)`` at once (numpy; the fast path)."""
        return [_NAME_LIST[c] for c in self.status_codes(*keys.hash_pairs(pairs)).tolist()]

    def status_codes(
        self, a0: np.ndarray, a1: np.ndarray, f0: np.ndarray, f1: np.ndarray
    ) -> np.ndarray:
        """Answer codes (uint8: 1 registered, 2 revoked, 3 not-in-filter) of hashed keys."""
        out = np.zeros(len(f0), dtype=np.uint8)
        todo = np.arange(len(f0))
        if self.delta is not None:
            out = self.delta.answer_np(a0, a1, f0, f1)
            todo = np.flatnonzero(out == filterfile.UNCHANGED)
        if self.base.membership is not None:
            member = self.base.member_np(f0[todo], f1[todo])
            out[todo[~member]] = _NOT_IN
            todo = todo[member]
        out[todo] = self.base.answer_np(a0[todo], a1[todo], f0[todo], f1[todo])
        return out


_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", re.ASCII).fullmatch
_U64 = 2**64
_ENTRY_FIELDS = {
    "base": ("path", "sha256", "size", "serial", "entries", "revoked", "built_at"),
    "delta": ("path", "sha256", "size", "serial", "base_serial", "entries", "built_at"),
}


def _check_index(index: Dict[str, Any]) -> None:
    """Raise :class:`FilterRejected` unless a verified index has the documented shape
    (docs/filter.md, "latest.json"): signed is not the same as well formed."""

    def count(value: Any) -> bool:
        return type(value) is int and 0 <= value < _U64

    if not count(index.get("serial")) or not _is_time(index.get("built_at")):
        raise FilterRejected("latest.json: serial or built_at missing or malformed")
    if "delta" not in index:
        raise FilterRejected("latest.json names no delta (null when there is none)")
    for what in ("base", "delta"):
        entry = index.get(what)
        if what == "delta" and entry is None:
            continue
        if not isinstance(entry, dict):
            raise FilterRejected(f"latest.json names no {what} file")
        for field in _ENTRY_FIELDS[what]:
            value = entry.get(field)
            if field == "path":
                ok = value == f"filter/{entry.get('sha256')}.bin"
            elif field == "sha256":
                ok = type(value) is str and normalize_sha256(value) == value  # canonical
            elif field == "built_at":
                ok = _is_time(value)
            else:
                ok = count(value) and (field != "size" or value != 0)
            if not ok:
                raise FilterRejected(f"latest.json: {what}.{field} missing or malformed")


def _is_time(value: Any) -> bool:
    return type(value) is str and _TIME(value) is not None


def _hashed(data: Any, sha256: Any, what: str) -> bytes:
    """``data`` as bytes once it hashes to ``sha256`` (hex)."""
    if not isinstance(sha256, str):
        raise FilterRejected(f"the {what} file's SHA-256 (from the signed index) is required")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FilterRejected(f"the {what} file is bytes, not {type(data).__name__}")
    data = bytes(data)
    if hashlib.sha256(data).hexdigest() != sha256.lower():
        raise FilterRejected(f"the {what} file does not match the SHA-256 the index names")
    return data


def _parse(data: bytes, what: str) -> FilterFile:
    try:
        return FilterFile.from_bytes(data)
    except (FormatError, ValueError, struct.error, IndexError) as exc:
        raise FilterRejected(f"the {what} file: {exc}") from None


def _fetched(entry: Dict[str, Any], get: Callable[[str], bytes], what: str) -> bytes:
    """The file an index entry names, of the size it names (the hash is checked next)."""
    try:
        data = bytes(get(entry["path"]))
    except (KeyError, OSError, TypeError) as exc:
        raise FilterRejected(f"{what} file {entry['path']} unavailable: {exc}") from None
    if len(data) != entry["size"]:
        raise FilterRejected(f"{what} file {entry['path']} does not match the index")
    return data


if TYPE_CHECKING:

    def _is_an_offline_filter(reader: FilterReader) -> OfflineFilter:
        return reader  # mypy: FilterReader offers all that the clients' protocol asks
