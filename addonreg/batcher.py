"""Group commit: a bounded write queue and the one coroutine that drains it.

Writes matter less than reads and must never starve them, so a process has
one writer: :class:`WriteBatcher` takes whatever operations are waiting and
commits them as one storage transaction, on the store's own write connection.

Guarantees:

* :meth:`WriteBatcher.submit` returns once its operations are committed and
  published on the invalidation bus (which applies them to this process's
  cache first): the caller can answer at once with the new state.
* Concurrent submits are coalesced, in arrival order, into batches of at most
  ``batch_size`` operations; a submit is never split across transactions, so
  a request is committed whole or not at all. A lone write waits at most
  ``window`` seconds for company.
* Truthful and bounded: a submit waits at most ``queue_timeout`` in the
  queue (then :class:`~addonreg.storage.BackendError`: nothing written, it
  was never sent) and its commit at most what the store allows (``2 ×
  storage_timeout``; then ``BackendError`` if storage says nothing was
  written, :class:`~addonreg.storage.OutcomeUnknown` if the commit was sent
  but not confirmed). So every write is answered within about ``3 ×
  storage_timeout``.
* Bounded queue: past ``max_queue`` waiting operations a submit is refused
  at once with :class:`QueueFull` (and :class:`ShuttingDown` while draining).
* A stored job (``Prefer: respond-async``) is committed alone, with its
  completion; on any failure (storage's or a bug's) it is retried with
  backoff, and if the process stops first it stays queued in storage for the
  next start. No failure of one batch or job stops the writer.

Not thread-safe: one batcher per event loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Awaitable, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from .storage import Applied, BackendError, Job, Operation, Record, RegistrationStore

__all__ = ["QueueFull", "ShuttingDown", "WriteBatcher"]

log = logging.getLogger("addonreg.batcher")

Publish = Callable[[Sequence[Record]], Awaitable[None]]


class QueueFull(Exception):
    """The write queue is full; nothing of the write was queued."""


class ShuttingDown(QueueFull):
    """The batcher is draining for shutdown and takes no new work."""


class _Item:
    __slots__ = ("ops", "future", "job", "attempt", "deadline")

    def __init__(
        self,
        ops: Sequence[Operation],
        future: Optional[asyncio.Future],
        job: Optional[Job] = None,
        attempt: int = 0,
    ) -> None:
        self.ops = ops
        self.future = future
        self.job = job
        self.attempt = attempt
        self.deadline: Optional[float] = None  # loop time past which a submit is not written


class WriteBatcher:
    """Commits queued writes in batches; see the module docstring for its guarantees."""

    def __init__(
        self,
        store: RegistrationStore,
        publish: Publish,
        *,
        batch_size: int = 5000,
        max_queue: int = 50_000,
        window: float = 0.002,
        queue_timeout: Optional[float] = 2.0,
        retry_delays: Sequence[float] = (0.1, 0.5, 1, 2, 5),
    ) -> None:
        self.store = store
        self.publish = publish
        self.batch_size = batch_size
        self.max_queue = max_queue
        self.window = window
        self.queue_timeout = queue_timeout
        self.retry_delays = tuple(retry_delays)
        self._queue: Deque[_Item] = collections.deque()
        self._queued_ops = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: Optional[asyncio.Task] = None
        self._retries: Dict[str, asyncio.TimerHandle] = {}
        self._expiry: Optional[asyncio.TimerHandle] = None  # at the oldest submit's deadline
        self._samples: List[Tuple[int, float]] = []  # (operations, seconds) per commit
        self.stats = {
            "batches": 0,
            "operations": 0,
            "changes": 0,
            "failed_batches": 0,
            "expired": 0,
            "last_batch_size": 0,
            "last_commit_seconds": 0.0,
        }

    # Taking work -------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Operations waiting to be committed."""
        return self._queued_ops

    def has_room(self, count: int) -> bool:
        return not self._closing and self._queued_ops + count <= self.max_queue

    async def submit(self, ops: Sequence[Operation]) -> List[Applied]:
        """Commit ``ops`` (in one transaction, with others); their outcomes in order.

        Raises :class:`QueueFull` at once, ``BackendError`` (nothing written)
        or ``OutcomeUnknown``.
        """
        if not ops:
            return []
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        if self._queued_ops + len(ops) > self.max_queue:
            raise QueueFull(f"{self._queued_ops} operations already queued")
        loop = asyncio.get_running_loop()
        item = _Item(ops, loop.create_future())
        if self.queue_timeout is not None:
            item.deadline = loop.time() + self.queue_timeout
            if self._expiry is None:
                self._expiry = loop.call_at(item.deadline, self._expire)
        self._put(item)
        return await item.future  # type: ignore[misc]

    def submit_job(self, job: Job) -> None:
        """Queue a job already stored durably; its outcome goes to storage."""
        self._put(_Item(job.operations, None, job))

    def _put(self, item: _Item) -> None:
        self._queue.append(item)
        self._queued_ops += len(item.ops)
        self._wakeup.set()

    def _take(self) -> _Item:
        item = self._queue.popleft()
        self._queued_ops -= len(item.ops)
        return item

    def _expire(self) -> None:
        """Refuse the submits still queued past their deadline (a commit ahead of them
        stalled): not written. One timer for the queue, at the oldest submit's deadline,
        rather than one per submit (a timer armed and cancelled per PUT showed in its CPU)."""
        self._expiry = None
        now = asyncio.get_running_loop().time()
        late = [i for i in self._queue if i.deadline is not None and i.deadline <= now]
        if late:
            self._queue = collections.deque(
                i for i in self._queue if i.deadline is None or i.deadline > now
            )
        for item in late:
            self._queued_ops -= len(item.ops)
            self.stats["expired"] += 1
            if item.future is not None and not item.future.done():
                item.future.set_exception(
                    BackendError(f"not written: still queued after {self.queue_timeout} s")
                )
        # Deadlines grow in queue order: the next one due is the first left.
        due = next((i.deadline for i in self._queue if i.deadline is not None), None)
        if due is not None:
            self._expiry = asyncio.get_running_loop().call_at(due, self._expire)

    def drain_samples(self) -> List[Tuple[int, float]]:
        """(operations, commit seconds) of each commit since the last call (for metrics)."""
        samples, self._samples = self._samples, []
        return samples

    # The writer --------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def drain(self) -> None:
        """Refuse new work, commit what is queued, stop the writer."""
        self._closing = True
        for handle in self._retries.values():
            handle.cancel()  # the job stays queued in storage for the next start
        self._retries.clear()
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._queue[0].job is not None:
                item = self._take()
                await self._commit_job(item.job, item.attempt)  # type: ignore[arg-type]
                continue
            if len(self._queue) == 1 and self.window and not self._closing:
                await asyncio.sleep(self.window)  # a lone write: give others a moment to join
            batch: List[_Item] = []
            size = 0
            while (
                self._queue
                and self._queue[0].job is None
                and (not batch or size + len(self._queue[0].ops) <= self.batch_size)
            ):
                batch.append(self._take())
                size += len(batch[-1].ops)
            if batch:
                await self._commit(batch)

    async def _apply(
        self, ops: Sequence[Operation], job_id: Optional[str] = None
    ) -> Optional[List[Applied]]:
        started = time.perf_counter()
        try:
            results = await self.store.apply(ops, job_id)
        except BackendError:
            self.stats["failed_batches"] += 1
            raise
        elapsed = self.stats["last_commit_seconds"] = time.perf_counter() - started
        if len(self._samples) < 10_000:
            self._samples.append((len(ops), elapsed))
        self.stats["batches"] += 1
        self.stats["operations"] += len(ops)
        self.stats["last_batch_size"] = len(ops)
        changed = [a.record for a in results or () if a.changed and a.record is not None]
        self.stats["changes"] += len(changed)
        if changed:
            try:
                await self.publish(changed)
            except Exception:  # committed already: never fail the write for this
                log.exception("publishing %d changes failed", len(changed))
        return results

    async def _commit(self, batch: List[_Item]) -> None:
        ops = [op for item in batch for op in item.ops] if len(batch) > 1 else batch[0].ops
        try:
            results = await self._apply(ops)
        except Exception as exc:  # the writer must go on whatever one batch met
            if isinstance(exc, BackendError):
                log.warning("batch of %d operations failed: %s", len(ops), exc)
            else:
                log.exception("batch of %d operations failed", len(ops))
            for item in batch:
                if item.future is not None and not item.future.done():
                    item.future.set_exception(exc)
            return
        start = 0
        for item in batch:
            end = start + len(item.ops)
            if item.future is not None and not item.future.done():
                item.future.set_result(results[start:end])  # type: ignore[index]
            start = end

    async def _commit_job(self, job: Job, attempt: int) -> None:
        try:
            await self._apply(job.operations, job.id)
        except Exception as exc:
            # Whatever the job met, the writer goes on (the submits behind it must be
            # answered) and the job stays queued in storage, so reading it tells the
            # truth; a retry is safe: the job's completion commits with its writes.
            if self._closing:
                log.warning(
                    "job %s not finished before shutdown (%r); it stays queued", job.id, exc
                )
                return
            delay = self.retry_delays[min(attempt, len(self.retry_delays) - 1)]
            log.warning(
                "job %s failed (%r); retrying in %.1f s",
                job.id,
                exc,
                delay,
                exc_info=not isinstance(exc, BackendError),  # a bug: its traceback
            )
            self._retries[job.id] = asyncio.get_running_loop().call_later(
                delay, self._retry_job, job, attempt + 1
            )

    def _retry_job(self, job: Job, attempt: int) -> None:
        self._retries.pop(job.id, None)
        if not self._closing:
            self._put(_Item(job.operations, None, job, attempt))
