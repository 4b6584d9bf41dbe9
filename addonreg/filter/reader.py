"""The reference reader: check the signed index and the files, answer lookups.

Answers (docs/filter.md, "What an answer means"):

* ``revoked``: the file is not registered (always true);
* ``registered``: registered *if the file is known to the registry* at the
  reader's serial. A client acts on it only for a file whose membership it
  has established otherwise; for any other file it asks the service once;
* ``not-in-filter``: certainly not known at the serial (only with a
  membership layer).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import fmt, keys
from .fmt import FilterFile, FormatError
from .index import IndexVerificationError, verify_index

REGISTERED = "registered"
REVOKED = "revoked"
NOT_IN_FILTER = "not-in-filter"
_NOT_IN = 3
_NAMES = {fmt.REGISTERED: REGISTERED, fmt.REVOKED: REVOKED, _NOT_IN: NOT_IN_FILTER}
_NAME_LIST = [None, REGISTERED, REVOKED, NOT_IN_FILTER]


class FilterRejected(ValueError):
    """Files or an index that fail a check: hash, size, signature, format, pairing."""


class FilterReader:
    """A base plus (optionally) its newest cumulative delta, ready to answer.

    Build it with :meth:`from_index` (checks everything) or :meth:`from_bytes`
    (checks the files' pairing only; for test vectors and trusted sources).
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
    def from_bytes(cls, base: bytes, delta: Optional[bytes] = None) -> "FilterReader":
        try:
            b = FilterFile.from_bytes(base)
            d = FilterFile.from_bytes(delta) if delta is not None else None
        except FormatError as exc:
            raise FilterRejected(str(exc)) from None
        if d is not None and d.base_sha256 != hashlib.sha256(base).digest():
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
        try:
            index = verify_index(index_data, public_keys)
        except IndexVerificationError as exc:
            raise FilterRejected(str(exc)) from None
        get = files if callable(files) else files.__getitem__
        base = _checked(index.get("base"), get, "base")
        delta = _checked(index["delta"], get, "delta") if index.get("delta") is not None else None
        reader = cls.from_bytes(base, delta)
        newest = reader.delta or reader.base
        if (
            reader.base.serial != index["base"]["serial"]
            or newest.serial != index.get("serial")
            or (delta is not None and index["delta"]["serial"] != newest.serial)
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
            if d != fmt.UNCHANGED:
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
            todo = np.flatnonzero(out == fmt.UNCHANGED)
        if self.base.membership is not None:
            member = self.base.member_np(f0[todo], f1[todo])
            out[todo[~member]] = _NOT_IN
            todo = todo[member]
        out[todo] = self.base.answer_np(a0[todo], a1[todo], f0[todo], f1[todo])
        return out


def _checked(entry: Any, get: Callable[[str], bytes], what: str) -> bytes:
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise FilterRejected(f"the index names no {what} file")
    try:
        data = bytes(get(entry["path"]))
    except (KeyError, OSError) as exc:
        raise FilterRejected(f"{what} file {entry['path']} unavailable: {exc}") from None
    if len(data) != entry.get("size") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise FilterRejected(f"{what} file {entry['path']} does not match the index")
    return data
