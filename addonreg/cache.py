"""Per-process LRU of answers, in front of storage.

:class:`LookupCache` maps a key to a value (a record, or ``None`` for "not
there": negative caching) for at most ``ttl`` (values) or the shorter
``negative_ttl`` (``None``). Both may be changed at any time and apply to
entries already cached. The lifetime is only a safety bound: writes
replace entries as they happen (:meth:`LookupCache.refresh`, for every change
the bus delivers); :meth:`LookupCache.clear` drops all when changes may be missed.

Guarantees:

* Single flight: concurrent misses for one key wait for one fill.
* A bulk lookup takes what it can from the cache and fetches every miss in
  one storage call.
* A fill that started before a ``put``/``discard``/``clear`` of its key does
  not overwrite the newer state (the change wins).
* When a fill fails, an expired entry is served rather than nothing (storage
  down: stale but true beats a 503); with no entry at all the error goes up.

:class:`RecordPacking` keeps the files cache's entries small: one ``bytes``
per entry (at a million entries, object headers are most of the memory).

Not thread-safe: one cache per event loop, which is one per process here.
"""

from __future__ import annotations

import asyncio
import operator
import struct
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, Optional, TypeVar

from .lru import CountingLRU, SegmentedLRU
from .storage import REGISTERED, REVOKED, Key, Record

__all__ = [
    "LookupCache",
    "EntryPacking",
    "RecordPacking",
    "MISSING",
    "CacheKey",
    "cache_key",
    "file_key",
]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MISSING: Any = object()
"""What a peek answers when the cache cannot (as opposed to a cached ``None``)."""


class EntryPacking(Generic[V]):
    """How an entry (a value and the time it was stored) is kept in the LRU.

    This default keeps a tuple; :class:`RecordPacking` packs a record into
    one ``bytes``.
    """

    def pack(self, stored_at: float, value: Optional[V]) -> Any:
        return (stored_at, value)

    def stored_at(self, entry: Any) -> float:
        return entry[0]

    def value(self, key: Any, entry: Any) -> Optional[V]:
        return entry[1]

    def is_negative(self, entry: Any) -> bool:
        return entry[1] is None

    def brief(self, value: Optional[V]) -> Any:
        """What a bulk lookup needs of a value (default: all of it)."""
        return value

    def is_fresh(self, entry: Any, now: float, ttl: float, negative_ttl: float) -> bool:
        lifetime = negative_ttl if self.is_negative(entry) else ttl
        return now - self.stored_at(entry) < lifetime

    def fresh(self, key: Any, entry: Any, now: float, ttl: float, negative_ttl: float) -> Any:
        """The value if fresh at ``now``, else ``MISSING`` (hot: packings override it)."""
        lifetime = negative_ttl if self.is_negative(entry) else ttl
        if now - self.stored_at(entry) < lifetime:
            return self.value(key, entry)
        return MISSING


class LookupCache(Generic[K, V]):
    """An LRU of ``key -> value or None`` with single-flight fills."""

    def __init__(
        self,
        maxsize: int,
        ttl: float,
        negative_ttl: float,
        clock: Callable[[], float] = time.monotonic,
        packing: Optional[EntryPacking] = None,
    ) -> None:
        # Small caches stay exact LRUs; the generations pay off in the large.
        self._lru: SegmentedLRU | CountingLRU = (
            SegmentedLRU(maxsize) if maxsize >= 4096 else CountingLRU(maxsize)
        )
        self._codec = packing or EntryPacking()
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._clock = clock
        # key -> future of the fill in flight; a fill only stores its result
        # if its future is still the one registered here.
        self._flights: dict[K, asyncio.Future] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def maxsize(self) -> int:
        return int(self._lru.maxsize)

    @property
    def evictions(self) -> int:
        return self._lru.evictions

    def peek_entry(self, key: K) -> Any:
        """The raw entry if fresh (counts a hit), or ``MISSING``: for callers that
        memoise what they derive from an entry (it is replaced, never mutated)."""
        try:
            entry = self._lru[key]
        except KeyError:
            return MISSING
        if self._codec.fresh(key, entry, self._clock(), self.ttl, self.negative_ttl) is MISSING:
            return MISSING
        self.hits += 1
        return entry

    def value_of(self, key: K, entry: Any) -> Optional[V]:
        return self._codec.value(key, entry)

    def rendered(
        self,
        keys: Sequence[K],
        memo: dict[K, tuple],
        limit: int,
        render: Callable[[K, Any], tuple],
        missing: tuple,
    ) -> list[tuple]:
        """For each key with a fresh entry, ``render(key, brief of its value)`` kept in
        ``memo`` (at most ``limit``; restarted when full) while the entry stays; for the
        others, ``missing``. Hits counted. The loop of a bulk lookup: one clock reading,
        and a file whose answer is memoised costs a few dict lookups, no call at all.

        A memo item is ``(entry, stored_at, negative, *rendered)``: the entry is
        replaced, never mutated, on a change, and freshness is read from the item.
        """
        lru, now, codec = self._lru, self._clock(), self._codec
        young = lru.youngest.get if isinstance(lru, SegmentedLRU) else {}.get
        ttl, negative_ttl, remembered = self.ttl, self.negative_ttl, memo.get
        out: list[tuple] = []
        for key in keys:
            entry = young(key)
            if entry is None:
                try:
                    entry = lru[key]
                except KeyError:
                    out.append(missing)
                    continue
            item = remembered(key)
            if item is None or item[0] is not entry:
                if not codec.is_fresh(entry, now, ttl, negative_ttl):
                    out.append(missing)
                    continue
                if len(memo) >= limit:
                    memo.clear()
                item = memo[key] = (
                    entry,
                    codec.stored_at(entry),
                    codec.is_negative(entry),
                    *render(key, codec.brief(codec.value(key, entry))),
                )
            elif now - item[1] >= (negative_ttl if item[2] else ttl):
                out.append(missing)
                continue
            out.append(item)
        self.hits += len(out) - out.count(missing)
        return out

    def peek(self, key: K) -> Any:
        """The fresh cached value, or ``MISSING``; counts a hit. For the hot path."""
        try:
            entry = self._lru[key]  # cachetools: get() is two more calls for a hit
        except KeyError:
            return MISSING
        value = self._codec.fresh(key, entry, self._clock(), self.ttl, self.negative_ttl)
        if value is not MISSING:
            self.hits += 1
        return value

    def _store(self, key: K, value: Optional[V]) -> None:
        # The time stored, not a deadline: a change of ttl (pub/sub went down)
        # applies to the entries already there.
        self._lru[key] = self._codec.pack(self._clock(), value)

    def put(self, key: K, value: Optional[V]) -> None:
        """Replace the cached answer for ``key`` (a write happened)."""
        self._flights.pop(key, None)
        self._store(key, value)

    def refresh(self, key: K, value: Optional[V]) -> bool:
        """A write happened: replace the cached answer for ``key`` if there is one.

        An uncached key stays uncached (a bulk write must not push the
        answers readers want out of the LRU), and a fill in flight for it,
        which may have read the state before the write, does not store its
        result. True when an entry was replaced.
        """
        self._flights.pop(key, None)
        if key in self._lru:
            self._store(key, value)
            return True
        return False

    def __contains__(self, key: K) -> bool:
        """Whether ``key`` has an entry, fresh or expired (no hit counted, LRU order kept)."""
        return key in self._lru

    def discard(self, key: K) -> None:
        """Forget ``key``."""
        self._flights.pop(key, None)
        self._lru.pop(key, None)

    def clear(self) -> None:
        """Forget everything, in-flight fills included."""
        self._flights.clear()
        self._lru.clear()

    def current(self, key: K) -> Any:
        """The cached value even if expired, or ``MISSING``; no hit counted."""
        entry = self._lru.get(key)
        return MISSING if entry is None else self._codec.value(key, entry)

    async def get(self, key: K, fill: Callable[[K], Awaitable[Optional[V]]]) -> Optional[V]:
        """The value for ``key``, from cache or from ``fill(key)`` (one fill per key at a time)."""
        value = self.peek(key)
        if value is not MISSING:
            return value
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight)
        self.misses += 1
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            value = await fill(key)
        except BaseException as exc:
            stale = self.current(key)
            if self._flights.get(key) is flight:
                del self._flights[key]
            if stale is not MISSING and isinstance(exc, Exception):
                flight.set_result(stale)
                return stale
            flight.set_exception(exc)
            flight.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        if self._flights.get(key) is flight:
            del self._flights[key]
            self._store(key, value)
        flight.set_result(value)
        return value

    async def get_many(
        self, keys: Sequence[K], fill_many: Callable[[list[K]], Awaitable[dict[K, V]]]
    ) -> list[Any]:
        """Values for ``keys`` in order; all misses are filled by one ``fill_many`` call."""
        results: list[Any] = [None] * len(keys)
        waiting: list[tuple[int, asyncio.Future]] = []
        mine: dict[K, list[int]] = {}
        # peek() inlined, with one clock reading for the whole request: this
        # loop runs once per file of a bulk lookup. The youngest generation's
        # own get() first: a C call for most hits.
        lru, now = self._lru, self._clock()
        fresh = self._codec.fresh
        young = lru.youngest.get if isinstance(lru, SegmentedLRU) else {}.get
        ttl, negative_ttl = self.ttl, self.negative_ttl
        hits = 0
        for i, key in enumerate(keys):
            entry = young(key)
            if entry is None:
                try:
                    entry = lru[key]
                except KeyError:
                    pass
            value = MISSING if entry is None else fresh(key, entry, now, ttl, negative_ttl)
            if value is not MISSING:
                hits += 1
                results[i] = value
            elif key in mine:
                mine[key].append(i)
            elif key in self._flights:
                waiting.append((i, self._flights[key]))
            else:
                mine[key] = [i]
        self.hits += hits
        if mine:
            self.misses += len(mine)
            loop = asyncio.get_running_loop()
            flights = {key: loop.create_future() for key in mine}
            self._flights.update(flights)
            try:
                found = await fill_many(list(mine))
            except BaseException as exc:
                for key, flight in flights.items():
                    if self._flights.get(key) is flight:
                        del self._flights[key]
                    stale = self.current(key)
                    if stale is not MISSING and isinstance(exc, Exception):
                        flight.set_result(stale)
                    else:
                        flight.set_exception(exc)
                        flight.exception()
                if not all(f.exception() is None for f in flights.values()):
                    raise
                found = {k: f.result() for k, f in flights.items() if f.result() is not None}
            else:
                for key, flight in flights.items():
                    value = found.get(key)
                    if self._flights.get(key) is flight:
                        del self._flights[key]
                        self._store(key, value)
                    flight.set_result(value)
            for key, indexes in mine.items():
                value = found.get(key)
                for i in indexes:
                    results[i] = value
        for i, flight in waiting:
            value = await asyncio.shield(flight)
            results[i] = value
        return results

    def stats(self) -> dict[str, int]:
        return {
            "size": len(self._lru),
            "maxsize": self.maxsize,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
        }


CacheKey = bytes
"""A file in the cache: the 32 bytes of its SHA-256, then its add-on id (ASCII)."""

Brief = tuple[str, Optional[str]]  # what a bulk lookup answers of a known file


def cache_key(key: Key) -> CacheKey:
    return bytes.fromhex(key[1]) + key[0].encode("ascii")


def cache_keys(keys: Sequence[Key]) -> list[CacheKey]:
    """:func:`cache_key` of many keys in C-level passes (a third of the time of a call per
    key at 100; ``operator.add`` takes half ``bytes.__add__``'s). Ids hold no newline."""
    hashes = struct.unpack("32s" * len(keys), bytes.fromhex("".join([k[1] for k in keys])))
    ids = "\n".join([k[0] for k in keys]).encode("ascii").split(b"\n")
    return list(map(operator.add, hashes, ids))


def file_key(ckey: CacheKey) -> Key:
    return ckey[32:].decode("ascii"), ckey[:32].hex()


class RecordPacking(EntryPacking[Record]):
    """Files cache entries packed into one ``bytes`` each.

    ``stored_at`` alone for "unknown"; for a record, also serial, updated_at,
    flags (revoked, no version) and the version's UTF-8. The add-on id and
    hash come back from the key. At a million entries this is about 60 bytes
    a value instead of some 300 for a tuple holding a Record and its strings.
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

    def stored_at(self, entry: bytes) -> float:
        return self._STORED.unpack_from(entry)[0]

    def is_fresh(self, entry: bytes, now: float, ttl: float, negative_ttl: float) -> bool:
        return now - self._STORED.unpack_from(entry)[0] < (negative_ttl if len(entry) == 8 else ttl)

    def is_negative(self, entry: bytes) -> bool:
        return len(entry) == 8

    def fresh(
        self, key: CacheKey, entry: bytes, now: float, ttl: float, negative_ttl: float
    ) -> Any:
        # EntryPacking.fresh in one unpack (this runs once per file of a lookup).
        if len(entry) == 8:
            return None if now - self._STORED.unpack_from(entry)[0] < negative_ttl else MISSING
        stored_at, serial, updated_at, flags = self._HEAD.unpack_from(entry)
        if now - stored_at >= ttl:
            return MISSING
        return self._record(key, entry, serial, updated_at, flags)

    def brief(self, value: Optional[Record]) -> Optional[Brief]:
        return None if value is None else (value.status, value.version)

    def value(self, key: CacheKey, entry: bytes) -> Optional[Record]:
        if len(entry) == 8:
            return None
        _, serial, updated_at, flags = self._HEAD.unpack_from(entry)
        return self._record(key, entry, serial, updated_at, flags)

    def _record(
        self, key: CacheKey, entry: bytes, serial: int, updated_at: int, flags: int
    ) -> Record:
        version = (
            None
            if flags & self._NO_VERSION
            else entry[self._HEAD.size :].decode("utf-8", "surrogatepass")
        )
        return Record(
            key[32:].decode("ascii"),
            key[:32].hex(),
            version,
            REVOKED if flags & self._REVOKED else REGISTERED,
            serial,
            updated_at,
        )
