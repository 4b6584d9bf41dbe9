"""With storage down: cached answers are still served, misses are 503 + Retry-After."""

import asyncio
import os
from urllib.parse import urlsplit, urlunsplit

import pytest

from addonreg.server import Service
from addonreg.storage import Operation
from addonreg.storage.testing import sha
from tests.conftest import (
    MYSQL_URL,
    Client,
    assert_error,
    body,
    make_settings,
    need_mysql,
    reset_mysql,
    wait_until,
)
from tests.faults.proxy import LinkProxy, TCPProxy


async def check_degraded(client: Client) -> None:
    """Expectations once storage is gone, after a/1 and x/9 were cached."""
    r = await client.get(f"/v1/addons/a@b/files/{sha(1)}")
    assert r.code == 200 and body(r)["status"] == "registered"
    assert_error(await client.get(f"/v1/addons/x@y/files/{sha(9)}"), 404)  # cached "unknown"
    r = await client.get(f"/v1/addons/a@b/files/{sha(2)}")  # registered, but never cached
    assert_error(r, 503, 201)
    assert r.headers["Retry-After"] == "5"
    assert "Cache-Control" in r.headers and r.headers["Cache-Control"] == "no-store"
    r = await client.post("/v1/lookup", {"files": [{"addon_id": "a@b", "sha256": sha(1)}]})
    assert r.code == 200 and body(r)["results"][0]["status"] == "registered"
    r = await client.post(
        "/v1/lookup",
        {"files": [{"addon_id": "a@b", "sha256": sha(1)}, {"addon_id": "a@b", "sha256": sha(2)}]},
    )
    assert_error(r, 503, 201)
    assert r.headers["Retry-After"] == "5"
    r = await client.post("/addon", {"id": "a@b", "sha256": sha(3)})
    assert_error(r, 503, 201)
    assert_error(await client.get("/v1/changes"), 503, 201)
    r = await client.get("/__heartbeat__")
    data = assert_error(r, 503)
    assert data["storage"] == "error" and "Retry-After" in r.headers
    assert (await client.get("/__lbheartbeat__")).code == 200


async def warm(service: Service, client: Client) -> None:
    await service.store.apply([Operation("register", "a@b", sha(n)) for n in (1, 2, 3)])
    # The bus applies these writes first: a change arriving while a read's fill is in
    # flight keeps that fill out of the cache (it may have read the state before).
    await service.bus.poll()
    assert (await client.get(f"/v1/addons/a@b/files/{sha(1)}")).code == 200
    assert (await client.get(f"/v1/addons/x@y/files/{sha(9)}")).code == 404


async def test_sqlite_file_broken(tmp_path):
    path = tmp_path / "db.sqlite3"
    service = await Service(make_settings(f"sqlite:///{path}", storage_timeout=1.0)).start()
    client = Client(f"http://127.0.0.1:{service.port}")
    try:
        await warm(service, client)
        # Overwrite the database (and its WAL index) with garbage.
        for name in os.listdir(tmp_path):
            with open(tmp_path / name, "r+b") as fh:
                size = max(os.path.getsize(tmp_path / name), 4096)
                fh.write(b"\xde\xad" * (size // 2))
        await check_degraded(client)
    finally:
        client.close()
        await service.stop()


def mysql_address():
    target = urlsplit(MYSQL_URL)
    return target.hostname, target.port or 3306


def through(port):
    """MYSQL_URL, reached through a proxy on ``port``."""
    target = urlsplit(MYSQL_URL)
    netloc = target.netloc.rsplit("@", 1)
    address = f"127.0.0.1:{port}"
    return urlunsplit(
        target._replace(netloc=f"{netloc[0]}@{address}" if len(netloc) == 2 else address)
    )


@pytest.mark.mysql
async def test_mysql_down_and_back():
    need_mysql()
    reset_mysql()
    proxy = await TCPProxy(*mysql_address()).start()
    url = through(proxy.port)
    service = await Service(make_settings(url, storage_timeout=1.0)).start()
    client = Client(f"http://127.0.0.1:{service.port}")
    try:
        await warm(service, client)
        await proxy.stop()
        await check_degraded(client)
        await proxy.start()  # the database is back, same address
        r = await client.get(f"/v1/addons/a@b/files/{sha(2)}")
        assert r.code == 200 and body(r)["status"] == "registered"
        assert (await client.get("/__heartbeat__")).code == 200
    finally:
        client.close()
        await service.stop()
        await proxy.stop()


@pytest.mark.mysql
async def test_a_stopping_process_answers_the_misses_it_began():
    """SIGTERM while a GET waits for storage: the process waits for it (it is in flight)
    before it closes its connections, and the GET is answered, not cut."""
    need_mysql()
    reset_mysql()
    link = LinkProxy(*mysql_address()).start()
    settings = make_settings(through(link.port), storage_timeout=30.0, shutdown_timeout=30.0)
    service = await Service(settings).start()
    client = Client(f"http://127.0.0.1:{service.port}")
    stop = None
    try:
        await service.store.apply([Operation("register", "a@b", sha(1))])
        misses = service.registry.files.misses
        link.stall()
        get = asyncio.ensure_future(client.get(f"/v1/addons/a@b/files/{sha(1)}"))
        await wait_until(lambda: service.registry.files.misses > misses, "the miss under way")
        stop = asyncio.ensure_future(service.stop())
        await wait_until(
            lambda: service.in_flight.stopping and service.in_flight.count == 1,
            "the stopping process waiting for the miss",
        )
        link.restore()
        r = await get
        assert r.code == 200 and body(r)["status"] == "registered"
        await stop
    finally:
        client.close()
        link.restore()
        await (stop if stop is not None else service.stop())
        link.close()
