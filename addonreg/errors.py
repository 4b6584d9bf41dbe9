"""The one error body of the API and its errno table (``docs/errors.md``).

Every 4xx/5xx answer is ``{"code", "errno", "error", "message", "details"?}``.
Handlers raise :class:`APIError` (or a service exception that ``web.py``
maps to one); ``message`` is for humans and never carries driver text, SQL or
a traceback: what is worth logging goes into ``log_message``.
"""

from __future__ import annotations

import enum
from http import HTTPStatus
from typing import Any, Mapping, Optional

__all__ = ["ERRNO", "APIError", "error_body", "reason"]


class ERRNO(enum.IntEnum):
    """Error numbers; each one's meaning is in ``docs/errors.md``."""

    MISSING_AUTH_TOKEN = 104
    INVALID_AUTH_TOKEN = 105
    INVALID_REQUEST_BODY = 106
    INVALID_PARAMETERS = 107
    MISSING_PARAMETERS = 108
    UNSUPPORTED_MEDIA_TYPE = 109
    MISSING_RESOURCE = 111
    REQUEST_TOO_LARGE = 113
    RESOURCE_GONE = 114
    METHOD_NOT_ALLOWED = 115
    NOT_ACCEPTABLE = 116
    TOO_MANY_ITEMS = 117
    HEADERS_TOO_LARGE = 118
    FORBIDDEN = 121  # nginx: /__metrics__ for a client not allowed
    BACKEND = 201
    QUEUE_FULL = 202
    SHUTTING_DOWN = 203
    OUTCOME_UNKNOWN = 204
    UNDEFINED = 999


class APIError(Exception):
    """An error answer: status, errno, a message for the client, optional details.

    ``headers`` are added to the answer (``WWW-Authenticate``, ``Cache-Control``),
    ``body`` holds fields shown beside the error fields (the record of a
    ``410``), ``log_message`` is logged and never shown.
    """

    def __init__(
        self,
        status: int,
        errno: ERRNO,
        message: str,
        details: Optional[Mapping[str, Any]] = None,
        *,
        headers: Optional[Mapping[str, str]] = None,
        body: Optional[Mapping[str, Any]] = None,
        log_message: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.errno = errno
        self.message = message
        self.details = details
        self.headers = dict(headers or {})
        self.body = dict(body or {})
        self.log_message = log_message


def reason(status: int) -> str:
    """The reason phrase of ``status`` (the body's ``error`` field)."""
    if status == 413:
        return "Content Too Large"  # RFC 9110's name; Python still says "Request Entity…"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def error_body(
    status: int, errno: int, message: str, details: Optional[Mapping[str, Any]] = None
) -> dict:
    """The contract's error body."""
    body = {"code": status, "errno": int(errno), "error": reason(status), "message": message}
    if details:
        body["details"] = dict(details)
    return body
