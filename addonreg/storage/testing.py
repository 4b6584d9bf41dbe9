"""The shared storage test suite: every backend must pass all of it.

Subclass :class:`StorageTests` in a test module and provide a ``store``
fixture yielding an opened, empty store with its schema created; pytest
then runs every test below against that backend.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from ..status import REGISTERED, REVOKED
from . import RECORD_REVOKED, Operation, RegistrationStore, now_us

__all__ = ["StorageTests", "sha"]


def sha(n: object) -> str:
    """A deterministic SHA-256 for test data."""
    return hashlib.sha256(str(n).encode()).hexdigest()


def reg(addon_id: str, n: object, version=None) -> Operation:
    return Operation("register", addon_id, sha(n), version)


def rev(addon_id: str, n: object) -> Operation:
    return Operation("revoke", addon_id, sha(n))


class StorageTests:
    """Tests of the :class:`RegistrationStore` contract."""

    async def test_empty_store(self, store: RegistrationStore):
        assert await store.get("a@b", sha(1)) is None
        assert await store.get_many([("a@b", sha(1))]) == {}
        assert await store.list_files("a@b") == []
        assert await store.changes(0, 10) == []
        assert await store.last_serial() == 0
        await store.heartbeat()

    async def test_schema_creation_is_idempotent(self, store):
        await store.apply([reg("a@b", 1)])
        await store.create_schema()
        assert (await store.get("a@b", sha(1))).status == REGISTERED

    async def test_register_then_get(self, store):
        before = now_us()
        [applied] = await store.apply([reg("fx@example.com", 1, "1.0")])
        assert applied.created and applied.changed
        record = await store.get("fx@example.com", sha(1))
        assert record == applied.record
        assert (record.addon_id, record.sha256, record.version, record.status) == (
            "fx@example.com",
            sha(1),
            "1.0",
            REGISTERED,
        )
        assert record.serial >= 1
        assert before - 1_000_000 <= record.updated_at <= now_us() + 1_000_000

    async def test_ids_are_compared_exactly(self, store):
        await store.apply([reg("Fx@Example.com", 1)])
        assert await store.get("fx@example.com", sha(1)) is None
        assert (await store.get("Fx@Example.com", sha(1))).addon_id == "Fx@Example.com"

    async def test_guid_ids_and_unicode_versions(self, store):
        guid = "{6BA7B810-9DAD-11D1-80B4-00C04FD430C8}"
        await store.apply([reg(guid, 1, "1.0 β ✓")])
        record = await store.get(guid, sha(1))
        assert record.version == "1.0 β ✓"

    async def test_reregistering_same_version_takes_no_serial(self, store):
        [first] = await store.apply([reg("a@b", 1, "1")])
        [again] = await store.apply([reg("a@b", 1, "1")])
        [no_version] = await store.apply([reg("a@b", 1)])
        assert not again.created and not again.changed
        assert again.record == first.record == no_version.record
        assert await store.last_serial() == first.record.serial

    async def test_new_version_takes_a_serial(self, store):
        [first] = await store.apply([reg("a@b", 1, "1")])
        [second] = await store.apply([reg("a@b", 1, "2")])
        assert second.changed and not second.created
        assert second.record.serial > first.record.serial
        assert (await store.get("a@b", sha(1))).version == "2"

    async def test_revoke_keeps_version_and_reregister_restores(self, store):
        await store.apply([reg("a@b", 1, "1")])
        [revoked] = await store.apply([rev("a@b", 1)])
        assert revoked.changed and revoked.record.status == REVOKED
        assert revoked.record.version == "1"
        [again] = await store.apply([rev("a@b", 1)])
        assert not again.changed and again.record == revoked.record
        [back] = await store.apply([reg("a@b", 1)])
        assert back.changed and not back.created and back.record.status == REGISTERED
        assert back.record.serial > revoked.record.serial

    async def test_revoke_unknown(self, store):
        [applied] = await store.apply([rev("a@b", 1)])
        assert applied.record is None and not applied.changed
        assert await store.last_serial() == 0

    async def test_record_revoked_known_or_not_and_idempotent(self, store):
        # The import's revoked rows: an unknown file is recorded revoked (one
        # serial), a registered one revoked, a revoked one left alone.
        await store.apply([reg("a@b", 2, "2")])
        ops = [
            Operation(RECORD_REVOKED, "a@b", sha(1), "1"),
            Operation(RECORD_REVOKED, "a@b", sha(2)),
        ]
        new, known = await store.apply(ops)
        assert (
            new.created
            and new.changed
            and (new.record.status, new.record.version)
            == (
                REVOKED,
                "1",
            )
        )
        assert not known.created and known.changed and known.record.version == "2"
        assert known.record.serial == new.record.serial + 1 == await store.last_serial()
        assert (await store.get("a@b", sha(1))) == new.record
        assert [r.sha256 for r in await store.changes(1, 10)] == [sha(1), sha(2)]
        again = await store.apply(ops)
        assert not any(a.changed for a in again) and await store.last_serial() == 3
        [moved] = await store.apply([Operation(RECORD_REVOKED, "a@b", sha(1), "1.1")])
        assert moved.changed and (moved.record.status, moved.record.version) == (REVOKED, "1.1")

    async def test_batch_in_order_with_one_serial_per_change(self, store):
        ops = [reg("a@b", 1), reg("a@b", 2), rev("a@b", 1), reg("c@d", 1), reg("a@b", 2)]
        results = await store.apply(ops)
        serials = [r.record.serial for r in results if r.changed]
        assert [r.changed for r in results] == [True, True, True, True, False]
        assert serials == sorted(serials) and len(set(serials)) == 4
        assert serials == list(range(serials[0], serials[0] + 4))
        assert (await store.get("a@b", sha(1))).status == REVOKED
        assert await store.last_serial() == serials[-1]

    async def test_new_files_batch_with_a_known_file_among_them(self, store):
        # A batch that looks all new (distinct registrations) but is not: a
        # backend may guess and must then fall back to the full rules.
        [first] = await store.apply([reg("a@b", 1, "1")])
        results = await store.apply([reg("a@b", 2), reg("a@b", 1, "1"), reg("a@b", 3, "3")])
        assert [(a.created, a.changed) for a in results] == [
            (True, True),
            (False, False),
            (True, True),
        ]
        assert results[1].record == first.record
        assert [results[0].record.serial, results[2].record.serial] == [
            first.record.serial + 1,
            first.record.serial + 2,
        ]
        [changed] = await store.apply([reg("a@b", 1, "2")])
        assert changed.changed and changed.record.serial == first.record.serial + 3
        fresh = await store.apply([reg("a@b", n) for n in range(4, 9)])
        assert all(a.created for a in fresh)
        assert [a.record.serial for a in fresh] == list(
            range(first.record.serial + 4, first.record.serial + 9)
        )
        assert await store.last_serial() == first.record.serial + 8
        # a@b/1's first serial was superseded by its new version's
        assert [r.serial for r in await store.changes(0, 100)] == list(
            range(first.record.serial + 1, first.record.serial + 9)
        )

    async def test_quotes_and_escapes_are_stored_verbatim(self, store):
        odd = ["o'brien\\%s@x", 'q"uote@x', "pct%%d@x"]
        versions = ["1.0'; DROP TABLE registrations; --", "a\\b\n%s", "β ✓ 100%"]
        for n, (addon_id, version) in enumerate(zip(odd, versions)):
            [applied] = await store.apply([reg(addon_id, n, version)])
            assert applied.created
        for n, (addon_id, version) in enumerate(zip(odd, versions)):
            record = await store.get(addon_id, sha(n))
            assert (record.addon_id, record.version) == (addon_id, version)
        found = await store.get_many([(a, sha(n)) for n, a in enumerate(odd)])
        assert len(found) == 3
        [revoked] = await store.apply([rev(odd[0], 0)])
        assert revoked.record.version == versions[0]

    async def test_get_many_one_round_trip(self, store):
        await store.apply([reg(f"a{i}@b", i) for i in range(1500)])
        keys = [(f"a{i}@b", sha(i)) for i in range(0, 3000, 2)] + [("a0@b", sha(0))]
        found = await store.get_many(keys)
        assert set(found) == {(f"a{i}@b", sha(i)) for i in range(0, 1500, 2)}
        assert all(found[k].key == k for k in found)

    async def test_list_files_sorted_by_sha_with_revoked(self, store):
        await store.apply([reg("a@b", n) for n in range(20)] + [rev("a@b", 3), reg("x@y", 1)])
        files = await store.list_files("a@b")
        assert [f.sha256 for f in files] == sorted(sha(n) for n in range(20))
        assert {f.sha256 for f in files if f.status == REVOKED} == {sha(3)}
        assert await store.list_files("nobody@b") == []

    async def test_changes_feed(self, store):
        await store.apply([reg("a@b", n) for n in range(10)])
        await store.apply([rev("a@b", 0), reg("a@b", 5, "v2")])
        feed = await store.changes(0, 100)
        serials = [r.serial for r in feed]
        assert serials == sorted(serials) and len(feed) == 10  # one row per file
        assert feed[-1].sha256 == sha(5) and feed[-1].version == "v2"
        assert feed[-2].sha256 == sha(0) and feed[-2].status == REVOKED
        page = await store.changes(serials[2], 3)
        assert [r.serial for r in page] == serials[3:6]
        assert await store.changes(serials[-1], 10) == []

    async def test_reading_the_feed_in_pages_sees_every_file(self, store):
        for batch in range(5):
            await store.apply([reg("a@b", f"{batch}-{n}") for n in range(7)])
        seen, since = [], 0
        for _ in range(20):
            page = await store.changes(since, 4)
            if not page:
                break
            seen += page
            since = page[-1].serial
        assert len(seen) == 35 and len({r.key for r in seen}) == 35

    async def test_snapshot_in_pages_is_every_record_once(self, store):
        ids = ["a@b", "{8a9f}", "a.b_c-d+e@x.y", "z" * 255]
        await store.apply(
            [reg(ids[n % 4], n, ["1", None, "β 2.0", "v" * 255][n % 4]) for n in range(23)]
            + [rev("a@b", 4)]
        )
        pages = [page async for page in store.snapshot(page=5)]
        assert [len(p) for p in pages][:-1] == [5] * (len(pages) - 1)
        records = [r for page in pages for r in page]
        assert len(records) == 23 and len({r.key for r in records}) == 23
        for record in records:  # every field as get() reads it: NULL, text, status
            assert record == await store.get(*record.key)
        assert sum(r.status == REVOKED for r in records) == 1

    async def test_snapshot_then_the_changes_after_is_the_registry(self, store):
        await store.apply([reg("a@b", n) for n in range(12)])
        start = await store.last_serial()
        read, pages = [], store.snapshot(page=4)
        read += await pages.__anext__()
        # Files change during the read: ones already read, and new ones.
        await store.apply([rev("a@b", n) for n in range(12)] + [reg("c@d", 1, "2")])
        read += [r async for page in pages for r in page]
        latest = {}
        for record in read + await store.changes(start, 1000):
            latest[record.key] = record  # later records win
        assert latest == {r.key: r for r in await store.changes(0, 1000)}
        assert {r.status for k, r in latest.items() if k[0] == "a@b"} == {REVOKED}

    async def test_concurrent_batches_keep_serials_unique(self, store):
        batches = [[reg(f"w{w}@b", f"{w}-{n}") for n in range(20)] for w in range(5)]
        results = await asyncio.gather(*(store.apply(b) for b in batches))
        serials = [a.record.serial for result in results for a in result]
        assert len(set(serials)) == 100
        assert await store.last_serial() == max(serials)
        feed = await store.changes(0, 1000)
        assert [r.serial for r in feed] == sorted(serials)

    async def test_long_ids_and_versions(self, store):
        addon_id = "a" * 200 + "@" + "b" * 54
        assert len(addon_id) == 255
        await store.apply([reg(addon_id, 1, "v" * 255)])
        record = await store.get(addon_id, sha(1))
        assert record.version == "v" * 255

    @pytest.mark.parametrize("count", [1, 4500, 12000])
    async def test_large_batches(self, store, count):
        results = await store.apply([reg(f"a{i % 97}@b", i) for i in range(count)])
        assert sum(a.created for a in results) == count
        assert [a.record.serial for a in results] == list(range(1, count + 1))
        feed = await store.changes(0, 20000)
        assert [(r.key, r.serial) for r in feed] == [
            (a.record.key, a.record.serial) for a in results
        ]
        assert await store.last_serial() == count

    async def test_large_batch_with_a_known_file_at_its_end(self, store):
        [known] = await store.apply([reg("z@b", "known", "1")])
        ops = [reg(f"a{i % 97}@b", i) for i in range(11999)] + [reg("z@b", "known", "1")]
        results = await store.apply(ops)
        assert sum(a.created for a in results) == 11999
        assert results[-1] == type(results[-1])(known.record)  # unchanged, no serial
        assert await store.last_serial() == known.record.serial + 11999
        assert len(await store.changes(0, 20000)) == 12000
        assert (await store.get(*ops[5000].key)).serial == known.record.serial + 5001

    async def test_jobs_lifecycle(self, store):
        ops = [reg("a@b", 1, "1"), rev("a@b", 1), rev("x@y", 2), reg("a@b", 3, "β")]
        await store.create_job("j1", "amo", ops)
        job = await store.get_job("j1")
        assert (job.id, job.owner, job.status, job.results) == ("j1", "amo", "queued", None)
        assert job.operations == tuple(ops)
        assert [j.id for j in await store.pending_jobs()] == ["j1"]
        results = await store.apply(ops, job_id="j1")
        assert [a.changed for a in results] == [True, True, False, True]
        job = await store.get_job("j1")
        assert job.status == "done" and await store.pending_jobs() == []
        assert job.results == [
            {
                "addon_id": "a@b",
                "sha256": sha(1),
                "status": "registered",
                "serial": results[0].record.serial,
            },
            {
                "addon_id": "a@b",
                "sha256": sha(1),
                "status": "revoked",
                "serial": results[1].record.serial,
            },
            {"addon_id": "x@y", "sha256": sha(2), "status": "unknown", "serial": None},
            {
                "addon_id": "a@b",
                "sha256": sha(3),
                "status": "registered",
                "serial": results[3].record.serial,
            },
        ]

    async def test_a_job_is_applied_once(self, store):
        await store.create_job("j2", "amo", [reg("a@b", 1)])
        assert await store.apply([reg("a@b", 1)], job_id="j2") is not None
        last = await store.last_serial()
        await store.apply([rev("a@b", 1)])
        # a second runner (another process after a restart) finds it done
        assert await store.apply([reg("a@b", 1)], job_id="j2") is None
        assert (await store.get("a@b", sha(1))).status == REVOKED
        assert await store.last_serial() == last + 1
        assert await store.apply([reg("a@b", 1)], job_id="nope") is None
        assert await store.get_job("nope") is None
