"""In-process storage: for tests, development and benchmarks of the layers above.

Nothing is kept across restarts, and each process has its own data, so a
deployment of several processes must not use it. Operations never wait, so
no locking is needed on one event loop.

Its operations still go through the base class's ``_call``, like every
backend's, though there is no driver error to wrap and no time limit (an
operation that never waits cannot outlive one): the store of the tests and
benchmarks answers through the same code as the real ones, for the cost of
one coroutine frame.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence

from . import (
    JOB_DONE,
    JOB_QUEUED,
    Applied,
    Job,
    Key,
    Operation,
    Record,
    RegistrationStore,
    now_us,
    plan,
    result_item,
)

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["MemoryStore", "load_from_config"]


class MemoryStore(RegistrationStore):
    def __init__(self) -> None:
        self._records: Dict[Key, Record] = {}
        self._by_addon: Dict[str, Dict[str, Record]] = {}
        self._by_serial: Dict[int, Record] = {}
        self._serials: List[int] = []  # ascending; entries missing from _by_serial are dead
        self._last = 0
        self._jobs: Dict[str, Job] = {}

    async def _create_schema(self) -> None:
        pass

    async def _get(self, addon_id: str, sha256: str) -> Optional[Record]:
        return self._records.get((addon_id, sha256))

    async def _get_many(self, keys: Iterable[Key]) -> Dict[Key, Record]:
        records = self._records
        return {k: records[k] for k in keys if k in records}

    async def _list_files(self, addon_id: str) -> List[Record]:
        files = self._by_addon.get(addon_id, {})
        return [files[sha] for sha in sorted(files)]

    async def _changes(self, since: int, limit: int) -> List[Record]:
        out: List[Record] = []
        i = bisect.bisect_right(self._serials, since)
        while i < len(self._serials) and len(out) < limit:
            record = self._by_serial.get(self._serials[i])
            if record is not None:
                out.append(record)
            i += 1
        return out

    async def _apply(
        self, ops: Sequence[Operation], job_id: Optional[str]
    ) -> Optional[List[Applied]]:
        if job_id is not None:
            job = self._jobs.get(job_id)
            if job is None or job.status != JOB_QUEUED:
                return None
        current = {op.key: self._records[op.key] for op in ops if op.key in self._records}
        results, rows, self._last = plan(ops, current, self._last, now_us())
        for key, record in rows.items():
            old = self._records.get(key)
            if old is not None:
                del self._by_serial[old.serial]
            self._records[key] = record
            self._by_addon.setdefault(record.addon_id, {})[record.sha256] = record
            self._by_serial[record.serial] = record
        self._serials.extend(sorted(r.serial for r in rows.values()))
        if len(self._serials) > 2 * len(self._by_serial) + 1024:
            self._serials = sorted(self._by_serial)
        if job_id is not None and job is not None:
            self._jobs[job_id] = Job(
                job_id,
                job.owner,
                JOB_DONE,
                job.operations,
                [result_item(op, a) for op, a in zip(ops, results)],
            )
        return results

    async def _create_job(self, job_id: str, owner: str, ops: Sequence[Operation]) -> None:
        self._jobs[job_id] = Job(job_id, owner, JOB_QUEUED, tuple(ops))

    async def _get_job(self, job_id: str) -> Optional[Job]:
        return self._jobs.get(job_id)

    async def _pending_jobs(self) -> List[Job]:
        return [j for j in self._jobs.values() if j.status == JOB_QUEUED]

    async def _last_serial(self) -> int:
        return self._last

    async def _heartbeat(self) -> None:
        pass


def load_from_config(settings: Settings) -> MemoryStore:
    return MemoryStore()
