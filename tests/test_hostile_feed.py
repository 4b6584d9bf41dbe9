"""`addonreg publish --from` and `addonreg filter --from` against a hostile look-alike
service: a feed whose records try to leave DIR (``../`` ids, absolute paths,
encoded slashes, ``owned.txt`` as a sha256) or break the contract otherwise.

The commands run as real processes; the feed is a small Tornado app in the test.
Each must stop with exit 1 and one line naming the record's serial, no
traceback, and nothing written outside DIR (nor anything of the bad page).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any, Dict, List, Optional

import pytest
from tornado import httpserver, netutil, web

from addonreg.filter.follow import generate_key
from addonreg.ids import InvalidIdentifier
from addonreg.publisher import OutsideTree, Publisher, StaticTree
from addonreg.sources import FeedRejected, check_change
from addonreg.storage import REGISTERED, REVOKED, Record
from addonreg.storage.testing import sha
from tests.conftest import ROOT

pytestmark = pytest.mark.subprocess

WHEN = "2026-11-27T18:00:00.123456Z"


def change(addon_id: Any, sha256: Any, serial: Any = 1, **extra: Any) -> Dict[str, Any]:
    record = {
        "addon_id": addon_id,
        "sha256": sha256,
        "version": None,
        "status": "registered",
        "serial": serial,
        "updated_at": WHEN,
    }
    record.update(extra)
    return record


class HostileFeed:
    """A look-alike service: ``GET /v1/changes`` answers ``records`` as the contract
    pages them (whatever they hold), add-on lists are the records of the id."""

    def __init__(self, records: List[Dict[str, Any]]) -> None:
        self.records = records
        self.lists: Dict[str, Any] = {}  # add-on id -> the list answered instead
        self.raw: Optional[bytes] = None  # the body of every feed page instead
        feed = self

        class Changes(web.RequestHandler):
            def get(self) -> None:
                if feed.raw is not None:
                    self.set_header("Content-Type", "text/html")
                    self.write(feed.raw)
                    return
                since = int(self.get_argument("since", "0"))
                limit = int(self.get_argument("limit", "1000"))
                # Pages by position, not serial: a hostile serial must still be served.
                page = feed.records[since : since + limit]
                self.write({"changes": page, "next_since": since + len(page)})

        class Files(web.RequestHandler):
            def get(self, addon_id: str) -> None:
                files = [r for r in feed.records if r.get("addon_id") == addon_id]
                body = feed.lists.get(addon_id, {"addon_id": addon_id, "files": files})
                self.set_header("Content-Type", "application/json")
                self.write(json.dumps(body))

        sockets = netutil.bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self.server = httpserver.HTTPServer(
            web.Application([(r"/v1/changes", Changes), (r"/v1/addons/([^/]+)/files", Files)])
        )
        self.server.add_sockets(sockets)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
async def hostile():
    feeds: List[HostileFeed] = []

    def start(records: List[Dict[str, Any]]) -> HostileFeed:
        feeds.append(HostileFeed(records))
        return feeds[-1]

    yield start
    for feed in feeds:
        feed.stop()


async def addonreg(*args: str, env: Optional[Dict[str, str]] = None, timeout: float = 60):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ADDONREG_")}
    full_env.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "addonreg",
        *args,
        cwd=ROOT,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)  # a liveness bound
    return proc.returncode, out.decode(), err.decode()


def files_under(root) -> List[str]:
    return sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _, fs in os.walk(root, followlinks=False)
        for f in fs
    )


def one_error_line(stderr: str, command: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(f"addonreg {command}:")]
    assert len(lines) == 1, stderr
    return lines[0]


def escapes(tmp_path) -> List[tuple]:
    """(addon_id, sha256) pairs that would write outside DIR if used as paths."""
    outside = tmp_path / "outside"
    return [
        ("../../../../../ESCAPED", "owned.txt"),  # the feed
        ("fx@example.com", "../../../../../../owned.txt"),
        (str(outside / "abs-id"), sha(1)),  # an absolute path as the id
        ("fx@example.com", str(outside / "abs-sha")),
        ("..%2F..%2F..%2F..%2F..%2FESCAPED", sha(1)),  # encoded slashes
        ("fx@example.com", "..%2F..%2F..%2F..%2F..%2F..%2Fowned.txt"),
        ("..@..", "owned.txt"),  # a valid id with a bad hash
    ]


@pytest.mark.parametrize("case", range(7))
async def test_publish_from_a_feed_that_tries_to_leave_dir(tmp_path, hostile, case):
    addon_id, sha256 = escapes(tmp_path)[case]
    good = [change("good@example.com", sha(n), n) for n in (1, 2)]
    feed = hostile(good + [change(addon_id, sha256, 3)])
    directory = tmp_path / "a" / "b" / "c" / "DIR"
    code, _, err = await addonreg("publish", str(directory), "--from", feed.url, "--quiet")
    assert code == 1
    line = one_error_line(err, "publish")
    assert "serial 3" in line, line
    # Nothing outside DIR; inside, no tree is served (the build never finished)
    # and no file of the refused build is left.
    assert files_under(tmp_path) == []
    assert not (directory / "current").exists()


@pytest.mark.parametrize("case", range(7))
async def test_filter_from_a_feed_that_tries_to_leave_dir(tmp_path, hostile, case):
    addon_id, sha256 = escapes(tmp_path)[case]
    feed = hostile([change("good@example.com", sha(1), 1), change(addon_id, sha256, 2)])
    directory = tmp_path / "a" / "b" / "DIR"
    code, _, err = await addonreg(
        "filter", str(directory), "--from", feed.url, env={"ADDONREG_FILTER_KEY": generate_key()[0]}
    )
    assert code == 1
    line = one_error_line(err, "filter")
    assert "serial 2" in line, line
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(
    "bad, says",
    [
        ({"status": "yes"}, "status"),
        ({"status": None}, "status"),
        ({"serial": "3"}, "serial"),
        ({"serial": 1}, "serial"),  # not above the previous record's
        ({"serial": True}, "serial"),
        ({"serial": 2**64}, "serial"),
        ({"version": "1\n2"}, "version"),
        ({"version": 7}, "version"),
        ({"updated_at": "yesterday"}, "updated_at"),
        ({"updated_at": 5}, "updated_at"),
        ({"sha256": sha(3).upper()}, "sha256"),  # the service returns lowercase
        ({"sha256": "sha256:" + sha(3)}, "sha256"),
        ({"sha256": None}, "sha256"),
        ({"addon_id": ""}, "addon_id"),
        ({"addon_id": ["a@b"]}, "addon_id"),
        ({"addon_id": "a" * 250 + "@b.com"}, "addon_id"),
    ],
)
async def test_publish_stops_at_a_record_that_breaks_the_contract(tmp_path, hostile, bad, says):
    record = change("good@example.com", sha(3), 3)
    record.update(bad)
    feed = hostile([change("good@example.com", sha(n), n) for n in (1, 2)] + [record])
    code, _, err = await addonreg("publish", str(tmp_path / "DIR"), "--from", feed.url, "--quiet")
    assert code == 1
    line = one_error_line(err, "publish")
    assert says in line, line
    assert not (tmp_path / "DIR" / "current").exists()


async def test_a_bad_record_while_following_stops_with_the_good_ones_kept(tmp_path, hostile):
    feed = hostile([change("good@example.com", sha(1), 1)])
    directory = tmp_path / "DIR"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "addonreg",
        "publish",
        str(directory),
        "--from",
        feed.url,
        "--follow",
        "--quiet",
        "--interval",
        "0.05",
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("ADDONREG_")},
        stderr=asyncio.subprocess.PIPE,
    )
    served = directory / "current" / "v1" / "addons" / "good@example.com" / "files"
    try:
        for _ in range(600):  # a liveness bound: 30 s
            if (served / sha(1)).exists():
                break
            await asyncio.sleep(0.05)
        assert (served / sha(1)).exists()
        # A good record and a bad one in the same page: neither is applied.
        feed.records += [
            change("good@example.com", sha(2), 2),
            change("../../../../ESCAPED", "owned.txt", 3),
        ]
        _, err = await asyncio.wait_for(proc.communicate(), 30)  # a liveness bound
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1
    line = one_error_line(err.decode(), "publish")
    assert "serial 3" in line and "ESCAPED" in line, line
    assert (served / sha(1)).exists() and not (served / sha(2)).exists()
    assert json.loads((directory / "state.json").read_text())["serial"] == 1
    assert not any("ESCAPED" in f or "owned" in f for f in files_under(tmp_path))


async def test_filter_following_stops_at_a_bad_record_keeping_what_it_published(tmp_path, hostile):
    feed = hostile([change("good@example.com", sha(1), 1)])
    directory = tmp_path / "DIR"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADDONREG_")}
    env.update(ADDONREG_FILTER_KEY=generate_key()[0], ADDONREG_FILTER_DELTA_INTERVAL="0.1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "addonreg",
        "filter",
        str(directory),
        "--from",
        feed.url,
        "--follow",
        cwd=ROOT,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    index = directory / "filter" / "latest.json"
    try:
        for _ in range(600):  # a liveness bound: 30 s
            if index.exists():
                break
            await asyncio.sleep(0.05)
        assert index.exists(), "no base published within 30 s"
        published = index.read_bytes()
        feed.records += [change("good@example.com", sha(2), 2), change("a@b", "owned.txt", 3)]
        _, err = await asyncio.wait_for(proc.communicate(), 30)  # a liveness bound
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1
    assert "serial 3" in one_error_line(err.decode(), "filter")
    assert index.read_bytes() == published  # nothing of the bad page
    assert json.loads(published)["serial"] == 1
    assert not any("owned" in f for f in files_under(tmp_path))


@pytest.mark.parametrize("command", ["publish", "filter"])
@pytest.mark.parametrize("url", ["notaurl", "ftp://x/", "http://[::1", "http://h:99999", "http://"])
async def test_a_url_that_is_not_one_is_one_line(tmp_path, command, url):
    code, _, err = await addonreg(
        command,
        str(tmp_path / "DIR"),
        "--from",
        url,
        env={"ADDONREG_FILTER_KEY": generate_key()[0]},
    )
    assert code == 2
    assert "URL" in one_error_line(err, command)
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Sign in to the hotel Wi-Fi</body></html>",  # a captive portal
        b'{"changes": [{"addon_id": "a@b"',  # cut short
        b"[]",
        b'{"changes": {}, "next_since": 0}',
        b'{"changes": [], "next_since": "0"}',
        b'{"changes": [], "next_since": 7}',  # not the since asked, with no records
    ],
)
@pytest.mark.parametrize("command", ["publish", "filter"])
async def test_an_answer_that_is_not_a_feed_is_one_line(tmp_path, hostile, command, body):
    feed = hostile([])
    feed.raw = body
    code, _, err = await addonreg(
        command,
        str(tmp_path / "DIR"),
        "--from",
        feed.url,
        env={"ADDONREG_FILTER_KEY": generate_key()[0]},
    )
    assert code == 1
    assert feed.url in one_error_line(err, command)
    assert files_under(tmp_path) == []


async def test_a_feed_that_never_answers_is_an_error_within_the_timeout():
    from addonreg.sources import FeedError, ServiceSource

    listener = netutil.bind_sockets(0, "127.0.0.1")[0]  # accepts (backlog), never answers
    source = ServiceSource(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(FeedError, match="Timeout"):
            await source.changes(0, 10)
        assert asyncio.get_running_loop().time() - started < 10  # a liveness bound
    finally:
        await source.close()
        listener.close()


async def test_a_list_of_another_addon_is_refused(tmp_path, hostile):
    feed = hostile([change("good@example.com", sha(1), 1)])
    from addonreg.sources import ServiceSource

    source = ServiceSource(feed.url)
    try:
        assert (await source.changes(0, 10))[0][0].sha256 == sha(1)
        assert json.loads(await source.addon_list("good@example.com"))["files"][0]["serial"] == 1
        other = change("other@example.com", sha(1))
        for answer in (
            {"addon_id": "other@example.com", "files": [other]},
            {"addon_id": "good@example.com", "files": [other]},
            {"addon_id": "good@example.com", "files": [change("good@example.com", "owned.txt")]},
            {"addon_id": "good@example.com", "files": "all"},
            ["good@example.com"],
        ):
            feed.lists["good@example.com"] = answer
            with pytest.raises(FeedRejected, match="not the file list of good@example.com"):
                await source.addon_list("good@example.com")
    finally:
        await source.close()


# Defence in depth: what gets past the feed's checks (a storage source is not
# checked record by record) still cannot leave the tree.


class Unchecked:
    """A feed source handing on records as given (storage's is one)."""

    name = "unchecked"

    def __init__(self, records: List[Record]) -> None:
        self.records = records

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def last_serial(self) -> Optional[int]:
        return None

    async def changes(self, since: int, limit: int):
        page = [r for r in self.records if r.serial > since][:limit]
        return page, page[-1].serial if page else since

    async def addon_list(self, addon_id: str) -> Optional[bytes]:
        return b"{}"


def record(addon_id: str, sha256: str, serial: int, status: str = REGISTERED) -> Record:
    return Record(addon_id, sha256, None, status, serial, 0)


@pytest.mark.parametrize(
    "addon_id, sha256",
    [
        ("../../../../ESCAPED", "owned.txt"),
        ("a@b", "../../../owned.txt"),
        ("{outside}/ESCAPED", sha(1)),
        ("a@b", "{outside}/owned.txt"),
        ("..", ".."),
        ("a@b", ""),
    ],
)
async def test_the_tree_refuses_paths_that_resolve_outside(tmp_path, addon_id, sha256):
    outside = tmp_path / "outside"
    addon_id, sha256 = addon_id.format(outside=outside), sha256.format(outside=outside)
    publisher = Publisher(
        str(tmp_path / "DIR"),
        Unchecked([record("a@b", sha(1), 1), record(addon_id, sha256, 2)]),
        progress=False,
    )
    with pytest.raises(OutsideTree, match="serial 2"):
        await publisher.start()
    assert files_under(tmp_path) == []


async def test_a_symlink_planted_in_the_tree_is_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    source = Unchecked([record("a@b", sha(1), 1)])
    publisher = Publisher(str(tmp_path / "DIR"), source, progress=False)
    await publisher.start()
    addons = os.path.join(publisher.live.root, "v1", "addons")
    os.symlink(outside, os.path.join(addons, "planted@x"))
    source.records += [
        record("planted@x", sha(2), 2),
        record("a@b", sha(1), 3, REVOKED),
    ]
    with pytest.raises(OutsideTree, match="serial 2"):
        await publisher.apply_page()
    assert os.listdir(outside) == []
    # Nothing of the page was applied: a@b's file is still there.
    assert os.path.exists(publisher.live.file_path("a@b", sha(1)))
    tree = StaticTree(str(tmp_path / "DIR" / "current"))
    with pytest.raises(OutsideTree):
        tree.write(tree.file_path("planted@x", sha(3)), b"x")
    assert os.listdir(outside) == []


@pytest.mark.parametrize(
    "item",
    [
        None,
        [],
        "a@b",
        change("a@b", sha(1), 0),
        change("a@b", sha(1), -1),
        change("a@b", sha(1), 1.0),
        change("a@b", sha(1), None),
        change("a@b\n", sha(1)),
        change("a@b", sha(1) + "\n"),
        change("a@b", sha(1), status="unknown"),
        change("a@b", sha(1), updated_at="2026-11-27T18:00:00Z"),
        change("a@b", sha(1), updated_at="2026-13-45T18:00:00.000000Z"),
    ],
)
def test_check_change_refuses_every_malformed_record(item):
    with pytest.raises(InvalidIdentifier):
        check_change(item, 0)


def test_check_change_gives_the_record():
    assert check_change(change("a@b", sha(1), 5, version="1.0", status="revoked"), 4) == Record(
        "a@b", sha(1), "1.0", "revoked", 5, 1795802400123456
    )


async def test_a_row_written_into_storage_behind_the_service_cannot_leave_dir(tmp_path):
    # Storage is the source of truth and not checked record by record; a row
    # put there by hand (or a restored dump) still cannot make publish write
    # outside DIR.
    import sqlite3

    db = tmp_path / "db.sqlite3"
    storage = f"sqlite:///{db}"
    code, _, err = await addonreg("initdb", env={"ADDONREG_STORAGE": storage})
    assert code == 0, err
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO registrations VALUES (?, ?, NULL, 1, ?, 0)",
            [("a@b", bytes.fromhex(sha(1)), 1), ("../../../../ESCAPED", bytes(32), 2)],
        )
        conn.execute("UPDATE counters SET value = 2 WHERE name = 'serial'")
    directory = tmp_path / "DIR"
    code, _, err = await addonreg(
        "publish", str(directory), "--quiet", env={"ADDONREG_STORAGE": storage}
    )
    assert code == 1
    line = one_error_line(err, "publish")
    assert "serial 2" in line and "outside" in line, line
    assert [f for f in files_under(tmp_path) if not f.startswith("db.sqlite3")] == []
