"""Coalescing of concurrent single-key reads into one bulk read.

Under load many requests miss the cache at once, each for one file; fetched
one by one they queue for the storage pool's few connections, each paying a
round trip. :class:`Coalescer` gathers the keys asked for while the event
loop runs one pass, and fetches them with one ``fetch_many`` call when the
pass is over (the "data loader" pattern).

Guarantees:

* ``load(key)`` answers what ``fetch_many`` found for ``key`` (None when it
  was not found), or raises what ``fetch_many`` raised.
* A key asked for twice before its fetch starts is fetched once.
* At most ``max_batch`` keys go in one call; more make several calls.
* A caller that is cancelled does not cancel the fetch of the others.

Not thread-safe: one coalescer per event loop.
"""

from __future__ import annotations

import asyncio
from typing import (Awaitable, Callable, Dict, Generic, Hashable, List, Mapping, Optional, Set,
                    TypeVar)

__all__ = ["Coalescer"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    def __init__(self, fetch_many: Callable[[List[K]], Awaitable[Mapping[K, V]]],
                 max_batch: int = 1000) -> None:
        self._fetch_many = fetch_many
        self.max_batch = max_batch
        self._pending: Dict[K, asyncio.Future] = {}
        self._tasks: Set[asyncio.Task] = set()  # the loop only keeps weak references
        self.calls = 0  # fetch_many calls made (for tests and metrics)

    async def load(self, key: K) -> Optional[V]:
        future = self._pending.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            if not self._pending:
                loop.call_soon(self._dispatch)  # once the current pass is over
            future = self._pending[key] = loop.create_future()
        return await asyncio.shield(future)

    def _dispatch(self) -> None:
        pending, self._pending = self._pending, {}
        keys = list(pending)
        for i in range(0, len(keys), self.max_batch):
            chunk = {k: pending[k] for k in keys[i:i + self.max_batch]}
            task = asyncio.get_running_loop().create_task(self._fetch(chunk))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _fetch(self, futures: Dict[K, asyncio.Future]) -> None:
        self.calls += 1
        try:
            found = await self._fetch_many(list(futures))
        except BaseException as exc:
            for future in futures.values():
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: the waiters re-raise it
            if not isinstance(exc, Exception):
                raise
            return
        for key, future in futures.items():
            if not future.done():
                future.set_result(found.get(key))
