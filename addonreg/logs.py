"""Logging: one JSON object (or one readable line) per record, one per request.

``log_format = json`` (the default) writes every record as a JSON object
(``time``, ``level``, ``logger``, ``pid``, ``msg``, plus the record's
``fields``); ``text`` writes the same as one line for a terminal, fields as
``key=value``. Request lines come from :func:`log_request`, Tornado's
``log_function``: every request when ``access_log`` is on, server errors
(5xx) always. They carry method, path, status, duration and a request id
(the ``X-Request-Id`` nginx sends, or a new one), and never a header value.

Logs cannot be used to fill a disk: failures a client can cause at will
(401s, 5xx while a backend is down, accept errors) go through a
:class:`Throttle`, one line per kind per interval with a count of the rest.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Dict, Tuple

from . import metrics

if TYPE_CHECKING:
    from .config import Settings

__all__ = ["JSONFormatter", "TextFormatter", "Throttle", "configure_logging", "log_request"]

request_log = logging.getLogger("addonreg.request")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}").fullmatch


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        data.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger pid message key=value …``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(process)d %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        extra = "".join(f" {k}={v}" for k, v in fields.items() if v not in (None, ""))
        return super().formatMessage(record) + extra


class Throttle:
    """At most one line per key per ``interval`` seconds; the next says how many were held."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.interval, self.clock = logger, interval, clock
        self._state: Dict[Any, Tuple[float, int]] = {}

    def log(self, level: int, key: Any, message: str, *args: Any, **kwargs: Any) -> bool:
        """Log it unless a line of this ``key`` went out less than ``interval`` ago."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self.clock()
        last, held = self._state.get(key, (-math.inf, 0))
        if now - last < self.interval:
            self._state[key] = (last, held + 1)
            return False
        if held:
            message += " (and %d more like it in the last %.0f s)"
            args += (held, now - last)
        self._state[key] = (now, 0)
        self.logger.log(level, message, *args, **kwargs)
        return True


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Our own request line replaces Tornado's access log.
    logging.getLogger("tornado.access").setLevel(logging.CRITICAL)
    request_log.setLevel(logging.INFO if settings.access_log else logging.ERROR)


_errors = Throttle(request_log, interval=1.0)


def log_request(handler: Any) -> None:
    """Tornado's ``log_function``: metrics for every request, a log line when wanted."""
    status = handler.get_status()
    request = handler.request
    seconds = request.request_time()
    metrics.observe_request(getattr(handler, "endpoint", "other"), request.method, status, seconds)
    level = logging.ERROR if status >= 500 else logging.INFO
    if not request_log.isEnabledFor(level):
        return
    rid = request.headers.get("X-Request-Id")
    if not rid or not _REQUEST_ID(rid):
        rid = uuid.uuid4().hex
    extra = {
        "fields": {
            "method": request.method,
            "path": request.path,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "rid": rid,
            "remote": request.remote_ip,
            "bytes_in": getattr(handler, "body_size", 0) or len(request.body or b""),
            "agent": request.headers.get("User-Agent", "")[:200],
        }
    }
    if level == logging.INFO or request_log.isEnabledFor(logging.INFO):
        request_log.log(level, "request", extra=extra)
    else:  # 5xx without the access log: at most a line a second per status
        _errors.log(level, status, "request", extra=extra)
