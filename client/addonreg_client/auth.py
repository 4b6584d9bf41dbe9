"""Hawk request signing as an ``httpx.Auth``: usable with any ``httpx`` client.

>>> import httpx                                                     # doctest: +SKIP
>>> auth = HawkAuth(Credentials("dev", "development-key-not-secret"))
>>> httpx.put(url, content=b'{"version": "1.0"}', auth=auth,
...           headers={"Content-Type": "application/json"})

Each request (each retry too) is signed anew over its exact method, URL,
body and ``Content-Type``, with a nonce of 128 random bits: a nonce is
accepted once per credential in the service's window (2 x skew, 120 s), and
mohawk's default of 36 bits would be refused as a replay about once a day at
100 writes a second. The signing itself is mohawk's (one small dependency,
``six``), rather than a hand-written MAC.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Generator

import httpx
import mohawk
from mohawk.base import EmptyValue

__all__ = ["Credentials", "HawkAuth", "hawk_header"]


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A Hawk credential. The key never appears in a ``repr``, a log line or an error."""

    id: str
    key: str = dataclasses.field(repr=False)


def hawk_header(
    credentials: Credentials, url: str, method: str, body: bytes | None, content_type: str | None
) -> str:
    """A Hawk ``Authorization`` header for one request (see the module docstring)."""
    return mohawk.Sender(
        {"id": credentials.id, "key": credentials.key, "algorithm": "sha256"},
        url,
        method,
        content=body if body else EmptyValue,
        content_type=content_type if body else EmptyValue,
        always_hash_content=bool(body),
        nonce=secrets.token_urlsafe(16),
    ).request_header


class HawkAuth(httpx.Auth):
    """Sign every request with ``credentials`` (payload hash included when there is a body)."""

    requires_request_body = True

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    def __repr__(self) -> str:
        return f"HawkAuth(id={self.credentials.id!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = hawk_header(
            self.credentials,
            str(request.url),
            request.method,
            request.content,
            request.headers.get("Content-Type"),
        )
        yield request
