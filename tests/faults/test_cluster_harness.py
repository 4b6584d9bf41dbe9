"""The cluster harness checked on its own (:mod:`tests.faults.clusters`).

A Galera cluster forms with three nodes, replicates a write to the others,
takes back a node killed with ``kill -9`` with what was written meanwhile,
and holds addonreg's schema and writes (two processes on two nodes). A GTID
replica applies the primary's writes, lags while its SQL thread is stopped
and catches up when it starts, refuses the service account's writes while
``read_only`` and takes them once promoted by the runbook's steps, keeping
what it had received but not applied; semi-synchronous replication falls
back to asynchronous when the replica stops acknowledging. A scenario on a
cluster is only as good as these.
"""

from __future__ import annotations

import time
import uuid

import pymysql
import pytest

from addonreg.storage.testing import sha
from tests.conftest import Writer, wait_until
from tests.faults.clusters import APP_USER, QUORUM, GaleraCluster, ReplicaSet, poll
from tests.faults.conftest import LIVENESS, Deployment
from tests.faults.servers import PrivateMariaDB

pytestmark = [pytest.mark.mysql, pytest.mark.subprocess]

TABLE = "CREATE TABLE IF NOT EXISTS harness (k VARCHAR(64) PRIMARY KEY, v INT NOT NULL)"


def insert(server: PrivateMariaDB, value: int = 0) -> str:
    key = uuid.uuid4().hex
    server.query(TABLE)
    server.query("INSERT INTO harness (k, v) VALUES (%s, %s)", (key, value))
    return key


def stored(server: PrivateMariaDB, key: str, causal: bool = False, user: str = "root") -> bool:
    """Whether ``server`` has the row; ``causal``: after the cluster's earlier writes
    (Galera's ``wsrep_sync_wait``: a node applies others' writes after they commit)."""
    conn = server.connect(user=user)
    try:
        with conn.cursor() as cur:
            if causal:
                cur.execute("SET SESSION wsrep_sync_wait = 1")
            cur.execute("SELECT 1 FROM harness WHERE k = %s", (key,))
            return cur.fetchone() is not None
    finally:
        conn.close()


# -- Galera


def test_the_cluster_forms_with_three_synced_nodes(galera: GaleraCluster):
    states = [galera.status(i) for i in range(3)]
    assert [s["wsrep_cluster_size"] for s in states] == ["3", "3", "3"]
    assert {s["wsrep_local_state_comment"] for s in states} == {"Synced"}
    assert {s["wsrep_cluster_status"] for s in states} == {"Primary"}
    assert len({s["wsrep_cluster_state_uuid"] for s in states}) == 1
    ports = [node.port for node in galera.nodes]
    assert len(set(ports)) == 3
    assert galera.url() == "mysql://root@" + ",".join(f"127.0.0.1:{p}" for p in ports) + "/addonreg"
    assert galera.url([2, 0]) == f"mysql://root@127.0.0.1:{ports[2]},127.0.0.1:{ports[0]}/addonreg"
    assert galera.node_url(1) == f"mysql://root@127.0.0.1:{ports[1]}/addonreg"


def test_a_row_written_on_one_node_is_read_on_the_others(galera: GaleraCluster):
    key = insert(galera.nodes[0])
    assert stored(galera.nodes[1], key, causal=True)
    assert stored(galera.nodes[2], key, causal=True)


def test_a_node_killed_and_started_again_has_the_rows_written_meanwhile(galera: GaleraCluster):
    before = insert(galera.nodes[0])
    galera.kill(2)
    assert not galera.nodes[2].running
    galera.wait_synced(timeout=QUORUM)  # the survivors form a component of two
    assert galera.status(0)["wsrep_cluster_size"] == "2"
    meanwhile = [insert(galera.nodes[i % 2], i) for i in range(10)]
    galera.start_node(2)
    assert galera.status(2)["wsrep_cluster_size"] == "3"
    # No causal read: what the node has once synced, it applied while rejoining.
    assert all(stored(galera.nodes[2], key) for key in [before, *meanwhile])


async def test_addonreg_serves_from_two_galera_nodes(galera: GaleraCluster, serve: Deployment):
    """The service's schema and writes work on Galera (InnoDB, primary keys): a
    registration through a process on node 0 is answered by a process on node 1."""
    a, b = serve(galera.node_url(0)), serve(galera.node_url(1))
    wa, wb = Writer(a.base), Writer(b.base)
    try:
        path = f"/v1/addons/galera@harness.test/files/{sha(uuid.uuid4())}"
        assert (await wa.signed("PUT", path, {"version": "1"})).code == 201

        async def registered_on_b() -> bool:
            return (await wb.get(path)).code == 200

        await wait_until(registered_on_b, "the process on node 1 answers it", LIVENESS)
        rows = galera.nodes[2].query("SELECT COUNT(*) FROM registrations")
        assert rows[0][0] >= 1
    finally:
        wa.close()
        wb.close()


# -- a primary with a replica


def test_the_replica_applies_the_primarys_writes(replica_set: ReplicaSet):
    key = insert(replica_set.primary)
    replica_set.wait_caught_up()
    assert stored(replica_set.replica, key, user=APP_USER)
    assert replica_set.replica_gtid() == replica_set.primary_gtid()


def test_a_stopped_sql_thread_lags_and_catches_up_when_started(replica_set: ReplicaSet):
    insert(replica_set.primary)  # the table, on both
    replica_set.wait_caught_up()
    replica_set.stop_sql_thread()
    key = insert(replica_set.primary)
    # Received (the IO thread runs) but not applied.
    poll(
        lambda: replica_set.replica_status()["Gtid_IO_Pos"] == replica_set.primary_gtid(),
        "the replica received the write",
        timeout=10,
    )
    assert replica_set.replica_gtid() != replica_set.primary_gtid()
    assert not stored(replica_set.replica, key)
    replica_set.start_sql_thread()
    replica_set.wait_caught_up(timeout=10)
    assert replica_set.replica_gtid() == replica_set.primary_gtid()
    assert stored(replica_set.replica, key)


def test_the_promoted_replica_takes_the_service_accounts_writes(replica_set: ReplicaSet):
    key = insert(replica_set.primary)
    replica_set.wait_caught_up()
    app = replica_set.replica.connect(user=APP_USER)
    try:
        with app.cursor() as cur:
            with pytest.raises(pymysql.err.OperationalError) as refused:
                cur.execute("INSERT INTO harness (k, v) VALUES ('on-replica', 1)")
            assert refused.value.args[0] == 1290  # --read-only
    finally:
        app.close()

    replica_set.kill_primary()
    replica_set.promote()
    assert replica_set.replica.query("SELECT @@GLOBAL.read_only")[0][0] == 0
    assert replica_set.replica_status() == {}
    app = replica_set.replica.connect(user=APP_USER)
    try:
        with app.cursor() as cur:
            cur.execute("INSERT INTO harness (k, v) VALUES ('promoted', 1)")
            cur.execute("SELECT k FROM harness WHERE k IN (%s, 'promoted') ORDER BY k", (key,))
            assert sorted(row[0] for row in cur.fetchall()) == sorted([key, "promoted"])
    finally:
        app.close()


def test_promotion_keeps_a_write_the_replica_received_but_had_not_applied(
    replica_set: ReplicaSet,
):
    """Semi-sync acknowledges a commit once it is in the replica's relay log; the
    promotion applies the relay log before ``RESET SLAVE ALL`` deletes it."""
    insert(replica_set.primary)  # the table, on both
    replica_set.wait_caught_up()
    replica_set.set_semi_sync(True)
    replica_set.stop_sql_thread()
    key = insert(replica_set.primary)
    assert replica_set.semi_sync_status() == "ON"  # acknowledged by the replica
    assert replica_set.replica_status()["Gtid_IO_Pos"] == replica_set.primary_gtid()
    assert not stored(replica_set.replica, key)

    replica_set.kill_primary()
    replica_set.promote()
    assert stored(replica_set.replica, key)


def test_semi_sync_falls_back_to_async_when_the_replica_stops_acknowledging(
    replica_set: ReplicaSet,
):
    replica_set.set_semi_sync(True)
    assert replica_set.semi_sync_status() == "ON"
    insert(replica_set.primary)  # acknowledged by the replica: the status stays on
    assert replica_set.semi_sync_status() == "ON"

    replica_set.replica.query("STOP SLAVE IO_THREAD", database=None)
    started = time.monotonic()
    insert(replica_set.primary)  # waits rpl_semi_sync_master_timeout, then commits anyway
    waited = time.monotonic() - started
    assert replica_set.semi_sync_status() == "OFF"
    assert waited >= replica_set.semi_sync_timeout_ms / 1000 * 0.9

    replica_set.replica.query("START SLAVE IO_THREAD", database=None)
    poll(lambda: replica_set.semi_sync_status() == "ON", "semi-sync back on", timeout=10)
