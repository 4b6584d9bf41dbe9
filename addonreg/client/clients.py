"""The four clients: lookups and writes, blocking and asyncio.

:class:`LookupClient` / :class:`AsyncLookupClient` answer "is this file
registered?" for browsers and tools; :class:`WriterClient` /
:class:`AsyncWriterClient` are AMO's, signing every write with Hawk, and can
also check. Each flavour's methods have the same names, arguments and results
(the async ones are coroutines); their logic is written once, in
:mod:`addonreg.client._core`.

What every client guarantees:

* **Timeouts** on every request (10 s, 3 s to connect, by default).
* **Retries** of ``503`` (``502``/``504``) and connection failures only, with
  exponential back-off and full jitter, capped, never sooner than the
  server's ``Retry-After`` (:mod:`addonreg.client.retry` names the Safe
  Browsing v4 rules it follows). Writes are idempotent, so they are retried
  too, errno 204 ("outcome unknown") included; each attempt is signed anew.
* **Chunking** to the limits the service advertises on ``GET /v1/`` (read
  once per client): ``max_lookup`` files per lookup, ``max_write``
  operations per bulk write. Each chunk is its own all-or-nothing request:
  when one fails, those before it are written (send them all again: writes
  are idempotent).
* **MessagePack** on the wire for bulk requests and answers.
* **Caching** of single-file answers as their ``Cache-Control`` allows, with
  ``If-None-Match`` revalidation (:mod:`addonreg.client.cache`).
* **An offline filter**, when given (an object with ``status(addon_id,
  sha256)`` -> ``"registered"|"revoked"|"not-in-filter"`` and ``serial``), is
  used only where it is certain: ``revoked`` always (not registered, either
  way); ``registered`` only for a file this client saw the service answer
  ``registered`` (single checks, which carry the serial) at a serial no
  later than the filter's; anything else goes to the service.
* Typed results (:mod:`addonreg.client.results`), one exception hierarchy
  (:mod:`addonreg.client.errors`), and credentials never in a ``repr``, a log
  line or an exception.

A blocking client may be shared between threads (``httpx.Client`` is
thread-safe and the cache takes a lock); an async client belongs to the event
loop it is used on. A client holds connections: use it as a context manager,
or call ``close()`` / ``await aclose()``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, Literal, overload

from ._core import DEFAULT_SERVER, Credentials, FileLike, LookupLogic, WriterLogic
from ._drivers import AsyncDriver, SyncDriver
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


class LookupClient(SyncDriver, LookupLogic):
    """Checks files against one addonreg server, blocking.

    ``LookupClient(server="http://127.0.0.1:8000", *, timeout=…, retry=RetryPolicy(),
    cache_size=10000, filter=None, transport=None)``; ``transport`` is an
    ``httpx`` transport (a proxy, a counting wrapper in tests).

    >>> with LookupClient("https://addonreg.example") as client:  # doctest: +SKIP
    ...     client.check("fx@example.com", sha256_file("fx.xpi")).registered
    True
    """

    def check(self, addon_id: str, sha256: str) -> CheckResult:
        """One file (``GET /v1/addons/{addon_id}/files/{sha256}``, through the cache)."""
        return self._run(self._check(addon_id, sha256))

    def check_many(self, files: Iterable[FileLike]) -> list[CheckResult]:
        """Many files — ``(addon_id, sha256)`` pairs or ``{"addon_id", "sha256"}`` — in order."""
        return self._run(self._check_many(files))

    def service_info(self) -> ServiceInfo:
        """``GET /v1/`` (read once per client)."""
        return self._run(self._info())


class AsyncLookupClient(AsyncDriver, LookupLogic):
    """:class:`LookupClient` on asyncio: the same methods, as coroutines."""

    async def check(self, addon_id: str, sha256: str) -> CheckResult:
        """One file (``GET /v1/addons/{addon_id}/files/{sha256}``, through the cache)."""
        return await self._run(self._check(addon_id, sha256))

    async def check_many(self, files: Iterable[FileLike]) -> list[CheckResult]:
        """Many files — ``(addon_id, sha256)`` pairs or ``{"addon_id", "sha256"}`` — in order."""
        return await self._run(self._check_many(files))

    async def service_info(self) -> ServiceInfo:
        """``GET /v1/`` (read once per client)."""
        return await self._run(self._info())


class WriterClient(LookupClient, WriterLogic):
    """AMO's client, blocking: Hawk-signed writes, and every :class:`LookupClient` method.

    ``WriterClient(server, client_id, key, **options)``, or
    :meth:`from_environment`.
    """

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
        return self._run(self._register(addon_id, sha256, version))

    def revoke(self, addon_id: str, sha256: str) -> WriteResult:
        """``DELETE``: revoke a file; :class:`NotFoundError` when it is unknown."""
        return self._run(self._revoke(addon_id, sha256))

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
        """``POST /v1/registrations`` in chunks of ``max_write``: each operation's result,
        or with ``respond_async`` the job id of each chunk (see :meth:`wait_for_job`)."""
        return self._run(self._write_many(operations, respond_async))

    def job(self, job_id: str) -> Job:
        """``GET /v1/jobs/{id}``: the job's state now."""
        return self._run(self._job(job_id))

    def wait_for_job(self, job_id: str, timeout: float = 60.0, interval: float = 0.2) -> Job:
        """Poll the job until ``done`` or ``failed`` (the wait doubles up to 2 s);
        :class:`JobTimeout` after ``timeout`` seconds."""
        return self._run(self._wait_for_job(job_id, timeout, interval))


class AsyncWriterClient(AsyncLookupClient, WriterLogic):
    """:class:`WriterClient` on asyncio: the same methods, as coroutines."""

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
        return await self._run(self._register(addon_id, sha256, version))

    async def revoke(self, addon_id: str, sha256: str) -> WriteResult:
        """``DELETE``: revoke a file; :class:`NotFoundError` when it is unknown."""
        return await self._run(self._revoke(addon_id, sha256))

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
        """As :meth:`WriterClient.register_many`."""
        return await self._run(self._write_many(operations, respond_async))

    async def job(self, job_id: str) -> Job:
        """``GET /v1/jobs/{id}``: the job's state now."""
        return await self._run(self._job(job_id))

    async def wait_for_job(self, job_id: str, timeout: float = 60.0, interval: float = 0.2) -> Job:
        """As :meth:`WriterClient.wait_for_job`."""
        return await self._run(self._wait_for_job(job_id, timeout, interval))
