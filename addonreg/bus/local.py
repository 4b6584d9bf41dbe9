"""The in-process bus (``local://``): for a deployment of one process, and tests.

Changes reach this process's cache only: there is no other process to tell,
so it is always connected and never resets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ..storage import Record
from . import InvalidationBus, Subscriber

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["LocalBus", "load_from_config"]


class LocalBus(InvalidationBus):
    """``publish`` applies the records to this process's cache, and that is all."""

    async def start(self, subscriber: Subscriber) -> None:
        await super().start(subscriber)
        self._set_connected(True)

    async def publish(self, records: Sequence[Record]) -> None:
        self._require_started()
        if records:
            self._apply(records)
            self._counts["published"] += 1


def load_from_config(settings: Settings, store: Any, subscribe: bool = True) -> LocalBus:
    return LocalBus()
