"""Shared fixtures: real servers on loopback, real storage.

MySQL tests use ``$ADDONREG_TEST_MYSQL`` (default
``mysql://root@127.0.0.1:3306/addonreg_test``; the database is created when
missing). When the server is not reachable they skip with the reason, unless
``ADDONREG_REQUIRE_SERVICES=1`` (set by ``.ci/run``), where they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, AsyncIterator, Callable, Dict, Iterator, Optional
from urllib.parse import urlsplit

import pymysql
import pytest
import redis
import redis.exceptions
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse

from addonreg.config import load_settings
from addonreg.hawk import sign
from addonreg.server import Service
from tests.openapi_check import check_response

MYSQL_URL = os.environ.get("ADDONREG_TEST_MYSQL", "mysql://root@127.0.0.1:3306/addonreg_test")
REDIS_URL = os.environ.get("ADDONREG_TEST_REDIS", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("ADDONREG_REQUIRE_SERVICES") == "1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_mysql_state: Dict[str, Any] = {}


def free_port() -> int:
    """A loopback port free at the time of asking."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_until(
    predicate: Callable[[], Any], what: str, timeout: float = 5.0, every: float = 0.005
) -> Any:
    """Poll ``predicate()`` (a function, or one returning an awaitable) until it is
    true; its value. ``timeout`` is a liveness bound, not a latency to measure."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s (liveness bound): {what}")
        await asyncio.sleep(every)


_redis_state: Dict[str, Any] = {}


def mysql_connect(url: str = MYSQL_URL, db: bool = True):
    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname,
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=parts.path.strip("/") if db else None,
        autocommit=True,
        connect_timeout=3,
    )


def mysql_available() -> Optional[str]:
    """None when MySQL is usable; otherwise the reason it is not."""
    if "reason" not in _mysql_state:
        try:
            conn = mysql_connect(db=False)
            with conn.cursor() as cur:
                cur.execute(
                    "CREATE DATABASE IF NOT EXISTS `%s`"
                    % urlsplit(MYSQL_URL).path.strip("/").replace("`", "")
                )
            conn.close()
            _mysql_state["reason"] = None
        except pymysql.MySQLError as exc:
            _mysql_state["reason"] = f"MySQL at {MYSQL_URL} unavailable: {exc}"
    return _mysql_state["reason"]


def need_mysql() -> None:
    reason = mysql_available()
    if reason:
        if REQUIRE_SERVICES:
            pytest.fail(reason + " (ADDONREG_REQUIRE_SERVICES=1: not skipping)")
        pytest.skip(reason)


def redis_available() -> Optional[str]:
    """None when Redis answers; otherwise the reason it does not."""
    if "reason" not in _redis_state:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
            _redis_state["reason"] = None
        except (redis.exceptions.RedisError, OSError) as exc:
            _redis_state["reason"] = f"Redis at {REDIS_URL} unavailable: {exc}"
        finally:
            client.close()
    return _redis_state["reason"]


def need_redis() -> None:
    reason = redis_available()
    if reason:
        if REQUIRE_SERVICES:
            pytest.fail(reason + " (ADDONREG_REQUIRE_SERVICES=1: not skipping)")
        pytest.skip(reason)


def redis_pubsub_url() -> str:
    """The test Redis as a pub/sub URL on a channel of its own (no cross-talk between runs)."""
    return f"{REDIS_URL}?channel=addonreg-test-{uuid.uuid4().hex}"


def reset_mysql(url: str = MYSQL_URL) -> None:
    conn = mysql_connect(url)
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS registrations, counters, jobs")
    conn.close()


BACKENDS = ["memory", "sqlite", "mysql"]


@pytest.fixture
def storage_url(request, tmp_path) -> str:
    """A fresh, empty storage of the backend the test is parametrised with."""
    backend = getattr(request, "param", "sqlite")
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/addonreg.sqlite3"
    need_mysql()
    reset_mysql()
    return MYSQL_URL


BUS_KEY = "test-bus-key-shared-by-the-processes"


def make_settings(storage: str = "memory://", **overrides: Any):
    env = {
        "ADDONREG_STORAGE": storage,
        "ADDONREG_PORT": "0",
        "ADDONREG_HOST": "127.0.0.1",
        "ADDONREG_BUS_KEY": BUS_KEY,
    }
    return load_settings(environ=env).replace(**overrides)


class Client:
    """A real HTTP client for one server; never raises on an error status.

    Every answer is checked against ``docs/openapi.yaml`` (``tests/openapi_check.py``).
    """

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = AsyncHTTPClient(force_instance=True)

    async def fetch(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Optional[Dict[str, str]] = None,
        raw: Optional[bytes] = None,
    ) -> HTTPResponse:
        if body is not None:
            raw = json.dumps(body).encode()
        request = HTTPRequest(
            self.base + path,
            method=method,
            body=raw,
            headers=headers,
            allow_nonstandard_methods=True,
            request_timeout=30,
            follow_redirects=False,
        )
        response = await self.http.fetch(request, raise_error=False)
        if response.code != 599:  # 599: no answer at all
            check_response(
                method,
                self.base + path,
                request.headers,
                raw,
                response.code,
                response.headers,
                response.body,
            )
        return response

    async def get(self, path: str, **kw: Any) -> HTTPResponse:
        return await self.fetch("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> HTTPResponse:
        return await self.fetch("POST", path, body=body, **kw)

    def close(self) -> None:
        self.http.close()


CREDS = {"amo": "amo-secret-key", "other": "other-key"}


class Writer(Client):
    """A client that signs its requests with Hawk."""

    def __init__(self, base, ident="amo"):
        super().__init__(base)
        self.ident = ident

    async def signed(
        self, method, path, body=None, raw=None, headers=None, ident=None, key=None, **sign_kw
    ):
        if body is not None:
            raw = json.dumps(body).encode()
        headers = dict(headers or {})
        content_type = headers.setdefault("Content-Type", "application/json") if raw else None
        ident = ident or self.ident
        headers["Authorization"] = sign(
            ident,
            key or CREDS[ident],
            method,
            self.base + path,
            raw or b"",
            content_type,
            **sign_kw,
        )
        return await self.fetch(method, path, raw=raw, headers=headers)


@pytest.fixture
async def service(storage_url) -> AsyncIterator[Service]:
    """A real server on a random loopback port over ``storage_url``."""
    svc = await Service(make_settings(storage_url)).start()
    yield svc
    await svc.stop()


@pytest.fixture
async def client(service) -> AsyncIterator[Client]:
    c = Client(f"http://127.0.0.1:{service.port}")
    yield c
    c.close()


def body(response: HTTPResponse) -> Any:
    return json.loads(response.body)


def assert_error(response: HTTPResponse, status: int, errno: Optional[int] = None) -> dict:
    """The response is the contract's error body with this status."""
    assert response.code == status, (response.code, response.body)
    data = body(response)
    assert data["code"] == status
    assert isinstance(data["errno"], int)
    assert isinstance(data["error"], str) and data["error"]
    assert isinstance(data["message"], str) and data["message"]
    assert "Traceback" not in response.body.decode()
    if errno is not None:
        assert data["errno"] == errno, data
    return data


class ServerProcess:
    """A real ``addonreg serve`` process on a random port."""

    def __init__(self, env: Dict[str, str], args=()) -> None:
        full_env = dict(
            os.environ,
            ADDONREG_HOST="127.0.0.1",
            ADDONREG_PORT="0",
            ADDONREG_LOG_LEVEL="INFO",
            ADDONREG_BUS_KEY=BUS_KEY,
            PYTHONUNBUFFERED="1",
        )
        full_env.pop("ADDONREG_CONFIG", None)
        full_env.update(env)
        self.env = full_env
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "addonreg", "serve", *args],
            env=full_env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = []
        self.port = self._wait_for_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # Keep reading its output so a chatty server never blocks on a full pipe.
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)

    def _wait_for_port(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if "listening on" in line:
                return int(line.split("listening on ", 1)[1].split()[0].rsplit(":", 1)[1])
        self.proc.kill()
        raise RuntimeError(
            "server did not start:\n" + "".join(self.output) + (self.proc.stdout.read() or "")
        )

    def stop(self, sig=None) -> int:
        """Signal the process (SIGTERM by default) and wait; its exit code."""
        import signal as _signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or _signal.SIGTERM)
        try:
            code = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self._reader.join(5)
        if not self._reader.is_alive():
            self.proc.stdout.close()
        return code


@pytest.fixture
def server_process(tmp_path) -> Iterator:
    """Factory: start real server processes; all are stopped after the test."""
    started = []

    def start(env: Optional[Dict[str, str]] = None, args=()) -> ServerProcess:
        env = dict({"ADDONREG_STORAGE": f"sqlite:///{tmp_path}/proc.sqlite3"}, **(env or {}))
        proc = ServerProcess(env, args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def private_redis(tmp_path) -> Iterator[Any]:
    """A private ``redis-server`` of this test's own (not yet started), gone afterwards
    (``tests/faults/servers.py``: start, kill9, pause, resume)."""
    from tests.faults.servers import PrivateRedis, need_programs

    need_programs("redis-server")
    server = PrivateRedis(tmp_path)
    server.base_url = f"redis://127.0.0.1:{server.port}/0"
    yield server
    server.kill9()
