"""The one service object the handlers call.

Reads go through the per-process caches (:mod:`addonreg.cache`) to storage;
changes reach the caches through :meth:`Registry.apply_change` (called for
every committed change, in this process and, through pub/sub, in every other)
and :meth:`Registry.invalidate_all` (when changes may have been missed).
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .cache import _MISSING, LookupCache
from .storage import BackendError, Key, Record, RegistrationStore

__all__ = ["Registry", "MISSING"]

MISSING = _MISSING
"""What :meth:`Registry.cached_file` returns when the cache cannot answer."""


class Registry:
    def __init__(self, store: RegistrationStore, settings) -> None:
        self.store = store
        self.settings = settings
        self.files: LookupCache[Key, Record] = LookupCache(
            settings.cache_size, settings.cache_ttl, settings.cache_negative_ttl)
        # An add-on's file list; None when it has none. Smaller: lists are rarer.
        self.addons: LookupCache[str, Tuple[Record, ...]] = LookupCache(
            max(settings.cache_size // 10, 100), settings.cache_ttl,
            settings.cache_negative_ttl)
        self.checks: Dict[str, Any] = {"storage": store.heartbeat}

    # Reads ---------------------------------------------------------------

    def cached_file(self, key: Key) -> Any:
        """The cached answer for one file (a Record or None), or :data:`MISSING`."""
        return self.files.peek(key)

    async def file(self, key: Key) -> Optional[Record]:
        """One file's record, or None when unknown. Raises BackendError."""
        return await self.files.get(key, self._fill_file)

    async def _fill_file(self, key: Key) -> Optional[Record]:
        return await self.store.get(*key)

    async def lookup(self, keys: Sequence[Key]) -> List[Optional[Record]]:
        """Records for many files, in order (None for unknown), one storage call for all misses."""
        return await self.files.get_many(keys, self.store.get_many)

    async def addon_files(self, addon_id: str) -> Tuple[Record, ...]:
        """Every record of an add-on sorted by sha256; empty when it has none."""
        return await self.addons.get(addon_id, self._fill_addon) or ()

    async def _fill_addon(self, addon_id: str) -> Optional[Tuple[Record, ...]]:
        return tuple(await self.store.list_files(addon_id)) or None

    async def changes(self, since: int, limit: int) -> List[Record]:
        return await self.store.changes(since, limit)

    # Invalidation ----------------------------------------------------------

    def apply_change(self, record: Record) -> None:
        """A committed change: the cached answers for its file and add-on follow it."""
        current = self.files.current(record.key)
        if isinstance(current, Record) and current.serial > record.serial:
            return  # an older change delivered late
        self.files.put(record.key, record)
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
            except (BackendError, asyncio.TimeoutError, OSError):
                return False
        names = list(self.checks)
        results = await asyncio.gather(*(run(self.checks[n]) for n in names))
        return dict(zip(names, results))
