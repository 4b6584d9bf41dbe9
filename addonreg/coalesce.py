"""Calls made during one pass of the event loop, sent as one.

Under load many requests want the same kind of small storage or Redis call
at once: a cache miss of one file, a nonce check. Made one by one they
queue for a few connections and each pays a round trip. :class:`PassBatch`
gathers the calls made while the event loop runs one pass and sends them
together once the pass is over. The nonce store checks nonces with it; the
lookup cache (:mod:`addonreg.cache`) sends its misses with it, de-duplicated
by its own single flight.

Guarantees:

* A call answers its own item's result, in order, or raises what the send
  raised (every call of that send does), or the exception the send answered
  for its item.
* At most ``max_batch`` items go in one send; more make several sends.
* A caller that is cancelled does not cancel the send for the others.

Not thread-safe: one per event loop.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, List, Sequence, Set, Tuple, TypeVar

__all__ = ["PassBatch"]

T = TypeVar("T")
R = TypeVar("R")


class PassBatch(Generic[T, R]):
    """``await call(item)``: the items of one loop pass go to ``send`` as one list.

    ``send(items)`` returns one result per item, in order; an exception
    instance as an item's result is raised to that item's caller. Items are
    not merged: the same item twice is sent twice (a nonce check relies on it).
    """

    def __init__(
        self, send: Callable[[List[T]], Awaitable[Sequence[R]]], max_batch: int = 1000
    ) -> None:
        self._send = send
        self.max_batch = max_batch
        self._pending: List[Tuple[T, asyncio.Future]] = []
        self._tasks: Set[asyncio.Task] = set()  # the loop only keeps weak references

    async def call(self, item: T) -> R:
        return await asyncio.shield(self.add(item))

    def add(self, item: T) -> asyncio.Future:
        """The future of ``item``'s result, to await shielded (a cancelled waiter must
        not cancel it: others may wait for it too)."""
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._flush)  # once the current pass is over
        future = loop.create_future()
        self._pending.append((item, future))
        return future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        loop = asyncio.get_running_loop()
        for i in range(0, len(pending), self.max_batch):
            task = loop.create_task(self._run(pending[i : i + self.max_batch]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, pending: List[Tuple[T, asyncio.Future]]) -> None:
        try:
            results = await self._send([item for item, _ in pending])
        except BaseException as exc:
            for _, future in pending:
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: the waiters re-raise it
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(pending, results):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
                future.exception()  # retrieved: the waiters re-raise it
            else:
                future.set_result(result)
