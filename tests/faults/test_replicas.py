"""addonreg on a MariaDB primary with a GTID replica (:class:`~tests.faults.clusters.ReplicaSet`).

* The replica's SQL thread stopped while another process writes: the process
  reading from the replica never answers older than a change it heard of
  (with Redis: the message; without: the feed, which it then follows on the
  primary), and answers the change within the freshness bound.
* The primary killed and the replica promoted by the runbook's steps (stop
  replication, reset it, ``read_only`` off), semi-synchronous replication:
  writes resume on the replica with no restart, and nothing acknowledged is
  lost (tests/faults/scenario.py's checks).

One replica set for the module, healed (rebuilt after a promotion) before each test.
"""

from __future__ import annotations

import time

import pytest

from addonreg.storage import Operation
from addonreg.storage.mysql import MySQLStore
from addonreg.storage.testing import sha
from tests.conftest import Client, Writer, body, wait_until
from tests.faults.clusters import ReplicaSet
from tests.faults.conftest import STORAGE_TIMEOUT
from tests.faults.load import NEW_FILES_MIX
from tests.faults.scenario import Run, under_load
from tests.faults.servers import PrivateRedis

pytestmark = [pytest.mark.mysql, pytest.mark.subprocess]


async def put(writer: Writer, addon_id: str, digest: str, version: str) -> None:
    r = await writer.signed(
        "PUT", f"/v1/addons/{addon_id}/files/{digest}", body={"version": version}
    )
    assert r.code in (200, 201), (r.code, r.body)


async def version_on(client: Client, addon_id: str, digest: str) -> str:
    r = await client.get(f"/v1/addons/{addon_id}/files/{digest}")
    assert r.code == 200, (r.code, r.body)
    return body(r)["version"]


@pytest.mark.parametrize("bus", ["redis", "feed"])
async def test_a_stopped_replica_never_makes_a_process_answer_older_than_it_heard(
    bus: str, replica_set: ReplicaSet, serve, request
):
    pubsub = "feed://"
    if bus == "redis":
        redis: PrivateRedis = request.getfixturevalue("private_redis")
        pubsub = redis.url()
    writer_process = serve(replica_set.url(), pubsub=pubsub)
    reader_process = serve(replica_set.url(), replica_set.read_url(), pubsub)
    writer = Writer(writer_process.base)
    reader = Client(reader_process.base)
    addon_id, digest = f"{bus}@example.com", sha(7)
    await put(writer, addon_id, digest, "1")
    replica_set.wait_caught_up()
    assert await version_on(reader, addon_id, digest) == "1"  # cached now
    replica_set.stop_sql_thread()
    await put(writer, addon_id, digest, "2")
    bound = 1.0 if bus == "redis" else 2.0  # freshness bound, plus slack: liveness
    started = time.monotonic()
    await wait_until(
        lambda: _answers(reader, addon_id, digest, "2"),
        f"the reader answering version 2 ({bus})",
        timeout=bound + 4,
    )
    print(f"{bus}: version 2 answered after {time.monotonic() - started:.3f} s")
    # Once heard of, never older: misses included (the replica still has version 1).
    for _ in range(20):
        assert await version_on(reader, addon_id, digest) == "2"
        r = await reader.get(f"/v1/addons/{addon_id}/files")
        assert [f["version"] for f in body(r)["files"]] == ["2"]
    nodes = body(await reader.get("/__heartbeat__"))["nodes"]
    read = [n for n in nodes if n["role"] == "read"]
    assert read and read[0]["serving"] is False  # not replicating: not read from
    replica_set.start_sql_thread()
    await wait_until(lambda: _serving(reader), "the replica serving reads again once caught up", 10)
    writer.close()
    reader.close()


async def _answers(client: Client, addon_id: str, digest: str, version: str) -> bool:
    return await version_on(client, addon_id, digest) == version


async def _serving(client: Client) -> bool:
    nodes = body(await client.get("/__heartbeat__"))["nodes"]
    return all(n.get("serving", True) for n in nodes if n["role"] == "read")


async def test_the_primary_lost_and_the_replica_promoted(replica_set: ReplicaSet, serve):
    """Semi-synchronous (AFTER_SYNC): a commit is acknowledged once the replica has
    it, so the promoted replica holds every acknowledged write."""
    replica_set.set_semi_sync(True)
    processes = [serve(replica_set.url(), pubsub="feed://") for _ in range(2)]

    async def lose_the_primary(run: Run) -> None:
        replica_set.kill_primary()
        # The runbook: the replica with the highest GTID (the only one), promoted.
        replica_set.promote()

    try:
        await under_load(processes, replica_set.replica, lose_the_primary, mix=NEW_FILES_MIX)
    except BaseException:
        for n, process in enumerate(processes):  # shown by pytest on failure
            print(f"--- process {n}:", "".join(process.output[-40:]))
        raise


async def test_a_serial_heard_of_keeps_reads_off_a_replica_behind_it(replica_set: ReplicaSet):
    """The replica holds a read lock (its SQL thread runs but cannot apply, and reports
    no lag yet). A change committed on the primary, heard of by this process (what
    the bus does: ``observe``), is answered: the replica, behind it, is not read."""
    writer = MySQLStore(replica_set.url(), pool_size=2, timeout=STORAGE_TIMEOUT)
    reader = MySQLStore(
        replica_set.url(),
        pool_size=2,
        timeout=STORAGE_TIMEOUT,
        read_url=replica_set.read_url(),
        max_lag=3600,  # the lag monitor alone would not notice: only the serial does
    )
    for store in (writer, reader):
        await store.open()
    try:
        await writer.create_schema()
        [first] = await writer.apply([Operation("register", "a@b", sha(1), "1")])
        replica_set.wait_caught_up()
        assert (await reader.get("a@b", sha(1))).version == "1"
        assert reader.counts["read_fallbacks"] == 0  # read on the replica
        blocker = replica_set.replica.connect(database=None)
        try:
            with blocker.cursor() as cur:
                cur.execute("FLUSH TABLES WITH READ LOCK")
            [second] = await writer.apply([Operation("register", "a@b", sha(1), "2")])
            assert (await reader.get("a@b", sha(1))).version == "1"  # not heard of yet
            reader.observe(second.record.serial)  # heard of, as over Redis
            record = await reader.get("a@b", sha(1))
            assert record is not None and record.version == "2", "answered older than seen"
            assert reader.counts["read_fallbacks"] == 1
        finally:
            blocker.close()
        replica_set.wait_caught_up()

        async def serving() -> bool:
            return all(n.get("serving", True) for n in await reader.topology())

        await wait_until(serving, "the replica serving reads once it has caught up", 10)
        assert (await reader.get("a@b", sha(1))).version == "2"
        assert reader.counts["read_fallbacks"] == 1  # back on the replica
        assert first.record.serial < second.record.serial
    finally:
        for store in (writer, reader):
            await store.close()


async def test_the_primary_lost_reads_go_on_from_the_replica(replica_set: ReplicaSet):
    """No node accepts writes (the primary dead, the replica not promoted): reads are
    answered by the replica, which holds every change the process has seen."""
    store = MySQLStore(
        replica_set.url(),
        pool_size=2,
        timeout=STORAGE_TIMEOUT,
        read_url=replica_set.read_url(),
    )
    await store.open()
    try:
        await store.create_schema()
        [applied] = await store.apply([Operation("register", "lost@b", sha(3), "1")])
        replica_set.wait_caught_up()
        replica_set.kill_primary()
        record = await store.get("lost@b", sha(3))
        assert record is not None and record.serial == applied.record.serial
        assert await store.get("lost@b", sha(4)) is None
        assert [r.sha256 for r in await store.list_files("lost@b")] == [sha(3)]
    finally:
        await store.close()
