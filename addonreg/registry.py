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
from operator import itemgetter
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
from .cache import MISSING, CacheKey, LookupCache, RecordPacking, cache_key, cache_keys, file_key
from .coalesce import Coalescer
from .media import file_body
from .storage import (
    JOB_QUEUED,
    REGISTERED,
    REVOKED,
    Applied,
    Job,
    Key,
    Operation,
    Record,
    RegistrationStore,
)

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


_MISS = (None, 0.0, False, b"", b"", False)  # a file LookupCache.rendered has no entry for


def _lookup_item(ckey: CacheKey, brief: Optional[Tuple[str, Optional[str]]]) -> Tuple[Any, ...]:
    """A file's lookup item (JSON, msgpack) from its (status, version), and "registered"."""
    return (*media.lookup_items(file_key(ckey), brief), brief is not None and brief[0] != REVOKED)


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

    def __init__(
        self,
        store: RegistrationStore,
        batcher: WriteBatcher,
        settings: Any,
        checks: Mapping[str, Check],
    ) -> None:
        self.store = store
        self.batcher = batcher
        self.settings = settings
        self.checks = dict(checks)
        self.files: LookupCache[CacheKey, Record] = LookupCache(
            settings.cache_size,
            settings.cache_ttl,
            settings.cache_negative_ttl,
            packing=RecordPacking(),
        )
        # An add-on's file list; None when it has none. Smaller: lists are rarer.
        self.addons: LookupCache[str, Tuple[Record, ...]] = LookupCache(
            max(settings.cache_size // 10, 100), settings.cache_ttl, settings.cache_negative_ttl
        )
        # Concurrent misses of single files share one bulk query.
        self._file_loader: Coalescer[CacheKey, Record] = Coalescer(self._fetch_files)
        self._lag_samples: List[float] = []
        self._rendered: Dict[CacheKey, Tuple[Any, Answer]] = {}
        self._fragments: Dict[CacheKey, Tuple[Any, ...]] = {}

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

    async def lookup_body(self, keys: Sequence[Key], msgpack_wanted: bool) -> bytes:
        """The body of ``POST /v1/lookup`` for ``keys`` (JSON, or msgpack): the files'
        items, each rendered once per change (:meth:`_items`), joined."""
        which = itemgetter(4 if msgpack_wanted else 3)
        return media.lookup_results(list(map(which, await self._items(keys))), msgpack_wanted)

    async def registered(self, keys: Sequence[Optional[Key]]) -> List[bool]:
        """Whether each file is registered (None, a key that breaks the rules: not)."""
        found = iter(await self._items([k for k in keys if k is not None]))
        return [key is not None and next(found)[5] for key in keys]

    async def _items(self, keys: Sequence[Key]) -> List[Tuple[Any, ...]]:
        """Each file's memo item: its ``POST /v1/lookup`` item as JSON (3) and msgpack (4),
        and whether it is registered (5); misses filled by one storage call.

        A cached file's item is rendered once per change and kept, keyed by its cache
        entry (:meth:`LookupCache.rendered`): no dict is built nor encoded per file.
        """
        ckeys = cache_keys(keys)
        items = self.files.rendered(ckeys, self._fragments, _FRAGMENTS, _lookup_item, _MISS)
        missing = [i for i, item in enumerate(items) if item is _MISS]
        if missing:
            records = await self.files.get_many([ckeys[i] for i in missing], self._fill_files)
            for i, r in zip(missing, records):
                items[i] = (
                    None,
                    0.0,
                    False,
                    *_lookup_item(ckeys[i], None if r is None else (r.status, r.version)),
                )
        return items

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
            ttl, negative = (
                min(ttl, s.cache_disconnected_ttl),
                min(negative, s.cache_disconnected_ttl),
            )
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

    async def storage_nodes(self) -> List[Dict[str, Any]]:
        """Each storage node, its role and state (none for one-node storage); a node
        that does not answer within ``heartbeat_timeout`` is shown unreachable."""
        try:
            return await asyncio.wait_for(self.store.topology(), self.settings.heartbeat_timeout)
        except Exception:
            return [{"node": "?", "role": "write", "reachable": False, "error": "timed out"}]
