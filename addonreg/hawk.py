"""Hawk authentication of the write endpoints (verification on :mod:`hmac`).

:class:`HawkAuthenticator` checks one request's ``Authorization: Hawk …``
header and returns the credential id, or raises :class:`AuthError`. It knows
nothing of Tornado: the handler passes the method, the full URL the client
used, the header, the body and its ``Content-Type``.

Why not mohawk's ``Receiver``: it parses the header twice, builds a resource,
parses the URL and formats debug lines eagerly (measured: well over twice
this verifier's CPU per request, and a large write's CPU went mostly to its
pretty-printing). mohawk stays the independent reference:
``tests/test_auth.py`` holds this verifier to mohawk's ``Receiver``, this
parser to mohawk's and :func:`sign` to ``mohawk.Sender`` on many generated
requests; the client library signs with ``mohawk.Sender``.

Guarantees:

* A request with a body must carry a payload hash that matches the body and
  ``Content-Type``; without a body a hash is checked when sent.
* The timestamp may be at most ``skew`` seconds from the server's clock.
* An unknown id and a bad MAC get the same answer (the log tells them
  apart): a caller cannot probe which ids exist. The MAC is computed either
  way, with a throw-away key for an unknown id.
* The nonce is recorded (:mod:`addonreg.nonces`) only once MAC, payload hash
  and timestamp verified: a forged request never uses up a nonce.
* MACs are compared in constant time; keys never appear in an exception, a
  message, a log line or a ``repr``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
import secrets
import time
from typing import Dict, Mapping, Optional, Tuple
from urllib.parse import urlparse, urlsplit

from .nonces import NonceStore

__all__ = [
    "AuthError",
    "HawkAuthenticator",
    "www_authenticate",
    "sign",
    "parse_header",
    "DEFAULT_SKEW",
]

DEFAULT_SKEW = 60
"""Seconds a request's timestamp may be away from the server's clock."""

MISSING_AUTH, INVALID_AUTH = 104, 105
INVALID_SIGNATURE = "Invalid Hawk signature"

# The Hawk header grammar (as the reference implementations read it).
_ATTRIBUTE = re.compile(r'(?P<key>\w+)="(?P<value>[^"\\]*)"\s*(?:,\s*|$)')
_ATTRIBUTES = re.compile(r'(?:\w+="[^"\\]*"\s*(?:,\s*|$))*').fullmatch
_PAIRS = re.compile(r'(\w+)="([^"\\]*)"').findall
_VALUE_CHARS = re.compile(r"[ a-zA-Z0-9_!#$%&'()*+,\-./:;<=>?@\[\]^`{|}~]*").fullmatch
_KEYS = frozenset(("id", "ts", "tsm", "nonce", "hash", "error", "ext", "mac", "app", "dlg"))
_MAX_HEADER = 4096
_TIMESTAMP = re.compile(r"[0-9]{1,12}").fullmatch  # whole seconds
_REQUIRED = ("id", "ts", "nonce", "mac")


class AuthError(Exception):
    """Authentication failed: ``401``.

    ``errno`` is 104 (no ``Authorization`` header, or not Hawk) or 105
    (anything else). ``message`` is short and safe to show; ``log_message``
    has the detail for the server log; ``challenge`` holds extra
    ``WWW-Authenticate`` attributes (the server time, MAC'd, after a stale
    timestamp).
    """

    def __init__(
        self,
        errno: int,
        message: str,
        log_message: Optional[str] = None,
        challenge: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.errno = errno
        self.message = message
        self.log_message = log_message or message
        self.challenge = challenge

    def __repr__(self) -> str:
        return f"AuthError({self.errno}, {self.message!r})"


class HeaderError(ValueError):
    """The header breaks the Hawk grammar."""


class MacMismatch(Exception):
    """The request's MAC is not the one its key gives."""


class PayloadMismatch(Exception):
    """The payload hash is missing (with a body) or does not match."""


class StaleTimestamp(Exception):
    """The timestamp is more than the skew away; ``now`` is the server's time."""

    def __init__(self, now: int) -> None:
        super().__init__("stale timestamp")
        self.now = now


def parse_header(header: str) -> Dict[str, str]:
    """The attributes of a ``Hawk k="v", …`` header; :class:`HeaderError` when malformed."""
    if len(header) > _MAX_HEADER:
        raise HeaderError("header too long")
    scheme, _, rest = header.partition(" ")
    if scheme.lower() != "hawk":
        raise HeaderError("not the Hawk scheme")
    # Every write's header goes through here: a well-formed one in two C calls (the
    # whole header is attributes; then the pairs), anything else through the loop
    # below, which says what is wrong.
    if _ATTRIBUTES(rest) is not None:
        pairs = _PAIRS(rest)
        attributes = dict(pairs)
        if (
            len(attributes) == len(pairs)
            and _KEYS.issuperset(attributes)
            and _VALUE_CHARS("".join(attributes.values()))
        ):
            return attributes
    attributes = {}
    covered = 0
    for match in _ATTRIBUTE.finditer(rest):
        key, value = match.group("key", "value")
        if key not in _KEYS:
            raise HeaderError("unknown Hawk attribute")
        if key in attributes:
            raise HeaderError("duplicate Hawk attribute")
        attributes[key] = value
        covered += match.end() - match.start()
    # The allowed characters are a set: checking them joined is checking each.
    if covered != len(rest) or not _VALUE_CHARS("".join(attributes.values())):
        raise HeaderError("unparsable Hawk header")
    return attributes


@functools.lru_cache(maxsize=64)
def _origin(origin: str) -> Tuple[str, str]:
    """``scheme://netloc`` -> (host, port), the port from the scheme when absent."""
    parts = urlsplit(origin)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.hostname or "", str(port)


# Anything but printable ASCII, or ; # \ (one character class: a quarter of the time
# of the alternation "[^\x21-\x7e]|[;#\\]" it replaces).
_ODD_URL = re.compile(r"[^\x21\x22\x24-\x3a\x3c-\x5b\x5d-\x7e]").search


def _url_parts(url: str) -> Tuple[str, str, str]:
    """(host, port, resource) of ``scheme://host[:port]/path[?query]``, as Hawk signs them."""
    start = url.find("://") + 3
    slash = url.find("/", start) if start > 2 else -1
    if slash > 0 and not _ODD_URL(url) and not url.endswith("?") and "?" not in url[:slash]:
        return (*_origin(url[:slash]), url[slash:])  # the common case: one parse per origin
    parts = urlparse(url)  # not urlsplit: Hawk 1 clients sign the path without ";params"
    resource = parts.path + ("?" + parts.query if parts.query else "")
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.hostname or "", str(port), resource


def payload_hash(content: bytes, content_type: str, algorithm: str = "sha256") -> bytes:
    """Hawk 1's payload hash (base64) of a body and its ``Content-Type``."""
    media_type = content_type.split(";")[0].strip().lower()
    digest = hashlib.new(algorithm, b"hawk.1.payload\n%s\n" % media_type.encode("utf-8"))
    digest.update(content)  # not copied into a larger string: bodies go up to 4 MiB
    digest.update(b"\n")
    return base64.b64encode(digest.digest())


def _mac(
    key: bytes,
    ts: str,
    nonce: str,
    method: str,
    url: str,
    payload: str,
    ext: Optional[str],
    app: Optional[str],
    dlg: Optional[str],
    algorithm: str = "sha256",
) -> bytes:
    """The request MAC (base64) over Hawk 1's normalised string."""
    host, port, resource = _url_parts(url)
    lines = ["hawk.1.header", ts, nonce, method.upper(), resource, host, port, payload, ext or ""]
    if app:
        lines += (app, dlg or "")
    lines.append("")
    return base64.b64encode(hmac.digest(key, "\n".join(lines).encode("utf-8"), algorithm))


class HawkAuthenticator:
    """Verifies Hawk headers against ``credentials`` (id -> key); built once per process.

    ``nonces`` remembers the nonces used; ``skew`` is the largest accepted
    distance, in seconds, between a request's timestamp and the server's clock.
    """

    def __init__(
        self,
        credentials: Mapping[str, str],
        nonces: NonceStore,
        skew: int = DEFAULT_SKEW,
        algorithm: str = "sha256",
    ) -> None:
        if algorithm not in ("sha256", "sha1"):  # what the Hawk specification allows
            raise ValueError("Hawk algorithm must be sha256 or sha1")
        self.algorithm = algorithm
        for ident, key in credentials.items():
            if not key or not _VALUE_CHARS(ident) or not ident:
                raise ValueError(
                    f"Hawk credential id {ident!r}: ids need a key and only "
                    "characters a Hawk header can carry"
                )
        self._keys: Dict[str, bytes] = {i: k.encode("utf-8") for i, k in credentials.items()}
        self._unknown_key = secrets.token_bytes(32)
        self.nonces = nonces
        self.skew = skew

    def __repr__(self) -> str:
        return f"<HawkAuthenticator ids={sorted(self._keys)!r} skew={self.skew}>"

    async def authenticate(
        self,
        *,
        method: str,
        url: str,
        authorization: Optional[str],
        content: bytes,
        content_type: Optional[str],
    ) -> str:
        """The credential id the request is signed with, or :class:`AuthError`.

        ``url`` is the URL the client used (``scheme://<Host header>/path?query``,
        so it works behind a proxy). Raises
        :class:`~addonreg.nonces.NonceStoreError` when the nonce cannot be checked.
        """
        if not authorization or not authorization.strip():
            raise AuthError(MISSING_AUTH, "Missing Authorization header")
        scheme = authorization.split(None, 1)[0]
        if scheme.lower() != "hawk":
            raise AuthError(
                MISSING_AUTH,
                "Authorization must use the Hawk scheme",
                f"Authorization scheme {scheme[:20]!r} is not Hawk",
            )
        attributes = self._parse(authorization)
        ident = attributes["id"]
        key = self._keys.get(ident)
        try:
            self.verify(
                attributes,
                key or self._unknown_key,
                method,
                url,
                bytes(content),
                content_type or "",
            )
            if key is None:
                raise MacMismatch()
        except MacMismatch:
            detail = "unknown Hawk id" if key is None else "MAC mismatch for Hawk id"
            raise AuthError(
                INVALID_AUTH, INVALID_SIGNATURE, f"{detail} {ident!r} ({method} {url})"
            ) from None
        except PayloadMismatch:
            what = "wrong" if attributes.get("hash") else "missing"
            raise AuthError(
                INVALID_AUTH,
                f"Payload hash {what}",
                f"payload hash {what} for Hawk id {ident!r} ({len(content)} bytes, "
                f"{content_type!r})",
            ) from None
        except StaleTimestamp as exc:
            raise AuthError(
                INVALID_AUTH,
                "Stale timestamp",
                f"Hawk id {ident!r}: timestamp {attributes['ts']} is more than "
                f"{self.skew} s from the server's {exc.now}",
                challenge=self._time_challenge(key or b"", exc.now),
            ) from None
        except (ValueError, UnicodeError):  # a Host header with a bad port…
            raise AuthError(
                INVALID_AUTH, "Malformed Hawk request", f"Hawk id {ident!r}: unparsable URL"
            ) from None
        if not await self.nonces.check_and_remember(
            ident, attributes["nonce"], int(attributes["ts"])
        ):
            raise AuthError(
                INVALID_AUTH,
                "Replayed nonce",
                f"Hawk id {ident!r} reused nonce {attributes['nonce']!r}",
            )
        return ident

    def verify(
        self,
        attributes: Dict[str, str],
        key: bytes,
        method: str,
        url: str,
        content: bytes,
        content_type: str,
    ) -> None:
        """The MAC, payload-hash and timestamp checks, in the reference order.

        Raises :class:`MacMismatch`, :class:`PayloadMismatch` or
        :class:`StaleTimestamp` (``ValueError`` for an unparsable URL).
        """
        their_hash = attributes.get("hash", "")
        mac = _mac(
            key,
            attributes["ts"],
            attributes["nonce"],
            method,
            url,
            their_hash,
            attributes.get("ext"),
            attributes.get("app"),
            attributes.get("dlg"),
            self.algorithm,
        )
        if not hmac.compare_digest(mac, attributes["mac"].encode()):
            raise MacMismatch()
        if ("hash" in attributes or content) and not hmac.compare_digest(
            payload_hash(content, content_type, self.algorithm), their_hash.encode()
        ):
            raise PayloadMismatch()
        now = int(time.time())
        if abs(int(attributes["ts"]) - now) > self.skew:
            raise StaleTimestamp(now)

    @staticmethod
    def _parse(authorization: str) -> Dict[str, str]:
        try:
            attributes = parse_header(authorization)
        except HeaderError as exc:
            raise AuthError(
                INVALID_AUTH, "Malformed Hawk header", f"unparsable Hawk header ({exc})"
            ) from None
        missing = [name for name in _REQUIRED if not attributes.get(name)]
        if missing:
            raise AuthError(
                INVALID_AUTH, "Malformed Hawk header", f"Hawk header lacks {', '.join(missing)}"
            )
        if not _TIMESTAMP(attributes["ts"]):
            raise AuthError(
                INVALID_AUTH, "Malformed Hawk header", "Hawk timestamp is not a number of seconds"
            )
        return attributes

    def _time_challenge(self, key: bytes, now: int) -> Optional[str]:
        """``ts="…", tsm="…"``: the server time MAC'd with the client's key (Hawk spec)."""
        if not key:
            return None  # an unknown id: nothing to MAC with, and nothing to reveal
        tsm = base64.b64encode(hmac.digest(key, f"hawk.1.ts\n{now}\n".encode(), self.algorithm))
        return f'ts="{now}", tsm="{tsm.decode()}", error="Stale timestamp"'


def www_authenticate(error: AuthError) -> str:
    """The ``WWW-Authenticate`` of a ``401``: ``Hawk``, plus the server time after a
    stale timestamp (from which a client can correct its clock)."""
    return f"Hawk {error.challenge}" if error.challenge else "Hawk"


def sign(
    credential_id: str,
    key: str,
    method: str,
    url: str,
    content: bytes = b"",
    content_type: Optional[str] = "application/json",
    nonce: Optional[str] = None,
    timestamp: Optional[int] = None,
    *,
    hash_content: Optional[bool] = None,
) -> str:
    """The ``Authorization`` header value for a request (for tests and tools).

    The payload hash covers ``content`` and ``content_type`` (send that same
    ``Content-Type``); by default only a request with a body is hashed, which
    is what the server requires. The nonce defaults to 128 random bits, the
    timestamp to now. (Client code uses ``mohawk.Sender``; ``tests/test_auth.py``
    checks that mohawk's ``Receiver`` accepts what this signs.)
    """
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_urlsafe(16)
    attributes = {"id": credential_id, "ts": ts, "nonce": nonce}
    if hash_content or (hash_content is None and content):
        attributes["hash"] = payload_hash(content, content_type or "").decode()
    attributes["mac"] = _mac(
        key.encode("utf-8"), ts, nonce, method, url, attributes.get("hash", ""), None, None, None
    ).decode()
    return "Hawk " + ", ".join(f'{k}="{v}"' for k, v in attributes.items())
