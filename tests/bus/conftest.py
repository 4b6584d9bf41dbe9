"""Fixtures for the bus tests: every bus over real storage, the shared Redis, a private one.

Redis tests use ``$ADDONREG_TEST_REDIS`` (default ``redis://127.0.0.1:6379/0``),
each on a channel of its own, so that concurrent runs on one Redis do not
hear each other. Kill/restart tests never touch the shared Redis: they start
a private ``redis-server`` (``tests/conftest.py``'s ``private_redis``).
Unreachable services skip with the reason, unless ``ADDONREG_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import uuid
from typing import Any, AsyncIterator, Callable, List, Optional, Tuple

import pytest

from addonreg.bus import InvalidationBus
from addonreg.bus.feed import FeedBus
from addonreg.bus.local import LocalBus
from addonreg.bus.redis import RedisBus
from addonreg.bus.testing import Recorder
from addonreg.storage import RegistrationStore
from addonreg.storage.memory import MemoryStore
from addonreg.storage.mysql import MySQLStore
from addonreg.storage.sqlite import SQLiteStore
from tests.conftest import (  # noqa: F401
    BUS_KEY,
    MYSQL_URL,
    REDIS_URL,
    need_mysql,
    need_redis,
    private_redis,
    reset_mysql,
)

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

    async def make(
        kind: str, start: bool = True, url: Optional[str] = None, **options: Any
    ) -> Process:
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
