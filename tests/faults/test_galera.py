"""addonreg on a 3-node MariaDB Galera cluster (:class:`~tests.faults.clusters.GaleraCluster`).

* A process that reads from node 1 sends its reads there — cache misses,
  add-on lists, the change feed — and none to the write node (the nodes'
  own ``Com_select`` counters show it).
* A read node that has not applied a change the process has seen is not
  used for it: the answer is the change.
* ``kill -9`` of the write node under mixed load, two processes: nothing
  acknowledged lost, nothing answered "not written" written, no ``500``,
  writes resume within the recovery bound (10 s); the node rejoins with
  every acknowledged write.
* A read node killed: reads go on from the write node, and come back to the
  read node once it answers again.

One cluster for the module (``galera_cluster``), healed before each test.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Sequence

import pytest

from addonreg.storage import Operation
from addonreg.storage.mysql import MySQLStore
from addonreg.storage.testing import sha
from tests.conftest import Client, Writer, body, wait_until
from tests.faults.checker import NOT_WRITTEN, OUTCOME_UNKNOWN
from tests.faults.clusters import GaleraCluster
from tests.faults.conftest import STORAGE_TIMEOUT
from tests.faults.load import NEW_FILES_MIX
from tests.faults.scenario import Run, under_load

pytestmark = [pytest.mark.mysql, pytest.mark.subprocess]


class CausalReads:
    """What the fault checker reads storage through: a synced node, after every
    write the cluster committed (``wsrep_sync_wait``)."""

    def __init__(self, cluster: GaleraCluster, node: int) -> None:
        self.server = cluster.nodes[node]

    def query(self, sql: str, params: Sequence[Any] = ()) -> Any:
        conn = self.server.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION wsrep_sync_wait = 1")
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()


def selects(cluster: GaleraCluster, node: int) -> int:
    """The node's count of SELECT statements run (all clients)."""
    rows = cluster.nodes[node].query("SHOW GLOBAL STATUS LIKE 'Com_select'")
    return int(rows[0][1])


@pytest.fixture
async def store_on(galera: GaleraCluster):
    """Factory: an opened MySQLStore over the cluster; closed after the test."""
    made = []

    async def make(url: str, read_url: str = "", timeout: float = STORAGE_TIMEOUT) -> MySQLStore:
        store = MySQLStore(url, pool_size=4, timeout=timeout, read_url=read_url)
        await store.open()
        await store.create_schema()
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


async def test_reads_go_to_the_read_node_and_none_to_the_write_node(galera, store_on):
    writer = await store_on(galera.url())
    await writer.apply([Operation("register", f"a{n}@b", sha(n), "1.0") for n in range(50)])
    store = await store_on(galera.url(), read_url=galera.node_url(1))
    await store._write_node()  # chosen once (a probe of node 0), as a server does at start
    before = [selects(galera, i) for i in range(3)]
    for n in range(50):
        assert (await store.get(f"a{n}@b", sha(n))).version == "1.0"
    assert len(await store.get_many([(f"a{n}@b", sha(n)) for n in range(50)])) == 50
    assert len(await store.list_files("a1@b")) == 1
    assert len(await store.changes(0, 100)) == 50
    assert await store.last_serial() == 50
    after = [selects(galera, i) for i in range(3)]
    assert after[0] - before[0] == 0, "the write node served reads"
    assert after[1] - before[1] >= 54  # every read above, and the watcher's looks
    assert after[2] - before[2] == 0
    assert store.counts["read_fallbacks"] == 0


async def test_a_read_node_behind_what_was_seen_is_not_read_from(galera, store_on):
    """Node 1 holds a read lock that stops it applying; a change committed on node 0
    and seen by this process (its own write) is answered anyway."""
    store = await store_on(galera.url(), read_url=galera.node_url(1), timeout=1.0)
    await store.apply([Operation("register", "a@b", sha(1), "1.0")])
    assert (await store.get("a@b", sha(1))).version == "1.0"
    blocker = galera.nodes[1].connect()
    try:
        with blocker.cursor() as cur:
            cur.execute("FLUSH TABLES WITH READ LOCK")  # node 1 stops applying
        [applied] = await store.apply([Operation("register", "a@b", sha(1), "2.0")])
        assert applied.record.version == "2.0"
        record = await store.get("a@b", sha(1))
        assert record is not None and record.version == "2.0", "answered older than seen"
        assert record.serial == applied.record.serial
    finally:
        blocker.close()  # releases the lock: node 1 applies again
    assert store.counts["causal_waits"] + store.counts["read_fallbacks"] >= 1


async def test_the_write_node_killed_under_load(galera, serve):
    """Two processes (one reading from node 2), under mixed load; node 0 (the write
    node) killed with -9, then started again: it rejoins (IST) with every
    acknowledged write. The scenario's checks: see tests/faults/scenario.py."""
    processes = [
        serve(galera.url(), pubsub="feed://"),
        serve(galera.url(), galera.node_url(2), "feed://"),
    ]

    async def kill_write_node(run: Run) -> None:
        galera.kill(0)
        # Healing is the node's return; the service must not need it to go on.
        await run.load.wait_for(
            lambda: (
                run.load.acknowledged(since=time.monotonic() - 0.5) > 0
                or time.monotonic() - run.fault_started > 12
            ),
            15,
            "a write acknowledged after the kill",
        )

    try:
        run = await under_load(
            processes, CausalReads(galera, 1), kill_write_node, mix=NEW_FILES_MIX
        )
    except BaseException:
        for n, process in enumerate(processes):  # shown by pytest on failure
            print(f"--- process {n}:", "".join(process.output[-40:]))
        raise
    writes_after = [
        a
        for a in run.answers
        if a.is_write and a.sent > run.fault_started and a.status in (200, 201)
    ]
    assert writes_after, "no write was acknowledged after the write node died"
    first = min(a.answered for a in writes_after) - run.fault_started
    assert first < 10, f"writes resumed {first:.1f} s after the kill (bound 10 s)"
    assert not [a for a in run.answers if a.status == 500]
    unknown = [a for a in run.answers if a.status == 503 and a.errno == OUTCOME_UNKNOWN]
    not_written = [a for a in run.answers if a.status == 503 and a.errno in NOT_WRITTEN]
    # Galera can always tell, once the cluster re-formed: no "outcome unknown".
    assert not unknown, [a.describe(run.fault_started) for a in unknown]
    assert len(not_written) < len(run.answers)
    # The node comes back with every acknowledged write (IST from the others).
    galera.start_node(0)
    acknowledged = [
        a for a in run.answers if a.is_write and a.status in (200, 201) and a.kind == "put"
    ]
    node0 = galera.nodes[0]
    for answer in acknowledged[-50:]:
        addon_id, digest = answer.keys[0]
        rows = node0.query(
            "SELECT 1 FROM registrations WHERE addon_id = %s AND sha256 = UNHEX(%s)",
            (addon_id, digest),
        )
        assert rows, f"node 0 rejoined without the acknowledged {addon_id}"


async def test_a_read_node_killed_reads_go_on(galera, serve):
    process = serve(galera.url([0, 1]), galera.node_url(2), "feed://")
    client = Client(process.base)
    try:
        heartbeat = body(await client.get("/__heartbeat__"))
        roles = {n["node"]: (n["role"], n["reachable"]) for n in heartbeat["nodes"]}
        read_node = f"127.0.0.1:{galera.nodes[2].port}"
        assert roles[read_node] == ("read", True)
        galera.kill(2)
        for n in range(20):  # misses: each goes to storage
            r = await client.get(f"/v1/addons/x{n}@b/files/{sha(n)}")
            assert r.code == 404, (r.code, r.body)
        heartbeat = body(await client.get("/__heartbeat__"))
        shown = {n["node"]: n for n in heartbeat["nodes"]}
        assert shown[read_node]["reachable"] is False
        assert shown[read_node]["role"] == "read"
        galera.start_node(2)

        async def serving() -> Optional[Dict[str, Any]]:
            beat = body(await client.get("/__heartbeat__"))
            return {n["node"]: n for n in beat["nodes"]}[read_node].get("serving")

        await wait_until(serving, "the read node serving again", timeout=20)
    finally:
        client.close()


async def test_a_process_reading_from_node_1_sends_the_write_node_nothing(galera, serve):
    """Misses and the change feed (polled every 25 ms) all go to node 1."""
    process = serve(galera.url(), galera.node_url(1), "feed://")
    writer = Writer(process.base)
    try:
        for n in range(5):
            r = await writer.signed("PUT", f"/v1/addons/q{n}@b/files/{sha(n)}", body={})
            assert r.code in (200, 201), r.body
        before = [selects(galera, i) for i in range(3)]
        feed_polls_before = selects(galera, 1)
        for n in range(30):
            r = await writer.get(f"/v1/addons/m{n}@b/files/{sha(n)}")  # misses
            assert r.code == 404
        await wait_until(
            lambda: selects(galera, 1) - feed_polls_before > 100, "the feed polling node 1", 10
        )
        after = [selects(galera, i) for i in range(3)]
        assert after[0] == before[0], "the write node served a read"
        assert after[2] == before[2]
    finally:
        writer.close()


async def test_a_process_that_only_reads_follows_the_write_node_lost(galera, store_on):
    """No read node: reads go to the write node. It dies; with no write to find out,
    the next read does, and is answered by the next node (no 503)."""
    writer = await store_on(galera.url())
    [applied] = await writer.apply([Operation("register", "reader@b", sha(5), "1")])
    store = await store_on(galera.url())
    assert (await store.get("reader@b", sha(5))).serial == applied.record.serial
    assert await store.heartbeat() is None
    galera.kill(0)
    record = await store.get("reader@b", sha(5))
    assert record is not None and record.serial == applied.record.serial
    await store.heartbeat()  # the storage check passes on node 1
    assert store.writer is store.nodes[1] and store.counts["failovers"] == 1
