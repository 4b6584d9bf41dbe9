"""Where the static publisher (and the filter builder) read the change feed from.

:class:`StorageSource` reads storage directly (the publisher runs beside the
database); :class:`ServiceSource` reads a running service's
``GET /v1/changes`` (one publisher per nginx host, anywhere). Both give the
records changed after a serial, ascending, and the add-on lists the
service answers; failures are :class:`FeedError`.
"""

from __future__ import annotations

import abc
import calendar
import json
import time
from typing import Any, List, Optional, Tuple
from urllib.parse import quote

from . import media
from .storage import BackendError, Record, RegistrationStore

__all__ = ["FeedError", "FeedSource", "StorageSource", "ServiceSource", "feed_source"]


class FeedError(Exception):
    """The change feed could not be read."""


class FeedSource(abc.ABC):
    """Where the publisher reads changes and add-on lists from."""

    name = "source"

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    @abc.abstractmethod
    async def changes(self, since: int, limit: int) -> Tuple[List[Record], int]:
        """Records changed after ``since`` (ascending) and the next ``since``."""

    @abc.abstractmethod
    async def addon_list(self, addon_id: str) -> Optional[bytes]:
        """The body of the add-on's file list as the service answers it; None when it has none."""

    async def last_serial(self) -> Optional[int]:
        """The feed's newest serial when the source can tell (to detect a reset)."""
        return None

    async def read(self, since: int, page: int = 5000) -> Tuple[List[Record], int]:
        """Every record changed after ``since``, ascending, and the next ``since``."""
        records: List[Record] = []
        while True:
            found, next_since = await self.changes(since, page)
            if not found:
                return records, since
            records += found
            since = next_since

    async def snapshot(self) -> Tuple[List[Record], int]:
        """The whole registry and the serial it is at, as records in which a later
        record of a file wins (a file that changed during the read comes again)."""
        return await self.read(0)


class StorageSource(FeedSource):
    """Read the change feed straight from storage (the publisher runs beside the database)."""

    def __init__(self, store: RegistrationStore) -> None:
        self.store = store
        self.name = "storage"

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    async def changes(self, since: int, limit: int) -> Tuple[List[Record], int]:
        try:
            records = await self.store.changes(since, limit)
        except BackendError as exc:
            raise FeedError(str(exc)) from exc
        return records, records[-1].serial if records else since

    async def snapshot(self) -> Tuple[List[Record], int]:
        """The store's own scan (:meth:`RegistrationStore.snapshot`), then the changes
        committed after the serial read before it."""
        try:
            start = await self.store.last_serial()
            records: List[Record] = []
            async for page in self.store.snapshot():
                records += page
        except BackendError as exc:
            raise FeedError(str(exc)) from exc
        later, since = await self.read(start)
        records += later
        return records, since

    async def addon_list(self, addon_id: str) -> Optional[bytes]:
        try:
            records = await self.store.list_files(addon_id)
        except BackendError as exc:
            raise FeedError(str(exc)) from exc
        return media.addon_files_body(addon_id, records) if records else None

    async def last_serial(self) -> Optional[int]:
        try:
            return await self.store.last_serial()
        except BackendError as exc:
            raise FeedError(str(exc)) from exc


class ServiceSource(FeedSource):
    """Read the change feed from a running service (``GET /v1/changes``)."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        from tornado.httpclient import AsyncHTTPClient

        self.base = base_url.rstrip("/")
        self.name = self.base
        self.timeout = timeout
        self.http = AsyncHTTPClient(force_instance=True)

    async def close(self) -> None:
        self.http.close()

    async def _get(self, path: str):
        from tornado.httpclient import HTTPRequest

        try:
            request = HTTPRequest(self.base + path, request_timeout=self.timeout)
            return await self.http.fetch(request, raise_error=False)
        except OSError as exc:
            raise FeedError(f"{self.base}: {exc}") from exc

    async def changes(self, since: int, limit: int) -> Tuple[List[Record], int]:
        response = await self._get(f"/v1/changes?since={since}&limit={limit}")
        if response.code != 200:
            raise FeedError(f"GET /v1/changes answered {response.code}")
        try:
            data = json.loads(response.body)
            records = [
                Record(
                    c["addon_id"],
                    c["sha256"],
                    c["version"],
                    c["status"],
                    c["serial"],
                    _parse_timestamp(c["updated_at"]),
                )
                for c in data["changes"]
            ]
            return records, int(data["next_since"])
        except (ValueError, KeyError, TypeError) as exc:
            raise FeedError(f"GET /v1/changes: unexpected body: {exc}") from exc

    async def addon_list(self, addon_id: str) -> Optional[bytes]:
        response = await self._get(f"/v1/addons/{quote(addon_id, safe='')}/files")
        if response.code == 404:
            return None
        if response.code != 200:
            raise FeedError(f"GET /v1/addons/…/files answered {response.code}")
        return response.body


def feed_source(settings: Any, url: Optional[str]) -> FeedSource:
    """A running service's feed (``--from URL``), else storage's, as settings name it."""
    from .storage import load_storage

    return ServiceSource(url) if url else StorageSource(load_storage(settings))


def _parse_timestamp(text: str) -> int:
    """``2026-11-27T18:00:00.123456Z`` -> microseconds since the epoch."""
    seconds = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1_000_000 + int(text[20:26])
