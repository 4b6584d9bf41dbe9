"""Fixtures for the bus tests: the shared Redis, private Redis servers, recording callbacks.

Redis tests use ``$ADDONREG_TEST_REDIS`` (default ``redis://127.0.0.1:6379/0``),
each on a channel of its own (``?channel=addonreg-test-<uuid>``), so that
concurrent runs on one Redis do not hear each other. When that Redis is not
reachable (or, for the kill/restart tests, ``redis-server`` is not
installed) they skip with the reason, unless ``ADDONREG_REQUIRE_SERVICES=1``,
where they fail.

Kill/restart tests never touch the shared Redis: they start a private
``redis-server`` on a free loopback port (no persistence) and kill it in
teardown.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
from typing import Any, AsyncIterator, Callable, Iterator, List, Optional, Sequence, Tuple

import pytest
import redis
import redis.asyncio
import redis.exceptions

from addonreg.bus.redis import RedisBus
from addonreg.storage import Record

from tests.conftest import REDIS_URL, REQUIRE_SERVICES, need_redis  # noqa: F401 (used by the tests)


def _unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(reason + " (ADDONREG_REQUIRE_SERVICES=1: not skipping)")
    pytest.skip(reason)


def need_redis_server() -> str:
    """The path of ``redis-server``."""
    path = shutil.which("redis-server")
    if path is None:
        _unavailable("redis-server is not installed (needed to kill and restart a Redis)")
    return path  # type: ignore[return-value]


def with_channel(url: str) -> str:
    """``url`` with a fresh channel of its own."""
    return f"{url}?channel=addonreg-test-{uuid.uuid4().hex}"


def record(n: int, version: Optional[str] = "1.0", status: str = "registered") -> Record:
    return Record(f"addon{n}@example.com", f"{n:064x}", version, status, n, 1_700_000_000_000_000 + n)


class Recorder:
    """Callbacks for a bus that record what they were called with, and when."""

    def __init__(self) -> None:
        self.events: List[Tuple[str, Any, float]] = []
        self._changed = asyncio.Event()

    def _add(self, kind: str, value: Any) -> None:
        self.events.append((kind, value, time.perf_counter()))
        self._changed.set()

    def on_changes(self, records: Sequence[Record]) -> None:
        self._add("changes", list(records))

    def on_reset(self) -> None:
        self._add("reset", None)

    def on_state(self, connected: bool) -> None:
        self._add("state", connected)

    @property
    def callbacks(self) -> Tuple[Callable, Callable, Callable]:
        return self.on_changes, self.on_reset, self.on_state

    @property
    def changes(self) -> List[List[Record]]:
        return [value for kind, value, _ in self.events if kind == "changes"]

    @property
    def resets(self) -> int:
        return sum(kind == "reset" for kind, _, _ in self.events)

    @property
    def states(self) -> List[bool]:
        return [value for kind, value, _ in self.events if kind == "state"]

    def kinds(self) -> List[str]:
        return [kind if kind != "state" else f"state:{value}" for kind, value, _ in self.events]

    async def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
        """Return as soon as ``predicate()`` holds; fail after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pytest.fail(f"not within {timeout} s: {what}; events: {self.kinds()}")


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
    """For conditions no callback announces (counters): check every 10 ms."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def redis_url() -> str:
    """The shared Redis, on a channel of this test's own."""
    need_redis()
    return with_channel(REDIS_URL)


@pytest.fixture
async def buses() -> AsyncIterator[Callable]:
    """Factory: ``await buses(url)`` -> a started ``(RedisBus, Recorder)``; all closed after the test."""
    made: List[RedisBus] = []

    async def start(url: str, **kwargs: Any) -> Tuple[RedisBus, Recorder]:
        bus = RedisBus.from_url(url, **kwargs)
        made.append(bus)
        recorder = Recorder()
        await bus.start(*recorder.callbacks)
        return bus, recorder

    yield start
    for bus in made:
        await bus.close()


@pytest.fixture
async def raw_redis() -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client of the shared Redis, to put hand-made messages on a channel."""
    need_redis()
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A private ``redis-server`` on a free loopback port; ``kill()`` is a crash."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Optional[subprocess.Popen] = None

    async def start(self, timeout: float = 5.0) -> None:
        """Start it (on the same port every time) and return once it answers PING."""
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server not answering on port {self.port}")
                await asyncio.sleep(0.02)
                continue
            try:
                writer.write(b"PING\r\n")
                if (await reader.readline()).startswith(b"+PONG"):
                    return
            finally:
                writer.close()
                await writer.wait_closed()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(5)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A private Redis server (not yet started); killed after the test."""
    server = RedisServer(need_redis_server())
    yield server
    server.kill()
