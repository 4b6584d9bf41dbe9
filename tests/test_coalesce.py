"""Coalescer: concurrent single-key reads become one bulk read."""

import asyncio

import pytest

from addonreg.coalesce import Coalescer
from addonreg.storage import BackendError


class Store:
    def __init__(self, data, gate=None, error=None):
        self.data, self.gate, self.error = data, gate, error
        self.calls = []
        self.entered = asyncio.Event()  # set once a fetch is in flight

    async def fetch_many(self, keys):
        self.calls.append(list(keys))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return {k: self.data[k] for k in keys if k in self.data}


async def test_concurrent_loads_share_one_fetch():
    store = Store({i: f"v{i}" for i in range(0, 100, 2)})
    loader = Coalescer(store.fetch_many)
    results = await asyncio.gather(*(loader.load(i) for i in range(50)), loader.load(3))
    assert results == [f"v{i}" if i % 2 == 0 else None for i in range(50)] + [None]
    assert len(store.calls) == 1 and sorted(store.calls[0]) == list(range(50))


async def test_later_loads_make_a_new_fetch_and_batches_are_bounded():
    store = Store({"a": 1, "b": 2})
    loader = Coalescer(store.fetch_many, max_batch=3)
    assert await loader.load("a") == 1
    assert await loader.load("b") == 2
    assert store.calls == [["a"], ["b"]]
    store.calls.clear()
    await asyncio.gather(*(loader.load(k) for k in "abcdefg"))
    assert [len(c) for c in store.calls] == [3, 3, 1]


async def test_an_error_reaches_every_waiter():
    store = Store({}, error=BackendError("down"))
    loader = Coalescer(store.fetch_many)
    results = await asyncio.gather(loader.load(1), loader.load(2), return_exceptions=True)
    assert all(isinstance(r, BackendError) for r in results)
    assert len(store.calls) == 1


async def test_a_cancelled_caller_does_not_cancel_the_others():
    gate = asyncio.Event()
    store = Store({1: "one", 2: "two"}, gate=gate)
    loader = Coalescer(store.fetch_many)
    first = asyncio.ensure_future(loader.load(1))
    second = asyncio.ensure_future(loader.load(2))
    again = asyncio.ensure_future(loader.load(1))
    await store.entered.wait()
    first.cancel()
    gate.set()
    assert await second == "two" and await again == "one"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(store.calls) == 1
