"""The static publisher against real storage: build, follow, resume, rebuild."""

import os

import pytest

from addonreg import media
from addonreg.publisher import Publisher, StorageSource
from addonreg.storage import Operation
from addonreg.storage.sqlite import SQLiteStore
from addonreg.storage.testing import sha

GUID = "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}"


def reg(addon_id, n, version=None):
    return Operation("register", addon_id, sha(n), version)


def rev(addon_id, n):
    return Operation("revoke", addon_id, sha(n))


@pytest.fixture
async def store(tmp_path):
    """The storage the publisher reads (a second connection to the same SQLite file)."""
    s = SQLiteStore(str(tmp_path / "db.sqlite3"))
    await s.open()
    await s.create_schema()
    yield s
    await s.close()


def publisher(tmp_path, **kw):
    source = StorageSource(SQLiteStore(str(tmp_path / "db.sqlite3")))
    return Publisher(str(tmp_path / "static"), source, progress=False, **kw)


def served(tmp_path, *parts):
    """What nginx would read for a path under DIR/current."""
    path = os.path.join(tmp_path, "static", "current", "v1", "addons", *parts)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def leftovers(root):
    return [f for _, _, files in os.walk(root) for f in files if f.endswith(".tmp")]


async def test_full_build_then_follow(tmp_path, store):
    await store.apply([reg("a@b", n, str(n)) for n in range(5)] + [reg(GUID, 9), rev("a@b", 3)])
    pub = publisher(tmp_path)
    await pub.start()
    try:
        record = await store.get("a@b", sha(1))
        assert served(tmp_path, "a@b", "files", sha(1)) == media.file_body(record)
        assert served(tmp_path, "a@b", "files", sha(3)) is None  # revoked: falls through
        assert served(tmp_path, "a@b", "files", sha(7)) is None  # unknown
        listing = await store.list_files("a@b")
        assert served(tmp_path, "a@b", "files", "index.json") == media.addon_files_body(
            "a@b", listing
        )
        assert served(tmp_path, GUID, "files", sha(9)) is not None
        assert pub.serial == await store.last_serial()

        await store.apply([reg("a@b", 7, "new"), rev("a@b", 1), reg("c@d", 1)])
        assert await pub.apply_page() == 3
        assert served(tmp_path, "a@b", "files", sha(7)) == media.file_body(
            await store.get("a@b", sha(7))
        )
        assert served(tmp_path, "a@b", "files", sha(1)) is None
        assert served(tmp_path, "a@b", "files", "index.json") == media.addon_files_body(
            "a@b", await store.list_files("a@b")
        )
        assert served(tmp_path, "c@d", "files", sha(1)) is not None
        assert await pub.apply_page() == 0
        assert pub.serial == await store.last_serial()
        assert leftovers(tmp_path / "static") == []
    finally:
        await pub.close()


async def test_restart_resumes_without_a_rebuild(tmp_path, store):
    await store.apply([reg("a@b", n) for n in range(3)])
    first = publisher(tmp_path)
    await first.start()
    await first.close()
    await store.apply([reg("a@b", 5)])
    again = publisher(tmp_path)
    await again.start()
    try:
        assert again.stats["rebuilds"] == 0 and again.serial == first.serial
        assert await again.apply_page() == 1
        assert served(tmp_path, "a@b", "files", sha(5)) is not None
    finally:
        await again.close()


async def test_a_feed_that_went_backwards_means_a_full_rebuild(tmp_path, store):
    await store.apply([reg("a@b", n) for n in range(3)])
    pub = publisher(tmp_path)
    await pub.start()
    await pub.close()
    # The database is reset (restored from an old backup): serials start again.
    await store._writer.execute("DELETE FROM registrations")
    await store._writer.execute("UPDATE counters SET value = 0")
    await store.apply([reg("x@y", 1)])
    again = publisher(tmp_path)
    await again.start()
    try:
        assert again.stats["rebuilds"] == 1
        assert served(tmp_path, "a@b", "files", sha(0)) is None  # the old tree is gone
        assert served(tmp_path, "x@y", "files", sha(1)) is not None
        trees = os.listdir(tmp_path / "static" / "trees")
        assert len(trees) == 1
    finally:
        await again.close()


async def test_follow_logs_each_page_and_a_build_shows_its_progress(
    tmp_path, store, caplog, capsys
):
    await store.apply([reg("a@b", n) for n in range(7)])
    pub = Publisher(
        str(tmp_path / "static"),
        StorageSource(SQLiteStore(str(tmp_path / "db.sqlite3"))),
        progress=True,
    )
    await pub.start()
    try:
        err = capsys.readouterr().err
        assert "publish files: 100%" in err and "7/7" in err and "publish lists" in err
        assert "MB on disk" in err  # the summary states what the tree costs
        caplog.set_level("INFO", logger="addonreg.publisher")
        await store.apply([reg("a@b", 9), reg("c@d", 9)])
        assert await pub.apply_page() == 2
        assert "applied 2 change(s) of 2 add-on(s), up to serial 9" in caplog.text
    finally:
        await pub.close()
