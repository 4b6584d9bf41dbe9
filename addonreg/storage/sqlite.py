"""Embedded storage in one SQLite file: the default, with no server to run.

Two connections per process: one for reads and one for writes, so a read
never waits behind a write transaction (WAL mode lets them run together).
A batch is one ``BEGIN IMMEDIATE`` transaction, which takes SQLite's write
lock before the serial counter is read: several processes may share the file
and serials still follow commit order. ``synchronous=NORMAL`` in WAL mode
keeps every committed transaction across a crash or ``kill -9`` of the
process (only a power loss can drop the last ones).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence

import aiosqlite

from ..status import STATUS_CODE, STATUS_NAME
from . import (
    JOB_DONE,
    JOB_QUEUED,
    Applied,
    BackendError,
    Job,
    Key,
    Operation,
    OutcomeUnknown,
    Record,
    RegistrationStore,
    decode_operations,
    encode_operations,
    encode_results,
    now_us,
    plan,
)

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["SQLiteStore", "load_from_config"]

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS registrations (
        addon_id TEXT NOT NULL,
        sha256 BLOB NOT NULL,
        version TEXT,
        status INTEGER NOT NULL,
        serial INTEGER NOT NULL UNIQUE,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (addon_id, sha256)
    ) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO counters (name, value) VALUES ('serial', 0)",
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        status TEXT NOT NULL,
        operations TEXT NOT NULL,
        results TEXT,
        created_at INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at)",
]
_COLUMNS = "addon_id, sha256, version, status, serial, updated_at"
_JOINED = ", ".join(f"r.{c}" for c in _COLUMNS.split(", "))
_CHUNK = 400  # pairs per IN (...) list: 800 parameters, far below SQLite's limit


def _record(row: Any) -> Record:
    return Record(row[0], row[1].hex(), row[2], STATUS_NAME[row[3]], row[4], row[5])


class SQLiteStore(RegistrationStore):
    # ValueError: aiosqlite's "no active connection", a bad hex key.
    driver_errors = (sqlite3.Error, OSError, ValueError)
    unavailable = "SQLite unavailable"

    def __init__(self, path: str, timeout: float = 2.0) -> None:
        self.path = path
        self.timeout = timeout or None
        self._reader: Optional[aiosqlite.Connection] = None
        self._writer: Optional[aiosqlite.Connection] = None
        self._write_lock = asyncio.Lock()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(
            self.path, isolation_level=None, timeout=max(self.timeout or 5.0, 1.0)
        )
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            await conn.close()  # else its thread outlives us, and the process never exits
            raise
        return conn

    async def open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create {directory}", exc) from exc
        self._reader = await self._call(self._connect(), self.timeout)
        self._writer = await self._call(self._connect(), self.timeout)

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                try:
                    await conn.close()
                except (sqlite3.Error, ValueError):
                    pass
        self._reader = self._writer = None

    async def _create_schema(self) -> None:
        async with self._write_lock:
            for statement in SCHEMA:
                await self._open(self._writer).execute(statement)

    @staticmethod
    def _open(conn: Optional[aiosqlite.Connection]) -> aiosqlite.Connection:
        if conn is None:
            raise BackendError("SQLite store is not open")
        return conn

    async def _fetchall(
        self, conn: Optional[aiosqlite.Connection], sql: str, params: Sequence[Any] = ()
    ) -> List[Any]:
        async with self._open(conn).execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def _get(self, addon_id: str, sha256: str) -> Optional[Record]:
        rows = await self._fetchall(
            self._reader,
            f"SELECT {_COLUMNS} FROM registrations WHERE addon_id = ? AND sha256 = ?",
            (addon_id, bytes.fromhex(sha256)),
        )
        return _record(rows[0]) if rows else None

    async def _get_many(self, keys: Iterable[Key]) -> Dict[Key, Record]:
        return await self._select_many(self._reader, keys)

    async def _select_many(
        self, conn: Optional[aiosqlite.Connection], many: Iterable[Key]
    ) -> Dict[Key, Record]:
        """The records of ``many`` keys, read on ``conn`` (the reader, or the writer
        inside a batch's transaction)."""
        keys = list(dict.fromkeys(many))
        found: Dict[Key, Record] = {}
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            params: List[Any] = []
            for addon_id, sha in chunk:
                params += (addon_id, bytes.fromhex(sha))
            values = ",".join(["(?,?)"] * len(chunk))
            # A join, not "(addon_id, sha256) IN (VALUES …)": SQLite plans the IN
            # as a scan of the whole table (80 ms for 400 keys in 200k rows),
            # the join as a primary-key search per key (3 ms).
            for row in await self._fetchall(
                conn,
                f"SELECT {_JOINED} FROM (VALUES {values}) AS k JOIN registrations r "
                "ON r.addon_id = k.column1 AND r.sha256 = k.column2",
                params,
            ):
                record = _record(row)
                found[record.key] = record
        return found

    async def _list_files(self, addon_id: str) -> List[Record]:
        rows = await self._fetchall(
            self._reader,
            f"SELECT {_COLUMNS} FROM registrations WHERE addon_id = ? ORDER BY sha256",
            (addon_id,),
        )
        return [_record(r) for r in rows]

    async def _changes(self, since: int, limit: int) -> List[Record]:
        rows = await self._fetchall(
            self._reader,
            f"SELECT {_COLUMNS} FROM registrations WHERE serial > ? ORDER BY serial LIMIT ?",
            (since, limit),
        )
        return [_record(r) for r in rows]

    async def _last_serial(self) -> int:
        rows = await self._fetchall(
            self._reader, "SELECT value FROM counters WHERE name = 'serial'"
        )
        return rows[0][0] if rows else 0

    async def _transaction(
        self, ops: Sequence[Operation], job_id: Optional[str]
    ) -> Optional[List[Applied]]:
        """The batch in one ``BEGIN IMMEDIATE`` transaction on the writer connection."""
        conn = self._writer
        if conn is None:
            raise BackendError("SQLite store is not open")
        await conn.execute("BEGIN IMMEDIATE")
        try:
            if job_id is not None:
                rows = await self._fetchall(conn, "SELECT status FROM jobs WHERE id = ?", (job_id,))
                if not rows or rows[0][0] != JOB_QUEUED:
                    await conn.execute("ROLLBACK")
                    return None
            rows = await self._fetchall(conn, "SELECT value FROM counters WHERE name = 'serial'")
            last = rows[0][0]
            current = await self._select_many(conn, (op.key for op in ops))
            results, changed, new_last = plan(ops, current, last, now_us())
            if changed:
                await conn.executemany(
                    f"INSERT INTO registrations ({_COLUMNS}) VALUES (?,?,?,?,?,?) "
                    "ON CONFLICT (addon_id, sha256) DO UPDATE SET version = excluded.version, "
                    "status = excluded.status, serial = excluded.serial, "
                    "updated_at = excluded.updated_at",
                    [
                        (
                            r.addon_id,
                            bytes.fromhex(r.sha256),
                            r.version,
                            STATUS_CODE[r.status],
                            r.serial,
                            r.updated_at,
                        )
                        for r in changed.values()
                    ],
                )
                await conn.execute(
                    "UPDATE counters SET value = ? WHERE name = 'serial'", (new_last,)
                )
            if job_id is not None:
                await conn.execute(
                    "UPDATE jobs SET status = ?, results = ? WHERE id = ?",
                    (JOB_DONE, encode_results(ops, results), job_id),
                )
            await conn.execute("COMMIT")
        except BaseException:
            try:
                await conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        return results

    async def _apply(
        self, ops: Sequence[Operation], job_id: Optional[str]
    ) -> Optional[List[Applied]]:
        """See :meth:`RegistrationStore.apply`; answered within ``2 × storage_timeout``.

        The transaction runs in aiosqlite's thread and cannot be cut short:
        past the deadline it goes on in the background, the answer is
        :class:`OutcomeUnknown` (the next write queues behind it); a write
        still waiting for the write lock then is dropped (nothing written).
        """
        began = asyncio.Event()

        async def locked() -> Optional[List[Applied]]:
            async with self._write_lock:
                began.set()
                # No time limit here: the deadline is the wait below.
                return await self._call(self._transaction(ops, job_id), None, "SQLite write failed")

        task = asyncio.ensure_future(locked())
        done, _ = await asyncio.wait({task}, timeout=2 * (self.timeout or 30))
        if task in done:
            return task.result()
        if not began.is_set():
            task.cancel()
            raise BackendError("SQLite write lock not had in time: nothing written")
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        raise OutcomeUnknown("SQLite did not finish the write in time")

    async def _create_job(self, job_id: str, owner: str, ops: Sequence[Operation]) -> None:
        async with self._write_lock:
            await self._open(self._writer).execute(
                "INSERT INTO jobs (id, owner, status, operations, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (job_id, owner, JOB_QUEUED, encode_operations(ops), now_us()),
            )

    @staticmethod
    def _job(row: Any) -> Job:
        return Job(
            row[0],
            row[1],
            row[2],
            decode_operations(row[3]),
            json.loads(row[4]) if row[4] is not None else None,
        )

    async def _get_job(self, job_id: str) -> Optional[Job]:
        rows = await self._fetchall(
            self._reader,
            "SELECT id, owner, status, operations, results FROM jobs WHERE id = ?",
            (job_id,),
        )
        return self._job(rows[0]) if rows else None

    async def _pending_jobs(self) -> List[Job]:
        rows = await self._fetchall(
            self._reader,
            "SELECT id, owner, status, operations, results FROM jobs "
            "WHERE status = ? ORDER BY created_at",
            (JOB_QUEUED,),
        )
        return [self._job(r) for r in rows]

    async def _heartbeat(self) -> None:
        await self._fetchall(self._reader, "SELECT 1 FROM counters LIMIT 1")


def load_from_config(settings: Settings) -> SQLiteStore:
    return SQLiteStore(settings.storage[len("sqlite:///") :], timeout=settings.storage_timeout)
