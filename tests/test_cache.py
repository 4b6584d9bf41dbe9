"""LookupCache: LRU, TTLs, one miss path (single flight, one fill per loop pass), invalidation
races, stale-on-error; the entry packing; the memo of rendered answers."""

import asyncio
from typing import NamedTuple

import pytest

from addonreg.cache import LookupCache
from addonreg.memo import Memo
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
    fill = Fill({"a": "A"})
    cache = LookupCache(10, ttl=100, negative_ttl=5, clock=clock, fill_many=fill.many)
    assert await cache.get("a") == "A"
    assert await cache.get("b") is None
    assert await cache.get("a") == "A"
    assert await cache.get("b") is None
    assert len(fill.calls) == 2
    clock.now += 6  # the negative entry expires, the positive one does not
    assert await cache.get("b") is None
    assert await cache.get("a") == "A"
    assert len(fill.calls) == 3
    clock.now += 100
    assert await cache.get("a") == "A"
    assert len(fill.calls) == 4
    assert cache.stats()["hits"] == 3 and cache.stats()["misses"] == 4


async def test_lru_eviction():
    fill = Fill({"a": 1, "b": 2, "c": 3})
    cache = LookupCache(2, ttl=100, negative_ttl=5, fill_many=fill.many)
    for key in "abac":  # "b" is the least recently used when "c" arrives
        await cache.get(key)
    assert len(cache) == 2
    calls = len(fill.calls)
    await cache.get("a")
    assert len(fill.calls) == calls
    await cache.get("b")
    assert len(fill.calls) == calls + 1


async def test_single_flight():
    fill = Fill({"a": "A"})
    cache = LookupCache(10, ttl=100, negative_ttl=5, fill_many=fill.many)
    fill.gate = asyncio.Event()
    tasks = [asyncio.create_task(cache.get("a")) for _ in range(50)]
    await fill.in_flight()
    await asyncio.sleep(0)  # a yield: the 49 others reach the shared flight
    fill.gate.set()
    assert await asyncio.gather(*tasks) == ["A"] * 50
    assert fill.calls == [["a"]]


async def test_bulk_takes_hits_from_cache_and_fetches_misses_once():
    fill = Fill({k: k.upper() for k in "abcde"})
    cache = LookupCache(100, ttl=100, negative_ttl=5, fill_many=fill.many)
    await cache.get("a")
    fill.calls.clear()
    result = await cache.get_many(list("abxbcy"))
    assert result == ["A", "B", None, "B", "C", None]
    assert fill.calls == [["b", "x", "c", "y"]]
    assert await cache.get_many(list("abxcy")) == ["A", "B", None, "C", None]
    assert len(fill.calls) == 1


async def test_bulk_and_single_share_flights():
    fill = Fill({"a": 1, "b": 2})
    cache = LookupCache(100, ttl=100, negative_ttl=5, fill_many=fill.many)
    fill.gate = asyncio.Event()
    single = asyncio.create_task(cache.get("a"))
    await fill.in_flight()
    bulk = asyncio.create_task(cache.get_many(["a", "b"]))
    await fill.in_flight(2)
    fill.gate.set()
    assert await single == 1 and await bulk == [1, 2]
    assert fill.calls == [["a"], ["b"]]


async def test_put_during_fill_wins():
    fill = Fill({"a": "old"})
    cache = LookupCache(10, ttl=100, negative_ttl=5, fill_many=fill.many)
    fill.gate = asyncio.Event()
    task = asyncio.create_task(cache.get("a"))
    await fill.in_flight()
    cache.put("a", "new")  # a write committed while the read was in flight
    fill.gate.set()
    await task
    assert await cache.get("a") == "new"


async def test_refresh_replaces_cached_entries_only():
    fill = Fill({"a": "A"})
    cache = LookupCache(10, ttl=100, negative_ttl=5, fill_many=fill.many)
    assert await cache.get("a") == "A"
    assert await cache.get("b") is None
    assert cache.refresh("a", "A2") and cache.refresh("b", "B")
    assert not cache.refresh("c", "C")  # not cached: stays out of the LRU
    assert "c" not in cache and len(cache) == 2
    assert await cache.get("a") == "A2"
    assert await cache.get("b") == "B"
    assert len(fill.calls) == 2


async def test_refresh_during_fill_of_an_uncached_key_keeps_the_fill_out():
    fill = Fill({})
    cache = LookupCache(10, ttl=100, negative_ttl=5, fill_many=fill.many)
    fill.gate = asyncio.Event()
    task = asyncio.ensure_future(cache.get("k"))
    await fill.in_flight()
    assert not cache.refresh("k", "new")  # the fill read the state before the write
    fill.gate.set()
    assert await task is None  # its caller gets what it read...
    assert "k" not in cache  # ...but it is not cached
    fill.gate, fill.data["k"] = None, "new"
    assert await cache.get("k") == "new"


async def test_clear_during_bulk_fill_discards_it():
    fill = Fill({"a": "old"})
    cache = LookupCache(10, ttl=100, negative_ttl=5, fill_many=fill.many)
    fill.gate = asyncio.Event()
    task = asyncio.create_task(cache.get_many(["a"]))
    await fill.in_flight()
    cache.clear()
    fill.gate.set()
    await task
    assert len(cache) == 0


async def test_failures_propagate_without_a_stale_entry_and_are_not_cached():
    fill = Fill({"a": "A"})
    cache = LookupCache(10, ttl=100, negative_ttl=5, fill_many=fill.many)
    fill.error = BackendError("down")
    fill.gate = asyncio.Event()
    tasks = [asyncio.create_task(cache.get("a")) for _ in range(3)]
    await fill.in_flight()
    await asyncio.sleep(0)  # a yield: the two others reach the shared flight
    fill.gate.set()
    for task in tasks:
        with pytest.raises(BackendError):
            await task
    with pytest.raises(BackendError):
        await cache.get_many(["a", "b"])
    fill.error = None
    fill.gate = None
    assert await cache.get("a") == "A"


async def test_expired_entries_are_served_when_the_fill_fails():
    clock = Clock()
    fill = Fill({"a": "A"})
    cache = LookupCache(10, ttl=10, negative_ttl=1, clock=clock, fill_many=fill.many)
    await cache.get("a")
    await cache.get("n")
    clock.now += 50
    fill.error = BackendError("down")
    assert await cache.get("a") == "A"
    assert await cache.get_many(["a", "n"]) == ["A", None]
    with pytest.raises(BackendError):
        await cache.get_many(["a", "zzz"])


def test_record_packing_round_trip():
    from addonreg.packing import RecordPacking, cache_key, cache_keys, storage_key
    from addonreg.storage import Record
    from addonreg.storage.testing import sha

    packing = RecordPacking()
    records = (
        Record("fx@example.com", sha(1), "1.0 β ✓\ud800", "registered", 7, 1795808236123456),
        Record("{6ba7b810-9dad-11d1-80b4-00c04fd430c8}", sha(2), None, "revoked", 2**62, 0),
    )
    assert cache_keys([r.key for r in records]) == [cache_key(r.key) for r in records]
    for record in records:
        key = cache_key(record.key)
        assert storage_key(key) == record.key
        entry = packing.pack(123.5, record)
        assert packing.stored_at(entry) == 123.5 and not packing.is_negative(entry)
        assert packing.unpack(key, entry) == (123.5, record)
    entry = packing.pack(9.25, None)
    assert packing.is_negative(entry) and packing.stored_at(entry) == 9.25
    assert packing.unpack(b"x" * 40, entry) == (9.25, None)


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
    small = LookupCache(100, ttl=100, negative_ttl=5)
    for n in range(100):
        small.put(n, n)
    assert small.peek(0) == 0  # touched: the least recently used is now 1
    small.put(100, 100)
    assert len(small) == 100 and 0 in small and 1 not in small
    large = LookupCache(4096, ttl=100, negative_ttl=5)
    for n in range(4097):
        large.put(n, n)
    # Four generations of 1,024: the oldest whole one went at the 4,096th entry.
    assert len(large) == 3073 and 1023 not in large and 1024 in large


class Item(NamedTuple):
    text: str
    expires: float


def test_memo_follows_its_cache_and_keeps_to_the_ttls():
    """A Memo keeps what was rendered from an entry until the entry changes (put,
    refresh, discard, clear), expires, or the lifetimes change; all_fresh answers only
    when every key is memoised and fresh."""
    clock = Clock()
    cache = LookupCache(10, ttl=100, negative_ttl=5, clock=clock)
    memo = Memo(2, key_of=str.upper, never=Item("never", float("-inf")))
    cache.follow(memo)

    def render(key):
        value, expires = cache.peek_expiring(key)
        memo.add(key.upper(), Item(f"{key}={value}", expires))

    cache.put("a", "A")
    cache.put("n", None)
    render("a"), render("n")
    assert memo.all_fresh(["A", "N"], clock()) == [Item("a=A", 1100.0), Item("n=None", 1005.0)]
    assert memo.all_fresh(["A", "X"], clock()) is None and memo.get("X", clock()) is None
    clock.now += 6  # past the negative ttl: the memo does not outlive its entry
    assert memo.get("N", clock()) is None and memo.all_fresh(["A", "N"], clock()) is None
    assert memo.get("A", clock()) == Item("a=A", 1100.0)
    cache.put("a", "B")  # a change: what was rendered from the old entry goes
    assert memo.get("A", clock()) is None
    render("a")
    cache.refresh("a", "C")
    assert memo.get("A", clock()) is None
    render("a")
    assert not cache.refresh("z", "Z") and memo.get("A", clock()) is not None
    cache.discard("a")
    assert len(memo) == 1  # "n" (expired, not yet dropped)
    cache.put("a", "A")
    render("a")
    cache.ttl = 3  # lifetimes changed: everything is rendered again
    assert len(memo) == 0
    render("a")
    assert memo.get("A", clock()) == Item("a=A", clock() + 3)
    clock.now += 3
    assert memo.get("A", clock()) is None
    cache.ttl = 100
    for key in "bcd":
        cache.put(key, key.upper())
        render(key)
    assert len(memo) == 1 and memo.get("D", clock()) is not None  # at its limit: restarted
    cache.clear()
    assert len(memo) == 0


async def test_concurrent_single_misses_share_one_fill_and_batches_are_bounded():
    fill = Fill({i: f"v{i}" for i in range(0, 100, 2)})
    cache = LookupCache(1000, ttl=100, negative_ttl=5, fill_many=fill.many, max_batch=30)
    results = await asyncio.gather(*(cache.get(i) for i in range(50)), cache.get(3))
    assert results == [f"v{i}" if i % 2 == 0 else None for i in range(50)] + [None]
    assert [len(c) for c in fill.calls] == [30, 20]
    assert sorted(sum(fill.calls, [])) == list(range(50))
    assert cache.misses == 50


async def test_a_failure_reaches_every_waiter_of_the_fill():
    fill = Fill({})
    fill.error = BackendError("down")
    cache = LookupCache(10, ttl=100, negative_ttl=5, fill_many=fill.many)
    results = await asyncio.gather(cache.get(1), cache.get(2), cache.get(1), return_exceptions=True)
    assert all(isinstance(r, BackendError) for r in results)
    assert fill.calls == [[1, 2]]


async def test_a_cancelled_caller_does_not_cancel_the_fill_for_the_others():
    fill = Fill({1: "one", 2: "two"})
    fill.gate = asyncio.Event()
    cache = LookupCache(10, ttl=100, negative_ttl=5, fill_many=fill.many)
    first = asyncio.ensure_future(cache.get(1))
    bulk = asyncio.ensure_future(cache.get_many([2, 1]))
    await fill.in_flight()
    first.cancel()
    fill.gate.set()
    assert await bulk == ["two", "one"]
    with pytest.raises(asyncio.CancelledError):
        await first
    assert fill.calls == [[1, 2]] and cache.peek(1) == "one"
