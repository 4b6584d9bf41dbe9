"""Several real `addonreg serve` processes over one MariaDB and one Redis.

What a deployment promises: a write taken by one process is answered by the
others within 100 ms; serials from all of them increase in commit order (a
feed reader misses nothing); a Hawk request cannot be replayed against
another process; an acknowledged write survives `kill -9`; SIGTERM finishes
what was acknowledged and exits 0.
"""

import asyncio
import json
import signal
import time
import uuid

import pytest

from addonreg.hawk import sign
from addonreg.storage import Operation, encode_operations
from addonreg.storage.testing import sha
from tests.conftest import (
    CREDS,
    MYSQL_URL,
    Writer,
    assert_error,
    body,
    mysql_connect,
    need_mysql,
    need_redis,
    redis_pubsub_url,
    reset_mysql,
    wait_until,
)

pytestmark = [pytest.mark.mysql, pytest.mark.subprocess]


@pytest.fixture
def cluster(server_process):
    """Factory: start a process of one deployment (MariaDB + Redis), as often as asked."""
    need_mysql()
    need_redis()
    reset_mysql()
    env = {
        "ADDONREG_STORAGE": MYSQL_URL,
        "ADDONREG_PUBSUB": redis_pubsub_url(),
        "ADDONREG_HAWK_CREDENTIALS": ",".join(f"{k}:{v}" for k, v in CREDS.items()),
    }
    return lambda: server_process(env)


@pytest.fixture
def writers():
    made = []

    def make(proc):
        w = Writer(proc.base)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


def db_rows(sql, params=()):
    conn = mysql_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


# A liveness bound: the other process answers the new state, soon. How soon
# (the contract's 100 ms) is measured by bench/run.py, not asserted here.
SOON = 2.0


def path(n, addon_id="fx@example.com"):
    return f"/v1/addons/{addon_id}/files/{sha(n)}"


async def test_writes_reach_the_other_process(cluster, writers):
    a, b = cluster(), cluster()
    wa, wb = writers(a), writers(b)
    assert (await wb.get(path(1))).code == 404  # B caches "unknown"
    assert (await wa.signed("PUT", path(1), {"version": "1"})).code == 201

    async def registered_on_b():
        return (await wb.get(path(1))).code == 200

    await wait_until(registered_on_b, "B answers the registration", SOON)

    assert body(await wb.get(path(1)))["version"] == "1"  # B caches the record
    assert (await wa.signed("DELETE", path(1))).code == 200

    async def revoked_on_b():
        return (await wb.get(path(1))).code == 410

    await wait_until(revoked_on_b, "B answers the revocation", SOON)

    # and the other way round, through the bulk lookup
    assert (await wb.signed("PUT", path(2))).code == 201

    async def seen_by_a():
        r = await wa.post(
            "/v1/lookup", {"files": [{"addon_id": "fx@example.com", "sha256": sha(2)}]}
        )
        return body(r)["results"][0]["status"] == "registered"

    await wait_until(seen_by_a, "A's lookup sees B's registration", SOON)


async def test_serials_increase_across_processes(cluster, writers):
    a, b = cluster(), cluster()
    clients = [writers(a), writers(b)]
    serials = []
    for n in range(20):
        r = await clients[n % 2].signed("PUT", path(n))
        assert r.code == 201
        serials.append(body(r)["serial"])
    assert serials == sorted(serials) and len(set(serials)) == 20


async def test_a_feed_reader_misses_nothing_under_concurrent_writes(cluster, writers):
    a, b = cluster(), cluster()
    acked = set()

    async def write(w, prefix):
        for n in range(30):
            addon_id = f"{prefix}@example.com"
            r = await w.signed("PUT", path(n, addon_id))
            assert r.code == 201
            acked.add((addon_id, sha(n)))

    seen, since, last_serials = {}, 0, []
    reader = writers(a)

    async def poll_once():
        nonlocal since
        data = body(await reader.get(f"/v1/changes?since={since}&limit=25"))
        for change in data["changes"]:
            assert change["serial"] > since
            seen[(change["addon_id"], change["sha256"])] = change["serial"]
            last_serials.append(change["serial"])
        since = data["next_since"]

    tasks = [
        asyncio.create_task(write(writers(proc), f"w{i}-{proc.port}"))
        for proc in (a, b)
        for i in range(4)
    ]
    while not all(t.done() for t in tasks):
        await poll_once()
    for t in tasks:
        t.result()
    for _ in range(20):
        await poll_once()
    assert len(acked) == 240
    assert acked <= set(seen), f"missed {len(acked - set(seen))} changes"
    assert last_serials == sorted(last_serials)


async def test_a_request_replayed_to_another_process_is_refused(cluster, writers):
    a, b = cluster(), cluster()
    wa, wb = writers(a), writers(b)
    content = json.dumps({"version": "1"}).encode()
    # Both processes are reached under one public name (as behind a load balancer).
    host = "registry.example.com"
    headers = {
        "Host": host,
        "Content-Type": "application/json",
        "Authorization": sign(
            "amo", CREDS["amo"], "PUT", f"http://{host}{path(1)}", content, "application/json"
        ),
    }
    assert (await wa.fetch("PUT", path(1), raw=content, headers=headers)).code == 201
    assert_error(await wb.fetch("PUT", path(1), raw=content, headers=headers), 401, 105)


async def test_tampered_or_stale_requests_write_nothing(cluster, writers):
    a = cluster()
    wa = writers(a)
    headers = {
        "Content-Type": "application/json",
        "Authorization": sign(
            "amo", CREDS["amo"], "PUT", wa.base + path(1), b'{"version": "1"}', "application/json"
        ),
    }
    assert_error(await wa.fetch("PUT", path(1), raw=b'{"version": "9"}', headers=headers), 401, 105)
    stale = await wa.signed("PUT", path(2), timestamp=int(time.time()) - 300)
    assert_error(stale, 401, 105)
    assert db_rows("SELECT COUNT(*) FROM registrations")[0][0] == 0


async def test_acknowledged_writes_survive_kill_9(cluster, writers):
    a = cluster()
    acked = []
    stop = asyncio.Event()

    async def client(i):
        w = writers(a)
        n = 0
        while not stop.is_set():
            try:
                r = await w.signed("PUT", path(n, f"k{i}@example.com"))
            except OSError:
                return
            if r.code in (200, 201):
                acked.append((f"k{i}@example.com", sha(n)))
            elif r.code == 599:  # connection closed by the kill
                return
            n += 1

    tasks = [asyncio.create_task(client(i)) for i in range(16)]
    await wait_until(lambda: len(acked) >= 200, "200 writes acknowledged", timeout=30)
    # An async job acknowledged just before the kill.
    w = writers(a)
    ops = [{"op": "register", "addon_id": "job@example.com", "sha256": sha(n)} for n in range(3000)]
    r = await w.signed(
        "POST", "/v1/registrations", {"operations": ops}, headers={"Prefer": "respond-async"}
    )
    assert r.code == 202
    job_id = body(r)["job"]
    a.stop(signal.SIGKILL)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert len(acked) >= 200

    # A job stored by a process that died before running it at all.
    orphan = uuid.uuid4().hex
    orphan_ops = [Operation("register", "orphan@example.com", sha(n)) for n in range(10)]
    conn = mysql_connect()
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO jobs (id, owner, status, operations, created_at) "
            "VALUES (%s, 'amo', 'queued', %s, NOW(6))",
            (orphan, encode_operations(orphan_ops)),
        )
    conn.close()

    b = cluster()  # the restart
    stored = {(r[0], r[1].hex()) for r in db_rows("SELECT addon_id, sha256 FROM registrations")}
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged writes lost"
    wb = writers(b)

    async def jobs_done():
        states = [body(await wb.signed("GET", f"/v1/jobs/{j}"))["status"] for j in (job_id, orphan)]
        return states == ["done", "done"]

    await wait_until(jobs_done, "the jobs done after the restart", timeout=20, every=0.05)
    assert (
        db_rows("SELECT COUNT(*) FROM registrations WHERE addon_id = 'job@example.com'")[0][0]
        == 3000
    )
    assert (await wb.get(path(9, "orphan@example.com"))).code == 200


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
async def test_sigterm_during_a_large_bulk_write(cluster, writers, delay):
    a = cluster()
    w = writers(a)
    ops = [
        {"op": "register", "addon_id": "bulk@example.com", "sha256": sha(n)} for n in range(5000)
    ]
    request = asyncio.create_task(w.signed("POST", "/v1/registrations", {"operations": ops}))
    await asyncio.sleep(delay)
    a.proc.send_signal(signal.SIGTERM)
    try:
        r = await request
        code = r.code
    except OSError:  # refused: the server stopped listening before the request came
        code = None
    assert a.stop() == 0
    count = db_rows("SELECT COUNT(*) FROM registrations")[0][0]
    if code == 200:
        assert count == 5000 and len(body(r)["results"]) == 5000
    else:
        assert count == 0, (code, count)


async def test_an_import_reaches_running_servers_caches(cluster, writers, tmp_path):
    import os
    import subprocess
    import sys

    a = cluster()
    wa = writers(a)
    assert (await wa.get(path(1, "imp@example.com"))).code == 404  # cached "unknown"
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "addon_id,sha256,version\n" + "".join(f"imp@example.com,{sha(n)},1\n" for n in range(100))
    )
    env = dict(
        os.environ,
        ADDONREG_STORAGE=MYSQL_URL,
        ADDONREG_PUBSUB=a.env["ADDONREG_PUBSUB"],
        ADDONREG_BUS_KEY=a.env["ADDONREG_BUS_KEY"],
    )
    result = subprocess.run(
        [sys.executable, "-m", "addonreg", "import", "--quiet", str(rows)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "imported 100 rows (100 changed" in result.stdout
    r = await wa.get(path(1, "imp@example.com"))
    assert r.code == 200 and body(r)["version"] == "1"
