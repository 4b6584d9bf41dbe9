"""Invalidation: committed changes reach every process's cache.

After each commit the batcher calls :meth:`InvalidationBus.publish` with the
changed records. Every process is a :class:`Subscriber` of its bus (the
registry is one): its own changes are applied synchronously inside
``publish``, so the process that took a write answers the new state at once;
other processes' changes arrive as the bus carries them.

The buses, picked by the pub/sub URL's scheme (``load_bus``):

* ``local://`` — this process only (one process, tests).
* ``feed://`` — the default: every process follows storage's own change feed
  (``changes(since)``), so processes over one SQLite file or MySQL database
  see each other's changes within ``feed_interval`` plus a query, with no
  other service to run.
* ``redis://`` — Redis pub/sub for millisecond delivery across a fleet, with
  the storage feed kept as a slower backstop: a message lost, a Redis down
  or a link silently stalled costs at most the backstop interval.

Guarantees every bus gives (``bus/testing.py`` checks them on each):

* ``publish`` applies the records to this process before it returns, and
  never raises because other processes could not be told (the write is
  committed already).
* Records a subscriber applies come from this process's own commits or from
  storage: a message from another process only makes the subscriber forget
  keys (:meth:`Subscriber.forget`), so a forged message can cost a cache
  miss, never a wrong answer.
* When changes may have been missed (storage reset, a failure applying),
  the subscriber's ``invalidate_all`` is called; while the bus cannot follow
  changes, ``bus_state(False)`` (shorten cache lifetimes), then ``True``.

Not thread-safe: one bus per event loop, which is one per process here.
"""

from __future__ import annotations

import abc
import importlib
import logging
from typing import TYPE_CHECKING, Any, Dict, Optional, Protocol, Sequence
from urllib.parse import urlsplit

from ..storage import Key, Record

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["Subscriber", "Nobody", "BusError", "InvalidationBus", "load_bus"]

log = logging.getLogger("addonreg.bus")

COUNTERS = (
    "published",
    "received",
    "rejected",
    "malformed",
    "publish_errors",
    "reconnects",
    "resets",
    "feed_polls",
    "feed_errors",
)


class Subscriber(Protocol):
    """What a bus delivers to (``registry.Registry`` is one)."""

    def apply_changes(self, records: Sequence[Record]) -> None:
        """Committed changes, read from storage or made by this process."""

    def forget(self, keys: Sequence[Key]) -> None:
        """Another process says these files changed: drop what is cached of them."""

    def invalidate_all(self) -> None:
        """Changes may have been missed: drop everything."""

    def bus_state(self, connected: bool) -> None:
        """Changes are followed (True) or cannot be (False)."""


class Nobody:
    """A subscriber with no cache, for commands that only write (``import``)."""

    def apply_changes(self, records: Sequence[Record]) -> None:
        pass

    def forget(self, keys: Sequence[Key]) -> None:
        pass

    def invalidate_all(self) -> None:
        pass

    def bus_state(self, connected: bool) -> None:
        pass


class BusError(Exception):
    """The bus cannot carry changes. ``original`` is the driver's exception (logged only)."""

    def __init__(
        self, message: str = "pub/sub unavailable", original: Optional[BaseException] = None
    ) -> None:
        super().__init__(
            message if original is None else f"{message}: {original.__class__.__name__}: {original}"
        )
        self.original = original


class InvalidationBus(abc.ABC):
    """Carries committed changes to every process's cache; counters in :meth:`stats`."""

    def __init__(self) -> None:
        self._subscriber: Optional[Subscriber] = None
        self._connected: Optional[bool] = None  # None: not reported yet
        self._counts: Dict[str, int] = dict.fromkeys(COUNTERS, 0)

    async def start(self, subscriber: Subscriber) -> None:
        """Begin delivering to ``subscriber``; once, before :meth:`publish`."""
        if self._subscriber is not None:
            raise RuntimeError("bus already started")
        self._subscriber = subscriber

    @abc.abstractmethod
    async def publish(self, records: Sequence[Record]) -> None:
        """Deliver committed changes: to this process before returning, then to the others."""

    async def close(self) -> None:
        """Stop delivering and release connections. Idempotent."""

    async def heartbeat(self) -> None:
        """Return when changes are being followed; raise :class:`BusError` otherwise."""
        if self._connected is False:
            raise BusError("changes are not being followed")

    @property
    def connected(self) -> bool:
        """True while changes from the other processes are being followed."""
        return bool(self._connected)

    def stats(self) -> Dict[str, int]:
        return dict(self._counts)

    # For the backends ----------------------------------------------------

    def _require_started(self) -> Subscriber:
        if self._subscriber is None:
            raise RuntimeError("publish() before start()")
        return self._subscriber

    def _apply(self, records: Sequence[Record]) -> None:
        """The subscriber applies ``records``; a failure becomes a reset."""
        try:
            self._require_started().apply_changes(records)
        except Exception:
            log.exception("applying %d change(s) failed; dropping the cache", len(records))
            self._reset("a change could not be applied")

    def _forget(self, keys: Sequence[Key]) -> None:
        try:
            self._require_started().forget(keys)
        except Exception:
            log.exception("forgetting %d file(s) failed; dropping the cache", len(keys))
            self._reset("a change could not be applied")

    def _reset(self, reason: str) -> None:
        self._counts["resets"] += 1
        log.warning("dropping the cache: %s", reason)
        try:
            self._require_started().invalidate_all()
        except Exception:
            log.exception("invalidate_all failed")

    def _set_connected(self, connected: bool) -> None:
        """Record the state; tell the subscriber on a change (and on the first report)."""
        if self._connected is connected:
            return
        self._connected = connected
        try:
            self._require_started().bus_state(connected)
        except Exception:
            log.exception("bus_state(%s) failed", connected)


_MODULES = {"local": "local", "feed": "feed", "redis": "redis", "rediss": "redis"}


def load_bus(settings: Settings, store: Any, subscribe: bool = True) -> InvalidationBus:
    """The bus ``settings.pubsub`` names, over ``store`` (not yet started).

    ``subscribe=False`` (a command that only writes, such as ``import``)
    builds one that tells others and follows nothing.
    """
    scheme = urlsplit(settings.pubsub).scheme
    if scheme not in _MODULES:
        raise ValueError(
            f"unknown pub/sub scheme {scheme!r}: use feed://, local:// or redis://host:port/db"
        )
    module = importlib.import_module(f"{__name__}.{_MODULES[scheme]}")
    bus = module.load_from_config(settings, store, subscribe)
    if not isinstance(bus, InvalidationBus):
        raise TypeError(f"{module.__name__}.load_from_config did not return an InvalidationBus")
    return bus
