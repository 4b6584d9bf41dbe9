"""The LRU containers of the lookup caches: ``cachetools.Cache`` mappings.

:class:`SegmentedLRU` for the large caches (an approximate LRU in four
generations of plain dicts, less memory an entry), and an exact
``cachetools.LRUCache`` that counts its evictions for the small ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cachetools import Cache, LRUCache

__all__ = ["SegmentedLRU", "CountingLRU"]


class CountingLRU(LRUCache):
    """An LRUCache that counts its evictions (``popitem`` is only called to evict)."""

    evictions = 0

    def popitem(self) -> Any:
        self.evictions += 1
        return super().popitem()


class SegmentedLRU(Cache):
    """A ``cachetools.Cache`` that approximates LRU in four generations of plain dicts.

    Hand-written because of a measured cost: ``cachetools.LRUCache`` keeps an
    ``OrderedDict`` beside its data dict, a linked node an entry and several
    Python calls a hit; with small packed records in the cache, that
    bookkeeping was most of what an entry took (the figures are in
    bench/results/README.md). Here an entry lives in exactly one dict: new
    and touched entries go to the youngest generation; when it holds a
    quarter of ``maxsize``, the oldest generation is dropped whole (its
    entries are the ones not touched for longest) and a new youngest
    begins. So the cache holds 3/4 to all of ``maxsize``; a hit
    is one dict probe (up to four, and a move, for entries not touched
    lately); iteration and ``popitem`` go oldest first.
    """

    GENERATIONS = 4

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self._gens: list[dict[Any, Any]] = [{} for _ in range(self.GENERATIONS)]  # youngest first
        self._quarter = max(1, int(maxsize) // self.GENERATIONS)
        self.evictions = 0

    @property
    def youngest(self) -> dict[Any, Any]:
        """The youngest generation, to probe first (read-only use): most hits are
        there, and its own ``get`` is one C call where ``self[key]`` is a Python one.
        A key it lacks may still be in an older generation: then ``self[key]``."""
        return self._gens[0]

    def __getitem__(self, key: Any) -> Any:
        gens = self._gens
        try:
            return gens[0][key]
        except KeyError:
            pass
        for gen in gens[1:]:
            if key in gen:
                value = gen.pop(key)
                self._add(key, value)  # touched: young again
                return value
        raise KeyError(key)

    def _add(self, key: Any, value: Any) -> None:
        gens = self._gens
        gens[0][key] = value
        if len(gens[0]) >= self._quarter:
            self.evictions += len(gens[-1])
            gens.insert(0, {})
            del gens[-1]

    def __setitem__(self, key: Any, value: Any) -> None:
        gens = self._gens
        if key in gens[0]:
            gens[0][key] = value
            return
        for gen in gens[1:]:
            gen.pop(key, None)
        self._add(key, value)

    def __delitem__(self, key: Any) -> None:
        for gen in self._gens:
            if key in gen:
                del gen[key]
                return
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return any(key in gen for gen in self._gens)

    def __iter__(self) -> Iterator[Any]:
        for gen in reversed(self._gens):
            yield from list(gen)

    def __len__(self) -> int:
        return sum(map(len, self._gens))

    @property
    def currsize(self) -> int:
        return len(self)

    def clear(self) -> None:
        self._gens = [{} for _ in range(self.GENERATIONS)]
