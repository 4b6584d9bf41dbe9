"""The in-process bus (``local://``): for a deployment of one process, and tests.

Changes reach this process's cache only; there is no other process to tell,
so it is always connected and never resets.
"""

from __future__ import annotations

from typing import Sequence

from ..storage import Record
from . import ChangesCallback, InvalidationBus, ResetCallback, StateCallback, _ignore_state

__all__ = ["LocalBus", "load_from_config"]


class LocalBus(InvalidationBus):
    """``publish`` calls ``on_changes`` synchronously, and that is all."""

    async def start(self, on_changes: ChangesCallback, on_reset: ResetCallback,
                    on_state: StateCallback = _ignore_state) -> None:
        self._bind(on_changes, on_reset, on_state)
        self._set_connected(True)

    async def publish(self, records: Sequence[Record]) -> None:
        self._require_started()
        if records:
            self._apply(records)
            self._counts["published"] += 1

    async def close(self) -> None:
        pass

    async def heartbeat(self) -> None:
        pass

    @property
    def connected(self) -> bool:
        return True


def load_from_config(settings) -> LocalBus:
    return LocalBus()
