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
import math
import time
import uuid
from operator import attrgetter
from typing import (
    TYPE_CHECKING,
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
from .cache import MISSING, LookupCache
from .media import file_body
from .memo import Memo
from .packing import CacheKey, RecordPacking, cache_key, cache_keys, storage_key
from .storage import (
    JOB_QUEUED,
    REGISTERED,
    Applied,
    Job,
    Key,
    Operation,
    Record,
    RegistrationStore,
)

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["Registry", "MISSING", "Answer", "LookupItem"]

Check = Callable[[], Awaitable[Any]]


class Answer(NamedTuple):
    """One file's answer as ``GET`` writes it: the record (None: unknown), its ETag
    and, when registered, the body; kept rendered until ``expires``."""

    record: Optional[Record]
    etag: str
    body: bytes
    expires: float


class LookupItem(NamedTuple):
    """One file's answer to a bulk lookup: its ``POST /v1/lookup`` result item as JSON
    and as MessagePack, whether it is registered, its 2013 ``POST /addons`` item (JSON:
    the id and hash echoed are the key's), and until when it may be answered (kept
    rendered: :mod:`addonreg.memo`)."""

    json: bytes
    msgpack: bytes
    registered: bool
    legacy: bytes
    expires: float


_ANSWERS = 4096  # GET answers kept rendered (the hot files); the memo restarts when full
_LOOKUP_ITEMS = 32768  # bulk-lookup items kept rendered, likewise
_JSON, _MSGPACK, _REGISTERED, _LEGACY = (
    attrgetter(f) for f in ("json", "msgpack", "registered", "legacy")
)


def render(record: Optional[Record], expires: float = 0.0) -> Answer:
    """A file's :class:`Answer` for its record (None: unknown)."""
    if record is None:
        return Answer(None, "", b"", expires)
    body = file_body(record) if record.status == REGISTERED else b""
    return Answer(record, f'"{record.serial}"', body, expires)


def lookup_item(key: Key, record: Optional[Record], expires: float = 0.0) -> LookupItem:
    """A file's :class:`LookupItem` for its record (None: unknown)."""
    if record is None:
        json, packed = media.lookup_item(key[0], key[1], "unknown", None)
        return LookupItem(json, packed, False, media.legacy_item(key, False), expires)
    json, packed = media.lookup_item(key[0], key[1], record.status, record.version)
    registered = record.status == REGISTERED
    return LookupItem(json, packed, registered, media.legacy_item(key, registered), expires)


class Registry:
    """Reads through the caches, writes through the batcher; built once per process.

    ``checks`` are the heartbeat's checks by name (each raises when failing).
    """

    def __init__(
        self,
        store: RegistrationStore,
        batcher: WriteBatcher,
        settings: Settings,
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
            self._fill_files,
            packing=RecordPacking(),
        )
        # An add-on's file list; None when it has none. Smaller: lists are rarer.
        self.addons: LookupCache[str, Tuple[Record, ...]] = LookupCache(
            max(settings.cache_size // 10, 100),
            settings.cache_ttl,
            settings.cache_negative_ttl,
            self._fill_addons,
        )
        # What the hot paths answer, rendered once per change of a file.
        self._answers: Memo[Key, Answer] = Memo(_ANSWERS, storage_key, render(None, -math.inf))
        self._lookup_items: Memo[Key, LookupItem] = Memo(
            _LOOKUP_ITEMS, storage_key, lookup_item(("", ""), None, -math.inf)
        )
        self.files.follow(self._answers)
        self.files.follow(self._lookup_items)
        self._lag_samples: List[float] = []

    # Reads ---------------------------------------------------------------

    def cached_answer(self, key: Key) -> Any:
        """The cached answer for one file, rendered (:class:`Answer`), or :data:`MISSING`.

        The hot path of every ``GET``: a popular file's body is rendered once
        per change, not once per request.
        """
        answer = self._answers.get(key, self.files.clock())
        if answer is not None:
            self.files.count_hits(1)
            return answer
        found = self.files.peek_expiring(cache_key(key))
        if found is MISSING:
            return MISSING
        answer = render(*found)
        self._answers.add(key, answer)
        return answer

    async def answer(self, key: Key) -> Answer:
        """One file's answer, from storage when it is not cached. Raises BackendError."""
        return render(await self.file(key))

    async def file(self, key: Key) -> Optional[Record]:
        """One file's record, or None when unknown. Raises BackendError."""
        return await self.files.get(cache_key(key))

    def lookup_body(self, items: Sequence[LookupItem], msgpack_wanted: bool) -> bytes:
        """The body of ``POST /v1/lookup`` (JSON, or msgpack) of the files' items."""
        which = _MSGPACK if msgpack_wanted else _JSON
        return media.lookup_results(list(map(which, items)), msgpack_wanted)

    def legacy_body(self, items: Sequence[LookupItem]) -> bytes:
        """The body of the 2013 ``POST /addons`` of the files' items (their keys echoed)."""
        return media.legacy_results(list(map(_LEGACY, items)))

    async def registered(self, keys: Sequence[Optional[Key]]) -> List[bool]:
        """Whether each file is registered (None, a key that breaks the rules: not)."""
        found = iter(await self.lookup_items([k for k in keys if k is not None]))
        return [key is not None and next(found).registered for key in keys]

    def memoised_items(self, pairs: Sequence[Tuple[str, str]]) -> Optional[List[LookupItem]]:
        """Each file's :class:`LookupItem` when every one is memoised and fresh, else None.

        One pass over the memo, with no Python call per file: a browser's
        add-ons are popular files. ``pairs`` need not be checked: only checked,
        normalised keys are ever memoised, so a pair that breaks the rules (or is
        not normalised) is simply not found.
        """
        items = self._lookup_items.all_fresh(pairs, self.files.clock())
        if items is not None:
            self.files.count_hits(len(items))
        return items

    async def lookup_items(self, keys: Sequence[Key]) -> List[LookupItem]:
        """Each file's :class:`LookupItem`, in order: from the memo, else from its cache
        entry (then memoised), else from storage, all the misses in one call. (Callers
        try :meth:`memoised_items` first: the one pass, when every file is memoised.)"""
        memo, now = self._lookup_items, self.files.clock()
        items: List[Optional[LookupItem]] = []
        misses: List[int] = []
        memo_hits = 0
        for i, key in enumerate(keys):
            item = memo.get(key, now)
            if item is not None:
                memo_hits += 1
            else:
                found = self.files.peek_expiring(cache_key(key))
                if found is MISSING:
                    misses.append(i)
                else:
                    item = lookup_item(key, *found)
                    memo.add(key, item)
            items.append(item)
        self.files.count_hits(memo_hits)
        if misses:
            # Not memoised: a fill may have read the state before a change it raced.
            records = await self.files.fetch_many(cache_keys([keys[i] for i in misses]))
            for i, record in zip(misses, records):
                items[i] = lookup_item(keys[i], record)
        return items  # type: ignore[return-value]  # every None was replaced

    async def _fill_files(self, ckeys: List[CacheKey]) -> Dict[CacheKey, Record]:
        """The files cache's one way to storage (see :mod:`addonreg.cache`)."""
        keys = list(map(storage_key, ckeys))
        if len(keys) == 1:
            record = await self.store.get(*keys[0])
            return {ckeys[0]: record} if record is not None else {}
        found = await self.store.get_many(keys)
        return {ckey: found[key] for ckey, key in zip(ckeys, keys) if key in found}

    async def addon_files(self, addon_id: str) -> Tuple[Record, ...]:
        """Every record of an add-on sorted by sha256; empty when it has none."""
        return await self.addons.get(addon_id) or ()

    async def _fill_addons(self, addon_ids: List[str]) -> Dict[str, Tuple[Record, ...]]:
        """The add-ons cache's way to storage: the lists missed in one loop pass."""
        lists = await asyncio.gather(*map(self.store.list_files, addon_ids))
        return {a: tuple(files) for a, files in zip(addon_ids, lists) if files}

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
