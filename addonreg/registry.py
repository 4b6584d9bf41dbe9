"""The one service object the handlers call.

Reads go through the per-process caches (:mod:`addonreg.cache`) to storage;
writes go through the batcher (:mod:`addonreg.batcher`). Changes reach the
caches through :meth:`Registry.apply_changes` (the invalidation bus calls it
for every committed change: in this process before the write is answered,
and in every other), :meth:`Registry.invalidate_all` (when changes may have
been missed) and :meth:`Registry.bus_state` (while the bus is down, cached
answers live only ``cache_disconnected_ttl`` seconds).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
)

from . import media
from .batcher import QueueFull, WriteBatcher
from .cache import MISSING, CacheKey, LookupCache, RecordPacking, cache_key, file_key
from .coalesce import Coalescer
from .media import file_body
from .storage import JOB_QUEUED, REGISTERED, Applied, Job, Key, Operation, Record, RegistrationStore

__all__ = ["Registry", "MISSING", "Answer"]

Check = Callable[[], Awaitable[Any]]


class Answer(NamedTuple):
    """One file's answer as ``GET`` writes it: the record (None: unknown), its ETag
    and, when registered, the body."""

    record: Optional[Record]
    etag: str
    body: bytes


_RENDERED = 4096  # answers kept rendered (the hot files); the memo restarts when full
_FRAGMENTS = 32768  # bulk-lookup items kept rendered, likewise


def render(record: Optional[Record]) -> Answer:
    """A file's :class:`Answer` for its record (None: unknown)."""
    if record is None:
        return Answer(None, "", b"")
    body = file_body(record) if record.status == REGISTERED else b""
    return Answer(record, f'"{record.serial}"', body)


class Registry:
    """Reads through the caches, writes through the batcher; built once per process.

    ``checks`` are the heartbeat's checks by name (each raises when failing).
    """

    def __init__(self, store: RegistrationStore, batcher: WriteBatcher, settings: Any,
                 checks: Mapping[str, Check]) -> None:
        self.store = store
        self.batcher = batcher
        self.settings = settings
        self.checks = dict(checks)
        self.files: LookupCache[CacheKey, Record] = LookupCache(
            settings.cache_size, settings.cache_ttl, settings.cache_negative_ttl,
            packing=RecordPacking())
        # An add-on's file list; None when it has none. Smaller: lists are rarer.
        self.addons: LookupCache[str, Tuple[Record, ...]] = LookupCache(
            max(settings.cache_size // 10, 100), settings.cache_ttl,
            settings.cache_negative_ttl)
        # Concurrent misses of single files share one bulk query.
        self._file_loader: Coalescer[CacheKey, Record] = Coalescer(self._fetch_files)
        self._lag_samples: List[float] = []
        self._rendered: Dict[CacheKey, Tuple[Any, Answer]] = {}
        self._fragments: Dict[CacheKey, Tuple[Any, bytes, bytes]] = {}

    # Reads ---------------------------------------------------------------

    def cached_answer(self, key: Key) -> Any:
        """The cached answer for one file, rendered (:class:`Answer`), or :data:`MISSING`.

        The hot path of every ``GET``: a popular file's body is rendered once
        per change, not once per request (the memo is keyed by the cache
        entry itself, which a change replaces).
        """
        ckey = cache_key(key)
        entry = self.files.peek_entry(ckey)
        if entry is MISSING:
            return MISSING
        memo = self._rendered.get(ckey)
        if memo is not None and memo[0] is entry:
            return memo[1]
        answer = render(self.files.value_of(ckey, entry))
        if len(self._rendered) >= _RENDERED:
            self._rendered.clear()
        self._rendered[ckey] = (entry, answer)
        return answer

    def cached_file(self, key: Key) -> Any:
        """The cached answer for one file (a Record or None), or :data:`MISSING`."""
        return self.files.peek(cache_key(key))

    async def file(self, key: Key) -> Optional[Record]:
        """One file's record, or None when unknown. Raises BackendError."""
        return await self.files.get(cache_key(key), self._file_loader.load)

    async def _fetch_files(self, ckeys: List[CacheKey]) -> Dict[CacheKey, Record]:
        if len(ckeys) == 1:
            record = await self.store.get(*file_key(ckeys[0]))
            return {ckeys[0]: record} if record is not None else {}
        return await self._fill_files(ckeys)

    async def lookup(self, keys: Sequence[Key]) -> List[Optional[Tuple[str, Optional[str]]]]:
        """(status, version) of many files, in order (None for unknown), one storage call
        for all misses: what the bulk lookups answer (no Record is built for a hit)."""
        return await self.files.get_many([cache_key(k) for k in keys], self._fill_files,
                                         brief=True)

    async def lookup_body(self, keys: Sequence[Key], msgpack_wanted: bool) -> bytes:
        """The body of ``POST /v1/lookup`` for ``keys`` (JSON, or msgpack), misses filled
        by one storage call.

        Each cached file's result item is rendered once per change and kept (keyed
        by its cache entry, which a change replaces): the body is those items
        joined, with no dict built nor encoded per file of the request.
        """
        ckeys = [cache_key(k) for k in keys]
        items: List[bytes] = []
        missing: List[int] = []
        memo, which = self._fragments, 2 if msgpack_wanted else 1
        for i, entry in enumerate(self.files.fresh_entries(ckeys)):
            if entry is MISSING:
                missing.append(i)
                items.append(b"")
                continue
            rendered = memo.get(ckeys[i])
            if rendered is None or rendered[0] is not entry:
                if len(memo) >= _FRAGMENTS:
                    memo.clear()
                rendered = memo[ckeys[i]] = (entry, *media.lookup_items(
                    keys[i], self.files.brief_of(ckeys[i], entry)))
            items.append(rendered[which])
        if missing:
            briefs = await self.files.get_many([ckeys[i] for i in missing], self._fill_files,
                                               brief=True)
            for i, brief in zip(missing, briefs):
                items[i] = media.lookup_items(keys[i], brief)[which - 1]
        return media.lookup_results(items, msgpack_wanted)

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

    async def write(self, ops: Sequence[Operation]) -> List[Applied]:
        """Commit ``ops`` (group commit); raises QueueFull, BackendError or OutcomeUnknown."""
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

    def apply_change(self, record: Record) -> None:
        """A committed change: the cached answers for its file and add-on follow it.

        Only answers already cached are replaced: a bulk write of new files
        fills nobody's cache, and the next read of such a file finds the
        committed row in storage.
        """
        ckey = cache_key(record.key)
        current = self.files.current(ckey)
        if isinstance(current, Record) and current.serial > record.serial:
            return  # an older change delivered late
        self.files.refresh(ckey, record)
        self.addons.discard(record.addon_id)

    def forget(self, keys: Sequence[Key]) -> None:
        """Another process changed these files: the next reads go to storage."""
        for key in keys:
            self.files.discard(cache_key(key))
            self.addons.discard(key[0])

    def invalidate_all(self) -> None:
        self.files.clear()
        self.addons.clear()

    def bus_state(self, connected: bool) -> None:
        """The bus went down (False) or came back (True): shorten or restore lifetimes."""
        s = self.settings
        ttl, negative = s.cache_ttl, s.cache_negative_ttl
        if not connected:
            ttl, negative = min(ttl, s.cache_disconnected_ttl), \
                min(negative, s.cache_disconnected_ttl)
        for cache in (self.files, self.addons):
            cache.ttl, cache.negative_ttl = ttl, negative

    # Operations --------------------------------------------------------------

    async def heartbeat(self) -> Dict[str, bool]:
        """Each check's result (True: ok); a check that hangs past its timeout failed."""
        async def run(check: Check) -> bool:
            try:
                await asyncio.wait_for(check(), self.settings.heartbeat_timeout)
                return True
            except Exception:  # BackendError, BusError, a timeout: the check failed
                return False
        names = list(self.checks)
        results = await asyncio.gather(*(run(self.checks[n]) for n in names))
        return dict(zip(names, results))
