"""The offline filter end to end: built from a real service's storage by a real
``addonreg filter --follow`` process, served by the service and by nginx,
kept current by deltas as writes come through the API, exact on every known
file at the new serial, and refused when one byte of it is changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from addonreg.filter import FilterReader
from addonreg.filter.follow import generate_key
from addonreg.server import Service
from addonreg.storage import Operation
from addonreg.storage.testing import sha
from tests.conftest import CREDS, ROOT, Writer, make_settings, wait_until
from tests.nginx import Nginx, need_nginx

pytestmark = pytest.mark.subprocess


@pytest.fixture
def keys():
    return generate_key()


@pytest.fixture
async def service(tmp_path, keys):
    settings = make_settings(
        f"sqlite:///{tmp_path}/db.sqlite3",
        hawk_credentials=CREDS,
        filter_dir=str(tmp_path / "filter-dir"),
        filter_public_keys=(keys[1],),
    )
    svc = await Service(settings).start()
    ops = [Operation("register", f"a{n % 40}@example.com", sha(n), "1.0") for n in range(2000)]
    await svc.store.apply(
        ops + [Operation("revoke", f"a{n % 40}@example.com", sha(n)) for n in range(0, 2000, 17)]
    )
    yield svc
    await svc.stop()


@pytest.fixture
def filter_process(tmp_path, keys, service):
    env = dict(
        os.environ,
        ADDONREG_STORAGE=f"sqlite:///{tmp_path}/db.sqlite3",
        ADDONREG_FILTER_KEY=keys[0],
        ADDONREG_FILTER_DELTA_INTERVAL="0.2",
        # A registry this small has a base of a few hundred bytes: without this,
        # any delta outgrows half of it and a new base is published instead.
        ADDONREG_FILTER_MAX_DELTA_RATIO="50",
        ADDONREG_LOG_LEVEL="info",
    )
    env.pop("ADDONREG_CONFIG", None)
    log = open(tmp_path / "filter.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "addonreg", "filter", "--follow", str(tmp_path / "filter-dir")],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield proc
    proc.terminate()
    proc.wait(15)
    log.close()


async def fetch_filter(client, public_key):
    index = await client.get("/v1/filter")
    assert index.code == 200 and index.headers["Cache-Control"] == "public, max-age=60"
    files = {}
    for part in ("base", "delta"):
        entry = json.loads(index.body).get(part)
        if entry:
            r = await client.get("/v1/" + entry["path"])
            assert r.code == 200 and "immutable" in r.headers["Cache-Control"]
            files[entry["path"]] = r.body
    return index.body, files, FilterReader.from_index(index.body, files, [public_key])


async def every_answer(store, reader):
    records = await store.changes(0, 100_000)
    wanted = [r.status for r in records]
    assert reader.status_many([(r.addon_id, r.sha256) for r in records]) == wanted
    return len(records)


async def test_the_filter_follows_writes_and_is_exact_on_every_known_file(
    service, filter_process, keys, tmp_path
):
    writer = Writer(f"http://127.0.0.1:{service.port}")
    try:
        index_path = tmp_path / "filter-dir" / "filter" / "latest.json"
        await wait_until(index_path.exists, "the base published", timeout=30)
        _, _, reader = await fetch_filter(writer, keys[1])
        assert reader.serial == await service.store.last_serial()
        assert await every_answer(service.store, reader) == 2000

        # Writes through the API: a new file, a revoke, a re-registration, a bulk.
        assert (
            await writer.signed("PUT", f"/v1/addons/new@example.com/files/{sha(1)}")
        ).code == 201
        assert (
            await writer.signed("DELETE", f"/v1/addons/a1@example.com/files/{sha(1)}")
        ).code == 200
        assert (await writer.signed("PUT", f"/v1/addons/a0@example.com/files/{sha(0)}")).code == 200
        ops = [
            {"op": "register", "addon_id": "bulk@example.com", "sha256": sha(f"b{n}")}
            for n in range(50)
        ]
        assert (await writer.signed("POST", "/v1/registrations", {"operations": ops})).code == 200
        last = await service.store.last_serial()

        def delta_at_last():
            data = json.loads(index_path.read_bytes())
            return data.get("delta") and data["delta"]["serial"] >= last

        await wait_until(delta_at_last, "a delta at the new serial", timeout=30)
        raw_index, files, reader = await fetch_filter(writer, keys[1])
        assert reader.serial == last and reader.base_serial < last
        assert await every_answer(service.store, reader) == 2051
        assert (await writer.get("/v1/")).body.count(keys[1].encode()) == 1  # the public key

        # One changed byte anywhere is refused.
        for path, data in files.items():
            tampered = dict(files, **{path: data[:-1] + bytes([data[-1] ^ 1])})
            with pytest.raises(ValueError):
                FilterReader.from_index(raw_index, tampered, [keys[1]])
        index = json.loads(raw_index)
        index["delta"]["serial"] += 1
        with pytest.raises(ValueError):
            FilterReader.from_index(json.dumps(index).encode(), files, [keys[1]])
        with pytest.raises(ValueError):  # signed, but by a key nobody trusts
            FilterReader.from_index(raw_index, files, [generate_key()[1]])
    finally:
        writer.close()


async def test_nginx_serves_the_filter_files_immutable(service, filter_process, tmp_path, keys):
    need_nginx()
    await wait_until(
        (tmp_path / "filter-dir" / "filter" / "latest.json").exists,
        "the base published",
        timeout=30,
    )
    nginx = Nginx(
        tmp_path / "nginx",
        read=f"127.0.0.1:{service.port}",
        filter_root=str(tmp_path / "filter-dir"),
    )
    client = Writer(nginx.base)
    try:
        raw, files, reader = await fetch_filter(client, keys[1])
        assert reader.serial == await service.store.last_serial()
        base = json.loads(raw)["base"]
        r = await client.get("/v1/" + base["path"])
        assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert "Last-Modified" in r.headers  # nginx's own: the file came from the tree
        missing = await client.get("/v1/filter/" + "0" * 64 + ".bin")
        assert missing.code == 404 and json.loads(missing.body)["errno"] == 111  # the service's
    finally:
        client.close()
        nginx.stop()
