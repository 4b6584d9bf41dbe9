"""A small private HTTP cache for the single-file reads (RFC 9111, the parts the API uses).

An answer is stored when its ``Cache-Control`` has ``max-age`` (and neither
``no-store`` nor ``no-cache``/``private`` concerns apply: the service sends
``public, max-age=N`` on ``200``, ``404`` and ``410``). While fresh it is
answered from here without a request. Once stale, an entry that has an
``ETag`` is revalidated with ``If-None-Match``: a ``304`` makes it fresh again
for the ``max-age`` the ``304`` carries; any other answer replaces it. An
entry without an ``ETag`` (a ``404``) is simply fetched again.

Bounded (least recently used entries go first) and safe to share between
threads (one lock around each operation; nothing waits while holding it).
"""

from __future__ import annotations

import collections
import dataclasses
import re
import threading
import time
from collections.abc import Callable, Mapping

__all__ = ["Entry", "ResponseCache", "max_age"]

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_STORE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|=|$)", re.IGNORECASE)


def max_age(cache_control: str | None) -> int | None:
    """The seconds an answer may be reused, or None when it may not be stored."""
    if not cache_control or _NO_STORE.search(cache_control):
        return None
    match = _MAX_AGE.search(cache_control)
    return int(match.group(1)) if match else None


@dataclasses.dataclass
class Entry:
    """A stored answer: its status, body and validator, and until when it is fresh."""

    status: int
    body: bytes
    content_type: str
    etag: str | None
    expires: float


class ResponseCache:
    """At most ``max_entries`` answers, keyed by request path."""

    def __init__(
        self, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: collections.OrderedDict[str, Entry] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry | None:
        """The entry (fresh or stale), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def fresh(self, entry: Entry) -> bool:
        return self.clock() < entry.expires

    def store(self, key: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """Keep an answer when its ``Cache-Control`` allows; drop the old one otherwise."""
        age = max_age(headers.get("Cache-Control"))
        with self._lock:
            if age is None:
                self._entries.pop(key, None)
                return
            self._entries[key] = Entry(
                status,
                body,
                headers.get("Content-Type", ""),
                headers.get("ETag"),
                self.clock() + age,
            )
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def revalidated(self, key: str, entry: Entry, headers: Mapping[str, str]) -> Entry:
        """A ``304`` for ``entry``: fresh again for the ``304``'s ``max-age``."""
        age = max_age(headers.get("Cache-Control"))
        with self._lock:
            entry.expires = self.clock() + (age or 0)
            entry.etag = headers.get("ETag") or entry.etag
            self._entries[key] = entry
        return entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
