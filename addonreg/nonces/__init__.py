"""The nonce stores behind Hawk: a nonce is accepted once per credential.

:class:`MemoryNonceStore` serves one process (``local://`` and ``feed://``
deployments); :class:`RedisNonceStore` is shared by every process on the
pub/sub Redis, so a request replayed to another process is refused too.
:func:`load_nonce_store` picks one from the pub/sub URL. Stores are built
once per process and used from its event loop (not thread-safe).

Guarantees (``nonces/testing.py``, the contract suite ``tests/test_nonces.py``
runs on both):

* :meth:`NonceStore.check_and_remember` is atomic: of two calls with the
  same ``(credential id, nonce)`` within ``2 * skew`` seconds exactly one
  returns True, whichever processes made them.
* A store that cannot answer raises :class:`NonceStoreError` (answer ``503``),
  never lets a request in unchecked.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import hashlib
import secrets
import time
from typing import Callable, Deque, List, Optional, Set
from urllib.parse import urlsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..coalesce import PassBatch

__all__ = [
    "NonceStore",
    "NonceStoreError",
    "MemoryNonceStore",
    "RedisNonceStore",
    "load_nonce_store",
]


class NonceStoreError(Exception):
    """The nonce store could not answer; ``original`` is the driver's exception (logged only)."""

    def __init__(
        self, message: str = "nonce store unavailable", original: Optional[BaseException] = None
    ) -> None:
        super().__init__(message if original is None else f"{message}: {original!r}")
        self.original = original


class NonceStore(abc.ABC):
    """Remembers the nonces already used, per credential id, for ``2 * skew`` seconds."""

    @abc.abstractmethod
    async def check_and_remember(self, credential_id: str, nonce: str, timestamp: int) -> bool:
        """True if ``(credential_id, nonce)`` is new (and remember it), False for a replay."""

    async def close(self) -> None:
        """Release connections."""

    async def heartbeat(self) -> None:
        """Return when the store answers; raise :class:`NonceStoreError` otherwise."""


class MemoryNonceStore(NonceStore):
    """Nonces in this process's memory, dropped ``2 * skew`` seconds after use.

    Every entry has the same lifetime, so insertion order is expiry order and
    pruning pops from the front: memory is bounded by the authenticated
    requests of ``2 * skew`` seconds. ``clock`` must not go backwards.

    Hand-written rather than an ``OrderedDict`` of ``(id, nonce)`` tuples, for a
    measured cost: at a few thousand PUTs a second the store holds hundreds of
    thousands of entries, and those containers (linked nodes, GC-tracked tuples)
    cost PUT-64 about 17 µs a request (bench/results/README.md). Here an entry
    is one string in a plain dict, and the expiry order two deques of atoms.
    """

    def __init__(self, skew: int = 60, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = 2 * skew
        self._clock = clock
        self._seen: Set[str] = set()
        # Parallel, in insertion (= expiry) order: when each entry expires, and its key.
        self._expiries: Deque[float] = collections.deque()
        self._keys: Deque[str] = collections.deque()

    def __len__(self) -> int:
        return len(self._seen)

    async def check_and_remember(self, credential_id: str, nonce: str, timestamp: int) -> bool:
        now = self._clock()
        if self._expiries and self._expiries[0] <= now:
            self.prune(now)
        # Credential ids hold no newline (HawkAuthenticator checks): one string a key.
        key = f"{credential_id}\n{nonce}"
        if key in self._seen:
            return False
        self._seen.add(key)
        self._expiries.append(now + self.ttl)
        self._keys.append(key)
        return True

    def prune(self, now: Optional[float] = None) -> None:
        """Forget the entries that have expired."""
        now = self._clock() if now is None else now
        expiries, keys, seen = self._expiries, self._keys, self._seen
        while expiries and expiries[0] <= now:
            expiries.popleft()
            seen.discard(keys.popleft())

    async def close(self) -> None:
        self._seen.clear()
        self._expiries.clear()
        self._keys.clear()


# SET NX EX for every key, in order, in one command (cheaper for redis-py to
# pack and parse than a pipeline: one reply). Each call stores its own token,
# so a call sent again after a lost reply recognises what it stored itself
# and still answers 1; a key twice in one call is a replay the second time.
_SET_ALL_NX = """
local stored, seen = {}, {}
for i, key in ipairs(KEYS) do
  if seen[key] then
    stored[i] = 0
  elseif redis.call('SET', key, ARGV[2], 'NX', 'EX', ARGV[1]) then
    stored[i] = 1
  else
    stored[i] = (redis.call('GET', key) == ARGV[2]) and 1 or 0
  end
  seen[key] = true
end
return stored
"""
_REDIS_ERRORS = (redis.exceptions.RedisError, OSError, TimeoutError)


class RedisNonceStore(NonceStore):
    """Nonces in Redis (``SET NX EX``), shared by every process of a deployment.

    The key is ``<prefix><credential id>:<sha256 of the nonce>``: whatever a
    nonce holds, it cannot make an odd key. The checks asked for during one
    pass of the event loop go to Redis as one script call (under 64
    concurrent PUTs a round trip per request cost a quarter of the
    throughput). A call that fails on a connection error is sent once more on
    a fresh connection (the pooled one is dead after a Redis restart): safe,
    since the script recognises its own token.
    """

    def __init__(
        self,
        client: "redis.asyncio.Redis",
        skew: int = 60,
        prefix: str = "addonreg:nonce:",
        timeout: float = 2.0,
    ) -> None:
        self.client = client
        self.ttl = 2 * skew
        self.prefix = prefix
        self.timeout = timeout
        self._checks: PassBatch[str, int] = PassBatch(self._set_all_nx)
        self._set_all = client.register_script(_SET_ALL_NX)
        self.round_trips = 0

    @classmethod
    def from_url(
        cls, url: str, skew: int = 60, prefix: str = "addonreg:nonce:", timeout: float = 2.0
    ) -> "RedisNonceStore":
        """A store on the Redis at ``url`` (connects lazily; ``timeout`` bounds every call)."""
        # No socket_timeout: redis-py then wraps writes in asyncio.wait_for, which
        # on Python 3.11 can swallow a cancellation. Calls are bounded here instead.
        client = redis.asyncio.Redis.from_url(
            url, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        return cls(client, skew=skew, prefix=prefix, timeout=timeout)

    def key(self, credential_id: str, nonce: str) -> str:
        digest = hashlib.sha256(nonce.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.prefix}{credential_id}:{digest}"

    async def check_and_remember(self, credential_id: str, nonce: str, timestamp: int) -> bool:
        return bool(await self._checks.call(self.key(credential_id, nonce)))

    async def _set_all_nx(self, keys: List[str]) -> List[int]:
        token = secrets.token_hex(8)
        for attempt in (1, 2):
            self.round_trips += 1
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._set_all(keys=keys, args=[self.ttl, token])
            except (redis.exceptions.ConnectionError, ConnectionError) as exc:
                if attempt == 2:
                    raise NonceStoreError(original=exc) from exc
            except _REDIS_ERRORS as exc:
                raise NonceStoreError(original=exc) from exc
        raise AssertionError("unreachable")

    async def heartbeat(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.ping()  # type: ignore[misc]  # redis-py 7 types it bool | Awaitable
        except _REDIS_ERRORS as exc:
            raise NonceStoreError(original=exc) from exc

    async def close(self) -> None:
        await self.client.aclose()

    def __repr__(self) -> str:
        return f"<RedisNonceStore prefix={self.prefix!r} ttl={self.ttl}>"


def load_nonce_store(pubsub_url: str, skew: int = 60) -> NonceStore:
    """The store for a pub/sub URL: Redis for ``redis://`` (shared), memory otherwise.

    Raises ``ValueError`` for an unknown scheme.
    """
    from ..bus.redis import parse_url  # the one parser of Redis URLs (the bus's options)

    scheme = urlsplit(pubsub_url).scheme
    if scheme in ("redis", "rediss"):
        plain, options = parse_url(pubsub_url)
        return RedisNonceStore.from_url(plain, skew=skew, timeout=max(options["timeout"], 2.0))
    if scheme in ("local", "feed"):
        return MemoryNonceStore(skew=skew)
    raise ValueError("the pub/sub URL must be local://, feed:// or redis://host:port/db")
