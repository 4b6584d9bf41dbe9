"""One server process, built from small named steps.

:class:`Service` owns what a process builds once: storage, bus, batcher,
registry (with its caches), the Tornado application and the HTTP server.
:func:`run` is ``addonreg serve``: choose the event loop, start the service,
stop on SIGTERM/SIGINT (stop accepting, finish what is in flight, drain the
writes, close storage) and exit 0. A start-up that fails exits 1 within
seconds, with the reason, having closed whatever it had opened.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import signal
import socket
from typing import Any, List, Optional

import tornado.netutil

from .app import make_app
from .batcher import WriteBatcher
from .bus import InvalidationBus, load_bus
from .config import Settings
from .hawk import HawkAuthenticator
from .listener import BoundedHTTPServer
from .logs import configure_logging
from .metrics import MetricsPump, process_exited
from .nonces import NonceStore, load_nonce_store
from .registry import Registry
from .storage import BackendError, DatabaseMissing, RegistrationStore, load_storage
from .web import InFlight

__all__ = ["Service", "run", "describe_start_failure"]

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
        self.server: Optional[BoundedHTTPServer] = None
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
        self.batcher = WriteBatcher(
            store,
            bus.publish,
            batch_size=s.write_batch_size,
            max_queue=s.write_queue_size,
            window=s.write_window,
            queue_timeout=s.storage_timeout,
        )
        self.nonces = load_nonce_store(s.pubsub, skew=s.hawk_skew)
        self.registry = Registry(
            store,
            self.batcher,
            s,
            checks={
                "storage": store.heartbeat,
                "pubsub": bus.heartbeat,
                "nonces": self.nonces.heartbeat,
            },
        )
        auth = HawkAuthenticator(s.hawk_credentials, self.nonces, skew=s.hawk_skew)
        self.pump = MetricsPump(self.registry, self.batcher, bus)
        self.app = make_app(self.registry, s, auth, self.in_flight, pump=self.pump)

    async def start_writer(self) -> None:
        """Subscribe to changes, start the batcher, finish jobs a previous run left."""
        assert self.bus and self.batcher and self.pump and self.registry
        await self.bus.start(self.registry)
        self.batcher.start()
        self.pump.start()
        resumed = await self.registry.resume_jobs()
        if resumed:
            log.info("resuming %d queued jobs", resumed)

    def listen(self, sockets: Optional[List[socket.socket]] = None) -> None:
        s = self.settings
        self.sockets = sockets or tornado.netutil.bind_sockets(
            s.port, s.host, reuse_port=s.reuse_port, backlog=1024
        )
        self.server = BoundedHTTPServer(
            self.app,
            xheaders=s.xheaders,
            idle_connection_timeout=s.idle_timeout,
            body_timeout=s.body_timeout,
            max_connections=s.max_connections,
            max_body_size=s.max_body_size * _HARD_BODY_LIMIT_FACTOR,
        )
        self.server.add_sockets(self.sockets)

    async def start(self, sockets: Optional[List[socket.socket]] = None) -> "Service":
        """Open, build, start and listen; on any failure close what was opened, then raise."""
        try:
            await self.open_storage()
            self.build()
            await self.start_writer()
            self.listen(sockets)
        except BaseException:
            await self.close()
            raise
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
            await self.in_flight.wait(1.0)  # the handlers whose writes just committed answer
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.close_all_connections(), 10)
            except asyncio.TimeoutError:
                log.warning("connections still open after 10 s; closing anyway")
        await self.close()

    async def close(self) -> None:
        """Release what was opened (storage threads and pools, Redis), whatever state it is in."""
        if self.pump is not None:
            await self.pump.stop()
        for closable in (self.bus, self.nonces, self.store):
            if closable is not None:
                try:
                    await closable.close()
                except Exception as exc:  # closing must go on with the others
                    log.warning("closing %s: %s", type(closable).__name__, exc)


def describe_start_failure(settings: Settings, exc: BaseException) -> str:
    """One line saying why the service could not start, and what to do."""
    where = settings.storage.split(":", 1)[0]
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {settings.host}:{settings.port}: address in use (another "
            "process has it; several processes share a port only with reuse_port = true)"
        )
    if isinstance(exc, OSError):
        return f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
    if isinstance(exc, DatabaseMissing):
        return (
            f"cannot start: {exc}; create it with "
            "`addonreg initdb` (or have an administrator run CREATE DATABASE)"
        )
    if isinstance(exc, BackendError):
        return f"cannot start: storage {where} is unavailable: {exc}"
    return f"cannot start: {type(exc).__name__}: {exc}"


def _event_loop_factory(settings: Settings) -> Any:
    if settings.event_loop in ("auto", "uvloop"):
        try:
            import uvloop

            return uvloop.new_event_loop
        except ImportError:
            if settings.event_loop == "uvloop":
                raise
    return asyncio.new_event_loop


def _tune_gc(threshold: Any) -> None:
    """Keep the cyclic garbage collector off the hot path.

    Measured under concurrent PUTs: with Python's default thresholds
    (700, 10, 10) the collector took a noticeable share of the process's CPU,
    most of it full collections walking every long-lived object; with
    (10000, 20, 20) and start-up objects frozen, a small fraction of that,
    and the write latency's tail shortened (bench/ measures the writes).
    """
    gc.collect()
    gc.freeze()  # what start-up built (modules, the app) is never scanned again
    gc.set_threshold(*threshold)


async def _serve(settings: Settings) -> int:
    service = Service(settings)
    try:
        await service.start()
    except Exception as exc:  # whatever it is, say it and exit: never hang half-started
        log.error(
            "%s",
            describe_start_failure(settings, exc),
            exc_info=not isinstance(exc, (OSError, BackendError)),
        )
        return 1
    _tune_gc(settings.gc_threshold)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    log.info(
        "addonreg listening on %s:%s (storage %s, %s)",
        settings.host,
        service.port,
        settings.storage.split(":", 1)[0],
        type(loop).__module__.split(".")[0],
    )
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
