"""The one exception hierarchy of :mod:`addonreg_client`.

Every failure a client method raises is an :class:`AddonregError` — never a
raw ``httpx``, JSON or ``KeyError`` exception — with the service's
``status``, ``errno``, ``message`` and ``details`` when the service answered
(``docs/errors.md``), or ``status=None`` when it could not be reached or the
request was refused before it was sent. Subclasses let a caller catch what it
can act on:

* :class:`AuthenticationError` — ``401``: the Hawk credentials are wrong, or
  the clock is more than the allowed skew away from the server's.
* :class:`NotFoundError` — ``404``: no such file, add-on or job.
* :class:`TooLargeError` — ``413``: too many items or too large a body (the
  clients chunk to the advertised limits, so this means the limits changed).
* :class:`InvalidRequestError` — other ``4xx``: an identifier breaks the rules;
  also raised *before* sending (``status=None``) for an identifier the
  contract's rules refuse (:mod:`addonreg_client.ids`), so that nothing a
  caller passes is ever pasted into a URL unchecked.
* :class:`UnavailableError` — ``503`` (or ``502``/``504``, or no connection)
  after the retries were spent; ``retry_after`` is the server's wait.
  ``outcome_unknown`` is true for errno 204 (a write that may or may not be
  committed). :class:`DeadlineExceeded`: the call's deadline passed (slow
  connect, a body dripped out, waits).
* :class:`BadAnswerError` — the answer is not one the contract allows: not
  JSON/MessagePack (``not an addonreg answer: text/html``), cut short, about
  another file, in another order, a status or a type the contract does not
  have, an HTTP status the body contradicts. :class:`AnswerTooLarge`: larger
  than the client's cap. :class:`RedirectRefused`: a redirect to another origin.
* :class:`JobTimeout` — a job was still queued when ``wait_for_job`` gave up.

No exception carries a credential: messages hold the server's text only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "OUTCOME_UNKNOWN",
    "AddonregError",
    "AnswerTooLarge",
    "AuthenticationError",
    "BadAnswerError",
    "DeadlineExceeded",
    "InvalidRequestError",
    "JobTimeout",
    "NotFoundError",
    "RedirectRefused",
    "TooLargeError",
    "UnavailableError",
    "error_for",
]

OUTCOME_UNKNOWN = 204
"""errno of a ``503`` whose write may or may not have been committed."""


class AddonregError(Exception):
    """A request failed: ``status``/``errno`` are the service's (None when it gave none)."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        errno: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.errno = errno
        self.details = dict(details or {})

    def __str__(self) -> str:
        where = f"{self.status}" + (f" errno {self.errno}" if self.errno is not None else "")
        return f"{self.message} ({where})" if self.status is not None else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status={self.status!r}, errno={self.errno!r})"
        )


class AuthenticationError(AddonregError):
    """``401``: Hawk credentials refused (errno 104 missing, 105 invalid)."""


class NotFoundError(AddonregError):
    """``404``: no such file, add-on or job."""


class TooLargeError(AddonregError):
    """``413``: too many items (errno 117) or too large a body (errno 113)."""


class InvalidRequestError(AddonregError):
    """Another ``4xx``: the request breaks a rule (``details`` names the field)."""


class UnavailableError(AddonregError):
    """The service could not answer, after the retries this client allows."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        errno: int | None = None,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status, errno, details)
        self.retry_after = retry_after

    @property
    def outcome_unknown(self) -> bool:
        """True when a write may or may not be committed (errno 204): retry or read back."""
        return self.errno == OUTCOME_UNKNOWN


class DeadlineExceeded(UnavailableError, TimeoutError):
    """The call's deadline passed before a complete answer (connect, body, waits)."""


class BadAnswerError(AddonregError):
    """The service's answer breaks the contract; nothing in it is believed."""


class AnswerTooLarge(BadAnswerError):
    """The answer is larger than the client's ``max_response_size``: it was not read."""


class RedirectRefused(BadAnswerError):
    """A redirect to another origin (scheme, host, port): not followed."""


class JobTimeout(AddonregError, TimeoutError):
    """The job was not finished within ``wait_for_job``'s timeout (it may still finish)."""

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(f"job {job_id} not finished within {timeout:g} s")
        self.job_id = job_id


_MESSAGE_MAX = 1000
_BY_STATUS = {401: AuthenticationError, 404: NotFoundError, 413: TooLargeError}


def error_for(status: int, body: Any, retry_after: float | None = None) -> AddonregError:
    """The exception for an error answer (``body``: the decoded error body, if any)."""
    fields = body if isinstance(body, dict) else {}
    # The server's text, bounded: a hostile one could send megabytes.
    message = str(fields.get("message") or f"HTTP {status}")[:_MESSAGE_MAX]
    errno = fields.get("errno") if isinstance(fields.get("errno"), int) else None
    details = fields.get("details") if isinstance(fields.get("details"), dict) else None
    if status in (502, 503, 504):
        return UnavailableError(message, status, errno, details, retry_after)
    kind = _BY_STATUS.get(status, InvalidRequestError if 400 <= status < 500 else AddonregError)
    return kind(message, status, errno, details)
