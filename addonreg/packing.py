"""How the lookup caches keep their entries: the files cache's keys and packed records.

An entry is a value and the time it was stored. :class:`EntryPacking` keeps
the pair as a tuple; :class:`RecordPacking` packs a record into one ``bytes``
and takes the add-on id and hash back from the cache key
(:data:`CacheKey`): at a million entries, object headers would otherwise be
most of the memory (``bench/results/memory.md``).
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Sequence
from typing import Any, Generic, Optional, TypeVar

from .status import REGISTERED, REVOKED
from .storage import Key, Record

__all__ = [
    "CacheKey",
    "cache_key",
    "cache_keys",
    "storage_key",
    "EntryPacking",
    "RecordPacking",
]

V = TypeVar("V")

CacheKey = bytes
"""A file in the cache: the 32 bytes of its SHA-256, then its add-on id (ASCII)."""


def cache_key(key: Key) -> CacheKey:
    return bytes.fromhex(key[1]) + key[0].encode("ascii")


def cache_keys(keys: Sequence[Key]) -> list[CacheKey]:
    """:func:`cache_key` of many keys, in C-level passes over all of them at once (a
    Python call per key is the cost this avoids). Add-on ids hold no newline."""
    hashes = struct.unpack("32s" * len(keys), bytes.fromhex("".join([k[1] for k in keys])))
    ids = "\n".join([k[0] for k in keys]).encode("ascii").split(b"\n")
    return list(map(operator.add, hashes, ids))


def storage_key(ckey: CacheKey) -> Key:
    """The storage key ``(addon_id, sha256)`` of a cache key."""
    return ckey[32:].decode("ascii"), ckey[:32].hex()


class EntryPacking(Generic[V]):
    """An entry kept as the tuple ``(stored_at, value)``; ``None`` is "not there"."""

    def pack(self, stored_at: float, value: Optional[V]) -> Any:
        return (stored_at, value)

    def unpack(self, key: Any, entry: Any) -> tuple[float, Optional[V]]:
        """``(stored_at, value)`` of an entry."""
        return entry

    def stored_at(self, entry: Any) -> float:
        return entry[0]

    def is_negative(self, entry: Any) -> bool:
        return entry[1] is None


class RecordPacking(EntryPacking[Record]):
    """A files cache entry packed into one ``bytes``.

    ``stored_at`` alone for "unknown"; for a record, also serial, updated_at,
    flags (revoked, no version) and the version's UTF-8. The add-on id and
    hash come back from the key: about 60 bytes a value instead of some 300
    for a tuple holding a Record and its strings.
    """

    _HEAD = struct.Struct("<dQqB")
    _STORED = struct.Struct("<d")
    _REVOKED, _NO_VERSION = 1, 2

    def pack(self, stored_at: float, value: Optional[Record]) -> bytes:
        if value is None:
            return self._STORED.pack(stored_at)
        flags = (self._REVOKED if value.status == REVOKED else 0) | (
            self._NO_VERSION if value.version is None else 0
        )
        version = b"" if value.version is None else value.version.encode("utf-8", "surrogatepass")
        return self._HEAD.pack(stored_at, value.serial, value.updated_at, flags) + version

    def unpack(self, key: CacheKey, entry: bytes) -> tuple[float, Optional[Record]]:
        if len(entry) == 8:
            return self._STORED.unpack(entry)[0], None
        stored_at, serial, updated_at, flags = self._HEAD.unpack_from(entry)
        version = (
            None
            if flags & self._NO_VERSION
            else entry[self._HEAD.size :].decode("utf-8", "surrogatepass")
        )
        addon_id, sha256 = storage_key(key)
        status = REVOKED if flags & self._REVOKED else REGISTERED
        return stored_at, Record(addon_id, sha256, version, status, serial, updated_at)

    def stored_at(self, entry: bytes) -> float:
        return self._STORED.unpack_from(entry)[0]

    def is_negative(self, entry: bytes) -> bool:
        return len(entry) == 8
