"""addonreg.client against real ``addonreg serve`` processes: no mocks.

Requests are counted by a recording transport around httpx's real one; the
503s come from a real server whose MariaDB link (``tests/faults/proxy.py``)
is cut.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import httpx
import mohawk
import pytest

from addonreg.client import (
    AsyncWriterClient,
    AuthenticationError,
    CheckResult,
    Credentials,
    HawkAuth,
    LookupClient,
    NotFoundError,
    Operation,
    RetryPolicy,
    UnavailableError,
    WriterClient,
)
from addonreg.hawk import parse_header
from addonreg.storage.testing import sha
from tests.conftest import CREDS, MYSQL_URL, ServerProcess, need_mysql, reset_mysql
from tests.faults.proxy import LinkProxy

pytestmark = pytest.mark.subprocess

HAWK = ",".join(f"{ident}:{key}" for ident, key in CREDS.items())


class Exchange(NamedTuple):
    at: float
    method: str
    path: str
    status: int | None
    request_headers: httpx.Headers


class Recorder(httpx.BaseTransport):
    """httpx's own transport, keeping a line per exchange (None: no answer)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.log: list[Exchange] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        at = time.monotonic()
        try:
            response = self.inner.handle_request(request)
        except httpx.TransportError:
            self.log.append(Exchange(at, request.method, request.url.path, None, request.headers))
            raise
        self.log.append(
            Exchange(at, request.method, request.url.path, response.status_code, request.headers)
        )
        return response

    def close(self) -> None:
        self.inner.close()

    def calls(self, method: str, path: str = "") -> list[Exchange]:
        return [e for e in self.log if e.method == method and e.path.startswith(path)]


class Clock:
    """A clock the test moves (the client's cache reads it)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module: small limits, so that chunking shows."""
    db = tmp_path_factory.mktemp("client") / "db.sqlite3"
    proc = ServerProcess(
        {
            "ADDONREG_STORAGE": f"sqlite:///{db}",
            "ADDONREG_HAWK_CREDENTIALS": HAWK,
            "ADDONREG_MAX_LOOKUP": "5",
            "ADDONREG_MAX_WRITE": "5",
        }
    )
    yield proc
    proc.stop()


def addon() -> str:
    """An add-on id of the test's own (the module's tests share a server)."""
    return f"{uuid.uuid4().hex[:12]}@example.com"


def writer(server: ServerProcess, **options: Any) -> WriterClient:
    return WriterClient(server.base, "amo", CREDS["amo"], **options)


def test_check_many_chunks_to_max_lookup_in_msgpack(server):
    ident = addon()
    with writer(server) as amo:
        amo.write_many([Operation.register(ident, sha(n), f"{n}.0") for n in range(0, 12, 3)])
        amo.revoke(ident, sha(3))
    recorder = Recorder()
    with LookupClient(server.base, transport=recorder) as client:
        results = client.check_many([(ident, sha(n)) for n in range(12)])
    assert [r.status for r in results] == [
        "registered",
        "unknown",
        "unknown",
        "revoked",
        "unknown",
        "unknown",
        "registered",
        "unknown",
        "unknown",
        "registered",
        "unknown",
        "unknown",
    ]
    assert results[6] == CheckResult(ident, sha(6), "registered", "6.0")
    lookups = recorder.calls("POST", "/v1/lookup")
    assert len(lookups) == 3 and len(recorder.calls("GET", "/v1/")) == 1  # 5 + 5 + 2
    assert all(
        e.request_headers["Content-Type"] == "application/msgpack"
        and e.request_headers["Accept"] == "application/msgpack"
        for e in lookups
    )


def test_cache_then_304_revalidation(server):
    ident, clock, recorder = addon(), Clock(), Recorder()
    with writer(server) as amo:
        amo.register(ident, sha(1), "1.0")
    with LookupClient(server.base, transport=recorder, clock=clock) as client:
        first = client.check(ident, sha(1))
        assert (first.status, first.version, first.source) == ("registered", "1.0", "service")
        assert client.check(ident, sha(1)).source == "cache"  # fresh: no request
        assert len(recorder.log) == 1
        clock.now += 301  # past max-age=300
        again = client.check(ident, sha(1))
        assert again == first
        revalidation = recorder.log[-1]
        assert revalidation.status == 304
        assert revalidation.request_headers["If-None-Match"] == f'"{first.serial}"'
        assert client.check(ident, sha(1)).source == "cache"  # fresh again after the 304
        with writer(server) as amo:
            amo.register(ident, sha(1), "2.0")
        clock.now += 301
        changed = client.check(ident, sha(1))
        assert (changed.version, recorder.log[-1].status) == ("2.0", 200)
        assert len(recorder.log) == 3


def test_writes_jobs_and_errors(server):
    ident = addon()
    with writer(server) as amo:
        created = amo.register(ident, sha(1), "1.0")
        assert created.created and created.status == "registered"
        assert amo.register(ident, sha(1)).created is False
        ops = [Operation.register(ident, sha(n)) for n in range(2, 14)]
        jobs = amo.write_many(ops, respond_async=True)
        assert len(jobs) == 3  # max_write 5: 5 + 5 + 2
        done = [amo.wait_for_job(job, timeout=10) for job in jobs]
        assert [j.status for j in done] == ["done"] * 3
        assert [r.sha256 for j in done for r in j.results] == [sha(n) for n in range(2, 14)]
        assert amo.check(ident, sha(13)).registered
        revoked = amo.revoke(ident, sha(1))
        assert revoked.status == "revoked" and revoked.serial > created.serial
        with pytest.raises(NotFoundError) as missing:
            amo.revoke(ident, sha(99))
        assert (missing.value.status, missing.value.errno) == (404, 111)
    wrong = WriterClient(server.base, "amo", "not-the-key")
    with pytest.raises(AuthenticationError) as refused:
        wrong.register(ident, sha(1))
    assert (refused.value.status, refused.value.errno) == (401, 105)
    assert "not-the-key" not in repr(wrong) + repr(refused.value) + str(refused.value)
    wrong.close()


async def test_async_writer_and_checker(server):
    ident = addon()
    async with AsyncWriterClient(server.base, "amo", CREDS["amo"]) as amo:
        results = await amo.write_many(
            [{"op": "register", "addon_id": ident, "sha256": sha(n)} for n in range(7)]
        )
        assert [r.status for r in results] == ["registered"] * 7
        [job] = await amo.write_many([Operation.revoke(ident, sha(0))], respond_async=True)
        assert (await amo.wait_for_job(job, timeout=10)).results[0].status == "revoked"
        checked = await amo.check_many([(ident, sha(n)) for n in range(8)])
        assert [r.status for r in checked] == ["revoked"] + ["registered"] * 6 + ["unknown"]
        assert (await amo.check(ident, sha(7))).status == "unknown"


def test_filter_reader_is_offline_filter_under_its_old_name():
    import addonreg.client
    import addonreg_client

    for module in (addonreg_client, addonreg.client):
        with pytest.warns(DeprecationWarning, match="use addonreg_client.OfflineFilter"):
            assert module.FilterReader is addonreg_client.OfflineFilter
    assert "FilterReader" not in addonreg_client.__all__  # a star import does not warn


def test_register_many_is_write_many_under_its_old_name(server):
    ident = addon()
    with writer(server) as amo:
        with pytest.warns(DeprecationWarning, match=r"use write_many\(\)") as warned:
            [result] = amo.register_many([Operation.register(ident, sha(1))])
    assert result.status == "registered"
    assert [w.filename for w in warned] == [__file__]  # the caller's line


async def test_async_register_many_is_write_many_under_its_old_name(server):
    ident = addon()
    async with AsyncWriterClient(server.base, "amo", CREDS["amo"]) as amo:
        with pytest.warns(DeprecationWarning, match=r"use write_many\(\)") as warned:
            [result] = await amo.register_many([Operation.register(ident, sha(1))])
    assert result.status == "registered"
    assert [w.filename for w in warned] == [__file__]


def test_a_replayed_hawk_request_is_refused(server):
    """The same signed request twice: the second is a 401 (the nonce is spent)."""
    url = f"{server.base}/v1/addons/{addon()}/files/{sha(1)}"
    body, content_type = b'{"version": "1"}', "application/json"
    sender = mohawk.Sender(
        {"id": "amo", "key": CREDS["amo"], "algorithm": "sha256"},
        url,
        "PUT",
        content=body,
        content_type=content_type,
    )
    headers = {"Authorization": sender.request_header, "Content-Type": content_type}
    with httpx.Client() as http:
        first = http.put(url, content=body, headers=headers)
        replay = http.put(url, content=body, headers=headers)
    assert first.status_code == 201
    assert replay.status_code == 401 and replay.headers["WWW-Authenticate"].startswith("Hawk")
    assert replay.json()["errno"] == 105


def test_hawk_auth_signs_any_httpx_request(server):
    """HawkAuth is an httpx.Auth: a plain httpx client writes with it, each request
    signed anew (the second PUT is not refused as a replay)."""
    url = f"{server.base}/v1/addons/{addon()}/files/{sha(1)}"
    auth = HawkAuth(Credentials("amo", CREDS["amo"]))
    with httpx.Client(auth=auth) as http:
        headers = {"Content-Type": "application/json"}
        first = http.put(url, content=b'{"version": "1"}', headers=headers)
        again = http.put(url, content=b'{"version": "1"}', headers=headers)
        unsigned = httpx.put(url, content=b"{}", headers=headers)
    assert (first.status_code, again.status_code, unsigned.status_code) == (201, 200, 401)
    assert CREDS["amo"] not in repr(auth)


def test_connection_failures_are_retried_then_raised():
    recorder = Recorder()
    policy = RetryPolicy(attempts=3, base=0.01)
    with (
        LookupClient("http://127.0.0.1:9", transport=recorder, retry=policy) as client,
        pytest.raises(UnavailableError) as failed,
    ):
        client.check("a@b", sha(1))
    assert failed.value.status is None and len(recorder.log) == 3
    assert all(e.status is None for e in recorder.log)


def utc(seconds_ago: float) -> str:
    """A filter's ``built_at``, that many seconds ago."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds_ago))


class FakeFilter:
    """What the offline filter's reader offers the clients: ``serial``, ``built_at``
    (the signed index's) and ``status``."""

    def __init__(self, serial: int, answers: dict, built_at: str | None = None) -> None:
        self.serial = serial
        self.answers = answers
        self.built_at = built_at if built_at is not None else utc(60)

    def status(self, addon_id: str, sha256: str) -> str:
        return self.answers.get((addon_id, sha256), "not-in-filter")


def test_filter_answers_only_where_it_is_certain(server):
    ident = addon()
    with writer(server) as amo:
        serial = amo.register(ident, sha(1), "1").serial
    answers = {(ident, sha(1)): "registered", (ident, sha(2)): "revoked"}
    recorder = Recorder()
    with LookupClient(
        server.base, transport=recorder, cache_size=1, filter=FakeFilter(serial - 1, answers)
    ) as client:
        # revoked: always the filter's (no request); registered: not before the service said so
        assert client.check(ident, sha(2)) == CheckResult(ident, sha(2), "revoked", source="filter")
        assert client.check(ident, sha(1)).source == "service"
        assert client.check(ident, sha(3)).source == "service"  # not in the filter; evicts
        # confirmed at a serial later than the filter's: still the service
        assert client.check(ident, sha(1)).source == "service"
        client.filter = FakeFilter(serial, answers)
        assert client.check(ident, sha(3)).source == "service"  # evicts sha(1) from the cache
        assert client.check(ident, sha(1)) == CheckResult(
            ident, sha(1), "registered", "1", serial, "filter"
        )
        requests = len(recorder.log)
        assert [r.source for r in client.check_many([(ident, sha(1)), (ident, sha(2))])] == [
            "filter",
            "filter",
        ]
        assert len(recorder.log) == requests


@pytest.fixture
def mysql_link() -> Iterator[tuple[LinkProxy, str]]:
    """A link to the test MariaDB that the test can cut, and the storage URL through it."""
    need_mysql()
    reset_mysql()
    target = urlsplit(MYSQL_URL)
    link = LinkProxy(target.hostname or "127.0.0.1", target.port or 3306).start()
    credentials = target.netloc.rsplit("@", 1)[0] + "@" if "@" in target.netloc else ""
    yield link, urlunsplit(target._replace(netloc=f"{credentials}127.0.0.1:{link.port}"))
    link.close()


def test_503_retry_after_is_honoured_and_a_retry_is_signed_anew(mysql_link):
    link, url = mysql_link
    proc = ServerProcess(
        {
            "ADDONREG_STORAGE": url,
            "ADDONREG_HAWK_CREDENTIALS": HAWK,
            "ADDONREG_RETRY_AFTER": "1",
            "ADDONREG_STORAGE_TIMEOUT": "1",
        }
    )
    try:
        recorder = Recorder()
        link.cut()
        threading.Timer(1.5, link.restore).start()
        policy = RetryPolicy(attempts=6, deadline=20)
        with WriterClient(proc.base, "amo", CREDS["amo"], transport=recorder, retry=policy) as amo:
            # A read: 503 + Retry-After: 1 until the link is back, never a false "unknown"
            assert amo.check("a@b", sha(1)).status == "unknown"
            reads = recorder.log
            assert [e.status for e in reads[:-1]] == [503] * (len(reads) - 1)
            assert reads[-1].status == 404 and len(reads) >= 2
            gaps = [b.at - a.at for a, b in itertools.pairwise(reads)]
            assert min(gaps) >= 1.0, gaps
            # A write while storage is down: each attempt has its own nonce, so the
            # retry after the 503 is not refused as a replay.
            recorder.log = []
            link.cut()
            threading.Timer(1.5, link.restore).start()
            assert amo.register("a@b", sha(1), "1").created
            nonces = [
                parse_header(e.request_headers["Authorization"])["nonce"] for e in recorder.log
            ]
            assert recorder.log[0].status == 503 and recorder.log[-1].status == 201
            assert len(set(nonces)) == len(nonces) >= 2
            # 128 random bits each: mohawk's default 6 characters repeat within the
            # nonce window about once a day at 100 writes a second (a false replay).
            assert min(map(len, nonces)) >= 22
        # A Retry-After past the client's deadline is not waited for: raised at once
        link.cut()
        recorder = Recorder()
        with (
            LookupClient(proc.base, retry=RetryPolicy(deadline=0.5), transport=recorder) as client,
            pytest.raises(UnavailableError) as unavailable,
        ):
            client.check("a@b", sha(2))
        assert [e.status for e in recorder.log] == [503]
        assert (unavailable.value.status, unavailable.value.errno) == (503, 201)
        assert unavailable.value.retry_after == 1.0
    finally:
        link.restore()
        proc.stop()


def test_a_filter_past_its_maximum_age_is_not_used(server):
    """A validly signed but old filter would say "registered" for a file revoked since:
    past ``filter_max_age`` (default 7 days, the service's ``filter_max_base_age``) the
    client asks the service; a reader with no ``built_at`` is never used."""
    ident = addon()
    with writer(server) as amo:
        serial = amo.register(ident, sha(1), "1").serial
    says_registered = {(ident, sha(1)): "registered"}
    old = FakeFilter(serial, says_registered, built_at=utc(8 * 86400))
    undated = FakeFilter(serial, {(ident, sha(1)): "revoked"}, built_at="")
    default = LookupClient(server.base, cache_size=1, filter=old)
    longer = LookupClient(server.base, cache_size=1, filter=old, filter_max_age=9 * 86400)
    plain = LookupClient(server.base, cache_size=1, filter=undated)
    with default, longer, plain:
        for client in (default, longer, plain):  # each confirms the file with the service
            assert client.check(ident, sha(1)).registered
        with writer(server) as amo:
            amo.revoke(ident, sha(1))
        for client in (default, longer, plain):
            client.check(ident, sha(2))  # evicts sha(1) from the one-entry HTTP cache
        assert default.check(ident, sha(1)).status == "revoked"  # the service's: 8 days > 7
        assert plain.check(ident, sha(1)).status == "revoked"  # the service's, not the filter's
        assert plain.check(ident, sha(1)).source != "filter"
        # Settable: with 9 days the old filter is still used (and is wrong, as old filters are)
        assert longer.check(ident, sha(1)) == CheckResult(
            ident, sha(1), "registered", "1", serial, "filter"
        )
