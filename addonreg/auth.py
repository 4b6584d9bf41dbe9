"""Hawk authentication of the write endpoints, and the nonce store behind it.

:class:`HawkAuthenticator` checks one request's ``Authorization: Hawk …``
header (with :mod:`mohawk`'s parsing, URL, MAC and payload-hash functions) and returns the credential
id, or raises :class:`AuthError`. It knows nothing of Tornado: the handler
passes the method, the full URL the client used, the header, the body and
its ``Content-Type``, and turns an :class:`AuthError` into ``401`` with
:meth:`HawkAuthenticator.www_authenticate` as ``WWW-Authenticate``.

Guarantees:

* A request with a body must carry a payload hash, and it must match the
  body and ``Content-Type``; a request without a body may omit the hash
  (when present it is still checked).
* The timestamp may be at most ``skew`` seconds (60) away from the server's
  clock, in either direction.
* A nonce is accepted once per credential id within ``2 * skew`` seconds:
  long enough to outlive every timestamp that could still be accepted. With
  :class:`RedisNonceStore` that holds across every process of a deployment.
* The nonce is only recorded once the MAC, the payload hash and the
  timestamp have been verified, so a request that fails them (forged, or
  sent by someone who does not hold the key) never uses up a nonce.
* MACs and hashes are compared in constant time (``hmac.compare_digest``); keys are never
  compared, logged, or put in an exception, a message or a ``repr``.
* When the nonce store cannot answer (Redis down) :class:`NonceStoreError`
  is raised rather than letting a request in unchecked: answer it with
  ``503`` + ``Retry-After``.

Stores are built once per process (:func:`load_nonce_store`), never per
request, and used from the one event loop that built them: they are not
thread-safe.

Signing, for tests and tools::

    header = sign("amo", key, "PUT", "https://addonreg.example/v1/addons/a@b/files/" + sha,
                  content=b'{"version": "1.0"}')
"""

from __future__ import annotations

import abc
import asyncio
import base64
import collections
import functools
import hashlib
import hmac
import logging
import pprint
import re
import secrets
import time
from typing import Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

import mohawk
import mohawk.base
import mohawk.exc
import mohawk.util
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .coalesce import PassBatch


class _LazyPrettyPrint:
    """Stands in for ``pprint`` inside mohawk, whose debug lines are formatted eagerly.

    mohawk 1.1 calls ``log.debug("…".format(pprint.pformat(x)))`` on every
    request, whatever the log level: for a bulk write that pretty-prints the
    whole body (measured: 40 % of the CPU of a 5,000-operation request, 19 %
    of a single PUT). Formatting only when mohawk's debug logging is on keeps
    its messages when someone wants them, and costs nothing otherwise.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def pformat(self, value: object) -> str:
        if self.logger.isEnabledFor(logging.DEBUG):
            return pprint.pformat(value)
        return "(not formatted: mohawk debug logging is off)"


mohawk.util.pprint = _LazyPrettyPrint(mohawk.util.log)
mohawk.base.pprint = _LazyPrettyPrint(mohawk.base.log)


def _strings_match(a, b) -> bool:
    """Constant-time comparison, as mohawk's own, but in C (``hmac.compare_digest``).

    mohawk's pure-Python loop was 5 % of a single PUT's CPU. Text is compared
    as UTF-8; a MAC or hash is ASCII, so anything else simply does not match.
    """
    if isinstance(a, str):
        a = a.encode("utf-8", "surrogatepass")
    if isinstance(b, str):
        b = b.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(a, b)


mohawk.base.strings_match = _strings_match

__all__ = ["AuthError", "NonceStore", "NonceStoreError", "MemoryNonceStore", "RedisNonceStore",
           "load_nonce_store", "HawkAuthenticator", "sign"]

DEFAULT_SKEW = 60
"""Seconds a request's timestamp may be away from the server's clock."""

MISSING_AUTH = 104
INVALID_AUTH = 105

_ALGORITHMS = ("sha256", "sha1")  # what the Hawk specification allows
# Hawk timestamps are whole seconds. Checked before mohawk sees them: it
# would call int() on them, and float() on the result, unguarded.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_REQUIRED_ATTRIBUTES = ("id", "ts", "nonce", "mac")


class AuthError(Exception):
    """Authentication failed: answer ``401``.

    ``errno`` is 104 (no ``Authorization`` header, or not the Hawk scheme) or
    105 (anything else: malformed header, unknown id, bad MAC, bad or missing
    payload hash, stale or future timestamp, replayed nonce). ``message`` is
    short and safe to show to the client; ``log_message`` has the detail for
    the server log. Neither ever carries a key, nor mohawk's own texts.
    ``challenge`` holds the extra ``WWW-Authenticate`` attributes, if any
    (the server time, MAC'd, after a stale timestamp).
    """

    def __init__(self, errno: int, message: str, log_message: Optional[str] = None,
                 challenge: Optional[str] = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.message = message
        self.log_message = log_message or message
        self.challenge = challenge

    def __repr__(self) -> str:
        return f"AuthError({self.errno}, {self.message!r})"


class NonceStoreError(Exception):
    """The nonce store could not answer. ``original`` is the driver's
    exception (log it; never show it). Answer with ``503`` + ``Retry-After``."""

    def __init__(self, message: str = "nonce store unavailable",
                 original: Optional[BaseException] = None) -> None:
        super().__init__(message if original is None else f"{message}: {original!r}")
        self.original = original


class NonceStore(abc.ABC):
    """Remembers the nonces already used, per credential id, for ``2 * skew`` seconds."""

    @abc.abstractmethod
    async def check_and_remember(self, credential_id: str, nonce: str, timestamp: int) -> bool:
        """Atomically: ``True`` if ``(credential_id, nonce)`` was not seen in the
        last ``2 * skew`` seconds, remembering it from now on; ``False`` if it
        was (a replay). Raises :class:`NonceStoreError` when the store is down."""

    async def close(self) -> None:
        """Release connections. Further calls are not allowed."""

    async def heartbeat(self) -> None:
        """Return when the store answers; raise :class:`NonceStoreError` otherwise."""


class MemoryNonceStore(NonceStore):
    """Nonces in this process's memory: right for one process (``local://``).

    Entries expire ``2 * skew`` seconds after they were stored, by ``clock``
    (which must not go backwards). Expired entries are dropped on every call,
    so memory is bounded by the number of authenticated requests in
    ``2 * skew`` seconds (only requests whose MAC verified get here). Each
    call is atomic as it never yields to the event loop.
    """

    def __init__(self, skew: int = DEFAULT_SKEW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = 2 * skew
        self._clock = clock
        # (id, nonce) -> expiry time. Every entry gets the same lifetime, so
        # insertion order is expiry order: expired entries are at the front.
        self._seen: "collections.OrderedDict[Tuple[str, str], float]" = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    async def check_and_remember(self, credential_id: str, nonce: str, timestamp: int) -> bool:
        now = self._clock()
        self.prune(now)
        key = (credential_id, nonce)
        if key in self._seen:
            return False
        self._seen[key] = now + self.ttl
        return True

    def prune(self, now: Optional[float] = None) -> None:
        """Forget the entries that have expired."""
        if now is None:
            now = self._clock()
        seen = self._seen
        while seen:
            key, expires = next(iter(seen.items()))
            if expires > now:
                break
            del seen[key]

    async def close(self) -> None:
        self._seen.clear()


# SET NX EX for every key, in order, in one command: cheaper for redis-py to
# pack and parse than a pipeline of SETs (one reply instead of one per key).
# 1: stored (a new nonce), 0: already there.
_SET_ALL_NX = """
local stored = {}
for i, key in ipairs(KEYS) do
  stored[i] = redis.call('SET', key, '1', 'NX', 'EX', ARGV[1]) and 1 or 0
end
return stored
"""


class RedisNonceStore(NonceStore):
    """Nonces in Redis, shared by every process of a deployment.

    One ``SET key 1 NX EX <2*skew>`` per request: Redis decides atomically
    which of two processes saw a nonce first, and forgets it on its own. The
    key is ``<prefix><credential id>:<sha256 of the nonce>``, so a nonce
    cannot make an odd key whatever it contains (the hash has a fixed
    length, so the id cannot be confused with the nonce either).

    Redis errors become :class:`NonceStoreError`. Commands are not retried:
    a ``SET NX`` whose reply was lost cannot safely be sent again (the retry
    would see its own nonce and call the request a replay), and the client
    retries anyway after a ``503``.
    """

    def __init__(self, client: "redis.asyncio.Redis", skew: int = DEFAULT_SKEW,
                 prefix: str = "addonreg:nonce:", timeout: float = 2.0) -> None:
        self.client = client
        self.ttl = 2 * skew
        self.prefix = prefix
        self.timeout = timeout
        # Checks asked for during one pass of the event loop, sent together.
        self._checks: PassBatch[str, int] = PassBatch(self._set_all_nx)
        self._set_all = client.register_script(_SET_ALL_NX)
        self.round_trips = 0

    @classmethod
    def from_url(cls, url: str, skew: int = DEFAULT_SKEW, prefix: str = "addonreg:nonce:",
                 timeout: float = 2.0) -> "RedisNonceStore":
        """A store on the Redis at ``url`` (``redis://host:port/db``); connects lazily.

        ``timeout`` bounds connecting and every command, so a Redis that is
        down or stuck gives a prompt :class:`NonceStoreError`.
        """
        # No socket_timeout: redis-py wraps writes in asyncio.wait_for then,
        # which on Python 3.11 can swallow a cancellation (a close() that
        # hangs). Each call is bounded with asyncio.timeout instead.
        client = redis.asyncio.Redis.from_url(
            url, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))
        return cls(client, skew=skew, prefix=prefix, timeout=timeout)

    def key(self, credential_id: str, nonce: str) -> str:
        digest = hashlib.sha256(nonce.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.prefix}{credential_id}:{digest}"

    async def check_and_remember(self, credential_id: str, nonce: str, timestamp: int) -> bool:
        """One ``SET NX EX``; the checks of one pass of the event loop share one command.

        Under 64 concurrent PUTs a round trip per request cost a quarter of
        the throughput. The checks of one pass go as one script call
        (``_SET_ALL_NX``), which runs each SET NX in order, atomically (so the
        same nonce twice in one call is still caught the second time).
        """
        return bool(await self._checks.call(self.key(credential_id, nonce)))

    async def _set_all_nx(self, keys: List[str]) -> List[int]:
        self.round_trips += 1
        try:
            async with asyncio.timeout(self.timeout):
                return await self._set_all(keys=keys, args=[self.ttl])
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise NonceStoreError(original=exc) from exc

    async def heartbeat(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.ping()
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise NonceStoreError(original=exc) from exc

    async def close(self) -> None:
        await self.client.aclose()

    def __repr__(self) -> str:
        return f"<RedisNonceStore prefix={self.prefix!r} ttl={self.ttl}>"


def load_nonce_store(pubsub_url: str, skew: int = DEFAULT_SKEW) -> NonceStore:
    """The nonce store for the pub/sub URL of the settings.

    ``redis://host:port/db`` (or ``rediss://``) gives a :class:`RedisNonceStore`
    on that Redis, so all the processes sharing it share their nonces;
    ``local://`` gives a :class:`MemoryNonceStore` (one process). Raises
    ``ValueError`` for any other scheme.
    """
    parts = urlsplit(pubsub_url)
    scheme = parts.scheme
    if scheme in ("redis", "rediss"):
        # The query holds the bus's options (?channel=…), not redis-py's.
        return RedisNonceStore.from_url(urlunsplit(parts._replace(query="")), skew=skew)
    if scheme == "local":
        return MemoryNonceStore(skew=skew)
    raise ValueError("the pub/sub URL must be local:// or redis://host:port/db")


_ATTRIBUTE = mohawk.util.HAWK_HEADER_RE
_VALUE_CHARS = mohawk.util._header_attribute_chars.match


def _parse_header(header: str) -> Dict[str, str]:
    """``mohawk.util.parse_authorization_header``, same rules and exceptions, cheaper.

    mohawk runs a Python callback and a regex per attribute, and formats a
    debug line; this matches the attributes in one pass and checks all the
    values at once (the allowed characters are a set, so checking them joined
    is the same). ``tests/test_auth.py`` compares the two on many headers.
    """
    if len(header) > mohawk.util.MAX_LENGTH:
        raise mohawk.exc.BadHeaderValue("header too long")
    scheme, rest = header.split(" ", 1)
    if scheme.lower() != "hawk":
        raise mohawk.exc.HawkFail("not the Hawk scheme")
    attributes: Dict[str, str] = {}
    covered = 0
    for match in _ATTRIBUTE.finditer(rest):
        key, value = match.group("key", "value")
        if key not in mohawk.util.allowable_header_keys:
            raise mohawk.exc.HawkFail("unknown Hawk attribute")
        if key in attributes:
            raise mohawk.exc.BadHeaderValue("duplicate Hawk attribute")
        attributes[key] = value
        covered += match.end() - match.start()
    if not _VALUE_CHARS("".join(attributes.values())):
        raise mohawk.exc.BadHeaderValue("illegal character in a Hawk attribute")
    if covered != len(rest):
        raise mohawk.exc.BadHeaderValue("unparsable Hawk header")
    return attributes


_ODD_URL = re.compile(r"[^\x21-\x7e]|[;#]").search


@functools.lru_cache(maxsize=64)
def _host_and_port(origin: str) -> Tuple[str, str]:
    """``scheme://netloc`` -> (host, port) as mohawk reads them (port from the scheme)."""
    parts = mohawk.base.Resource.parse_url(None, origin + "/")
    return parts["hostname"] or "", str(parts["port"])


def _url_parts(url: str) -> Tuple[str, str, str]:
    """(host, port, resource) of ``url`` exactly as ``mohawk.base.Resource`` takes them.

    A request URL is ``scheme://host[:port]/path[?query]``: the host part is
    parsed once per origin; anything unusual takes mohawk's own parsing.
    """
    start = url.find("://") + 3
    slash = url.find("/", start) if start > 2 else -1
    rest = url[slash:] if slash > 0 else ""
    if not rest or rest.endswith("?") or _ODD_URL(url) or "?" in url[:slash] \
            or "\\" in url[:slash]:
        parts = mohawk.base.Resource.parse_url(None, url)
        return parts["hostname"] or "", str(parts["port"]), parts["resource"] or ""
    host, port = _host_and_port(url[:slash])
    return host, port, rest


class HawkAuthenticator:
    """Verifies Hawk ``Authorization`` headers against a set of credentials.

    ``credentials`` maps each accepted id to its key (a string, used as its
    UTF-8 bytes); ``nonces`` remembers used nonces; ``skew`` is the largest
    accepted distance, in seconds, between a request's timestamp and the
    server's clock. Built once per process.
    """

    def __init__(self, credentials: Mapping[str, str], nonces: NonceStore,
                 skew: int = DEFAULT_SKEW, algorithm: str = "sha256") -> None:
        if algorithm not in _ALGORITHMS:
            raise ValueError(f"Hawk algorithm must be one of {', '.join(_ALGORITHMS)}")
        for ident, key in credentials.items():
            if not ident or not isinstance(key, str) or not key:
                raise ValueError(f"Hawk credentials {ident!r}: the id and the key must be "
                                 "non-empty strings")
            try:
                mohawk.util.validate_header_attr(ident)
            except mohawk.exc.BadHeaderValue:
                raise ValueError(f"Hawk credential id {ident!r} has characters a Hawk "
                                 "header cannot carry") from None
        self._keys: Dict[str, bytes] = {i: k.encode("utf-8") for i, k in credentials.items()}
        self.nonces = nonces
        self.skew = skew
        self.algorithm = algorithm
        self._digest = getattr(hashlib, algorithm)

    def __repr__(self) -> str:
        return f"<HawkAuthenticator ids={sorted(self._keys)!r} skew={self.skew}>"

    def _credentials(self, credential_id: str) -> Dict[str, object]:
        """mohawk's credentials_map: raises ``LookupError`` for an unknown id."""
        # A fresh dict on every call: mohawk writes into the one it is given.
        return {"id": credential_id, "key": self._keys[credential_id],
                "algorithm": self.algorithm}

    async def authenticate(self, *, method: str, url: str, authorization: Optional[str],
                           content: bytes, content_type: Optional[str]) -> str:
        """Return the credential id the request is signed with, or raise :class:`AuthError`.

        ``url`` is the full URL the client used, ``scheme://<Host header>/path?query``
        (built from the ``Host`` header, so it works behind a load balancer);
        the scheme gives the port when the ``Host`` header has none.
        ``content`` is the raw body, ``content_type`` its ``Content-Type``
        header. Raises :class:`NonceStoreError` when the nonce cannot be
        checked.
        """
        if not authorization or not authorization.strip():
            raise AuthError(MISSING_AUTH, "Missing Authorization header",
                            "no Authorization header")
        scheme = authorization.split(None, 1)[0]
        if scheme.lower() != "hawk":
            raise AuthError(MISSING_AUTH, "Authorization must use the Hawk scheme",
                            f"Authorization scheme {scheme[:20]!r} is not Hawk")
        attributes = self._parse(authorization)
        credential_id = attributes["id"]
        key = self._keys.get(credential_id)
        if key is None:
            raise AuthError(INVALID_AUTH, "Unknown Hawk id",
                            f"unknown Hawk id {credential_id!r}")
        content = bytes(content)
        try:
            self._verify(attributes, key, method, url, content, content_type or "")
        except mohawk.exc.MacMismatch:
            raise AuthError(INVALID_AUTH, "Invalid Hawk signature",
                            f"MAC mismatch for Hawk id {credential_id!r} "
                            f"({method} {url})") from None
        except mohawk.exc.MisComputedContentHash:
            what = "wrong" if attributes.get("hash") else "missing"
            raise AuthError(INVALID_AUTH, f"Payload hash {what}",
                            f"payload hash {what} for Hawk id {credential_id!r} "
                            f"({len(content)} bytes, {content_type!r})") from None
        except mohawk.exc.TokenExpired as exc:
            now = exc.localtime_in_seconds
            raise AuthError(INVALID_AUTH, "Stale timestamp",
                            f"Hawk id {credential_id!r}: timestamp {attributes['ts']} is more "
                            f"than {self.skew} s from the server's {now}",
                            challenge=self._time_challenge(credential_id, now)) from None
        except (mohawk.exc.HawkFail, ValueError, TypeError, KeyError, UnicodeError,
                ArithmeticError) as exc:
            # Whatever else the URL or header chokes on (a Host header with a bad port…).
            raise AuthError(INVALID_AUTH, "Malformed Hawk request",
                            f"Hawk id {credential_id!r}: {type(exc).__name__}") from None

        nonce = attributes["nonce"]
        if not await self.nonces.check_and_remember(credential_id, nonce, int(attributes["ts"])):
            raise AuthError(INVALID_AUTH, "Replayed nonce",
                            f"Hawk id {credential_id!r} reused nonce {nonce!r}")
        return credential_id

    def _verify(self, attributes: Dict[str, str], key: bytes, method: str, url: str,
                content: bytes, content_type: str) -> None:
        """mohawk's ``Receiver`` checks, in its order, on the header parsed once.

        ``mohawk.Receiver`` parses the header a second time, builds a
        ``Resource``, parses the URL and formats debug lines: about 12 % of a
        single PUT's CPU. This runs the same checks (MAC, payload hash,
        timestamp, in mohawk's order, raising mohawk's exceptions) with the
        Hawk 1 normalised strings written out; ``tests/test_auth.py`` checks
        that it decides as ``mohawk.Receiver`` on every kind of request.
        """
        host, port, resource = _url_parts(url)
        their_hash = attributes.get("hash", "")
        lines = ["hawk.1.header", attributes["ts"], attributes["nonce"], method.upper(),
                 resource, host, port, their_hash, attributes.get("ext") or ""]
        if attributes.get("app"):
            lines += (attributes["app"], attributes.get("dlg") or "")
        lines.append("")
        mac = hmac.digest(key, "\n".join(lines).encode("utf-8"), self.algorithm)
        if not _strings_match(base64.b64encode(mac), attributes["mac"]):
            raise mohawk.exc.MacMismatch("MACs do not match")
        # A body needs its hash; without a body a hash is checked when sent.
        if "hash" in attributes or content:
            normalized_type = content_type.split(";")[0].strip().lower()
            payload = self._digest(b"hawk.1.payload\n%s\n" % normalized_type.encode("utf-8"))
            payload.update(content)  # not copied into a larger string: bodies go up to 4 MiB
            payload.update(b"\n")
            ours = payload.digest()
            if not _strings_match(base64.b64encode(ours), their_hash):
                raise mohawk.exc.MisComputedContentHash("payload hash mismatch")
        now = int(time.time())
        if abs(int(attributes["ts"]) - now) > self.skew:
            raise mohawk.exc.TokenExpired("stale timestamp", localtime_in_seconds=now,
                                          www_authenticate="")

    @staticmethod
    def _parse(authorization: str) -> Dict[str, str]:
        """The header's attributes, or :class:`AuthError` when it is malformed."""
        try:
            attributes = _parse_header(authorization)
        except (mohawk.exc.HawkFail, ValueError, UnicodeError) as exc:
            # Not the exception's text: mohawk may quote the header in it.
            raise AuthError(INVALID_AUTH, "Malformed Hawk header",
                            f"unparsable Hawk header ({type(exc).__name__})") from None
        missing = [name for name in _REQUIRED_ATTRIBUTES if not attributes.get(name)]
        if missing:
            raise AuthError(INVALID_AUTH, "Malformed Hawk header",
                            f"Hawk header lacks {', '.join(missing)}")
        if not _TIMESTAMP.fullmatch(attributes["ts"]):
            raise AuthError(INVALID_AUTH, "Malformed Hawk header",
                            "Hawk timestamp is not a number of seconds")
        return attributes

    def _time_challenge(self, credential_id: str, now: int) -> Optional[str]:
        """``ts="…", tsm="…"``: the server time MAC'd with the client's key (Hawk spec)."""
        try:
            tsm = mohawk.util.calculate_ts_mac(now, self._credentials(credential_id))
        except LookupError:
            return None
        if isinstance(tsm, bytes):
            tsm = tsm.decode("ascii")
        return f'ts="{now}", tsm="{tsm}", error="Stale timestamp"'

    def www_authenticate(self, error: Optional[AuthError] = None) -> str:
        """The ``WWW-Authenticate`` value of a ``401``: ``Hawk``, and after a stale
        timestamp the server time (``ts``) with its MAC (``tsm``), from which a
        client can correct its clock."""
        if error is not None and error.challenge:
            return f"Hawk {error.challenge}"
        return "Hawk"


def sign(credential_id: str, key: str, method: str, url: str, content: bytes = b"",
         content_type: Optional[str] = "application/json", nonce: Optional[str] = None,
         timestamp: Optional[int] = None, *, hash_content: Optional[bool] = None) -> str:
    """The ``Authorization`` header value for a request (client side).

    The payload hash covers ``content`` and ``content_type`` (send that same
    ``Content-Type``). ``hash_content`` defaults to hashing only when there
    is a body, which is what the server requires; without a body a hash
    would also cover the ``Content-Type``, which a body-less request may
    well not send. The nonce defaults to 128 random bits.
    """
    if hash_content is None:
        hash_content = bool(content)
    credentials = {"id": credential_id, "key": key.encode("utf-8"), "algorithm": "sha256"}
    sender = mohawk.Sender(
        credentials, url, method,
        content=content if hash_content else mohawk.base.EmptyValue,
        content_type=(content_type or "") if hash_content else mohawk.base.EmptyValue,
        always_hash_content=hash_content,
        nonce=nonce or secrets.token_urlsafe(16),
        _timestamp=timestamp)
    return sender.request_header
