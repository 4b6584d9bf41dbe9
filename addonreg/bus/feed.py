"""The storage-feed bus (``feed://``, the default): every process follows storage.

Each process reads storage's change feed (``changes(since)``, the records
whose serial is above the last one it applied) every ``interval`` seconds
and applies what it finds. Processes over one SQLite file or one MySQL
database thus see each other's changes — an ``addonreg import`` run from
another shell included — within ``interval`` plus one query (measured by
``bench/run.py --family feed``), with no other service to run. The cost is
one indexed query per interval per process while nothing changes.

* Records come from storage, so they are applied as they are; the feed
  keeps each file at its latest change, so nothing is missed between polls.
* While storage cannot be read the subscriber is told ``bus_state(False)``
  (cached answers then live only ``cache_disconnected_ttl``); polling goes on
  with backoff and resumes where it stopped, with nothing missed.
* A feed that went backwards (a database restored or recreated: its last
  serial is below ours, checked about once a second while idle) drops the
  cache and follows the new feed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Optional, Sequence

from ..storage import BackendError, Record, RegistrationStore
from . import BusError, InvalidationBus, Subscriber

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["FeedBus", "load_from_config"]

log = logging.getLogger("addonreg.bus.feed")


class FeedBus(InvalidationBus):
    """Follows ``store``'s change feed every ``interval`` seconds, ``page`` records at a time."""

    def __init__(
        self,
        store: RegistrationStore,
        interval: float = 0.025,
        page: int = 1000,
        check_every: float = 1.0,
    ) -> None:
        super().__init__()
        self.store = store
        self.interval = interval
        self.page = page
        self.check_every = check_every
        self.since: Optional[int] = None  # the last serial applied; None: not known yet
        self._checked = 0.0
        self._task: Optional[asyncio.Task] = None
        self._closed = False
        self._polling = asyncio.Lock()

    async def start(self, subscriber: Subscriber) -> None:
        """Start following from storage's current serial (or as soon as storage answers)."""
        await super().start(subscriber)
        try:
            self.since = await self.store.last_serial()
            self._set_connected(True)
        except BackendError as exc:
            log.warning("cannot read the change feed yet: %s", exc)
            self._set_connected(False)
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="addonreg-feed")

    async def publish(self, records: Sequence[Record]) -> None:
        self._require_started()
        if records:
            self._apply(records)  # the feed brings them back later: applying twice is harmless
            self._counts["published"] += 1

    async def heartbeat(self) -> None:
        """Read the feed now (rather than report the last poll, which may be in backoff)."""
        try:
            await self.poll()
        except BackendError as exc:
            raise BusError("cannot read the change feed", original=exc) from None
        self._set_connected(True)

    async def poll(self) -> int:
        """Apply what the feed holds past :attr:`since`; how many records."""
        async with self._polling:
            return await self._poll()

    async def _poll(self) -> int:
        self._counts["feed_polls"] += 1
        if self.since is None:
            self.since = await self.store.last_serial()
            self._reset("following the change feed from its current end")
        records = await self.store.changes(self.since, self.page)
        if records:
            self._apply(records)
            self._counts["received"] += len(records)
            self.since = records[-1].serial
        elif time.monotonic() - self._checked > self.check_every:
            self._checked = time.monotonic()
            last = await self.store.last_serial()
            if last < self.since:
                self.since = last
                self._reset(f"the change feed went back to serial {last}")
        return len(records)

    async def _follow(self) -> None:
        failures = 0
        while not self._closed:
            try:
                count = await self.poll()
            except BackendError as exc:
                failures += 1
                self._counts["feed_errors"] += 1
                if failures == 1:
                    log.warning("cannot read the change feed: %s", exc)
                self._set_connected(False)
                await asyncio.sleep(min(self.interval * 2**failures, 1.0))
                continue
            if failures:
                log.info("reading the change feed again after %d failure(s)", failures)
                failures = 0
            self._set_connected(True)
            if count < self.page:
                await asyncio.sleep(self.interval)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def load_from_config(
    settings: Settings, store: RegistrationStore, subscribe: bool = True
) -> InvalidationBus:
    if not subscribe:
        from .local import LocalBus

        return LocalBus()  # a writer-only command: the servers follow the feed themselves
    return FeedBus(store, interval=settings.feed_interval)
