"""The HTTP server of one process, bounded for direct exposure.

:class:`BoundedHTTPServer` is Tornado's ``HTTPServer`` with:

* **a connection cap** (``max_connections``; default: the process's soft limit
  of open files less :data:`FD_RESERVE` for storage, Redis and files). At the
  cap a new connection takes the place of the connection idle longest (one
  waiting for its next request's first byte, none of it buffered here or in
  the kernel), which is closed, as nginx reuses its "reusable" connections:
  idle sockets, however many, cannot keep a new client out. A connection with
  a request in progress (headers or body partly read, a handler running, an
  answer being written) is never closed for this. With no idle connection
  left it stops accepting (new connections wait in the listen backlog) and
  starts again as soon as one closes. Shedding is logged at most once a
  second, with how many were closed;
* **back-off on fd exhaustion**: an ``accept()`` failing with EMFILE/ENFILE
  (other files took the descriptors) pauses accepting for 50 ms, doubling to
  1 s while it lasts, and logs once a second with a count, instead of
  spinning on a readable socket and logging each failure. Connections already
  open are served meanwhile;
* **headers over** ``max_header_size`` get ``431`` with the error body (up to
  four times that; Tornado itself closes the connection beyond, unanswered);
* **the idle and body timeouts**: a connection waiting for a request's headers
  longer than ``idle_connection_timeout``, or for its body longer than
  ``body_timeout`` after its headers, is closed. One sweep a tick (a tenth of
  the shorter timeout, at most a second) checks each connection's deadline.
  Tornado's own header and body timeouts wrap every read in
  ``gen.with_timeout``, a visible share of a cached GET's CPU; a timer armed
  and cancelled per request still costs a part of that; a deadline written
  per request costs next to nothing, and the sweep a little per open
  connection a tick (bench/ measures the reads).

Tornado's extension points are ``handle_stream``, ``on_close`` and
``start_request``; the accept loop is ours; the one attribute of Tornado's we
set is ``conn_params.header_timeout`` (see ``initialize``), and the one we read
is the stream's ``_read_buffer_size`` (see ``_Limits.idle``).
"""

from __future__ import annotations

import errno
import logging
import math
import resource
import select
import socket
import time
from typing import Any, Dict, List, Optional, Set

import tornado.httpserver
import tornado.httputil
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.iostream import IOStream

from . import media
from .errors import ERRNO, error_body, reason
from .logs import Throttle

__all__ = ["BoundedHTTPServer", "FD_RESERVE", "default_max_connections"]

log = logging.getLogger("addonreg.server")

FD_RESERVE = 100
_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def default_max_connections() -> int:
    """The soft limit of open files less :data:`FD_RESERVE` (at least 16)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(int(soft) - FD_RESERVE, 16)


def _waiting(sock: socket.socket) -> bool:
    """A connection waits in ``sock``'s backlog (poll, not select: no FD_SETSIZE limit)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class _Limits(tornado.httputil.HTTPMessageDelegate):
    """One request's limits: ``431`` for headers larger than the server's limit, and a
    ``deadline`` (monotonic time) for its headers, then its body, that the sweep enforces."""

    def __init__(
        self,
        delegate: tornado.httputil.HTTPMessageDelegate,
        connection: Any,
        server: "BoundedHTTPServer",
        server_conn: object,
    ) -> None:
        self.delegate, self.connection, self.server = delegate, connection, server
        self.server_conn = server_conn
        self.deadline: Optional[float] = time.monotonic() + server.idle_timeout
        self.refused = self.in_body = False

    def idle(self) -> bool:
        """No byte of a request received yet: none buffered by Tornado (a pipelined
        request, or headers partly read), none waiting in the kernel. A peer that has
        gone (EOF, reset) counts as idle: closing it costs nobody anything."""
        stream = self.connection.stream
        if stream is None or stream.closed():
            return True  # its descriptor is gone already; on_close is on its way
        # Tornado keeps what it read ahead in the stream's buffer and offers no public
        # way to ask its size; without the attribute, nothing is ever taken for idle.
        if getattr(stream, "_read_buffer_size", 1):
            return False
        try:
            return not stream.socket.recv(1, socket.MSG_PEEK)
        except OSError:  # EAGAIN: nothing sent yet; a reset: gone
            return True

    def headers_received(self, start_line: Any, headers: tornado.httputil.HTTPHeaders) -> Any:
        self.server._idle.pop(self.server_conn, None)
        size = sum(len(name) + len(value) + 4 for name, value in headers.get_all())
        limit = self.server.header_limit
        if size <= limit:
            self.in_body = bool(self.server.body_timeout) and (
                "Content-Length" in headers or "Transfer-Encoding" in headers
            )
            self.deadline = time.monotonic() + self.server.body_timeout if self.in_body else None
            return self.delegate.headers_received(start_line, headers)
        self.refused, self.deadline = True, None
        body, content_type = media.encode(
            error_body(
                431,
                ERRNO.HEADERS_TOO_LARGE,
                f"request headers are larger than {limit} bytes",
                {"max_header_size": limit},
            ),
            False,
        )
        self.connection.write_headers(
            tornado.httputil.ResponseStartLine("HTTP/1.1", 431, reason(431)),
            tornado.httputil.HTTPHeaders(
                {
                    "Content-Type": content_type,
                    "Connection": "close",
                    "Content-Length": str(len(body)),
                }
            ),
            body,
        )
        self.connection.finish()
        return None

    def expire(self) -> None:
        """Past the deadline: close the connection (its request, if any, is not answered)."""
        if self.in_body:  # an idle keep-alive connection closing is no news
            log.info(
                "body not received within %s s: closing the connection", self.server.body_timeout
            )
        self.deadline = None
        self.connection.close()

    def data_received(self, chunk: bytes) -> Any:
        return None if self.refused else self.delegate.data_received(chunk)

    def finish(self) -> None:
        self.deadline = None
        if not self.refused:
            self.delegate.finish()

    def on_connection_close(self) -> None:
        self.deadline = None
        if not self.refused:
            self.delegate.on_connection_close()


class BoundedHTTPServer(tornado.httpserver.HTTPServer):
    """``HTTPServer(app, max_connections=…, max_header_size=…, …)``; see the module doc."""

    # Tornado's Configurable hands the constructor's arguments to initialize():
    # ours are three more keywords; Tornado's own header limit is 4 x ours (see _Limits).
    def initialize(  # type: ignore[override]
        self,
        *args: Any,
        max_connections: int = 0,
        max_header_size: int = 65536,
        body_timeout: Optional[float] = None,
        idle_connection_timeout: Optional[float] = None,
        **kwargs: Any,
    ) -> None:
        kwargs["max_header_size"] = 4 * max_header_size
        super().initialize(*args, **kwargs)
        # The timeouts are ours (see the module doc). No argument turns Tornado's header
        # timeout off (it makes None 3600 s); None in its documented
        # HTTP1ConnectionParameters.header_timeout does, on the parameters it keeps.
        self.conn_params.header_timeout = None
        self.idle_timeout = idle_connection_timeout or 3600.0
        self.body_timeout = body_timeout or 0.0  # 0: none
        shortest = min(t for t in (self.idle_timeout, body_timeout) if t)
        self._sweeper = PeriodicCallback(self._sweep, 1000 * min(1.0, shortest / 10))
        self._requests: Dict[object, _Limits] = {}  # each connection's current request
        self.max_connections = max_connections or default_max_connections()
        self.header_limit = max_header_size
        self.open_connections = 0
        self._listening: Dict[int, socket.socket] = {}
        self._paused: List[socket.socket] = []
        self._delay = 0.0
        self._throttle = Throttle(log, interval=1.0)
        # Connections waiting for a request's first byte, the one idle longest first
        # (dict order: each is moved to the end when its next request begins).
        self._idle: Dict[object, _Limits] = {}
        self._shed: Set[object] = set()  # closed for a new one, on_close not yet run
        self._shed_count = 0  # since the last log line
        self._shed_logged = -math.inf
        self._shed_flush: Optional[Any] = None

    def add_sockets(self, sockets: Any) -> None:
        for sock in sockets:
            self._listening[sock.fileno()] = sock
            self._watch(sock)

    def _watch(self, sock: socket.socket) -> None:
        IOLoop.current().add_handler(sock, lambda fd, events: self._accept(sock), IOLoop.READ)

    def _pause(self, sock: socket.socket, delay: Optional[float]) -> None:
        """Stop accepting on ``sock`` for ``delay`` seconds (None: until a connection closes)."""
        if sock in self._paused:
            return
        IOLoop.current().remove_handler(sock)
        self._paused.append(sock)
        if delay is not None:
            IOLoop.current().call_later(delay, self._resume)

    def _resume(self) -> None:
        paused, self._paused = self._paused, []
        for sock in paused:
            if sock.fileno() in self._listening:
                self._watch(sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(128):  # a bounded batch, as Tornado's own loop: others get their turn
            if self.open_connections - len(self._shed) >= self.max_connections:
                if not _waiting(sock):
                    return  # the listening socket wakes us when one arrives
                if self._shed_one():
                    continue
                self._throttle.log(
                    logging.WARNING,
                    "cap",
                    "at the connection cap (%d): not accepting until one closes",
                    self.max_connections,
                )
                self._pause(sock, None)
                return
            try:
                connection, address = sock.accept()
            except BlockingIOError:
                self._delay = 0.0
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _EXHAUSTED:
                    raise
                self._delay = min(max(self._delay * 2, 0.05), 1.0)
                self._throttle.log(
                    logging.ERROR,
                    "fds",
                    "cannot accept (%s, %d connections open): pausing %.2f s",
                    errno.errorcode.get(exc.errno, exc),
                    self.open_connections,
                    self._delay,
                )
                self._pause(sock, self._delay)
                return
            self.handle_stream(
                IOStream(
                    connection,
                    max_buffer_size=self.max_buffer_size,
                    read_chunk_size=self.read_chunk_size,
                ),
                address,
            )

    def handle_stream(self, stream: IOStream, address: tuple) -> None:
        self.open_connections += 1
        if not self._sweeper.is_running():
            self._sweeper.start()
        super().handle_stream(stream, address)

    def _shed_one(self) -> bool:
        """Close the connection idle longest to make room for a new one; False if none is.

        Each connection is looked at once per request: one that turns out to have
        bytes of a request is no longer idle, so it leaves the list (start_request
        puts it back for its next request)."""
        while self._idle:
            server_conn = next(iter(self._idle))
            limits = self._idle.pop(server_conn)
            if not limits.idle():
                continue
            self._shed.add(server_conn)
            limits.deadline = None
            limits.connection.close()  # the descriptor is released now; on_close follows
            self._shed_count += 1
            self._log_shed()
            return True
        return False

    def _log_shed(self, due: bool = False) -> None:
        """One line a second at most, with the count since the last line (``due``: the
        timer armed for the end of the second)."""
        now = time.monotonic()
        if due or now - self._shed_logged >= 1.0:
            if self._shed_flush is not None and not due:
                IOLoop.current().remove_timeout(self._shed_flush)
            self._shed_logged, self._shed_flush = now, None
            log.warning(
                "at the connection cap (%d): closed %d idle connections (idle longest first) "
                "to take new ones",
                self.max_connections,
                self._shed_count,
            )
            self._shed_count = 0
        elif self._shed_flush is None:
            self._shed_flush = IOLoop.current().call_later(
                self._shed_logged + 1.0 - now, self._log_shed, True
            )

    def on_close(self, server_conn: object) -> None:
        self.open_connections -= 1
        self._requests.pop(server_conn, None)
        self._idle.pop(server_conn, None)
        self._shed.discard(server_conn)
        if not self.open_connections:
            self._sweeper.stop()
        super().on_close(server_conn)
        if self._paused and self.open_connections < self.max_connections and not self._delay:
            self._resume()

    def start_request(
        self, server_conn: object, request_conn: Any
    ) -> tornado.httputil.HTTPMessageDelegate:
        limits = _Limits(
            super().start_request(server_conn, request_conn), request_conn, self, server_conn
        )
        self._requests[server_conn] = limits
        self._idle.pop(server_conn, None)
        self._idle[server_conn] = limits  # idle now: the newest
        if self._paused and not self._delay:
            self._resume()  # paused at the cap with none idle: this one is now
        return limits

    def _sweep(self) -> None:
        now = time.monotonic()
        for limits in [
            r for r in self._requests.values() if r.deadline is not None and r.deadline <= now
        ]:
            limits.expire()

    def stop(self) -> None:
        """Stop accepting and close the listening sockets (connections stay open)."""
        for fd, sock in list(self._listening.items()):
            if sock not in self._paused:
                IOLoop.current().remove_handler(sock)
            sock.close()
        self._listening.clear()
        self._paused.clear()
        if self._shed_flush is not None:
            IOLoop.current().remove_timeout(self._shed_flush)
            self._shed_flush = None
        super().stop()
