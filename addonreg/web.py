"""The HTTP plumbing under the handlers: dependencies in, errors out.

* :class:`BaseHandler` receives its dependencies through ``initialize()``
  (from the URL table in ``app.py``), writes answers with :meth:`~BaseHandler.respond`,
  and shapes every error in one place, :meth:`~BaseHandler.write_error`.
* :data:`ERROR_REPLIES` is the one table from a service exception (storage,
  the write queue, shutdown, identifiers, Hawk) to its :class:`ErrorReply`:
  status, errno, message and log level; ``write_error`` and
  ``log_exception`` both read it.
* :class:`BodyHandler` takes a body, refusing one over ``max_body_size`` with
  ``413`` as soon as that is known.
* :class:`InFlight` counts requests in flight for shutdown: the server waits
  for them before it drains the batcher, and every answer after SIGTERM
  closes its connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Type

import tornado.web
from tornado.web import HTTPError

from . import inputs, media
from .batcher import QueueFull, ShuttingDown
from .errors import ERRNO, APIError, error_body, reason
from .hawk import AuthError, HawkAuthenticator, www_authenticate
from .ids import InvalidIdentifier
from .logs import Throttle
from .nonces import NonceStoreError
from .storage import BackendError, OutcomeUnknown

if TYPE_CHECKING:
    from .config import Settings
    from .registry import Registry

__all__ = [
    "ERROR_REPLIES",
    "ErrorReply",
    "as_api_error",
    "BaseHandler",
    "BodyHandler",
    "InFlight",
]

log = logging.getLogger("addonreg.handlers")
# What a client can cause at will is logged a line a second per kind, with a count.
_failures = Throttle(log, interval=1.0)


class ErrorReply(NamedTuple):
    """How a service exception is answered and logged."""

    status: int
    errno: ERRNO
    message: Optional[str]  # None: the exception's own text (those are written to be shown)
    level: int  # logging level of the failure


ERROR_REPLIES: Dict[Type[BaseException], ErrorReply] = {
    InvalidIdentifier: ErrorReply(400, ERRNO.INVALID_PARAMETERS, None, logging.DEBUG),
    AuthError: ErrorReply(401, ERRNO.INVALID_AUTH_TOKEN, None, logging.INFO),
    OutcomeUnknown: ErrorReply(
        503,
        ERRNO.OUTCOME_UNKNOWN,
        "Storage did not confirm the write in "
        "time: it may or may not be written. Writes are idempotent: retry, "
        "or read the file back.",
        logging.WARNING,
    ),
    BackendError: ErrorReply(
        503, ERRNO.BACKEND, "Storage is unavailable; retry later.", logging.WARNING
    ),
    NonceStoreError: ErrorReply(
        503, ERRNO.BACKEND, "Authentication is unavailable; retry later.", logging.WARNING
    ),
    ShuttingDown: ErrorReply(
        503,
        ERRNO.SHUTTING_DOWN,
        "This server is shutting down; retry. Nothing was written.",
        logging.INFO,
    ),
    QueueFull: ErrorReply(
        503,
        ERRNO.QUEUE_FULL,
        "Too many writes queued; retry later. Nothing was written.",
        logging.WARNING,
    ),
}
_TORNADO_ERRNO = {
    400: ERRNO.INVALID_REQUEST_BODY,
    404: ERRNO.MISSING_RESOURCE,
    405: ERRNO.METHOD_NOT_ALLOWED,
    413: ERRNO.REQUEST_TOO_LARGE,
}


def as_api_error(exc: Optional[BaseException]) -> Optional[APIError]:
    """The :class:`APIError` a service exception is answered with (None: not one of ours)."""
    if exc is None or isinstance(exc, APIError):
        return exc
    reply = next((r for kind, r in ERROR_REPLIES.items() if isinstance(exc, kind)), None)
    if reply is None:
        return None
    api = APIError(reply.status, reply.errno, reply.message or str(exc), log_message=str(exc))
    if isinstance(exc, InvalidIdentifier):
        api.details = (
            {"field": exc.field} if exc.index is None else {"index": exc.index, "field": exc.field}
        )
    elif isinstance(exc, AuthError):
        api.errno = ERRNO(exc.errno)
        api.headers["WWW-Authenticate"] = www_authenticate(exc)
        api.log_message = exc.log_message
    return api


class InFlight:
    """Requests in flight, for shutdown: those with a body (writes, bulk lookups) and the
    reads that wait for storage (a GET's cache miss, an add-on's list, the change feed)."""

    def __init__(self) -> None:
        self.count = 0
        self.stopping = False  # SIGTERM received: every answer closes its connection
        self._idle = asyncio.Event()
        self._idle.set()

    def started(self) -> None:
        self.count += 1
        self._idle.clear()

    def finished(self) -> None:
        self.count = max(self.count - 1, 0)
        if not self.count:
            self._idle.set()

    async def wait(self, timeout: float) -> bool:
        """Wait until none is in flight; False when ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False


def cache_control(max_age: int) -> str:
    return f"public, max-age={max(max_age, 0)}"


class BaseHandler(tornado.web.RequestHandler):
    """Dependencies arrive through :meth:`initialize`; errors leave through :meth:`write_error`."""

    endpoint = "other"  # the label of this handler's requests in metrics
    counted = False  # whether this request is counted in flight
    body_size = 0

    def initialize(
        self,
        registry: Registry,
        settings: Settings,
        in_flight: InFlight,
        auth: Optional[HawkAuthenticator] = None,
    ) -> None:
        self.registry = registry
        self.config = settings
        self.in_flight = in_flight
        self.auth = auth

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")

    def compute_etag(self) -> Optional[str]:
        return None  # resources that have an ETag set it themselves

    def count_in_flight(self) -> None:
        if not self.counted:
            self.counted = True
            self.in_flight.started()

    def on_finish(self) -> None:
        if self.counted:
            self.counted = False
            self.in_flight.finished()

    def on_connection_close(self) -> None:
        # The client left (perhaps before its body was complete): no answer
        # will be finished, so stop counting the request here.
        self.on_finish()
        super().on_connection_close()

    def finish(self, chunk: Any = None) -> Any:
        if self.in_flight.stopping:
            # Shutting down: answer, then close, so that keep-alive clients
            # (nginx) take their next request elsewhere. Tornado has no public
            # way to ask for a close after this answer; this attribute is what
            # its own HTTP/1.0 and "Connection: close" handling sets.
            self.request.connection._disconnect_on_finish = True  # type: ignore[union-attr]
        return super().finish(chunk)

    # Output ----------------------------------------------------------------

    def respond(self, body: Any, status: int = 200, negotiate: bool = False) -> None:
        """Answer ``body`` as JSON (or msgpack, with ``negotiate``, when ``Accept`` asks)."""
        data, content_type = media.encode(
            body, negotiate and media.wants_msgpack(self.request.headers.get("Accept"))
        )
        self.set_status(status)
        self.set_header("Content-Type", content_type)
        if negotiate:
            self.set_header("Vary", "Accept")
        self.finish(data)

    def not_modified(self) -> bool:
        """Answer ``304`` when the request's ``If-None-Match`` matches the ETag set."""
        if "If-None-Match" not in self.request.headers or not self.check_etag_header():
            return False
        self.set_status(304)
        self.finish()
        return True

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        api = as_api_error(exc)
        if api is None and isinstance(exc, HTTPError):
            api = APIError(
                status_code,
                _TORNADO_ERRNO.get(status_code, ERRNO.UNDEFINED),
                exc.reason or reason(status_code),
            )
            if status_code == 405:
                api.headers["Allow"] = ", ".join(self.allowed_methods())
        elif api is None:
            api = APIError(500, ERRNO.UNDEFINED, "Internal error; it has been logged.")
        for name, value in api.headers.items():
            self.set_header(name, value)
        if api.status == 503:
            self.set_header("Retry-After", str(self.config.retry_after))
        if api.status >= 500 or "Cache-Control" not in api.headers:
            self.set_header("Cache-Control", "no-store")
        self.set_status(api.status, reason(api.status))
        body = dict(api.body)
        body.update(error_body(api.status, api.errno, api.message, api.details))
        self.respond(body, api.status, negotiate=True)

    def allowed_methods(self) -> List[str]:
        base = tornado.web.RequestHandler
        return [
            m
            for m in self.SUPPORTED_METHODS
            if getattr(type(self), m.lower()) is not getattr(base, m.lower())
        ]

    def log_exception(self, typ: Any, value: Optional[BaseException], tb: Any) -> None:
        api = as_api_error(value)
        if api is None:
            super().log_exception(typ, value, tb)
            return
        level = (
            next(r.level for kind, r in ERROR_REPLIES.items() if isinstance(value, kind))
            if not isinstance(value, APIError)
            else logging.INFO
        )
        if api.log_message:
            _failures.log(
                level,
                api.errno,
                "%s %s: %s",
                self.request.method,
                self.request.path,
                api.log_message,
            )

    # Input -----------------------------------------------------------------

    @property
    def raw_body(self) -> bytes:
        return self.request.body

    def body(
        self, msgpack_allowed: bool = False, exact: bool = False, write: bool = False
    ) -> Dict[str, Any]:
        """The decoded body, an object (see :func:`inputs.body_object`)."""
        return inputs.body_object(
            self.raw_body, self.request.headers.get("Content-Type"), msgpack_allowed, exact, write
        )

    def too_large(self) -> APIError:
        limit = self.config.max_body_size
        return APIError(
            413,
            ERRNO.REQUEST_TOO_LARGE,
            f"request body is larger than {limit} bytes",
            {"max_body_size": limit},
        )

    async def authenticate(self) -> str:
        """Hawk: the credential id, or AuthError (401) / NonceStoreError (503)."""
        assert self.auth is not None
        return await self.auth.authenticate(
            method=self.request.method or "",
            url=self.request.full_url(),
            authorization=self.request.headers.get("Authorization"),
            content=self.raw_body,
            content_type=self.request.headers.get("Content-Type"),
        )


@tornado.web.stream_request_body
class BodyHandler(BaseHandler):
    """A handler that takes a body: size-checked while it arrives, then decoded.

    An oversized body is refused with 413 as soon as its Content-Length is
    seen (or, when chunked, as soon as it passes the limit), without reading
    the rest.
    """

    def prepare(self) -> None:
        if self.request.method != "GET":
            self.count_in_flight()
        self._chunks: List[bytes] = []
        length = self.request.headers.get("Content-Length", "")
        # The length of the text first: int() refuses strings over 4,300 digits.
        if length.isdigit() and (len(length) > 18 or int(length) > self.config.max_body_size):
            raise self.too_large()

    refused = False  # answered 413 while the body was still coming

    def data_received(self, chunk: bytes) -> None:
        if self.refused:
            return
        self.body_size += len(chunk)
        if self.body_size > self.config.max_body_size:
            # Answer now (Tornado then closes the connection rather than read
            # the rest); raising here would only reset the connection.
            self.refused = True
            error = self.too_large()
            self.send_error(413, exc_info=(APIError, error, None))
            return
        self._chunks.append(chunk)

    @property
    def raw_body(self) -> bytes:
        if self.refused:
            raise tornado.web.Finish()  # answered already: the handler method stops here
        if len(self._chunks) != 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0]
