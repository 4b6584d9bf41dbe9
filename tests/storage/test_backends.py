"""The shared storage suite (addonreg/storage/testing.py) against every backend."""

import asyncio
import warnings

import aiomysql
import pymysql
import pytest

from addonreg.storage import BackendError
from addonreg.storage.memory import MemoryStore
from addonreg.storage.mysql import MySQLStore
from addonreg.storage.mysql.sql import packed, unpack
from addonreg.storage.sqlite import SQLiteStore
from addonreg.storage.testing import StorageTests, reg, rev, sha
from tests.conftest import MYSQL_URL, need_mysql, reset_mysql


class TestMemoryStore(StorageTests):
    @pytest.fixture
    async def store(self):
        store = MemoryStore()
        await store.open()
        await store.create_schema()
        yield store
        await store.close()


class TestSQLiteStore(StorageTests):
    @pytest.fixture
    async def store(self, tmp_path):
        store = SQLiteStore(str(tmp_path / "db.sqlite3"))
        await store.open()
        await store.create_schema()
        yield store
        await store.close()


@pytest.mark.mysql
class TestMySQLStore(StorageTests):
    @pytest.fixture
    async def store(self):
        need_mysql()
        reset_mysql()
        store = MySQLStore(MYSQL_URL, pool_size=4)
        await store.open()
        await store.create_schema()
        yield store
        await store.close()

    async def test_a_page_the_server_cuts_short_is_an_error_not_a_wrong_record(self, store):
        await store.apply([reg("a@b", n, "1.0") for n in range(10)])
        async with (await store.nodes[0].reads()).acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute(f"SELECT {packed()} FROM registrations")
                count, text = await cur.fetchone()
                assert count == 10 and len(unpack((count, text))) == 10
                # Just short of the whole join: only the last record is cut.
                await cur.execute(f"SET SESSION group_concat_max_len = {len(text) - 2}")
            with (
                pytest.raises(BackendError, match="cut a page of 10 records short"),
                warnings.catch_warnings(),
            ):
                warnings.simplefilter("ignore", pymysql.Warning)  # the server's "was cut"
                async with conn.cursor() as cur:
                    await cur.execute(f"SELECT {packed()} FROM registrations")
                    unpack(await cur.fetchone())
            conn.close()  # not back into the pool with the small limit
        assert len(await store.changes(0, 100)) == 10  # a fresh connection reads them all

    async def test_a_batch_that_changes_nothing_takes_no_lock(self, store):
        batch = [reg("a@b", n, "1.0") for n in range(50)]
        await store.apply(batch)
        await store.apply(batch)  # nothing changed: the next such batch skips the transaction
        last = await store.last_serial()
        holder = await aiomysql.connect(**store.nodes[0].connect_args())
        async with holder.cursor() as cur:  # another writer holds the serial counter
            await cur.execute("BEGIN")
            await cur.execute("SELECT value FROM counters WHERE name = 'serial' FOR UPDATE")
            # 10 s: a liveness bound; waiting for the lock would take innodb_lock_wait_timeout.
            again = await asyncio.wait_for(store.apply(batch), 10)
            assert [a.changed for a in again] == [False] * 50
            assert [a.record.serial for a in again] == list(range(1, 51))
            await cur.execute("ROLLBACK")
        holder.close()
        [revoked] = await store.apply([rev("a@b", 7)])  # a change still goes through the lock
        assert revoked.changed and revoked.record.serial == last + 1
        assert (await store.get("a@b", sha(7))).status == "revoked"
