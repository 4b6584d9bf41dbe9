"""Logging: one JSON object per line, and one line per request.

``log_format = json`` (the default) writes every record as a JSON object
(``time``, ``level``, ``logger``, ``pid``, ``msg``, plus the record's
``fields``); ``text`` is for reading in a terminal. Request lines come from
:func:`log_request`, Tornado's ``log_function``: every request when
``access_log`` is on, and server errors (5xx) always. They carry a request
id (the ``X-Request-Id`` nginx sends, or a new one), and never a header
value: no ``Authorization``, no cookies.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from typing import Any

from . import metrics

__all__ = ["JSONFormatter", "configure_logging", "log_request"]

request_log = logging.getLogger("addonreg.request")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}").fullmatch


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "pid": record.process,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            data.update(fields)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Our own request line replaces Tornado's access log.
    logging.getLogger("tornado.access").setLevel(logging.CRITICAL)
    request_log.setLevel(logging.INFO if settings.access_log else logging.ERROR)


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
    request_log.log(level, "request", extra={"fields": {
        "rid": rid, "method": request.method, "path": request.path, "status": status,
        "duration_ms": round(seconds * 1000, 3), "remote": request.remote_ip,
        "bytes_in": getattr(handler, "body_size", 0) or len(request.body or b""),
        "agent": request.headers.get("User-Agent", "")[:200],
    }})
