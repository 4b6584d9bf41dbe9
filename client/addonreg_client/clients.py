"""The four clients: lookups and writes, blocking and asyncio.

:class:`LookupClient` / :class:`AsyncLookupClient` answer "is this file
registered?" for browsers and tools; :class:`WriterClient` /
:class:`AsyncWriterClient` are AMO's, signing every write with Hawk, and can
also check. Each flavour's methods have the same names, arguments and results
(the async ones are coroutines). Each is built by composition: its logic
(:mod:`addonreg_client._core`, written once, without I/O) and a driver
(:mod:`addonreg_client._drivers`: ``httpx.Client`` and ``time.sleep``, or
``httpx.AsyncClient`` and ``asyncio.sleep``). Pass ``http=`` an ``httpx``
client of your own (proxies, TLS settings, connection limits): the client
uses it and leaves closing it to you.

What every client guarantees:

* **It validates before it asks**: every ``addon_id``, ``sha256`` and
  ``version`` is checked by the contract's rules (:mod:`addonreg_client.ids`,
  the service's own) before it is put in a URL or a body;
  :class:`~addonreg_client.errors.InvalidRequestError` otherwise.
* **It proves every answer** (:mod:`addonreg_client.answers`): the record is
  about the file asked, a bulk answer has one result per file in order,
  every status and type is the contract's, the HTTP status agrees with the
  body; ``unknown`` only from the service's own ``404`` naming the file.
  Anything else is a :class:`~addonreg_client.errors.BadAnswerError`.
* **Bounded**: every call ends within ``RetryPolicy.deadline`` (30 s by
  default) — connect, body, retries and waits — and a bulk call within that
  per chunk it sends; each socket read or write
  within ``timeout`` (10 s, 3 s to connect); no answer larger than
  ``max_response_size`` (8 MiB) is read; no redirect to another origin is
  followed (:class:`~addonreg_client.errors.RedirectRefused`).
* **Retries** of ``503`` (``502``/``504``) and connection failures only, with
  exponential back-off and full jitter, capped, never sooner than the
  server's ``Retry-After`` (:mod:`addonreg_client.retry` names the Safe
  Browsing v4 rules it follows). Writes are idempotent, so they are retried
  too, errno 204 ("outcome unknown") included; each attempt is signed anew.
* **Chunking** to the limits the service advertises on ``GET /v1/`` (read
  once per client): ``max_lookup`` files per lookup, ``max_write``
  operations per bulk write. Each chunk is its own all-or-nothing request:
  when one fails, those before it are written (send them all again: writes
  are idempotent).
* **MessagePack** on the wire for bulk requests and answers (JSON when
  ``msgpack`` is not installed).
* **Caching** of single-file answers as their ``Cache-Control`` allows, with
  ``If-None-Match`` revalidation (:mod:`addonreg_client.cache`).
* **An offline filter**, when given (``addonreg.filter.FilterReader.from_index``:
  ``status(addon_id, sha256)`` -> ``"registered"|"revoked"|"not-in-filter"``,
  ``serial`` and the signed ``built_at``), is used only while it is younger
  than ``filter_max_age`` (7 days, the service's ``filter_max_base_age``; a
  reader without ``built_at`` is never used) and only where it is certain:
  ``revoked`` always (not registered, either way); ``registered`` only for a
  file this client saw the service answer ``registered`` (single checks,
  which carry the serial) at a serial no later than the filter's; anything
  else goes to the service.
* Typed results (:mod:`addonreg_client.results`), one exception hierarchy
  (:mod:`addonreg_client.errors`), and credentials never in a ``repr``, a log
  line or an exception.

A blocking client may be shared between threads (``httpx.Client`` is
thread-safe and the cache takes a lock); an async client belongs to the event
loop it is used on. A client holds connections: use it as a context manager,
or call ``close()`` / ``await aclose()``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Literal, overload

import httpx

from ._core import DEFAULT_SERVER, FileLike, LookupLogic, OfflineFilter, WriterLogic
from ._drivers import AsyncDriver, SyncDriver
from .auth import Credentials
from .cache import ResponseCache
from .errors import AddonregError
from .results import CheckResult, Job, Operation, ServiceInfo, WriteResult

__all__ = [
    "ENV_CLIENT_ID",
    "ENV_CLIENT_KEY",
    "ENV_SERVER",
    "AsyncLookupClient",
    "AsyncWriterClient",
    "LookupClient",
    "WriterClient",
    "environment_credentials",
    "server_url",
]

ENV_SERVER = "ADDONREG_CLIENT_SERVER"
ENV_CLIENT_ID = "ADDONREG_CLIENT_ID"
ENV_CLIENT_KEY = "ADDONREG_CLIENT_KEY"

OperationLike = Operation | Mapping[str, Any]


def environment_credentials(environ: Mapping[str, str] | None = None) -> Credentials:
    """The Hawk credential from ``$ADDONREG_CLIENT_ID`` and ``$ADDONREG_CLIENT_KEY``."""
    env = os.environ if environ is None else environ
    ident, key = env.get(ENV_CLIENT_ID, ""), env.get(ENV_CLIENT_KEY, "")
    if not ident or not key:
        raise AddonregError(
            f"set ${ENV_CLIENT_ID} and ${ENV_CLIENT_KEY} to a Hawk credential the service accepts"
        )
    return Credentials(ident, key)


def server_url(server: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``server``, else ``$ADDONREG_CLIENT_SERVER``, else ``http://127.0.0.1:8000``."""
    env = os.environ if environ is None else environ
    return server or env.get(ENV_SERVER) or DEFAULT_SERVER


def _renamed(old: str, new: str) -> None:
    """Warn the caller of a method by its name of an earlier release."""
    warnings.warn(
        f"{old}() is deprecated; use {new}(), the same call", DeprecationWarning, stacklevel=3
    )


class _Face:
    """What the four clients share: their logic, and its settings as attributes."""

    _logic: LookupLogic

    @property
    def server(self) -> str:
        return self._logic.server

    @property
    def cache(self) -> ResponseCache:
        """The HTTP cache of single-file answers."""
        return self._logic.cache

    @property
    def filter(self) -> OfflineFilter | None:
        """The offline filter (may be replaced by a newer one at any time)."""
        return self._logic.filter

    @filter.setter
    def filter(self, reader: OfflineFilter | None) -> None:
        self._logic.filter = reader

    def __repr__(self) -> str:
        return repr(self._logic).replace(type(self._logic).__name__, type(self).__name__, 1)


class LookupClient(_Face):
    """Checks files against one addonreg server, blocking.

    ``LookupClient(server="http://127.0.0.1:8000", *, timeout=…, retry=RetryPolicy(),
    max_response_size=8 MiB, cache_size=10000, filter=None, filter_max_age=7 days,
    http=None, transport=None)``; ``http`` is an ``httpx.Client`` of the
    caller's, ``transport`` an ``httpx`` transport for the client's own.

    >>> with LookupClient("https://addonreg.example") as client:  # doctest: +SKIP
    ...     client.check("fx@example.com", sha256_file("fx.xpi")).registered
    True
    """

    _logic_class: type[LookupLogic] = LookupLogic

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        **options: Any,
    ) -> None:
        self._logic = self._logic_class(server, **options)
        self._driver = SyncDriver(self._logic.clock, http, transport)

    def close(self) -> None:
        """Close the connections (the client cannot be used afterwards)."""
        self._driver.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def check(self, addon_id: str, sha256: str) -> CheckResult:
        """One file (``GET /v1/addons/{addon_id}/files/{sha256}``, through the cache)."""
        return self._driver.run(self._logic._check(addon_id, sha256))

    def check_many(self, files: Iterable[FileLike]) -> list[CheckResult]:
        """Many files — ``(addon_id, sha256)`` pairs or ``{"addon_id", "sha256"}`` — in order."""
        return self._driver.run(self._logic._check_many(files))

    def service_info(self) -> ServiceInfo:
        """``GET /v1/`` (read once per client)."""
        return self._driver.run(self._logic._info(self._logic.until()))


class AsyncLookupClient(_Face):
    """:class:`LookupClient` on asyncio: the same methods, as coroutines."""

    _logic_class: type[LookupLogic] = LookupLogic

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Any,
    ) -> None:
        self._logic = self._logic_class(server, **options)
        self._driver = AsyncDriver(self._logic.clock, http, transport)

    async def aclose(self) -> None:
        """Close the connections (the client cannot be used afterwards)."""
        await self._driver.aclose()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def check(self, addon_id: str, sha256: str) -> CheckResult:
        """One file (``GET /v1/addons/{addon_id}/files/{sha256}``, through the cache)."""
        return await self._driver.run(self._logic._check(addon_id, sha256))

    async def check_many(self, files: Iterable[FileLike]) -> list[CheckResult]:
        """Many files — ``(addon_id, sha256)`` pairs or ``{"addon_id", "sha256"}`` — in order."""
        return await self._driver.run(self._logic._check_many(files))

    async def service_info(self) -> ServiceInfo:
        """``GET /v1/`` (read once per client)."""
        return await self._driver.run(self._logic._info(self._logic.until()))


class WriterClient(LookupClient):
    """AMO's client, blocking: Hawk-signed writes, and every :class:`LookupClient` method.

    ``WriterClient(server, client_id, key, **options)``, or
    :meth:`from_environment`.
    """

    _logic_class = WriterLogic
    _logic: WriterLogic

    def __init__(self, server: str, client_id: str, key: str, **options: Any) -> None:
        super().__init__(server, credentials=Credentials(client_id, key), **options)

    @classmethod
    def from_environment(
        cls, server: str | None = None, environ: Mapping[str, str] | None = None, **options: Any
    ) -> WriterClient:
        """Credentials from ``$ADDONREG_CLIENT_ID``/``$ADDONREG_CLIENT_KEY``; the server
        from the argument, else ``$ADDONREG_CLIENT_SERVER``, else the default."""
        creds = environment_credentials(environ)
        return cls(server_url(server, environ), creds.id, creds.key, **options)

    def register(self, addon_id: str, sha256: str, version: str | None = None) -> WriteResult:
        """``PUT``: register (again) a file; ``created`` says whether it was new."""
        return self._driver.run(self._logic._register(addon_id, sha256, version))

    def revoke(self, addon_id: str, sha256: str) -> WriteResult:
        """``DELETE``: revoke a file; :class:`NotFoundError` when it is unknown."""
        return self._driver.run(self._logic._revoke(addon_id, sha256))

    @overload
    def write_many(
        self, operations: Iterable[OperationLike], respond_async: Literal[False] = False
    ) -> list[WriteResult]: ...

    @overload
    def write_many(
        self, operations: Iterable[OperationLike], respond_async: Literal[True]
    ) -> list[str]: ...

    def write_many(
        self, operations: Iterable[OperationLike], respond_async: bool = False
    ) -> list[WriteResult] | list[str]:
        """Apply many operations (registrations and revocations, :class:`Operation`):
        ``POST /v1/registrations`` in chunks of ``max_write``; each operation's result,
        or with ``respond_async`` the job id of each chunk (see :meth:`wait_for_job`)."""
        return self._driver.run(self._logic._write_many(operations, respond_async))

    @overload
    def register_many(
        self, operations: Iterable[OperationLike], respond_async: Literal[False] = False
    ) -> list[WriteResult]: ...

    @overload
    def register_many(
        self, operations: Iterable[OperationLike], respond_async: Literal[True]
    ) -> list[str]: ...

    def register_many(
        self, operations: Iterable[OperationLike], respond_async: bool = False
    ) -> list[WriteResult] | list[str]:
        """Deprecated: :meth:`write_many`, the same call (it revokes too)."""
        _renamed("register_many", "write_many")
        return self._driver.run(self._logic._write_many(operations, respond_async))

    def job(self, job_id: str) -> Job:
        """``GET /v1/jobs/{id}``: the job's state now."""
        return self._driver.run(self._logic._job(job_id))

    def wait_for_job(self, job_id: str, timeout: float = 60.0, interval: float = 0.2) -> Job:
        """Poll the job until ``done`` or ``failed`` (the wait doubles up to 2 s);
        :class:`JobTimeout` after ``timeout`` seconds."""
        return self._driver.run(self._logic._wait_for_job(job_id, timeout, interval))


class AsyncWriterClient(AsyncLookupClient):
    """:class:`WriterClient` on asyncio: the same methods, as coroutines."""

    _logic_class = WriterLogic
    _logic: WriterLogic

    def __init__(self, server: str, client_id: str, key: str, **options: Any) -> None:
        super().__init__(server, credentials=Credentials(client_id, key), **options)

    @classmethod
    def from_environment(
        cls, server: str | None = None, environ: Mapping[str, str] | None = None, **options: Any
    ) -> AsyncWriterClient:
        """As :meth:`WriterClient.from_environment`."""
        creds = environment_credentials(environ)
        return cls(server_url(server, environ), creds.id, creds.key, **options)

    async def register(self, addon_id: str, sha256: str, version: str | None = None) -> WriteResult:
        """``PUT``: register (again) a file; ``created`` says whether it was new."""
        return await self._driver.run(self._logic._register(addon_id, sha256, version))

    async def revoke(self, addon_id: str, sha256: str) -> WriteResult:
        """``DELETE``: revoke a file; :class:`NotFoundError` when it is unknown."""
        return await self._driver.run(self._logic._revoke(addon_id, sha256))

    @overload
    async def write_many(
        self, operations: Iterable[OperationLike], respond_async: Literal[False] = False
    ) -> list[WriteResult]: ...

    @overload
    async def write_many(
        self, operations: Iterable[OperationLike], respond_async: Literal[True]
    ) -> list[str]: ...

    async def write_many(
        self, operations: Iterable[OperationLike], respond_async: bool = False
    ) -> list[WriteResult] | list[str]:
        """As :meth:`WriterClient.write_many`."""
        return await self._driver.run(self._logic._write_many(operations, respond_async))

    @overload
    async def register_many(
        self, operations: Iterable[OperationLike], respond_async: Literal[False] = False
    ) -> list[WriteResult]: ...

    @overload
    async def register_many(
        self, operations: Iterable[OperationLike], respond_async: Literal[True]
    ) -> list[str]: ...

    async def register_many(
        self, operations: Iterable[OperationLike], respond_async: bool = False
    ) -> list[WriteResult] | list[str]:
        """Deprecated: :meth:`write_many`, the same call (it revokes too)."""
        _renamed("register_many", "write_many")
        return await self._driver.run(self._logic._write_many(operations, respond_async))

    async def job(self, job_id: str) -> Job:
        """``GET /v1/jobs/{id}``: the job's state now."""
        return await self._driver.run(self._logic._job(job_id))

    async def wait_for_job(self, job_id: str, timeout: float = 60.0, interval: float = 0.2) -> Job:
        """As :meth:`WriterClient.wait_for_job`."""
        return await self._driver.run(self._logic._wait_for_job(job_id, timeout, interval))
