"""The clients' logic, written once for the sync and the async flavours.

Every client method is a generator of *effects* — :class:`Send` (an HTTP
request) and :class:`Sleep` (a wait) — that receives each effect's outcome
(an ``httpx.Response``, or the ``httpx.TransportError`` the request raised).
:mod:`addonreg.client._drivers` carries the effects out, with ``httpx.Client``
and ``time.sleep`` or with ``httpx.AsyncClient`` and ``asyncio.sleep``; what
is sent, retried, cached and concluded is decided here only.

:class:`Engine` sends one request with the retry rules of
:mod:`addonreg.client.retry` (signing each attempt anew when it is a write);
:class:`LookupLogic` checks files (single reads through the HTTP cache, bulk
lookups in msgpack chunked to ``max_lookup``, an optional offline filter);
:class:`WriterLogic` adds the Hawk-signed writes and jobs.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx
import mohawk
import msgpack
from mohawk.base import EmptyValue

from .. import __version__
from .cache import ResponseCache
from .errors import AddonregError, JobTimeout, UnavailableError, error_for
from .results import (
    CheckResult,
    FileKey,
    Job,
    Operation,
    ServiceInfo,
    WriteResult,
    normalize_key,
)
from .retry import RETRY_STATUSES, RetryPolicy, parse_retry_after

__all__ = [
    "DEFAULT_SERVER",
    "DEFAULT_TIMEOUT",
    "Credentials",
    "Engine",
    "FilterReader",
    "LookupLogic",
    "Send",
    "Sleep",
    "Steps",
    "WriterLogic",
]

T = TypeVar("T")
JSON = "application/json"
MSGPACK = "application/msgpack"
DEFAULT_SERVER = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
"""Every request gives up after 10 s (3 s to connect) unless told otherwise."""


@dataclasses.dataclass(frozen=True)
class Send:
    """Send this request; the outcome is the response, or the TransportError raised."""

    request: httpx.Request


@dataclasses.dataclass(frozen=True)
class Sleep:
    """Wait this many seconds; the outcome is None."""

    seconds: float


Effect = Send | Sleep
Steps = Generator[Effect, Any, T]
"""A client operation: effects out, their outcomes in, a value at the end."""


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A Hawk credential. The key never appears in a ``repr``, a log line or an error."""

    id: str
    key: str = dataclasses.field(repr=False)


def hawk_header(
    credentials: Credentials, url: str, method: str, body: bytes | None, content_type: str | None
) -> str:
    """A Hawk ``Authorization`` header with a nonce of 128 random bits. A nonce is
    accepted once per credential in the window (2 x skew, 120 s): mohawk's default of
    36 bits would be refused as a replay about once a day at 100 writes a second."""
    return mohawk.Sender(
        {"id": credentials.id, "key": credentials.key, "algorithm": "sha256"},
        url,
        method,
        content=body if body else EmptyValue,
        content_type=content_type if body else EmptyValue,
        always_hash_content=bool(body),
        nonce=secrets.token_urlsafe(16),
    ).request_header


class FilterReader(Protocol):
    """The offline filter's reader, as the lookup clients use it (``docs/filter.md``)."""

    serial: int

    def status(self, addon_id: str, sha256: str) -> str:
        """``registered``, ``revoked`` or ``not-in-filter``."""


@dataclasses.dataclass(frozen=True)
class Call:
    """One request as the logic means it; :meth:`Engine._request` makes it an httpx one."""

    method: str
    path: str
    body: bytes = b""
    content_type: str | None = None
    accept: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    signed: bool = False


@dataclasses.dataclass(frozen=True)
class Reply:
    """A final answer (after retries): status, headers, body."""

    status: int
    headers: httpx.Headers
    body: bytes

    def data(self) -> Any:
        """The body decoded by its ``Content-Type`` (None when empty or not JSON/msgpack)."""
        kind = self.headers.get("Content-Type", "")
        try:
            if "msgpack" in kind:
                return msgpack.unpackb(self.body, raw=False)
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    def error(self) -> AddonregError:
        return error_for(
            self.status, self.data(), parse_retry_after(self.headers.get("Retry-After"))
        )


def file_path(addon_id: str, sha256: str) -> str:
    return f"/v1/addons/{quote(addon_id, safe='@')}/files/{sha256}"


class Engine:
    """One server, its HTTP client, the retry rules, the limits read from ``GET /v1/``."""

    _http: Any  # httpx.Client or httpx.AsyncClient: the driver's (its build_request)

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        credentials: Credentials | None = None,
        transport: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._credentials = credentials
        self._clock = clock
        self._not_before = 0.0  # no request before this (the server's Retry-After)
        self._service: ServiceInfo | None = None
        self._http = self._make_http(timeout, transport)

    def _make_http(self, timeout: float | httpx.Timeout, transport: Any) -> Any:
        raise NotImplementedError  # the driver's

    def __repr__(self) -> str:
        who = f" id={self._credentials.id!r}" if self._credentials else ""
        return f"<{type(self).__name__} {self.server}{who}>"

    def _request(self, call: Call) -> httpx.Request:
        headers = {
            "Accept": call.accept,
            "User-Agent": f"addonreg-client/{__version__}",
            **dict(call.headers),
        }
        if call.content_type:
            headers["Content-Type"] = call.content_type
        request = self._http.build_request(
            call.method, self.server + call.path, content=call.body or None, headers=headers
        )
        if call.signed:
            request.headers["Authorization"] = self._sign(request, call)
        return request

    def _sign(self, request: httpx.Request, call: Call) -> str:
        """Hawk over the exact method, URL, body and Content-Type sent; a new nonce and
        timestamp each time (a retry is a new signature)."""
        if self._credentials is None:
            raise AddonregError("this client has no Hawk credentials")
        return hawk_header(
            self._credentials, str(request.url), request.method, call.body, call.content_type
        )

    def _fetch(self, call: Call) -> Steps[Reply]:
        """Send ``call``; retry what says "try again" (:mod:`.retry`); the final answer."""
        attempts = self.retry.start(self._clock)
        while True:
            wait = attempts.wait_before(self._not_before)
            if wait > 0:
                yield Sleep(wait)
            outcome = yield Send(self._request(call))
            if isinstance(outcome, httpx.TransportError):
                retry_after = None
                error: AddonregError = UnavailableError(
                    f"cannot reach {self.server}: {type(outcome).__name__}"
                )
            else:
                reply = Reply(outcome.status_code, outcome.headers, outcome.content)
                if reply.status not in RETRY_STATUSES:
                    return reply
                retry_after = parse_retry_after(reply.headers.get("Retry-After"))
                if retry_after:
                    self._not_before = max(self._not_before, self._clock() + retry_after)
                error = reply.error()
            pause = attempts.after_failure(retry_after)
            if pause is None:
                raise error
            yield Sleep(pause)

    @staticmethod
    def _ok(reply: Reply, *expected: int) -> Any:
        """The decoded body when the status is one of ``expected`` (200), else the error."""
        if reply.status not in (expected or (200,)):
            raise reply.error()
        return reply.data()

    def _info(self) -> Steps[ServiceInfo]:
        """``GET /v1/``, once per client."""
        if self._service is None:
            reply = yield from self._fetch(Call("GET", "/v1/"))
            self._service = ServiceInfo.from_body(self._ok(reply))
        return self._service


@dataclasses.dataclass(frozen=True)
class _Confirmed:
    serial: int
    version: str | None


FileLike = FileKey | Sequence[str] | Mapping[str, str]


def _key_of(item: FileLike) -> FileKey:
    if isinstance(item, Mapping):
        return normalize_key(item["addon_id"], item["sha256"])
    addon_id, sha256 = item
    return normalize_key(addon_id, sha256)


class LookupLogic(Engine):
    """Checks: the HTTP cache, the filter's certain answers, then the service."""

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        cache_size: int = 10_000,
        filter: FilterReader | None = None,
        **options: Any,
    ) -> None:
        super().__init__(server, **options)
        self.cache = ResponseCache(cache_size, self._clock)
        self.filter = filter
        # Files the service answered "registered", with the serial it gave: files
        # never leave the registry, so a filter at that serial or later knows them.
        self._confirmed: dict[FileKey, _Confirmed] = {}

    def _from_filter(self, key: FileKey) -> CheckResult | None:
        """The filter's answer where it is certain, else None (ask the service)."""
        if self.filter is None:
            return None
        answer = self.filter.status(*key)
        if answer == "revoked":  # "not registered" whatever the service says since
            return CheckResult(*key, "revoked", source="filter")
        confirmed = self._confirmed.get(key)
        if (
            answer == "registered"
            and confirmed is not None
            and confirmed.serial <= self.filter.serial
        ):
            return CheckResult(*key, "registered", confirmed.version, confirmed.serial, "filter")
        return None

    def _result(self, key: FileKey, status: int, data: Any, source: str) -> CheckResult | None:
        """A single read's answer as a result (None: not an answer about the file)."""
        if status in (200, 410) and isinstance(data, dict) and "serial" in data:
            result = CheckResult(
                key[0],
                data["sha256"],
                "registered" if status == 200 else "revoked",
                data.get("version"),
                data["serial"],
                source,  # type: ignore[arg-type]
            )
            if status == 200:
                self._confirmed[key] = _Confirmed(data["serial"], data.get("version"))
            else:
                self._confirmed.pop(key, None)
            return result
        if status == 404:
            return CheckResult(*key, "unknown", source=source)  # type: ignore[arg-type]
        return None

    def _cached(self, key: FileKey) -> CheckResult | None:
        entry = self.cache.get(file_path(*key))
        if entry is None or not self.cache.fresh(entry):
            return None
        return self._result(key, entry.status, json.loads(entry.body or b"null"), "cache")

    def _check(self, addon_id: str, sha256: str) -> Steps[CheckResult]:
        key = normalize_key(addon_id, sha256)
        known = self._from_filter(key) or self._cached(key)
        if known is not None:
            return known
        path = file_path(*key)
        entry = self.cache.get(path)
        headers = (("If-None-Match", entry.etag),) if entry is not None and entry.etag else ()
        reply = yield from self._fetch(Call("GET", path, headers=headers))
        if reply.status == 304 and entry is not None:
            entry = self.cache.revalidated(path, entry, reply.headers)
            status, body = entry.status, entry.body
        else:
            self.cache.store(path, reply.status, reply.headers, reply.body)
            status, body = reply.status, reply.body
        result = self._result(key, status, json.loads(body) if body else None, "service")
        if result is None:
            raise reply.error()
        return result

    def _check_many(self, files: Iterable[FileLike]) -> Steps[list[CheckResult]]:
        keys = [_key_of(item) for item in files]
        results: list[CheckResult | None] = [self._from_filter(k) or self._cached(k) for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            info = yield from self._info()
            for start in range(0, len(todo), info.max_lookup):
                chunk = todo[start : start + info.max_lookup]
                body = msgpack.packb(
                    {"files": [{"addon_id": keys[i][0], "sha256": keys[i][1]} for i in chunk]}
                )
                reply = yield from self._fetch(Call("POST", "/v1/lookup", body, MSGPACK, MSGPACK))
                for i, item in zip(chunk, self._ok(reply)["results"]):
                    results[i] = CheckResult(
                        keys[i][0], item["sha256"], item["status"], item.get("version")
                    )
        return [r for r in results if r is not None]


class WriterLogic(LookupLogic):
    """Hawk-signed writes (AMO's side), and reads as :class:`LookupLogic`."""

    def _forget(self, key: FileKey) -> None:
        self.cache.store(file_path(*key), 0, {}, b"")  # no Cache-Control: the entry goes
        self._confirmed.pop(key, None)

    def _write_one(
        self, method: str, addon_id: str, sha256: str, body: bytes = b""
    ) -> Steps[WriteResult]:
        key = normalize_key(addon_id, sha256)
        reply = yield from self._fetch(
            Call(method, file_path(*key), body, JSON if body else None, signed=True)
        )
        data = self._ok(reply, 200, 201)
        self._forget(key)
        return WriteResult.from_record(data, created=reply.status == 201)

    def _register(
        self, addon_id: str, sha256: str, version: str | None = None
    ) -> Steps[WriteResult]:
        body = json.dumps({"version": version}).encode() if version is not None else b""
        return (yield from self._write_one("PUT", addon_id, sha256, body))

    def _revoke(self, addon_id: str, sha256: str) -> Steps[WriteResult]:
        return (yield from self._write_one("DELETE", addon_id, sha256))

    def _write_many(
        self, operations: Iterable[Operation | Mapping[str, Any]], respond_async: bool
    ) -> Steps[list[Any]]:
        ops = [Operation.of(o) for o in operations]
        info = yield from self._info()
        headers = (("Prefer", "respond-async"),) if respond_async else ()
        out: list[Any] = []
        for start in range(0, len(ops), info.max_write):
            chunk = ops[start : start + info.max_write]
            body = msgpack.packb({"operations": [op.to_wire() for op in chunk]})
            reply = yield from self._fetch(
                Call("POST", "/v1/registrations", body, MSGPACK, MSGPACK, headers, signed=True)
            )
            data = self._ok(reply, 202 if respond_async else 200)
            for op in chunk:
                self._forget(normalize_key(op.addon_id, op.sha256))
            if respond_async:
                out.append(data["job"])
            else:
                out.extend(WriteResult.from_item(item) for item in data["results"])
        return out

    def _job(self, job_id: str) -> Steps[Job]:
        reply = yield from self._fetch(
            Call("GET", f"/v1/jobs/{quote(job_id, safe='')}", accept=MSGPACK, signed=True)
        )
        return Job.from_body(self._ok(reply))

    def _wait_for_job(self, job_id: str, timeout: float, interval: float) -> Steps[Job]:
        deadline = self._clock() + timeout
        while True:
            job = yield from self._job(job_id)
            if job.finished:
                return job
            if self._clock() + interval > deadline:
                raise JobTimeout(job_id, timeout)
            yield Sleep(interval)
            interval = min(interval * 2, 2.0)
