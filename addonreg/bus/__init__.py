"""Invalidation bus: carries committed changes to every process's cache.

After each commit the batcher calls :meth:`InvalidationBus.publish` with the
changed records. Every process, the publishing one included, is a subscriber:
its ``on_changes`` callback applies the records to its cache
(:meth:`addonreg.registry.Registry.apply_change`), and its ``on_reset``
callback drops the whole cache (:meth:`~addonreg.registry.Registry.invalidate_all`)
when changes may have been missed.

A bus is picked by the scheme of the pub/sub URL (``local://``,
``redis://host:port/db``): the module of that name exports
``load_from_config(settings)``. It is built once per process, never per
request.

Guarantees every bus gives:

* :meth:`~InvalidationBus.publish` calls ``on_changes`` of its own process
  before it returns, so the process that took a write answers the new state
  at once; and it never raises because other processes could not be reached
  (the write is already committed).
* A process that may have missed a change from another process calls
  ``on_reset`` (see the backend for how it knows) before applying anything
  newer.
* Callbacks are plain functions called on the event loop. An exception in
  ``on_changes`` is logged and turned into a reset (a cache that failed to
  apply a change must not keep serving the old state); an exception in
  ``on_reset`` or ``on_state`` is logged.

Not thread-safe: one bus per event loop, which is one per process here.
"""

from __future__ import annotations

import abc
import importlib
import logging
from typing import Callable, Dict, Optional, Sequence
from urllib.parse import urlsplit

from ..storage import Record

__all__ = ["BusError", "InvalidationBus", "load_bus"]

log = logging.getLogger("addonreg.bus")

ChangesCallback = Callable[[Sequence[Record]], None]
ResetCallback = Callable[[], None]
StateCallback = Callable[[bool], None]


def _ignore_state(connected: bool) -> None:
    pass


class BusError(Exception):
    """The bus cannot carry changes. ``original`` is the driver's exception (logged, never shown)."""

    def __init__(self, message: str = "pub/sub unavailable",
                 original: Optional[BaseException] = None) -> None:
        super().__init__(message if original is None
                         else f"{message}: {original.__class__.__name__}: {original}")
        self.original = original


class InvalidationBus(abc.ABC):
    """Carries committed changes to every process's cache.

    Counters for metrics, in :meth:`stats`: ``published`` (messages handed to
    the other processes), ``received`` (messages applied from other
    processes), ``resets`` (calls of ``on_reset``), ``reconnects``
    (subscriptions made again after being lost), ``publish_errors``
    (messages the other processes will never get: each one leads them to a
    reset), ``malformed`` (messages ignored because they could not be read).
    """

    def __init__(self) -> None:
        self._on_changes: Optional[ChangesCallback] = None
        self._on_reset: Optional[ResetCallback] = None
        self._on_state: StateCallback = _ignore_state
        self._connected: Optional[bool] = None  # None: not reported yet
        self._counts: Dict[str, int] = dict.fromkeys(
            ("published", "received", "resets", "reconnects", "publish_errors", "malformed"), 0)

    @abc.abstractmethod
    async def start(self, on_changes: ChangesCallback, on_reset: ResetCallback,
                    on_state: StateCallback = _ignore_state) -> None:
        """Begin delivering; call once, before :meth:`publish`.

        ``on_changes(records)``: apply these committed changes (called for
        messages from other processes, and synchronously inside
        :meth:`publish` for this process's own). ``on_reset()``: changes may
        have been missed; drop the whole cache. ``on_state(connected)``: the
        link to the other processes went down (False) or came up (True);
        called on every change of :attr:`connected`, and once for the
        outcome of the first connection attempt (so a bus whose backend is
        down at start-up reports False). While down, the caller should
        shorten its cache lifetimes.
        """

    @abc.abstractmethod
    async def publish(self, records: Sequence[Record]) -> None:
        """Deliver committed changes: to this process first, then to every other.

        ``on_changes(records)`` has been called when this returns. Delivery
        to the other processes never raises to the caller: failures are
        logged, counted (``publish_errors``), and make the other processes
        reset their caches. An empty ``records`` does nothing. Raises
        ``RuntimeError`` when called before :meth:`start`.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop delivering and release connections. Idempotent."""

    @abc.abstractmethod
    async def heartbeat(self) -> None:
        """Return when the link to the other processes is up; raise :class:`BusError` otherwise."""

    @property
    def connected(self) -> bool:
        """True while changes from the other processes are being received."""
        return bool(self._connected)

    def stats(self) -> Dict[str, int]:
        """The counters (see the class docstring); a copy."""
        return dict(self._counts)

    # For the backends ----------------------------------------------------

    def _bind(self, on_changes: ChangesCallback, on_reset: ResetCallback,
              on_state: StateCallback) -> None:
        if self._on_changes is not None:
            raise RuntimeError("bus already started")
        self._on_changes, self._on_reset, self._on_state = on_changes, on_reset, on_state

    def _require_started(self) -> None:
        if self._on_changes is None:
            raise RuntimeError("publish() before start()")

    def _apply(self, records: Sequence[Record]) -> None:
        """``on_changes(records)``; a failure becomes a reset."""
        try:
            self._on_changes(records)  # type: ignore[misc]
        except Exception:
            log.exception("applying %d change(s) failed; dropping the cache", len(records))
            self._reset("a change could not be applied")

    def _reset(self, reason: str) -> None:
        """``on_reset()``, counted and logged with ``reason``."""
        self._counts["resets"] += 1
        log.warning("dropping the cache: %s", reason)
        try:
            self._on_reset()  # type: ignore[misc]
        except Exception:
            log.exception("on_reset failed")

    def _set_connected(self, connected: bool) -> None:
        """Record the link state; ``on_state`` on a change (and on the first report)."""
        if self._connected is connected:
            return
        self._connected = connected
        try:
            self._on_state(connected)
        except Exception:
            log.exception("on_state(%s) failed", connected)


_MODULES = {"local": "local", "redis": "redis", "rediss": "redis"}


def load_bus(settings) -> InvalidationBus:
    """Build the bus the pub/sub URL (``settings.pubsub``) names (not yet started).

    Raises ``ValueError`` for an unknown scheme or a bad URL option.
    """
    scheme = urlsplit(settings.pubsub).scheme
    if scheme not in _MODULES:
        raise ValueError(f"unknown pub/sub scheme {scheme!r}: use local:// or redis://host:port/db")
    module = importlib.import_module(f"{__name__}.{_MODULES[scheme]}")
    bus = module.load_from_config(settings)
    if not isinstance(bus, InvalidationBus):
        raise TypeError(f"{module.__name__}.load_from_config did not return an InvalidationBus")
    return bus
