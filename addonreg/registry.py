"""The one service object the handlers call.

Reads go through the per-process caches (:mod:`addonreg.cache`) to storage;
writes go through the batcher (:mod:`addonreg.batcher`). Changes reach the
caches through :meth:`Registry.apply_changes` (called by the invalidation bus
for every committed change, in this process before the write is answered, and
in every other), :meth:`Registry.invalidate_all` (when changes may have been
missed) and :meth:`Registry.bus_state` (while pub/sub is down, cached answers
live only ``cache_disconnected_ttl`` seconds).
"""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .batcher import QueueFull, WriteBatcher
from .cache import _MISSING, EntryCodec, LookupCache
from .coalesce import Coalescer
from .storage import (JOB_QUEUED, REGISTERED, REVOKED, Applied, Job, Key,
                      Operation, Record, RegistrationStore)

__all__ = ["Registry", "MISSING", "RecordCodec"]

MISSING = _MISSING
"""What :meth:`Registry.cached_file` returns when the cache cannot answer."""

CacheKey = bytes
"""A file in the cache: the 32 bytes of its SHA-256, then its add-on id (ASCII)."""


def cache_key(key: Key) -> CacheKey:
    return bytes.fromhex(key[1]) + key[0].encode("ascii")


def file_key(ckey: CacheKey) -> Key:
    return ckey[32:].decode("ascii"), ckey[:32].hex()


class RecordCodec(EntryCodec[Record]):
    """Cache entries for files packed into one ``bytes`` each.

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
        flags = (self._REVOKED if value.status == REVOKED else 0) | \
            (self._NO_VERSION if value.version is None else 0)
        version = b"" if value.version is None else value.version.encode("utf-8", "surrogatepass")
        return self._HEAD.pack(stored_at, value.serial, value.updated_at, flags) + version

    def stored_at(self, entry: bytes) -> float:
        return self._STORED.unpack_from(entry)[0]

    def is_negative(self, entry: bytes) -> bool:
        return len(entry) == 8

    def fresh(self, key: CacheKey, entry: bytes, now: float, ttl: float,
              negative_ttl: float) -> Any:
        # EntryCodec.fresh in one unpack (this runs once per file of a lookup).
        if len(entry) == 8:
            return None if now - self._STORED.unpack_from(entry)[0] < negative_ttl \
                else MISSING
        stored_at, serial, updated_at, flags = self._HEAD.unpack_from(entry)
        if now - stored_at >= ttl:
            return MISSING
        return self._record(key, entry, serial, updated_at, flags)

    def value(self, key: CacheKey, entry: bytes) -> Optional[Record]:
        if len(entry) == 8:
            return None
        _, serial, updated_at, flags = self._HEAD.unpack_from(entry)
        return self._record(key, entry, serial, updated_at, flags)

    def _record(self, key: CacheKey, entry: bytes, serial: int, updated_at: int,
                flags: int) -> Record:
        version = None if flags & self._NO_VERSION else \
            entry[self._HEAD.size:].decode("utf-8", "surrogatepass")
        return Record(key[32:].decode("ascii"), key[:32].hex(), version,
                      REVOKED if flags & self._REVOKED else REGISTERED, serial, updated_at)


class Registry:
    def __init__(self, store: RegistrationStore, settings) -> None:
        self.store = store
        self.settings = settings
        self.files: LookupCache[CacheKey, Record] = LookupCache(
            settings.cache_size, settings.cache_ttl, settings.cache_negative_ttl,
            codec=RecordCodec())
        # An add-on's file list; None when it has none. Smaller: lists are rarer.
        self.addons: LookupCache[str, Tuple[Record, ...]] = LookupCache(
            max(settings.cache_size // 10, 100), settings.cache_ttl,
            settings.cache_negative_ttl)
        self._file_loader: Coalescer[CacheKey, Record] = Coalescer(self._fetch_files)
        self.checks: Dict[str, Any] = {"storage": store.heartbeat}
        self.batcher: Optional[WriteBatcher] = None
        self._lag_samples: List[float] = []
        # Requests with a body (writes, bulk lookups), counted from their headers
        # to their answer, so that shutdown lets them finish before the
        # batcher is drained.
        self.requests_in_flight = 0
        self.stopping = False  # SIGTERM received: every answer closes its connection
        self._idle = asyncio.Event()
        self._idle.set()

    # Reads ---------------------------------------------------------------

    def cached_file(self, key: Key) -> Any:
        """The cached answer for one file (a Record or None), or :data:`MISSING`."""
        return self.files.peek(cache_key(key))

    async def file(self, key: Key) -> Optional[Record]:
        """One file's record, or None when unknown. Raises BackendError."""
        return await self.files.get(cache_key(key), self._fill_file)

    async def _fill_file(self, ckey: CacheKey) -> Optional[Record]:
        # Concurrent misses of single files share one bulk query (see coalesce.py).
        return await self._file_loader.load(ckey)

    async def _fetch_files(self, ckeys: List[CacheKey]) -> Dict[CacheKey, Record]:
        if len(ckeys) == 1:
            record = await self.store.get(*file_key(ckeys[0]))
            return {ckeys[0]: record} if record is not None else {}
        return await self._fill_files(ckeys)

    async def lookup(self, keys: Sequence[Key]) -> List[Optional[Record]]:
        """Records for many files, in order (None for unknown), one storage call for all misses."""
        return await self.files.get_many([cache_key(k) for k in keys], self._fill_files)

    async def _fill_files(self, ckeys: List[CacheKey]) -> Dict[CacheKey, Record]:
        found = await self.store.get_many([file_key(k) for k in ckeys])
        return {cache_key(k): r for k, r in found.items()}

    async def addon_files(self, addon_id: str) -> Tuple[Record, ...]:
        """Every record of an add-on sorted by sha256; empty when it has none."""
        return await self.addons.get(addon_id, self._fill_addon) or ()

    async def _fill_addon(self, addon_id: str) -> Optional[Tuple[Record, ...]]:
        return tuple(await self.store.list_files(addon_id)) or None

    async def changes(self, since: int, limit: int) -> List[Record]:
        return await self.store.changes(since, limit)

    # Writes ----------------------------------------------------------------

    def request_started(self) -> None:
        self.requests_in_flight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self.requests_in_flight -= 1
        if self.requests_in_flight <= 0:
            self.requests_in_flight = 0
            self._idle.set()

    async def wait_for_requests(self, timeout: float) -> bool:
        """Wait until no counted request is in flight; False when ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def write(self, ops: Sequence[Operation]) -> List[Applied]:
        """Commit ``ops`` (group commit); raises QueueFull or BackendError."""
        return await self.batcher.submit(ops)

    async def write_async(self, owner: str, ops: Sequence[Operation]) -> str:
        """Store ``ops`` as a job (durably), queue it, return its id."""
        if not self.batcher.has_room(len(ops)):
            raise QueueFull("write queue full")
        job = Job(uuid.uuid4().hex, owner, JOB_QUEUED, tuple(ops))
        await self.store.create_job(job.id, owner, job.operations)
        self.batcher.submit_job(job)
        return job.id

    async def job(self, job_id: str) -> Optional[Job]:
        return await self.store.get_job(job_id)

    async def resume_jobs(self) -> int:
        """Queue the jobs a previous run stored but did not finish; how many."""
        jobs = await self.store.pending_jobs()
        for job in jobs:
            self.batcher.submit_job(job)
        return len(jobs)

    # Invalidation ----------------------------------------------------------

    def apply_changes(self, records: Sequence[Record]) -> None:
        for record in records:
            self.apply_change(record)
        if records and len(self._lag_samples) < 10_000:
            # From the commit (updated_at, the writer's clock) to now: one sample a message.
            self._lag_samples.append(max(time.time() - records[-1].updated_at / 1e6, 0.0))

    def drain_lag_samples(self) -> List[float]:
        samples, self._lag_samples = self._lag_samples, []
        return samples

    def bus_state(self, connected: bool) -> None:
        """Pub/sub went down (False) or came back (True): shorten or restore lifetimes."""
        s = self.settings
        if connected:
            ttl, negative = s.cache_ttl, s.cache_negative_ttl
        else:
            ttl = min(s.cache_ttl, s.cache_disconnected_ttl)
            negative = min(s.cache_negative_ttl, s.cache_disconnected_ttl)
        for cache in (self.files, self.addons):
            cache.ttl, cache.negative_ttl = ttl, negative

    def apply_change(self, record: Record) -> None:
        """A committed change: the cached answers for its file and add-on follow it.

        Only answers already cached are replaced: a bulk write of new files
        fills nobody's cache (readers' entries stay), and the next read of
        such a file finds the committed row in storage.
        """
        ckey = cache_key(record.key)
        current = self.files.current(ckey)
        if isinstance(current, Record) and current.serial > record.serial:
            return  # an older change delivered late
        self.files.refresh(ckey, record)
        self.addons.discard(record.addon_id)

    def invalidate_all(self) -> None:
        self.files.clear()
        self.addons.clear()

    # Operations --------------------------------------------------------------

    async def heartbeat(self) -> Dict[str, bool]:
        """Each check's result (True: ok); a check that hangs past its timeout failed."""
        async def run(check) -> bool:
            try:
                await asyncio.wait_for(check(), self.settings.heartbeat_timeout)
                return True
            except Exception:  # BackendError, BusError, a timeout: the check failed
                return False
        names = list(self.checks)
        results = await asyncio.gather(*(run(self.checks[n]) for n in names))
        return dict(zip(names, results))
