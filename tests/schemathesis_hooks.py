"""schemathesis hooks for this API: Hawk signing and MessagePack bodies.

Loaded by ``schemathesis run`` (``SCHEMATHESIS_HOOKS=tests.schemathesis_hooks``,
``tests/test_schemathesis.py`` does it). Each secured operation's request is
signed by :class:`HawkAuth`, a ``requests`` auth hook that signs the prepared
request — the exact method, URL, body bytes and ``Content-Type`` schemathesis
sends — with ``mohawk.Sender``, anew for each. The credential comes from
``$ADDONREG_SCHEMATHESIS_HAWK`` (``id:key``).
"""

from __future__ import annotations

import os
from typing import Any

import mohawk
import msgpack
import requests
import schemathesis
from mohawk.base import EmptyValue


class HawkAuth(requests.auth.AuthBase):
    """Signs each prepared request with Hawk (a new nonce and timestamp every time)."""

    def __init__(self, ident: str, key: str) -> None:
        self.credentials = {"id": ident, "key": key, "algorithm": "sha256"}

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        content_type = request.headers.get("Content-Type", "")
        sender = mohawk.Sender(
            self.credentials,
            request.url,
            request.method,
            content=body if body else EmptyValue,
            content_type=content_type if body else EmptyValue,
            always_hash_content=bool(body),
        )
        request.headers["Authorization"] = sender.request_header
        return request


def _packable(value: Any) -> Any:
    """``value`` with every integer MessagePack cannot carry (beyond 64 bits) as a float:
    no client can send such an integer, and what is left stays as wrong as it was."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return float(value)
    if isinstance(value, list):
        return [_packable(v) for v in value]
    if isinstance(value, dict):
        return {_packable(k): _packable(v) for k, v in value.items()}
    return value


@schemathesis.serializer("application/msgpack")
def _to_msgpack(ctx: Any, value: Any) -> bytes:
    return msgpack.packb(_packable(value), use_bin_type=True)


@schemathesis.deserializer("application/msgpack")
def _from_msgpack(ctx: Any, response: Any) -> Any:
    return msgpack.unpackb(response.content, raw=False, strict_map_key=False)


_credential = os.environ.get("ADDONREG_SCHEMATHESIS_HAWK", "")
if _credential:
    # schemathesis' own way for a requests auth: it knows the requests are signed, so its
    # auth checks (ignored_auth) send each secured operation unsigned and badly signed too.
    _ident, _, _key = _credential.partition(":")
    schemathesis.auth.set_from_requests(HawkAuth(_ident, _key)).apply_to(
        lambda ctx: bool(ctx.operation.definition.raw.get("security"))
    )
