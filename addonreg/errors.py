"""The one error body of the API and its errno table.

Every 4xx/5xx answer is ``{"code", "errno", "error", "message", "details"?}``
(see ``docs/errors.md``). Handlers raise :class:`APIError`; ``write_error`` in
``handlers.py`` is the only place that turns it into a response. The
``message`` is for humans and never carries driver text, SQL or tracebacks:
what is worth logging goes into ``log_message`` instead.
"""

from __future__ import annotations

import enum
from typing import Any, Mapping, Optional

__all__ = ["ERRNO", "APIError", "error_body"]


class ERRNO(enum.IntEnum):
    """Error numbers; the table is documented in ``docs/errors.md``."""

    MISSING_AUTH_TOKEN = 104
    INVALID_AUTH_TOKEN = 105
    INVALID_REQUEST_BODY = 106  # not JSON/msgpack, or not the expected structure
    INVALID_PARAMETERS = 107  # an identifier or query parameter breaks the rules
    MISSING_PARAMETERS = 108
    INVALID_CONTENT_TYPE = 109
    MISSING_RESOURCE = 111
    REQUEST_TOO_LARGE = 113
    RESOURCE_GONE = 114
    METHOD_NOT_ALLOWED = 115
    NOT_ACCEPTABLE = 116
    TOO_MANY_ITEMS = 117
    BACKEND = 201
    QUEUE_FULL = 202
    SHUTTING_DOWN = 203
    UNDEFINED = 999


# Reason phrases: the "error" field.
_REASONS = {
    400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 410: "Gone",
    411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
    500: "Internal Server Error", 503: "Service Unavailable",
}


class APIError(Exception):
    """An error answer: status, errno, a message for the client, optional details.

    ``log_message`` is what is logged (never shown to the client); ``headers``
    are added to the response (``Retry-After``, ``WWW-Authenticate``); ``body``
    holds fields shown beside the error fields (the record of a ``410``).
    """

    def __init__(self, status: int, errno: ERRNO, message: str,
                 details: Optional[Mapping[str, Any]] = None, *,
                 headers: Optional[Mapping[str, str]] = None,
                 body: Optional[Mapping[str, Any]] = None,
                 log_message: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.errno = errno
        self.message = message
        self.details = details
        self.headers = dict(headers or {})
        self.body = dict(body or {})
        self.log_message = log_message


def reason(status: int) -> str:
    from http import HTTPStatus
    try:
        return _REASONS.get(status) or HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def error_body(status: int, errno: int, message: str,
               details: Optional[Mapping[str, Any]] = None) -> dict:
    """The contract's error body."""
    body = {"code": status, "errno": int(errno), "error": reason(status), "message": message}
    if details:
        body["details"] = dict(details)
    return body
