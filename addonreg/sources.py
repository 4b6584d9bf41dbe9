"""Where the static publisher (and the filter builder) read the change feed from:
its sources. (The other reader of the feed, ``bus/feed.py``, is the invalidation
bus that keeps the processes' caches current.)

:class:`StorageSource` reads storage directly (the publisher runs beside the
database); :class:`ServiceSource` reads a running service's
``GET /v1/changes`` (one publisher per nginx host, anywhere). Both give the
records changed after a serial, ascending, and the add-on lists the
service answers; failures are :class:`FeedError`.

A service's feed is not trusted: every record is checked against the
contract (identifier rules of :mod:`addonreg.ids`, a status of the two, serials
ascending after the one asked) before any of its page is handed on, and an
add-on list must be the one asked for. A feed that breaks the contract is
:class:`FeedRejected`, naming the record's serial: unlike an outage it is not
retried, since asking again gets the same answer.
"""

from __future__ import annotations

import abc
import calendar
import json
import re
import time
from typing import TYPE_CHECKING, Any, List, Optional, Tuple
from urllib.parse import quote, urlsplit

from . import media
from .ids import InvalidIdentifier, check_version, is_addon_id, normalize_sha256
from .status import REGISTERED, REVOKED
from .storage import BackendError, Record, RegistrationStore

if TYPE_CHECKING:
    from .config import Settings

__all__ = [
    "FeedError",
    "FeedRejected",
    "FeedWentBackwards",
    "FeedSource",
    "StorageSource",
    "ServiceSource",
    "feed_source",
    "check_change",
]


class FeedError(Exception):
    """The change feed could not be read."""


class FeedRejected(FeedError):
    """The feed answered something the contract rules out (a record with a bad
    identifier, status or serial; a list of another add-on). Not an outage:
    whoever reads the feed stops rather than retries."""


class FeedWentBackwards(FeedError):
    """The feed's serials are below the reader's (a database restored or
    recreated): what the reader built from it must be built again."""


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

        try:
            parts = urlsplit(base_url)
            usable = parts.scheme in ("http", "https") and parts.hostname and parts.port != 0
        except ValueError as exc:  # parts.port out of range, a broken IPv6 address
            raise FeedError(f"{base_url!r} is not a URL: {exc}") from None
        if not usable:
            raise FeedError(f"{base_url!r} is not an http:// or https:// URL")
        self.base = base_url.rstrip("/")
        self.name = self.base
        self.timeout = timeout
        self.http = AsyncHTTPClient(force_instance=True)

    async def close(self) -> None:
        self.http.close()

    async def _get(self, path: str):
        from tornado.httpclient import HTTPClientError, HTTPRequest

        try:
            request = HTTPRequest(self.base + path, request_timeout=self.timeout)
            return await self.http.fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as exc:  # HTTPClientError: a timeout (599)
            raise FeedError(f"{self.base}: {exc}") from exc

    async def changes(self, since: int, limit: int) -> Tuple[List[Record], int]:
        response = await self._get(f"/v1/changes?since={since}&limit={limit}")
        path = f"{self.base}/v1/changes?since={since}&limit={limit}"
        if response.code != 200:
            raise FeedError(f"GET {path} answered {response.code}")
        try:
            data = json.loads(response.body)
        except (ValueError, RecursionError):
            # A proxy's error page or a cut-off body: an outage, tried again.
            raise FeedError(f"GET {path}: the answer is not JSON") from None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("changes"), list)
            or type(data.get("next_since")) is not int
        ):
            raise FeedRejected(f"GET {path}: not a change feed (no changes list and next_since)")
        items: List[Any] = data["changes"]
        if len(items) > limit:
            raise FeedRejected(f"GET {path}: {len(items)} records, over the limit asked")
        records: List[Record] = []
        for position, item in enumerate(items):
            try:
                records.append(check_change(item, records[-1].serial if records else since))
            except InvalidIdentifier as exc:
                where = (
                    f"the record at serial {item['serial']}"
                    if isinstance(item, dict) and type(item.get("serial")) is int
                    else f"record {position} of the page"
                )
                raise FeedRejected(
                    f"GET {path}: {where}: {exc}; nothing of this page was applied"
                ) from None
        next_since = data["next_since"]
        if next_since != (records[-1].serial if records else since):
            raise FeedRejected(
                f"GET {path}: next_since {next_since} is not the last record's serial"
            )
        return records, next_since

    async def addon_list(self, addon_id: str) -> Optional[bytes]:
        response = await self._get(f"/v1/addons/{quote(addon_id, safe='')}/files")
        path = f"{self.base}/v1/addons/{quote(addon_id, safe='')}/files"
        if response.code == 404:
            return None
        if response.code != 200:
            raise FeedError(f"GET {path} answered {response.code}")
        body: bytes = response.body
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise FeedError(f"GET {path}: the answer is not JSON") from None
        # Written as the service's answer for this add-on: it must be one.
        if (
            not isinstance(data, dict)
            or data.get("addon_id") != addon_id
            or not isinstance(data.get("files"), list)
            or not all(
                isinstance(f, dict)
                and f.get("addon_id") == addon_id
                and normalize_sha256(f.get("sha256")) == f.get("sha256")
                for f in data["files"]
            )
        ):
            raise FeedRejected(f"GET {path}: not the file list of {addon_id}")
        return body


def feed_source(settings: Settings, url: Optional[str]) -> FeedSource:
    """A running service's feed (``--from URL``), else storage's, as settings name it."""
    from .storage import load_storage

    return ServiceSource(url) if url else StorageSource(load_storage(settings))


_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", re.ASCII).fullmatch


def check_change(item: Any, after: int) -> Record:
    """One record of a service's change feed, checked against the contract: its
    identifiers (:mod:`addonreg.ids`; the sha256 as the service returns it, 64
    lowercase hex digits), its status, a serial above ``after``, its timestamp.

    Raises :class:`~addonreg.ids.InvalidIdentifier` saying what is wrong.
    """
    if not isinstance(item, dict):
        raise InvalidIdentifier("record", "a record is a JSON object")
    serial = item.get("serial")
    if type(serial) is not int or not after < serial < 2**63:
        raise InvalidIdentifier(
            "serial", f"serial must be an integer above {after} (ascending), got {_short(serial)}"
        )
    addon_id: Any = item.get("addon_id")
    if not is_addon_id(addon_id):
        raise InvalidIdentifier(
            "addon_id", f"addon_id breaks the identifier rules, got {_short(addon_id)}"
        )
    sha256 = item.get("sha256")
    if type(sha256) is not str or normalize_sha256(sha256) != sha256:
        raise InvalidIdentifier(
            "sha256", f"sha256 must be 64 lowercase hex digits, got {_short(sha256)}"
        )
    version = check_version(item.get("version"))
    status = item.get("status")
    if status not in (REGISTERED, REVOKED):
        raise InvalidIdentifier(
            "status", f"status must be registered or revoked, got {_short(status)}"
        )
    updated_at = item.get("updated_at")
    try:
        if type(updated_at) is not str or not _TIMESTAMP(updated_at):
            raise ValueError
        when = _parse_timestamp(updated_at)
    except ValueError:
        raise InvalidIdentifier(
            "updated_at", f"updated_at must be a UTC timestamp, got {_short(updated_at)}"
        ) from None
    return Record(addon_id, sha256, version, status, serial, when)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _parse_timestamp(text: str) -> int:
    """``2026-11-27T18:00:00.123456Z`` -> microseconds since the epoch."""
    seconds = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1_000_000 + int(text[20:26])
