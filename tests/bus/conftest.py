"""Fixtures for the bus tests: every bus over real storage, the shared Redis, a private one.

Redis tests use ``$ADDONREG_TEST_REDIS`` (default ``redis://127.0.0.1:6379/0``),
each on a channel of its own, so that concurrent runs on one Redis do not
hear each other. Kill/restart tests never touch the shared Redis: they start
a private ``redis-server`` on a free loopback port and kill it in teardown.
Unreachable services skip with the reason, unless ``ADDONREG_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from typing import Any, AsyncIterator, Callable, Iterator, List, Optional, Tuple

import pytest
import redis

from addonreg.bus import InvalidationBus
from addonreg.bus.feed import FeedBus
from addonreg.bus.local import LocalBus
from addonreg.bus.redis import RedisBus
from addonreg.bus.testing import Recorder
from addonreg.storage import RegistrationStore
from addonreg.storage.memory import MemoryStore
from addonreg.storage.mysql import MySQLStore
from addonreg.storage.sqlite import SQLiteStore
from tests.conftest import (BUS_KEY, MYSQL_URL, REDIS_URL, REQUIRE_SERVICES, free_port,
                            need_mysql, need_redis, reset_mysql)

Process = Tuple[InvalidationBus, Recorder, RegistrationStore]


def with_channel(url: str) -> str:
    return f"{url}?channel=addonreg-test-{uuid.uuid4().hex}"


@pytest.fixture
async def processes(tmp_path) -> AsyncIterator[Callable]:
    """Factory: ``await processes(kind, start=True, **bus_options)`` -> one more
    process (bus, recorder, store) over the same storage; all closed after the test.

    ``kind``: local, feed-sqlite, feed-mysql, redis (over SQLite, the shared Redis).
    """
    made: List[Process] = []
    channel = with_channel(REDIS_URL)

    async def make(kind: str, start: bool = True, url: Optional[str] = None,
                   **options: Any) -> Process:
        if kind == "feed-mysql":
            need_mysql()
            if not made:
                reset_mysql()
            store: RegistrationStore = MySQLStore(MYSQL_URL)
        elif kind == "local":
            store = MemoryStore()
        else:
            store = SQLiteStore(str(tmp_path / "bus.sqlite3"))
        await store.open()
        await store.create_schema()
        if kind == "local":
            bus: InvalidationBus = LocalBus()
        elif kind == "redis":
            if url is None:
                need_redis()
            bus = RedisBus(url or channel, store, BUS_KEY.encode(), **options)
        else:
            bus = FeedBus(store, **{"interval": 0.01, **options})
        recorder = Recorder()
        made.append((bus, recorder, store))
        if start:
            await bus.start(recorder)
        return bus, recorder, store

    yield make
    for bus, _, store in made:
        await bus.close()
        await store.close()


def need_redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        reason = "redis-server is not installed (needed to kill and restart a Redis)"
        if REQUIRE_SERVICES:
            pytest.fail(reason + " (ADDONREG_REQUIRE_SERVICES=1: not skipping)")
        pytest.skip(reason)
    return path  # type: ignore[return-value]


class RedisServer:
    """A private ``redis-server`` on a free loopback port; ``kill()`` is a crash."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 5.0) -> None:
        """Start it (on the same port every time) and return once it answers PING."""
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        try:
            while True:  # polling a condition: the server answers
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start on port {self.port}")
                    time.sleep(0.02)
        finally:
            client.close()

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
