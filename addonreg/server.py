"""One server process, built from small named steps.

:class:`Service` owns what a process builds once: storage, registry (with its
caches), the Tornado application and the HTTP server. :func:`run` is the
``addonreg serve`` command: choose the event loop, start the service, stop on
SIGTERM/SIGINT (stop accepting, finish what is in flight, close storage) and
exit 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from typing import List, Optional

import tornado.httpserver
import tornado.netutil

from .app import make_app
from .batcher import WriteBatcher
from .bus import InvalidationBus, load_bus
from .config import Settings
from .hawk import HawkAuthenticator
from .logs import configure_logging
from .metrics import MetricsPump, process_exited
from .nonces import NonceStore, load_nonce_store
from .registry import Registry
from .storage import BackendError, RegistrationStore, load_storage
from .web import InFlight

__all__ = ["Service", "run"]

log = logging.getLogger("addonreg.server")

# Tornado cuts a body larger than this without an answer; the handlers answer
# 413 well below it, from Content-Length or while the body streams in.
_HARD_BODY_LIMIT_FACTOR = 4


class Service:
    """What one process builds once: storage, bus, registry, batcher, app, HTTP server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: Optional[RegistrationStore] = None
        self.bus: Optional[InvalidationBus] = None
        self.nonces: Optional[NonceStore] = None
        self.registry: Optional[Registry] = None
        self.batcher: Optional[WriteBatcher] = None
        self.pump: Optional[MetricsPump] = None
        self.server: Optional[tornado.httpserver.HTTPServer] = None
        self.sockets: List[socket.socket] = []
        self.in_flight = InFlight()

    @property
    def port(self) -> int:
        return self.sockets[0].getsockname()[1]

    async def open_storage(self) -> None:
        self.store = load_storage(self.settings)
        await self.store.open()
        await self.store.create_schema()

    def build(self) -> None:
        s, store = self.settings, self.store
        assert store is not None
        self.bus = bus = load_bus(s, store)
        self.batcher = WriteBatcher(store, bus.publish, batch_size=s.write_batch_size,
                                    max_queue=s.write_queue_size, window=s.write_window,
                                    queue_timeout=s.storage_timeout)
        self.nonces = load_nonce_store(s.pubsub, skew=s.hawk_skew)
        self.registry = Registry(store, self.batcher, s, checks={
            "storage": store.heartbeat, "pubsub": bus.heartbeat, "nonces": self.nonces.heartbeat})
        auth = HawkAuthenticator(s.hawk_credentials, self.nonces, skew=s.hawk_skew)
        self.pump = MetricsPump(self.registry, self.batcher, bus)
        self.app = make_app(self.registry, s, auth, self.in_flight, pump=self.pump)

    async def start_writer(self) -> None:
        """Subscribe to invalidations, start the batcher, finish jobs a previous run left."""
        await self.bus.start(self.registry)
        self.batcher.start()
        self.pump.start()
        resumed = await self.registry.resume_jobs()
        if resumed:
            log.info("resuming %d queued jobs", resumed)

    def listen(self, sockets: Optional[List[socket.socket]] = None) -> None:
        self.server = tornado.httpserver.HTTPServer(
            self.app, xheaders=self.settings.xheaders, idle_connection_timeout=75,
            max_body_size=self.settings.max_body_size * _HARD_BODY_LIMIT_FACTOR)
        self.sockets = sockets or tornado.netutil.bind_sockets(
            self.settings.port, self.settings.host, reuse_port=self.settings.reuse_port,
            backlog=1024)
        self.server.add_sockets(self.sockets)

    async def start(self, sockets: Optional[List[socket.socket]] = None) -> "Service":
        await self.open_storage()
        self.build()
        await self.start_writer()
        self.listen(sockets)
        return self

    async def stop(self) -> None:
        """Stop accepting, commit the queued writes, answer them, release everything.

        Connections already open are not cut: each gets at most one more
        answer, sent with ``Connection: close``; requests in flight finish
        (up to ``shutdown_timeout``) before the batcher is drained.
        """
        self.in_flight.stopping = True
        if self.server is not None:
            self.server.stop()
        if not await self.in_flight.wait(self.settings.shutdown_timeout):
            log.warning("requests still in flight after %s s", self.settings.shutdown_timeout)
        if self.batcher is not None:
            await self.batcher.drain()
            # Let the handlers whose writes just committed send their answers.
            await self.in_flight.wait(1.0)
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.close_all_connections(), 10)
            except asyncio.TimeoutError:
                log.warning("connections still open after 10 s; closing anyway")
        if self.pump is not None:
            await self.pump.stop()
        for closable in (self.bus, self.nonces, self.store):
            if closable is not None:
                await closable.close()


def _event_loop_factory(settings: Settings):
    if settings.event_loop in ("auto", "uvloop"):
        try:
            import uvloop
            return uvloop.new_event_loop
        except ImportError:
            if settings.event_loop == "uvloop":
                raise
    return asyncio.new_event_loop


def _tune_gc(threshold) -> None:
    """Keep the cyclic garbage collector off the hot path.

    Measured under 64 concurrent PUTs (bench/writes.py): with Python's
    default thresholds (700, 10, 10) the collector took 8.3 % of the
    process's CPU, most of it full collections walking every long-lived
    object; with (10000, 20, 20) and start-up objects frozen, 1.4 %, and the
    p99 fell from 36 to 22 ms. Request garbage is mostly freed by reference
    counting anyway; cycles now wait a little longer.
    """
    gc.collect()
    gc.freeze()  # what start-up built (modules, the app) is never scanned again
    gc.set_threshold(*threshold)


async def _serve(settings: Settings) -> int:
    service = Service(settings)
    try:
        await service.start()
    except BackendError as exc:
        log.error("cannot start: storage %s is unavailable: %s",
                  settings.storage.split(":", 1)[0], exc)
        return 1
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        return 1
    _tune_gc(settings.gc_threshold)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    log.info("addonreg listening on %s:%s (storage %s, %s)", settings.host, service.port,
             settings.storage.split(":", 1)[0], type(loop).__module__.split(".")[0])
    await stopping.wait()
    # A second SIGTERM must not cut the drain short (nor kill us once the loop
    # has closed and the default action is back); SIGKILL remains for that.
    loop.remove_signal_handler(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log.info("stopping")
    await service.stop()
    process_exited()
    log.info("stopped")
    return 0


def run(settings: Settings) -> int:
    """``addonreg serve``: run one server process until SIGTERM; the exit code."""
    configure_logging(settings)
    with asyncio.Runner(loop_factory=_event_loop_factory(settings)) as runner:
        return runner.run(_serve(settings))
