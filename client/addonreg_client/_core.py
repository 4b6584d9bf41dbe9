"""The clients' logic, written once for the sync and the async flavours (sans I/O).

Every client method is a generator of *effects* — :class:`Send` (an HTTP
request, to be read in full within a deadline and a size cap) and
:class:`Sleep` (a wait) — that receives each effect's outcome (a
:class:`Reply`, or the exception sending or reading raised).
:mod:`addonreg_client._drivers` carries the effects out, with ``httpx.Client``
and ``time.sleep`` or with ``httpx.AsyncClient`` and ``asyncio.sleep``; what
is sent, retried, cached, proved and concluded is decided here only.

:class:`Engine` sends one request with the retry rules of
:mod:`addonreg_client.retry`, inside the call's deadline, refusing redirects to
another origin; :class:`LookupLogic` checks files (single reads through the
HTTP cache, bulk lookups chunked to ``max_lookup``, an optional offline
filter younger than ``filter_max_age``); :class:`WriterLogic` adds the
Hawk-signed writes and jobs. Every answer is proved by :mod:`.answers`
before it is believed.
"""

from __future__ import annotations

import calendar
import dataclasses
import functools
import json
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx

from . import answers
from ._version import __version__
from .auth import Credentials, HawkAuth
from .cache import ResponseCache
from .errors import (
    AddonregError,
    AnswerTooLarge,
    BadAnswerError,
    DeadlineExceeded,
    InvalidRequestError,
    JobTimeout,
    NotFoundError,
    RedirectRefused,
    UnavailableError,
    error_for,
)
from .results import (
    CheckResult,
    FileKey,
    Job,
    Operation,
    ServiceInfo,
    WriteResult,
    checked_key,
    checked_version,
)
from .retry import RETRY_STATUSES, RetryPolicy, parse_retry_after

try:  # optional: bulk requests in MessagePack when it is installed, JSON otherwise
    import msgpack
except ImportError:  # pragma: no cover - the client distribution without its extra
    msgpack = None

__all__ = [
    "DEFAULT_FILTER_MAX_AGE",
    "DEFAULT_MAX_RESPONSE_SIZE",
    "DEFAULT_SERVER",
    "DEFAULT_TIMEOUT",
    "BodyLimit",
    "Engine",
    "LookupLogic",
    "OfflineFilter",
    "Reply",
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
"""Each request's socket timeouts: 10 s a read or write, 3 s to connect. The
whole call (retries and waits included) ends within ``RetryPolicy.deadline``."""
DEFAULT_MAX_RESPONSE_SIZE = 8 << 20
"""8 MiB: a bulk answer of 10,000 results is about 1.5 MB; an answer larger than
the cap is not read further (:class:`~addonreg_client.errors.AnswerTooLarge`)."""
DEFAULT_FILTER_MAX_AGE = 7 * 86400.0
"""The service's ``filter_max_base_age``: a filter older than this is not used."""
MAX_CHUNK = 10_000
"""However large a ``max_lookup``/``max_write`` the service advertises, a request
carries at most this many items (a bound on the answer this client must read)."""
MAX_REDIRECTS = 3


@dataclasses.dataclass(frozen=True)
class Send:
    """Send this request and read its answer in full, by ``until`` (the client's
    clock) and within ``max_size`` bytes; the outcome is a :class:`Reply`, or
    the exception sending or reading raised."""

    request: httpx.Request
    auth: httpx.Auth | None
    until: float
    max_size: int


@dataclasses.dataclass(frozen=True)
class Sleep:
    """Wait this many seconds; the outcome is None."""

    seconds: float


Effect = Send | Sleep
Steps = Generator[Effect, Any, T]
"""A client operation: effects out, their outcomes in, a value at the end."""


class BodyLimit:
    """What a driver applies while it reads an answer: the size cap and the deadline.

    ``start`` refuses a ``Content-Length`` above the cap before a byte is read;
    ``add`` counts each chunk (a body without a length, or one that lies, is
    cut at the cap) and checks the deadline between chunks.
    """

    def __init__(self, send: Send, clock: Callable[[], float]) -> None:
        self.send = send
        self.clock = clock
        self.size = 0

    def start(self, headers: httpx.Headers) -> None:
        length = headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.send.max_size:
            raise self.too_large(int(length))

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.send.max_size:
            raise self.too_large(self.size)
        if self.clock() > self.send.until:
            raise DeadlineExceeded("the answer did not arrive within this call's deadline")

    def too_large(self, size: int) -> AnswerTooLarge:
        return AnswerTooLarge(
            f"the answer is larger than this client's cap ({size} > {self.send.max_size} bytes)"
        )


class OfflineFilter(Protocol):
    """The offline filter, what the lookup clients use of it (``docs/filter.md``): the
    service's reader, ``addonreg.filter.FilterReader`` (``from_index`` builds one), is one."""

    @property
    def serial(self) -> int:
        """The serial its answers are exact at."""

    @property
    def built_at(self) -> str | None:
        """When it was built (``YYYY-MM-DDTHH:MM:SSZ``, from the signed index)."""

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


def _media_type(headers: Mapping[str, str]) -> str:
    return headers.get("Content-Type", "").split(";")[0].strip().lower()


@dataclasses.dataclass(frozen=True)
class Reply:
    """A final answer (after retries): status, headers, the whole body."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: str = ""

    def decoded(self, what: str) -> Any:
        """The body, which must be JSON or MessagePack (the contract's two types)."""
        kind = _media_type(self.headers)
        try:
            if kind == JSON:
                return json.loads(self.body)
            if kind == MSGPACK and msgpack is not None:
                return msgpack.unpackb(self.body, raw=False)
        except Exception:  # ValueError, RecursionError, msgpack's own: all "not valid"
            raise BadAnswerError(f"{what}: the answer is not valid {kind}") from None
        raise BadAnswerError(f"{what}: not an addonreg answer: {kind or 'no Content-Type'}")

    def lenient(self) -> Any:
        """The body when it decodes, else None (an error page from a proxy)."""
        try:
            return self.decoded("")
        except BadAnswerError:
            return None

    def error(self) -> AddonregError:
        return error_for(
            self.status, self.lenient(), parse_retry_after(self.headers.get("Retry-After"))
        )


def file_path(addon_id: str, sha256: str) -> str:
    # The key was checked (checked_key): the id holds no '/', the hash only hex digits.
    return f"/v1/addons/{quote(addon_id, safe='@')}/files/{sha256}"


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


def parse_server(server: str) -> str:
    """The service's base URL (``http``/``https``, a host, perhaps a path prefix)."""
    try:
        url = httpx.URL(server)
    except (httpx.InvalidURL, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise InvalidRequestError(f"the server must be an http:// or https:// URL, got {server!r}")
    if url.query or url.fragment:
        raise InvalidRequestError(f"the server URL takes no query or fragment: {server!r}")
    return str(url).rstrip("/")


def _timeouts(timeout: httpx.Timeout, remaining: float) -> dict[str, float]:
    """Each socket timeout, no longer than what is left of the call."""
    return {
        name: min(remaining, value if value is not None else remaining)
        for name, value in timeout.as_dict().items()
    }


class Engine:
    """One server, the retry rules, the limits read from ``GET /v1/``, every request's
    bounds (the call's deadline, the answer's size, no redirect to another origin)."""

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        credentials: Credentials | None = None,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = parse_server(server)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        if max_response_size < 1024:
            raise ValueError("max_response_size must be at least 1024 bytes")
        self.max_response_size = max_response_size
        self.clock = clock
        self._credentials = credentials
        self._auth = HawkAuth(credentials) if credentials is not None else None
        self._not_before = 0.0  # no request before this (the server's Retry-After)
        self._service: ServiceInfo | None = None

    def __repr__(self) -> str:
        who = f" id={self._credentials.id!r}" if self._credentials else ""
        return f"<{type(self).__name__} {self.server}{who}>"

    def until(self) -> float:
        """The deadline of a call starting now."""
        return self.clock() + self.retry.deadline

    def _request(self, call: Call, url: str, remaining: float) -> httpx.Request:
        headers = {
            "Accept": call.accept,
            "User-Agent": f"addonreg-client/{__version__}",
            **dict(call.headers),
        }
        if call.content_type:
            headers["Content-Type"] = call.content_type
        return httpx.Request(
            call.method,
            url,
            content=call.body or None,
            headers=headers,
            extensions={"timeout": _timeouts(self.timeout, remaining)},
        )

    def _redirect(self, url: str, reply: Reply, call: Call) -> str:
        """Where a ``3xx`` points, when it may be followed: the same origin, a read."""
        location = reply.headers.get("Location")
        if not location:
            raise BadAnswerError(f"{call.method} {call.path}: a {reply.status} without Location")
        try:
            target = httpx.URL(url).join(location)
        except httpx.InvalidURL:
            raise BadAnswerError(f"{call.method} {call.path}: a redirect to a bad URL") from None
        if _origin(target) != _origin(httpx.URL(self.server)):
            raise RedirectRefused(
                f"redirect to another host refused: {target.scheme}://{target.netloc.decode()}"
            )
        if call.method not in ("GET", "HEAD"):
            raise BadAnswerError(f"{call.method} {call.path}: the service answered a redirect")
        return str(target)

    def _fetch(self, call: Call, until: float) -> Steps[Reply]:
        """Send ``call``; retry what says "try again" (:mod:`.retry`), all by ``until``;
        the final answer."""
        attempts = self.retry.start(self.clock)
        url, hops = self.server + call.path, 0
        while True:
            wait = self._not_before - self.clock()
            if wait > 0:
                if self.clock() + wait > until:  # never slept on past the deadline
                    raise UnavailableError(
                        f"the service asked to wait {wait:.0f} s (Retry-After), "
                        "past this call's deadline",
                        retry_after=wait,
                    )
                yield Sleep(wait)
            remaining = until - self.clock()
            if remaining <= 0:
                raise DeadlineExceeded(f"no answer from {self.server} within this call's deadline")
            outcome = yield Send(
                self._request(call, url, remaining),
                self._auth if call.signed else None,
                until,
                self.max_response_size,
            )
            retry_after = None
            if isinstance(outcome, AddonregError):
                raise outcome  # too large, past the deadline: not worth another try
            if isinstance(outcome, httpx.TimeoutException) and self.clock() >= until:
                raise DeadlineExceeded(f"no answer from {self.server} within this call's deadline")
            if isinstance(outcome, httpx.TransportError):
                error: AddonregError = UnavailableError(
                    f"cannot reach {self.server}: {type(outcome).__name__}"
                    + (": the answer was cut short" if _cut_short(outcome) else "")
                )
            elif isinstance(outcome, BaseException):
                raise BadAnswerError(
                    f"{call.method} {call.path}: unreadable answer ({type(outcome).__name__})"
                )
            else:
                reply: Reply = outcome
                if 300 <= reply.status < 400 and reply.status != 304:
                    url, hops = self._redirect(url, reply, call), hops + 1
                    if hops > MAX_REDIRECTS:
                        raise BadAnswerError(f"{call.method} {call.path}: too many redirects")
                    continue
                if reply.status not in RETRY_STATUSES:
                    return reply
                retry_after = parse_retry_after(reply.headers.get("Retry-After"))
                error = reply.error()
            pause = attempts.after_failure(retry_after, until)
            if pause is None:
                raise error
            if retry_after:  # rule 2, for the calls that follow, within this deadline only
                self._not_before = max(self._not_before, self.clock() + retry_after)
            yield Sleep(pause)

    def _info(self, until: float) -> Steps[ServiceInfo]:
        """``GET /v1/``, once per client."""
        if self._service is None:
            reply = yield from self._fetch(Call("GET", "/v1/"), until)
            if reply.status != 200:
                raise reply.error()
            self._service = answers.service_info(reply.decoded("GET /v1/"))
        return self._service

    def _bulk(
        self,
        path: str,
        payload: dict[str, Any],
        until: float,
        headers: tuple[tuple[str, str], ...] = (),
        signed: bool = False,
    ) -> Steps[Reply]:
        """A bulk request, in MessagePack when it is installed."""
        if msgpack is not None:
            body, kind = msgpack.packb(payload), MSGPACK
        else:
            body, kind = json.dumps(payload).encode(), JSON
        return (
            yield from self._fetch(Call("POST", path, body, kind, kind, headers, signed), until)
        )


def _cut_short(exc: Exception) -> bool:
    return isinstance(exc, httpx.RemoteProtocolError) and "complete message body" in str(exc)


@dataclasses.dataclass(frozen=True)
class _Confirmed:
    serial: int
    version: str | None


FileLike = FileKey | Sequence[str] | Mapping[str, str]


def _key_of(item: FileLike, index: int) -> FileKey:
    try:
        if isinstance(item, Mapping):
            return checked_key(item.get("addon_id"), item.get("sha256"))
        if isinstance(item, (str, bytes)) or len(item) != 2:
            raise InvalidRequestError("a file is an (addon_id, sha256) pair")
        return checked_key(item[0], item[1])
    except (InvalidRequestError, TypeError) as exc:
        raise InvalidRequestError(f"file {index}: {exc}") from None


@functools.lru_cache(maxsize=8)
def _filter_time(built_at: Any) -> float | None:
    """Seconds since the epoch of a filter's ``built_at`` (``YYYY-MM-DDTHH:MM:SSZ``);
    cached: a bulk check asks once per file."""
    if type(built_at) is not str:
        return None
    try:
        return float(calendar.timegm(time.strptime(built_at, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


class LookupLogic(Engine):
    """Checks: the HTTP cache, the filter's certain answers, then the service."""

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        cache_size: int = 10_000,
        filter: OfflineFilter | None = None,
        filter_max_age: float = DEFAULT_FILTER_MAX_AGE,
        wall_clock: Callable[[], float] = time.time,
        **options: Any,
    ) -> None:
        super().__init__(server, **options)
        self.cache = ResponseCache(cache_size, self.clock)
        self.filter = filter
        self.filter_max_age = filter_max_age
        self.wall_clock = wall_clock
        # Files the service answered "registered", with the serial it gave: files
        # never leave the registry, so a filter at that serial or later knows them.
        self._confirmed: dict[FileKey, _Confirmed] = {}

    def filter_fresh(self) -> bool:
        """True when there is a filter, built no more than ``filter_max_age`` ago (by
        its signed ``built_at``; a filter without one is never used)."""
        if self.filter is None:
            return False
        built = _filter_time(getattr(self.filter, "built_at", None))
        # A little allowance for a builder whose clock runs ahead of this one.
        return built is not None and -300 <= self.wall_clock() - built <= self.filter_max_age

    def _from_filter(self, key: FileKey) -> CheckResult | None:
        """The filter's answer where it is certain, else None (ask the service)."""
        if self.filter is None or not self.filter_fresh():
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

    def _answer(self, key: FileKey, reply: Reply, source: str) -> CheckResult:
        """A single read's answer, proved; any other answer is raised."""
        if reply.status in (200, 410):
            what = f"GET {file_path(*key)}"
            result = answers.check_result(
                reply.status,
                reply.decoded(what),
                key,
                source,  # type: ignore[arg-type]
            )
            if result.registered:
                self._confirmed[key] = _Confirmed(result.serial or 0, result.version)
            else:
                self._confirmed.pop(key, None)
            return result
        if reply.status == 404:
            body = reply.lenient()
            if answers.is_file_not_found(body, key):
                return CheckResult(*key, "unknown", source=source)  # type: ignore[arg-type]
            errno = body.get("errno") if isinstance(body, dict) else None
            raise NotFoundError(
                f"no such resource at {reply.url or self.server}: "
                "not the service's answer about a file (is the server URL right?)",
                404,
                errno if type(errno) is int else None,
            )
        raise reply.error()

    def _cached(self, key: FileKey) -> CheckResult | None:
        entry = self.cache.get(file_path(*key))
        if entry is None or not self.cache.fresh(entry):
            return None
        reply = Reply(entry.status, httpx.Headers({"Content-Type": entry.content_type}), entry.body)
        return self._answer(key, reply, "cache")

    def _check(self, addon_id: str, sha256: str) -> Steps[CheckResult]:
        key = checked_key(addon_id, sha256)
        known = self._from_filter(key) or self._cached(key)
        if known is not None:
            return known
        path = file_path(*key)
        entry = self.cache.get(path)
        headers = (("If-None-Match", entry.etag),) if entry is not None and entry.etag else ()
        reply = yield from self._fetch(Call("GET", path, headers=headers), self.until())
        if reply.status == 304:
            if entry is None or not headers:
                raise BadAnswerError(f"GET {path}: a 304 to a request that was not conditional")
            entry = self.cache.revalidated(path, entry, reply.headers)
            return self._answer(
                key,
                Reply(
                    entry.status, httpx.Headers({"Content-Type": entry.content_type}), entry.body
                ),
                "service",
            )
        result = self._answer(key, reply, "service")
        self.cache.store(path, reply.status, reply.headers, reply.body)  # proved first
        return result

    def _check_many(self, files: Iterable[FileLike]) -> Steps[list[CheckResult]]:
        keys = [_key_of(item, i) for i, item in enumerate(files)]
        results: list[CheckResult | None] = [self._from_filter(k) or self._cached(k) for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            info = yield from self._info(self.until())
            size = min(info.max_lookup, MAX_CHUNK)
            for start in range(0, len(todo), size):
                chunk = todo[start : start + size]
                asked = [keys[i] for i in chunk]
                payload = {"files": [{"addon_id": a, "sha256": s} for a, s in asked]}
                # Each chunk its own deadline: a call of many chunks is bounded by
                # their number, and a large legitimate batch is not cut short.
                reply = yield from self._bulk("/v1/lookup", payload, self.until())
                if reply.status != 200:
                    raise reply.error()
                proved = answers.lookup_results(reply.decoded("POST /v1/lookup"), asked)
                for i, result in zip(chunk, proved, strict=True):
                    results[i] = result
        return [r for r in results if r is not None]


class WriterLogic(LookupLogic):
    """Hawk-signed writes (AMO's side), and reads as :class:`LookupLogic`."""

    def _forget(self, key: FileKey) -> None:
        self.cache.store(file_path(*key), 0, {}, b"")  # no Cache-Control: the entry goes
        self._confirmed.pop(key, None)

    def _write_one(
        self, method: str, addon_id: str, sha256: str, body: bytes = b""
    ) -> Steps[WriteResult]:
        key = checked_key(addon_id, sha256)
        path = file_path(*key)
        reply = yield from self._fetch(
            Call(method, path, body, JSON if body else None, signed=True), self.until()
        )
        ok = (200, 201) if method == "PUT" else (200,)
        if reply.status not in ok:
            raise reply.error()
        self._forget(key)
        status = "registered" if method == "PUT" else "revoked"
        what = f"{method} {path} ({reply.status})"
        created = reply.status == 201 if method == "PUT" else None
        return answers.write_record(reply.decoded(what), key, status, what, created)

    def _register(
        self, addon_id: str, sha256: str, version: str | None = None
    ) -> Steps[WriteResult]:
        version = checked_version(version)
        body = json.dumps({"version": version}).encode() if version is not None else b""
        return (yield from self._write_one("PUT", addon_id, sha256, body))

    def _revoke(self, addon_id: str, sha256: str) -> Steps[WriteResult]:
        return (yield from self._write_one("DELETE", addon_id, sha256))

    def _write_many(
        self, operations: Iterable[Operation | Mapping[str, Any]], respond_async: bool
    ) -> Steps[list[Any]]:
        ops = []
        for i, o in enumerate(operations):
            try:
                ops.append(Operation.of(o))
            except InvalidRequestError as exc:
                raise InvalidRequestError(f"operation {i}: {exc}", details=exc.details) from None
        info = yield from self._info(self.until())
        headers = (("Prefer", "respond-async"),) if respond_async else ()
        out: list[Any] = []
        size = min(info.max_write, MAX_CHUNK)
        for start in range(0, len(ops), size):
            chunk = ops[start : start + size]
            payload = {"operations": [op.to_wire() for op in chunk]}
            reply = yield from self._bulk("/v1/registrations", payload, self.until(), headers, True)
            if reply.status != (202 if respond_async else 200):
                raise reply.error()
            for op in chunk:
                self._forget((op.addon_id, op.sha256))
            data = reply.decoded("POST /v1/registrations")
            if respond_async:
                out.append(answers.job_id(data))
            else:
                out.extend(answers.write_results(data, chunk))
        return out

    def _job(self, job_id: str, until: float | None = None) -> Steps[Job]:
        if type(job_id) is not str or not job_id or len(job_id) > 200:
            raise InvalidRequestError(f"not a job id: {job_id!r:.80}")
        reply = yield from self._fetch(
            Call(
                "GET",
                f"/v1/jobs/{quote(job_id, safe='')}",
                accept=MSGPACK if msgpack else JSON,
                signed=True,
            ),
            until if until is not None else self.until(),
        )
        if reply.status != 200:
            raise reply.error()
        return answers.job(reply.decoded(f"GET /v1/jobs/{job_id}"), job_id)

    def _wait_for_job(self, job_id: str, timeout: float, interval: float) -> Steps[Job]:
        deadline = self.clock() + timeout
        while True:
            job = yield from self._job(job_id, max(deadline, self.clock() + 1.0))
            if job.finished:
                return job
            if self.clock() + interval > deadline:
                raise JobTimeout(job_id, timeout)
            yield Sleep(interval)
            interval = min(interval * 2, 2.0)
