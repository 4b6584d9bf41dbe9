"""Per-process LRU of answers in front of storage, with one miss path.

:class:`LookupCache` maps a key to a value (a record, or ``None`` for "not
there": negative caching) for at most ``ttl`` (values) or the shorter
``negative_ttl`` (``None``). Both may be changed at any time and apply to
entries already cached. The lifetime is only a safety bound: writes
replace entries as they happen (:meth:`LookupCache.refresh`, for every change
the bus delivers); :meth:`LookupCache.clear` drops all when changes may be missed.

Every miss, of one key (:meth:`~LookupCache.get`) or many
(:meth:`~LookupCache.get_many`), takes the same path. Guarantees:

* One storage query per key in flight: a key already being fetched is
  waited for, not fetched again (single flight).
* The misses of one pass of the event loop, from every request, go to
  storage as one ``fill_many`` call (at most ``max_batch`` keys a call):
  under load, concurrent single-file misses share one bulk query.
* A fill that started before a ``put``/``refresh``/``discard``/``clear`` of
  its key does not overwrite the newer state (the change wins); its callers
  get what it read.
* When a fill fails, an expired entry is served rather than nothing (storage
  down: stale but true beats a 503); with no entry at all the error goes up.
* A caller that is cancelled does not cancel the fill for the others.

Memos (:mod:`addonreg.memo`) that keep answers rendered from entries follow
the cache: every change of a key, and every change of the lifetimes, drops
what they derived from it.

Not thread-safe: one cache per event loop, which is one per process here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, Optional, Protocol, TypeVar

from .coalesce import PassBatch
from .lru import CountingLRU, SegmentedLRU
from .packing import EntryPacking

__all__ = ["LookupCache", "MISSING", "Follower"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MISSING: Any = object()
"""What a peek answers when the cache cannot (as opposed to a cached ``None``)."""

FillMany = Callable[[list[K]], Awaitable[Mapping[K, V]]]


class Follower(Protocol):
    """What follows a cache's changes (a memo of what was rendered from its entries)."""

    def drop(self, key: Any) -> None:
        """The entry of ``key`` (a cache key) changed or went."""

    def clear(self) -> None:
        """Every entry changed, or their lifetimes did."""


class LookupCache(Generic[K, V]):
    """An LRU of ``key -> value or None`` filled by ``fill_many`` (one miss path)."""

    def __init__(
        self,
        maxsize: int,
        ttl: float,
        negative_ttl: float,
        fill_many: Optional[FillMany] = None,
        clock: Callable[[], float] = time.monotonic,
        packing: Optional[EntryPacking] = None,
        max_batch: int = 1000,
    ) -> None:
        # Small caches stay exact LRUs; the generations pay off in the large.
        self._lru: SegmentedLRU | CountingLRU = (
            SegmentedLRU(maxsize) if maxsize >= 4096 else CountingLRU(maxsize)
        )
        self._packing = packing or EntryPacking()
        self._ttl, self._negative_ttl = ttl, negative_ttl
        self.clock = clock
        self._fill_many = fill_many
        # key -> future of the fill in flight; a fill only stores its result
        # if its future is still the one registered here.
        self._flights: dict[K, asyncio.Future] = {}
        # The misses of one loop pass, sent as one fill_many call.
        self._batch: PassBatch[K, Any] = PassBatch(self._fill, max_batch)
        self._followers: list[Follower] = []
        self.hits = 0
        self.misses = 0
        self.fills = 0  # fill_many calls made (storage queries)

    def __len__(self) -> int:
        return len(self._lru)

    @property
    def maxsize(self) -> int:
        return int(self._lru.maxsize)

    @property
    def evictions(self) -> int:
        return self._lru.evictions

    # Lifetimes: a change applies to the entries already there (and what was derived).

    @property
    def ttl(self) -> float:
        return self._ttl

    @ttl.setter
    def ttl(self, seconds: float) -> None:
        self._ttl = seconds
        self._changed_all()

    @property
    def negative_ttl(self) -> float:
        return self._negative_ttl

    @negative_ttl.setter
    def negative_ttl(self, seconds: float) -> None:
        self._negative_ttl = seconds
        self._changed_all()

    def follow(self, follower: Follower) -> None:
        """Tell ``follower`` of every change from now on."""
        self._followers.append(follower)

    # Reads of what is cached ------------------------------------------------

    def peek(self, key: K) -> Any:
        """The fresh cached value, or ``MISSING``; counts a hit."""
        found = self.peek_expiring(key)
        return MISSING if found is MISSING else found[0]

    def peek_expiring(self, key: K) -> Any:
        """``(value, expires)`` of a fresh entry (``expires`` on :attr:`clock`), or
        ``MISSING``; counts a hit. For what is derived from a value and kept while
        its entry lives (a memo)."""
        try:
            entry = self._lru[key]  # cachetools: get() is two more calls for a hit
        except KeyError:
            return MISSING
        stored_at, value = self._packing.unpack(key, entry)
        expires = stored_at + (self._negative_ttl if value is None else self._ttl)
        if self.clock() >= expires:
            return MISSING
        self.hits += 1
        return value, expires

    def current(self, key: K) -> Any:
        """The cached value even if expired, or ``MISSING``; no hit counted."""
        entry = self._lru.get(key)
        return MISSING if entry is None else self._packing.unpack(key, entry)[1]

    def __contains__(self, key: K) -> bool:
        """Whether ``key`` has an entry, fresh or expired (no hit counted, LRU order kept)."""
        return key in self._lru

    def count_hits(self, n: int) -> None:
        """``n`` answers were given from what followers derived from fresh entries."""
        self.hits += n

    # The miss path ------------------------------------------------------------

    async def get(self, key: K) -> Optional[V]:
        """The value for ``key``, from cache or storage (see the module's guarantees)."""
        value = self.peek(key)
        if value is not MISSING:
            return value
        return await asyncio.shield(self._flights.get(key) or self._miss(key))

    async def get_many(self, keys: Sequence[K]) -> list[Optional[V]]:
        """Values for ``keys`` in order: hits from cache, misses as :meth:`fetch_many`."""
        results: list[Any] = list(map(self.peek, keys))
        if MISSING in results:
            misses = [i for i, value in enumerate(results) if value is MISSING]
            for i, value in zip(misses, await self.fetch_many([keys[i] for i in misses])):
                results[i] = value
        return results

    async def fetch_many(self, keys: Sequence[K]) -> list[Optional[V]]:
        """Values for ``keys`` (found missing or expired by a peek) from storage, in order:
        a key in flight is waited for, the others fetched with this pass's misses."""
        flights = [self._flights.get(key) or self._miss(key) for key in keys]
        # One wait for all: shielded, a cancelled caller leaves the fills to the others.
        await asyncio.shield(asyncio.gather(*set(flights), return_exceptions=True))
        return [flight.result() for flight in flights]  # raises a failure with nothing stale

    def _miss(self, key: K) -> asyncio.Future:
        """A flight for ``key``, fetched with the other misses of this loop pass."""
        flight = self._flights[key] = self._batch.add(key)
        self.misses += 1
        return flight

    async def _fill(self, keys: list[K]) -> list[Any]:
        """One storage call for a loop pass's misses: each key's value, or (storage
        failed) its stale value, else the failure."""
        assert self._fill_many is not None, "a cache that misses needs fill_many"
        # A change from now on pops a key's flight: then what is read is not stored.
        flights = [self._flights.get(key) for key in keys]
        self.fills += 1
        try:
            found = await self._fill_many(keys)
        except BaseException as exc:
            for key, flight in zip(keys, flights):
                if flight is not None and self._flights.get(key) is flight:
                    del self._flights[key]
            if not isinstance(exc, Exception):  # a cancellation: every caller gets it
                raise
            return [v if (v := self.current(key)) is not MISSING else exc for key in keys]
        values = [found.get(key) for key in keys]
        for key, flight, value in zip(keys, flights, values):
            if flight is not None and self._flights.get(key) is flight:
                del self._flights[key]
                self._store(key, value)
        return values

    # Changes ------------------------------------------------------------------

    def _store(self, key: K, value: Optional[V]) -> None:
        # The time stored, not a deadline: a change of ttl (pub/sub went down)
        # applies to the entries already there.
        self._lru[key] = self._packing.pack(self.clock(), value)
        for follower in self._followers:
            follower.drop(key)

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
        for follower in self._followers:
            follower.drop(key)
        return False

    def discard(self, key: K) -> None:
        """Forget ``key``."""
        self._flights.pop(key, None)
        self._lru.pop(key, None)
        for follower in self._followers:
            follower.drop(key)

    def clear(self) -> None:
        """Forget everything, in-flight fills included."""
        self._flights.clear()
        self._lru.clear()
        self._changed_all()

    def _changed_all(self) -> None:
        for follower in self._followers:
            follower.clear()

    def stats(self) -> dict[str, int]:
        return {
            "size": len(self._lru),
            "maxsize": self.maxsize,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.evictions,
        }
