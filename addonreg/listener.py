"""The HTTP server of one process, bounded for direct exposure.

:class:`BoundedHTTPServer` is Tornado's ``HTTPServer`` with:

* **a connection cap** (``max_connections``; default: the process's soft limit
  of open files less :data:`FD_RESERVE` for storage, Redis and files): at the
  cap it stops accepting (new connections wait in the listen backlog) and
  starts again as soon as one closes;
* **back-off on fd exhaustion**: an ``accept()`` failing with EMFILE/ENFILE
  (other files took the descriptors) pauses accepting for 50 ms, doubling to
  1 s while it lasts, and logs once a second with a count, instead of
  spinning on a readable socket and logging each failure. Connections already
  open are served meanwhile;
* **headers over** ``max_header_size`` get ``431`` with the error body (up to
  four times that; Tornado itself closes the connection beyond, unanswered);
* **a body timeout** (``body_timeout``): a request whose body has not all
  arrived that long after its headers has its connection closed. One timer
  per request with a body; Tornado's own ``body_timeout`` wraps every body
  read in ``gen.with_timeout`` instead, which cost ~8 µs a PUT (py-spy:
  ``with_timeout``, ``convert_yielded``'s singledispatch, future callbacks),
  4 % of the request;
* the idle and header timeouts passed to Tornado.

Only Tornado's public API is used: ``handle_stream``, ``on_close`` and
``start_request`` are its extension points, the accept loop is ours.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from typing import Any, Dict, List, Optional

import tornado.httpserver
import tornado.httputil
from tornado.ioloop import IOLoop
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


class _Limits(tornado.httputil.HTTPMessageDelegate):
    """Answers ``431`` to a request whose headers are larger than ``limit`` bytes, and
    closes the connection of one whose body is not all in ``body_timeout`` seconds."""

    def __init__(self, delegate: tornado.httputil.HTTPMessageDelegate,
                 connection: Any, limit: int, body_timeout: Optional[float]) -> None:
        self.delegate, self.connection, self.limit = delegate, connection, limit
        self.body_timeout = body_timeout
        self.refused = self.done = False
        self._timer: Optional[asyncio.TimerHandle] = None

    def headers_received(self, start_line: Any, headers: tornado.httputil.HTTPHeaders) -> Any:
        size = sum(len(name) + len(value) + 4 for name, value in headers.get_all())
        if size <= self.limit:
            if self.body_timeout and ("Content-Length" in headers
                                      or "Transfer-Encoding" in headers):
                self._timer = asyncio.get_running_loop().call_later(
                    self.body_timeout, self._body_too_slow)
            return self.delegate.headers_received(start_line, headers)
        self.refused = True
        body, content_type = media.encode(error_body(
            431, ERRNO.HEADERS_TOO_LARGE, f"request headers are larger than {self.limit} bytes",
            {"max_header_size": self.limit}), False)
        self.connection.write_headers(
            tornado.httputil.ResponseStartLine("HTTP/1.1", 431, reason(431)),
            tornado.httputil.HTTPHeaders({"Content-Type": content_type, "Connection": "close",
                                          "Content-Length": str(len(body))}), body)
        self.connection.finish()
        return None

    def _body_too_slow(self) -> None:
        # The connection object is this request's own (Tornado makes one per
        # request on a keep-alive stream): closing it after its request ended
        # would cut a later one, hence ``done``.
        if not self.done:
            log.info("body not received within %s s: closing the connection", self.body_timeout)
            self.connection.close()

    def _end(self) -> None:
        self.done = True
        if self._timer is not None:
            self._timer.cancel()

    def data_received(self, chunk: bytes) -> Any:
        return None if self.refused else self.delegate.data_received(chunk)

    def finish(self) -> None:
        self._end()
        if not self.refused:
            self.delegate.finish()

    def on_connection_close(self) -> None:
        self._end()
        if not self.refused:
            self.delegate.on_connection_close()


class BoundedHTTPServer(tornado.httpserver.HTTPServer):
    """``HTTPServer(app, max_connections=…, max_header_size=…, …)``; see the module doc."""

    # Tornado's Configurable hands the constructor's arguments to initialize():
    # ours are three more keywords; Tornado's own header limit is 4 x ours (see _Limits).
    def initialize(self, *args: Any, max_connections: int = 0,  # type: ignore[override]
                   max_header_size: int = 65536, body_timeout: Optional[float] = None,
                   **kwargs: Any) -> None:
        kwargs["max_header_size"] = 4 * max_header_size
        super().initialize(*args, **kwargs)
        self.body_timeout = body_timeout  # ours, not Tornado's: see _Limits
        self.max_connections = max_connections or default_max_connections()
        self.header_limit = max_header_size
        self.open_connections = 0
        self._listening: Dict[int, socket.socket] = {}
        self._paused: List[socket.socket] = []
        self._delay = 0.0
        self._throttle = Throttle(log, interval=1.0)

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
            if self.open_connections >= self.max_connections:
                self._throttle.log(logging.WARNING, "cap", "at the connection cap (%d): not "
                                   "accepting until one closes", self.max_connections)
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
                self._throttle.log(logging.ERROR, "fds", "cannot accept (%s, %d connections "
                                   "open): pausing %.2f s", errno.errorcode.get(exc.errno, exc),
                                   self.open_connections, self._delay)
                self._pause(sock, self._delay)
                return
            self.handle_stream(IOStream(connection, max_buffer_size=self.max_buffer_size,
                                        read_chunk_size=self.read_chunk_size), address)

    def handle_stream(self, stream: IOStream, address: tuple) -> None:
        self.open_connections += 1
        super().handle_stream(stream, address)

    def on_close(self, server_conn: object) -> None:
        self.open_connections -= 1
        super().on_close(server_conn)
        if self._paused and self.open_connections < self.max_connections and not self._delay:
            self._resume()

    def start_request(self, server_conn: object, request_conn: Any
                      ) -> tornado.httputil.HTTPMessageDelegate:
        return _Limits(super().start_request(server_conn, request_conn), request_conn,
                       self.header_limit, self.body_timeout)

    def stop(self) -> None:
        """Stop accepting and close the listening sockets (connections stay open)."""
        for fd, sock in list(self._listening.items()):
            if sock not in self._paused:
                IOLoop.current().remove_handler(sock)
            sock.close()
        self._listening.clear()
        self._paused.clear()
        super().stop()
