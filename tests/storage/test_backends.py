"""The shared storage suite (addonreg/storage/testing.py) against every backend."""

import pytest

from addonreg.storage.memory import MemoryStore
from addonreg.storage.mysql import MySQLStore
from addonreg.storage.sqlite import SQLiteStore
from addonreg.storage.testing import StorageTests
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
