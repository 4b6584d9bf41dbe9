"""Answers rendered from the files cache's entries, kept while those entries live.

A popular file is asked for many times between two of its changes, and
rendering its answer (a ``GET`` body, a bulk-lookup item as JSON and as
MessagePack) costs more than finding it. A :class:`Memo` keeps what was
rendered, by the key a request names, until the cache entry it was rendered
from changes (the cache tells it: :class:`~addonreg.cache.Follower`) or
expires (each item carries its entry's expiry). So a request whose files are
all memoised and fresh is answered in one pass of C-level loops over the
memo (:meth:`Memo.all_fresh`), with no Python call per file.

Rendered answers are several times the size of a packed entry, so a memo
holds only ``limit`` of them, and starts again when full: the hot files come
back at once. A memoised answer does not touch the LRU; a file evicted from
the LRU while memoised is still answered truthfully (changes reach the memo
whatever the LRU holds) and is fetched again once the memo restarts.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from itertools import repeat
from operator import attrgetter
from typing import Any, Generic, Optional, Protocol, TypeVar

__all__ = ["Memo", "Expiring"]

K = TypeVar("K", bound=Hashable)


class Expiring(Protocol):
    """A memo item: it says until when (the cache's clock) it may be answered."""

    @property
    def expires(self) -> float: ...


T = TypeVar("T", bound=Expiring)

_EXPIRES = attrgetter("expires")


class Memo(Generic[K, T]):
    """Items rendered from cache entries, by request key (``key_of`` maps a cache key to
    it), at most ``limit`` of them; ``never`` is an item that is never fresh."""

    def __init__(self, limit: int, key_of: Callable[[Any], K], never: T) -> None:
        self.limit = limit
        self._key_of = key_of
        self._never = never
        self._items: dict[K, T] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K, now: float) -> Optional[T]:
        """The fresh item of ``key``, or None."""
        item = self._items.get(key)
        return item if item is not None and now < item.expires else None

    def all_fresh(self, keys: Sequence[K], now: float) -> Optional[list[T]]:
        """The items of ``keys`` in order when every one is memoised and fresh, else None:
        C-level passes (a lookup, then the earliest expiry), no Python call per key."""
        items = list(map(self._items.get, keys, repeat(self._never)))
        return items if items and min(map(_EXPIRES, items)) > now else None

    def add(self, key: K, item: T) -> None:
        if len(self._items) >= self.limit:
            self._items.clear()
        self._items[key] = item

    # Follower: the cache's changes.

    def drop(self, cache_key: Any) -> None:
        self._items.pop(self._key_of(cache_key), None)

    def clear(self) -> None:
        self._items.clear()
