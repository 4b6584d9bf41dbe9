"""The storage-feed bus beyond the shared contract: paging, a feed that went
backwards, and storage cut and back (through a TCP proxy to the real MariaDB)."""

from __future__ import annotations

import sqlite3

from addonreg.bus.feed import FeedBus
from addonreg.bus.testing import Recorder, commit, sha
from addonreg.storage import Operation
from addonreg.storage.mysql import MySQLStore
from tests.conftest import MYSQL_URL, need_mysql, reset_mysql
from tests.faults import TCPProxy


async def test_a_burst_longer_than_a_page_arrives_whole(processes):
    a = await processes("feed-sqlite")
    _, rec_b, _ = await processes("feed-sqlite", page=7)
    ops = [Operation("register", "burst@example.com", sha(n)) for n in range(100)]
    await commit(a, ops)
    await rec_b.wait(
        lambda: {r.key for r in rec_b.applied} >= {op.key for op in ops},
        "all 100 changes, 7 a page",
    )
    serials = [r.serial for r in rec_b.applied]
    assert serials == sorted(serials)


async def test_a_feed_that_went_backwards_drops_the_cache(processes, tmp_path):
    a = await processes("feed-sqlite")
    b, rec_b, _ = await processes("feed-sqlite", check_every=0.01)
    await commit(a, [Operation("register", "x@example.com", sha(n)) for n in range(5)])
    await rec_b.wait(lambda: b.since == 5, "B caught up")
    # The database restored from an older copy: its serial is below B's.
    with sqlite3.connect(tmp_path / "bus.sqlite3") as db:
        db.execute("DELETE FROM registrations")
        db.execute("UPDATE counters SET value = 1 WHERE name = 'serial'")
    await rec_b.wait(lambda: rec_b.resets == 1 and b.since == 1, "B reset, following anew")
    [record] = await commit(a, [Operation("register", "y@example.com", sha(9))])
    await rec_b.wait(lambda: record in rec_b.applied, "B follows the new feed")


async def test_storage_cut_and_back_loses_nothing():
    need_mysql()
    reset_mysql()
    proxy = await TCPProxy("127.0.0.1", 3306).start()
    stores = [
        MySQLStore(MYSQL_URL),
        MySQLStore(MYSQL_URL.replace(":3306", f":{proxy.port}"), timeout=0.5),
    ]
    for store in stores:
        await store.open()
        await store.create_schema()
    bus, rec = FeedBus(stores[1], interval=0.01), Recorder()
    try:
        await bus.start(rec)
        assert rec.states == [True]
        await proxy.stop()  # B's database link is down
        await rec.wait(lambda: rec.states[-1] is False, "B knows it cannot follow")
        written = await stores[0].apply([Operation("register", "cut@example.com", sha(1))])
        await proxy.start()
        await rec.wait(
            lambda: rec.states[-1] is True and written[0].record in rec.applied,
            "B back, with the change made meanwhile",
        )
        assert rec.resets == 0 and bus.stats()["feed_errors"] >= 1
    finally:
        await bus.close()
        await proxy.stop()
        for store in stores:
            await store.close()
