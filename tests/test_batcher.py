"""WriteBatcher: group commit, ordering, bounds, failures, jobs, drain."""

import asyncio

import pytest

from addonreg.batcher import QueueFull, WriteBatcher
from addonreg.storage import BackendError, Job, Operation
from addonreg.storage.memory import MemoryStore
from addonreg.storage.sqlite import SQLiteStore
from addonreg.storage.testing import sha
from tests.conftest import wait_until


def reg(addon_id, n, version=None):
    return Operation("register", addon_id, sha(n), version)


class Recorder:
    def __init__(self):
        self.published = []

    async def __call__(self, records):
        self.published.append(list(records))


class CountingStore(MemoryStore):
    """The memory store, counting transactions; can be made to fail or to stall."""

    def __init__(self):
        super().__init__()
        self.transactions = []
        self.fail = 0
        self.fail_with = BackendError("down")
        self.gate = None
        self.entered = asyncio.Event()  # set when a commit starts

    async def apply(self, ops, job_id=None):
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise self.fail_with
        self.transactions.append(len(ops))
        return await super().apply(ops, job_id)


@pytest.fixture
async def store():
    return CountingStore()


async def test_concurrent_submits_share_transactions(store):
    publish = Recorder()
    batcher = WriteBatcher(store, publish, window=0.005)
    batcher.start()
    results = await asyncio.gather(*(batcher.submit([reg(f"a{i}@b", i)]) for i in range(200)))
    await batcher.drain()
    assert all(r[0].created for r in results)
    assert sum(store.transactions) == 200
    assert len(store.transactions) <= 5, store.transactions
    serials = [r[0].record.serial for r in results]
    assert serials == sorted(serials)  # arrival order is commit order
    assert sum(len(p) for p in publish.published) == 200


async def test_results_split_per_submit_and_batches_bounded(store):
    batcher = WriteBatcher(store, Recorder(), batch_size=10, window=0)
    batcher.start()
    a, b, c = await asyncio.gather(
        batcher.submit([reg("a@b", n) for n in range(6)]),
        batcher.submit([reg("b@b", n) for n in range(6)]),
        batcher.submit([reg("c@b", n) for n in range(15)]),
    )  # larger than a batch: alone
    await batcher.drain()
    assert [len(a), len(b), len(c)] == [6, 6, 15]
    assert {r.record.addon_id for r in b} == {"b@b"}
    assert store.transactions == [6, 6, 15]


async def test_publish_happens_before_the_submit_returns(store):
    seen = []

    async def publish(records):
        seen.extend(r.key for r in records)

    batcher = WriteBatcher(store, publish)
    batcher.start()
    await batcher.submit([reg("a@b", 1), reg("a@b", 1)])
    assert seen == [("a@b", sha(1))]  # the no-op second register publishes nothing
    await batcher.drain()


async def test_queue_full_refuses_at_once_and_queues_nothing(store):
    store.gate = asyncio.Event()
    batcher = WriteBatcher(store, Recorder(), max_queue=10, window=0)
    batcher.start()
    first = asyncio.create_task(batcher.submit([reg("a@b", n) for n in range(4)]))
    await store.entered.wait()  # taken by the writer, which is now stalled
    second = asyncio.create_task(batcher.submit([reg("b@b", n) for n in range(8)]))
    await wait_until(lambda: batcher.queued == 8, "the second write queued")
    with pytest.raises(QueueFull):
        await batcher.submit([reg("c@b", n) for n in range(3)])
    assert batcher.queued == 8
    store.gate.set()
    await first, await second
    await batcher.drain()
    assert await store.get("c@b", sha(0)) is None


async def test_a_failed_commit_fails_its_waiters_and_writes_nothing(store):
    store.fail = 1
    batcher = WriteBatcher(store, Recorder(), window=0.01)
    batcher.start()
    results = await asyncio.gather(
        batcher.submit([reg("a@b", 1)]), batcher.submit([reg("a@b", 2)]), return_exceptions=True
    )
    assert all(isinstance(r, BackendError) for r in results)
    assert await store.last_serial() == 0
    [ok] = await batcher.submit([reg("a@b", 3)])  # the writer goes on
    assert ok.created
    await batcher.drain()


async def test_jobs_are_committed_alone_and_retried(store):
    store.fail = 2
    batcher = WriteBatcher(store, Recorder(), retry_delays=(0.01,))
    batcher.start()
    ops = (reg("a@b", 1), reg("a@b", 2))
    await store.create_job("j", "amo", ops)
    batcher.submit_job(Job("j", "amo", "queued", ops))

    async def done():
        return (await store.get_job("j")).status == "done"

    await wait_until(done, "the job retried to done")
    job = await store.get_job("j")
    assert job.status == "done" and [r["status"] for r in job.results] == ["registered"] * 2
    await batcher.drain()


async def test_a_job_failing_with_any_exception_leaves_the_writer_running(store):
    """Not a BackendError (a bug, a driver error not wrapped): the job stays queued and is
    retried, the writes behind it are answered, and drain() returns."""
    store.fail, store.fail_with = 1, RuntimeError("a bug in apply")
    batcher = WriteBatcher(store, Recorder(), retry_delays=(0.05,), queue_timeout=2.0)
    batcher.start()
    ops = (reg("a@b", 1),)
    await store.create_job("j", "amo", ops)
    batcher.submit_job(Job("j", "amo", "queued", ops))
    await store.entered.wait()
    [later] = await batcher.submit([reg("b@b", 2)])  # queued behind the job: answered
    assert later.created
    assert (await store.get_job("j")).status in ("queued", "done")  # never a false "done"

    async def done():
        return (await store.get_job("j")).status == "done"

    await wait_until(done, "the job retried to done")
    assert [r["status"] for r in (await store.get_job("j")).results] == ["registered"]
    await batcher.drain()  # the writer task ended cleanly: nothing re-raised


async def test_drain_commits_everything_queued_then_refuses(tmp_path):
    store = SQLiteStore(str(tmp_path / "d.sqlite3"))
    await store.open()
    await store.create_schema()
    batcher = WriteBatcher(store, Recorder(), batch_size=50)
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit([reg(f"a{i}@b", i)])) for i in range(300)]
    await asyncio.sleep(0)  # a yield, not a wait: every task has run up to its queued write
    await batcher.drain()
    assert all(t.done() and not t.exception() for t in tasks)
    assert len(await store.changes(0, 1000)) == 300
    with pytest.raises(QueueFull):
        await batcher.submit([reg("late@b", 1)])
    await store.close()


async def test_writes_queued_behind_a_stalled_commit_are_answered_not_written(store):
    """F5: a write still queued at queue_timeout is refused (never sent: certainly not
    written), however long the commit ahead of it stalls."""
    store.gate = asyncio.Event()
    batcher = WriteBatcher(store, Recorder(), window=0, queue_timeout=0.05)
    batcher.start()
    stalled = asyncio.create_task(batcher.submit([reg("a@b", 1)]))
    await store.entered.wait()
    with pytest.raises(BackendError, match="not written"):
        await batcher.submit([reg("b@b", 2)])
    assert batcher.queued == 0 and batcher.stats["expired"] == 1
    store.gate.set()
    await stalled
    await batcher.drain()
    assert await store.get("b@b", sha(2)) is None and store.transactions == [1]


async def test_each_queued_write_is_refused_at_its_own_deadline(store):
    """One timer serves the whole queue: a write queued later is refused at its own
    deadline, not at an earlier one's, and a write taken in time is never refused."""
    store.gate = asyncio.Event()
    batcher = WriteBatcher(store, Recorder(), window=0, queue_timeout=0.3)
    batcher.start()
    stalled = asyncio.create_task(batcher.submit([reg("a@b", 1)]))  # taken in time
    await store.entered.wait()
    first = asyncio.create_task(batcher.submit([reg("b@b", 2)]))
    await asyncio.sleep(0.15)  # time itself is the subject: the second deadline comes later
    second = asyncio.create_task(batcher.submit([reg("c@b", 3)]))
    with pytest.raises(BackendError, match="not written"):
        await asyncio.wait_for(first, 5)  # liveness bounds, not timings
    assert not second.done() and batcher.queued == 1
    with pytest.raises(BackendError, match="not written"):
        await asyncio.wait_for(second, 5)
    store.gate.set()
    assert (await stalled)[0].created
    await batcher.drain()
    assert batcher.stats["expired"] == 2 and store.transactions == [1]
