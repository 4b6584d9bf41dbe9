"""LookupCache: LRU, TTLs, single flight, bulk fills, invalidation races, stale-on-error."""

import asyncio

import pytest

from addonreg.cache import LookupCache
from addonreg.storage import BackendError


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Fill:
    """A storage stand-in that counts calls and can be held open or made to fail."""

    def __init__(self, data):
        self.data = dict(data)
        self.calls = []
        self.gate = None
        self.error = None
        self.entered = asyncio.Event()  # set once a fill is in flight

    async def in_flight(self, count=1):
        """Return once ``count`` fills have started."""
        while len(self.calls) < count:
            self.entered.clear()
            await self.entered.wait()

    async def one(self, key):
        self.calls.append([key])
        self.entered.set()
        if self.gate:
            await self.gate.wait()
        if self.error:
            raise self.error
        return self.data.get(key)

    async def many(self, keys):
        self.calls.append(list(keys))
        self.entered.set()
        if self.gate:
            await self.gate.wait()
        if self.error:
            raise self.error
        return {k: self.data[k] for k in keys if k in self.data}


async def test_positive_and_negative_entries_and_ttls():
    clock = Clock()
    cache = LookupCache(10, ttl=100, negative_ttl=5, clock=clock)
    fill = Fill({"a": "A"})
    assert await cache.get("a", fill.one) == "A"
    assert await cache.get("b", fill.one) is None
    assert await cache.get("a", fill.one) == "A"
    assert await cache.get("b", fill.one) is None
    assert len(fill.calls) == 2
    clock.now += 6  # the negative entry expires, the positive one does not
    assert await cache.get("b", fill.one) is None
    assert await cache.get("a", fill.one) == "A"
    assert len(fill.calls) == 3
    clock.now += 100
    assert await cache.get("a", fill.one) == "A"
    assert len(fill.calls) == 4
    assert cache.stats()["hits"] == 3 and cache.stats()["misses"] == 4


async def test_lru_eviction():
    cache = LookupCache(2, ttl=100, negative_ttl=5)
    fill = Fill({"a": 1, "b": 2, "c": 3})
    for key in "abac":  # "b" is the least recently used when "c" arrives
        await cache.get(key, fill.one)
    assert len(cache) == 2
    calls = len(fill.calls)
    await cache.get("a", fill.one)
    assert len(fill.calls) == calls
    await cache.get("b", fill.one)
    assert len(fill.calls) == calls + 1


async def test_single_flight():
    cache = LookupCache(10, ttl=100, negative_ttl=5)
    fill = Fill({"a": "A"})
    fill.gate = asyncio.Event()
    tasks = [asyncio.create_task(cache.get("a", fill.one)) for _ in range(50)]
    await fill.in_flight()
    await asyncio.sleep(0)  # a yield: the 49 others reach the shared flight
    fill.gate.set()
    assert await asyncio.gather(*tasks) == ["A"] * 50
    assert fill.calls == [["a"]]


async def test_bulk_takes_hits_from_cache_and_fetches_misses_once():
    cache = LookupCache(100, ttl=100, negative_ttl=5)
    fill = Fill({k: k.upper() for k in "abcde"})
    await cache.get("a", fill.one)
    fill.calls.clear()
    result = await cache.get_many(list("abxbcy"), fill.many)
    assert result == ["A", "B", None, "B", "C", None]
    assert fill.calls == [["b", "x", "c", "y"]]
    assert await cache.get_many(list("abxcy"), fill.many) == ["A", "B", None, "C", None]
    assert len(fill.calls) == 1


async def test_bulk_and_single_share_flights():
    cache = LookupCache(100, ttl=100, negative_ttl=5)
    fill = Fill({"a": 1, "b": 2})
    fill.gate = asyncio.Event()
    single = asyncio.create_task(cache.get("a", fill.one))
    await fill.in_flight()
    bulk = asyncio.create_task(cache.get_many(["a", "b"], fill.many))
    await fill.in_flight(2)
    fill.gate.set()
    assert await single == 1 and await bulk == [1, 2]
    assert fill.calls == [["a"], ["b"]]


async def test_put_during_fill_wins():
    cache = LookupCache(10, ttl=100, negative_ttl=5)
    fill = Fill({"a": "old"})
    fill.gate = asyncio.Event()
    task = asyncio.create_task(cache.get("a", fill.one))
    await fill.in_flight()
    cache.put("a", "new")  # a write committed while the read was in flight
    fill.gate.set()
    await task
    assert await cache.get("a", fill.one) == "new"


async def test_refresh_replaces_cached_entries_only():
    cache = LookupCache(10, ttl=100, negative_ttl=5)
    fill = Fill({"a": "A"})
    assert await cache.get("a", fill.one) == "A"
    assert await cache.get("b", fill.one) is None
    assert cache.refresh("a", "A2") and cache.refresh("b", "B")
    assert not cache.refresh("c", "C")  # not cached: stays out of the LRU
    assert "c" not in cache and len(cache) == 2
    assert await cache.get("a", fill.one) == "A2"
    assert await cache.get("b", fill.one) == "B"
    assert len(fill.calls) == 2


async def test_refresh_during_fill_of_an_uncached_key_keeps_the_fill_out():
    cache = LookupCache(10, ttl=100, negative_ttl=5)
    fill = Fill({})
    fill.gate = asyncio.Event()
    task = asyncio.ensure_future(cache.get("k", fill.one))
    await fill.in_flight()
    assert not cache.refresh("k", "new")  # the fill read the state before the write
    fill.gate.set()
    assert await task is None  # its caller gets what it read...
    assert "k" not in cache  # ...but it is not cached
    fill.gate, fill.data["k"] = None, "new"
    assert await cache.get("k", fill.one) == "new"


async def test_clear_during_bulk_fill_discards_it():
    cache = LookupCache(10, ttl=100, negative_ttl=5)
    fill = Fill({"a": "old"})
    fill.gate = asyncio.Event()
    task = asyncio.create_task(cache.get_many(["a"], fill.many))
    await fill.in_flight()
    cache.clear()
    fill.gate.set()
    await task
    assert len(cache) == 0


async def test_failures_propagate_without_a_stale_entry_and_are_not_cached():
    cache = LookupCache(10, ttl=100, negative_ttl=5)
    fill = Fill({"a": "A"})
    fill.error = BackendError("down")
    fill.gate = asyncio.Event()
    tasks = [asyncio.create_task(cache.get("a", fill.one)) for _ in range(3)]
    await fill.in_flight()
    await asyncio.sleep(0)  # a yield: the two others reach the shared flight
    fill.gate.set()
    for task in tasks:
        with pytest.raises(BackendError):
            await task
    with pytest.raises(BackendError):
        await cache.get_many(["a", "b"], fill.many)
    fill.error = None
    fill.gate = None
    assert await cache.get("a", fill.one) == "A"


async def test_expired_entries_are_served_when_the_fill_fails():
    clock = Clock()
    cache = LookupCache(10, ttl=10, negative_ttl=1, clock=clock)
    fill = Fill({"a": "A"})
    await cache.get("a", fill.one)
    await cache.get("n", fill.one)
    clock.now += 50
    fill.error = BackendError("down")
    assert await cache.get("a", fill.one) == "A"
    assert await cache.get_many(["a", "n"], fill.many) == ["A", None]
    with pytest.raises(BackendError):
        await cache.get_many(["a", "zzz"], fill.many)


def test_record_codec_round_trip():
    from addonreg.cache import RecordPacking, cache_key, file_key
    from addonreg.storage import Record
    from addonreg.storage.testing import sha

    codec = RecordPacking()
    for record in (
        Record("fx@example.com", sha(1), "1.0 β ✓\ud800", "registered", 7, 1795808236123456),
        Record("{6ba7b810-9dad-11d1-80b4-00c04fd430c8}", sha(2), None, "revoked", 2**62, 0),
    ):
        key = cache_key(record.key)
        assert file_key(key) == record.key
        entry = codec.pack(123.5, record)
        assert codec.stored_at(entry) == 123.5 and not codec.is_negative(entry)
        assert codec.value(key, entry) == record
    entry = codec.pack(9.25, None)
    assert codec.is_negative(entry) and codec.stored_at(entry) == 9.25
    assert codec.value(b"x" * 40, entry) is None


def test_segmented_lru_keeps_between_three_quarters_and_all_of_maxsize():
    from addonreg.lru import SegmentedLRU

    lru = SegmentedLRU(4000)
    for n in range(10_000):
        lru[n] = n
        assert len(lru) <= 4000
    assert 3000 <= len(lru) <= 4000 and lru.evictions == 10_000 - len(lru)
    oldest = next(iter(lru))
    assert all(n in lru for n in range(9_000, 10_000)) and 0 not in lru
    assert lru[oldest] == oldest  # touched: young again, survives the next rotations
    for n in range(10_000, 12_000):
        lru[n] = n
    assert oldest in lru and (oldest + 1) not in lru
    del lru[oldest]
    assert oldest not in lru and lru.get(oldest) is None
    lru.clear()
    assert len(lru) == 0 and list(lru) == []


def test_large_caches_use_the_segmented_lru_small_ones_an_exact_lru():
    from cachetools import LRUCache

    from addonreg.lru import SegmentedLRU

    assert isinstance(LookupCache(100_000, 1, 1)._lru, SegmentedLRU)
    assert isinstance(LookupCache(100, 1, 1)._lru, LRUCache)


def test_rendered_memoises_per_entry_and_keeps_to_the_ttls():
    """LookupCache.rendered: what a bulk lookup derives from an entry is rendered once per
    entry, a change renders it again, and freshness (ttl changes included) still holds."""
    clock, renders = Clock(), []
    cache = LookupCache(10, ttl=100, negative_ttl=5, clock=clock)
    memo, missing = {}, ("missing",)

    def render(key, value):
        renders.append(key)
        return (f"{key}={value}",)

    def answers(keys, limit=10):
        return [
            item[-1] if item is not missing else None
            for item in cache.rendered(keys, memo, limit, render, missing)
        ]

    cache.put("a", "A")
    cache.put("n", None)
    assert answers(["a", "n", "x"]) == ["a=A", "n=None", None]
    assert answers(["a", "n", "a"]) == ["a=A", "n=None", "a=A"] and renders == ["a", "n"]
    cache.put("a", "B")  # a change: a new entry, rendered again
    assert answers(["a"]) == ["a=B"] and renders == ["a", "n", "a"]
    clock.now += 6  # past the negative ttl: the memo does not outlive its entry
    assert answers(["a", "n"]) == ["a=B", None]
    cache.ttl = 3  # a shorter ttl applies to what is memoised too
    assert answers(["a"]) == [None]
    cache.ttl = 100
    cache.put("c", "C")  # a memo at its limit starts again
    assert answers(["a", "c"], limit=2) == ["a=B", "c=C"] and list(memo) == ["c"]
    assert cache.hits == 9
