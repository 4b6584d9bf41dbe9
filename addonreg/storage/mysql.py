"""MySQL/MariaDB storage (production), through aiomysql.

* Two pools: reads (``storage_pool_size`` connections, ``autocommit=True`` so
  a pooled connection never keeps an old snapshot) and one writer connection,
  so reads never queue behind a write transaction.
* ``registrations`` has the primary key ``(addon_id, sha256)``: a lookup is one
  index probe. SHA-256 is ``BINARY(32)``; ``addon_id`` is ASCII with a binary
  collation, since ids are compared exactly.
* Serials come from ``counters``, read ``FOR UPDATE`` inside the write
  transaction: concurrent writers (several processes or hosts) take turns,
  and serial order is commit order, so a feed reader never sees a serial
  commit after a larger one.
* Every driver error, and a call that outlives its timeout, becomes
  :class:`BackendError` (a write's, once its COMMIT was sent,
  :class:`OutcomeUnknown`); a connection interrupted mid-call is closed.
"""

from __future__ import annotations

import asyncio
import json
import math
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Optional, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import aiomysql
import pymysql

from . import (
    JOB_DONE,
    JOB_QUEUED,
    REGISTERED,
    STATUS_CODE,
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
from .sqltext import (
    GROUP_CONCAT_MAX_LEN,
    SCHEMA,
    batch_time,
    from_us,
    key_list,
    packed,
    row_values,
    unpack,
)

__all__ = ["MySQLStore", "load_from_config"]

T = TypeVar("T")

_COLUMNS = "addon_id, sha256, version, status, serial, updated_at"
_JOB_COLUMNS = "id, owner, status, operations, results"
_CHUNK = 5000  # rows per statement: one statement for a full batch
_DUPLICATE_KEY = 1062  # ER_DUP_ENTRY
_DRIVER_ERRORS = (pymysql.err.MySQLError, OSError, asyncio.TimeoutError, RuntimeError)


class MySQLStore(RegistrationStore):
    def __init__(self, url: str, pool_size: int = 8, timeout: float = 2.0) -> None:
        parts = urlsplit(url)
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self._connect_args = dict(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            db=parts.path.strip("/"),
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=max(timeout, 1.0),
        )
        self._session = f"SET SESSION group_concat_max_len = {GROUP_CONCAT_MAX_LEN}"
        self.pool_size = int(options.get("pool_size", pool_size))
        self.timeout = timeout or None
        self._read_pool: Optional[aiomysql.Pool] = None
        self._write_pool: Optional[aiomysql.Pool] = None
        self._write_lock = asyncio.Lock()
        self._expect_new, self._expect_same = True, False  # see _apply
        self._commit_sent = False  # of the write in progress (under _write_lock)

    async def open(self) -> None:
        # minsize=0: the service starts (and answers from cache, or 503) even
        # while the database is down; connections are made on first use.
        try:
            self._read_pool = await aiomysql.create_pool(
                minsize=0,
                maxsize=self.pool_size,
                pool_recycle=3600,
                **self._connect_args,
                init_command=self._session,
            )
            # A lock left by a writer cut off mid-transaction is waited for at
            # most as long as a commit may take, not InnoDB's 50 s default.
            wait = max(1, math.ceil(2 * (self.timeout or 30)))
            self._write_pool = await aiomysql.create_pool(
                minsize=0,
                maxsize=1,
                pool_recycle=3600,
                **self._connect_args,
                init_command=f"{self._session}, innodb_lock_wait_timeout = {wait}",
            )
        except _DRIVER_ERRORS as exc:
            raise BackendError("MySQL unavailable", exc) from exc

    async def close(self) -> None:
        for pool in (self._read_pool, self._write_pool):
            if pool is not None:
                pool.close()
                await pool.wait_closed()
        self._read_pool = self._write_pool = None

    async def _run(
        self,
        pool: Optional[aiomysql.Pool],
        work: Callable[[aiomysql.Connection], Awaitable[T]],
        timeout: Optional[float] = -1,
    ) -> T:
        """Run ``work`` on a pooled connection (``timeout``: for the work, after the
        connection is had in ``storage_timeout``), every failure a BackendError."""
        if pool is None:
            raise BackendError("MySQL store is not open")
        if timeout == -1:
            timeout = self.timeout
        try:
            conn = await asyncio.wait_for(pool.acquire(), self.timeout)
        except _DRIVER_ERRORS as exc:
            raise BackendError("MySQL unavailable", exc) from exc
        try:
            result = await asyncio.wait_for(work(conn), timeout)
        except BaseException as exc:
            # Interrupted mid-call: the connection's state is unknown.
            conn.close()
            pool.release(conn)
            if isinstance(exc, _DRIVER_ERRORS):
                raise BackendError("MySQL query failed", exc) from exc
            raise
        pool.release(conn)
        return result

    async def _select(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows of one query on a read connection."""

        async def work(conn: aiomysql.Connection) -> list[Any]:
            async with conn.cursor() as cur:
                await cur.execute(sql, params)
                return list(await cur.fetchall())

        return await self._run(self._read_pool, work)

    async def _write(self, work: Callable[[aiomysql.Connection], Awaitable[T]], what: str) -> T:
        """``work`` on the writer connection: a failure before ``_commit_sent`` was set
        is a BackendError (the connection is closed, so the server rolls back:
        nothing written), one after it :class:`OutcomeUnknown`."""
        async with self._write_lock:
            self._commit_sent = False
            try:
                return await self._run(self._write_pool, work, timeout=2 * (self.timeout or 30))
            except BackendError as exc:
                if self._commit_sent:
                    raise OutcomeUnknown(f"MySQL did not confirm the {what}", exc.original) from exc
                raise

    async def create_database(self) -> bool:
        """``CREATE DATABASE`` when missing; BackendError naming the fix when not allowed."""
        args = dict(self._connect_args, db=None)
        name = str(self._connect_args["db"])
        try:
            conn = await aiomysql.connect(**args)
        except _DRIVER_ERRORS as exc:
            raise BackendError("MySQL unavailable", exc) from exc
        try:
            async with conn.cursor() as cur:
                if await cur.execute("SHOW DATABASES LIKE %s", (name,)):
                    return False
                await cur.execute(
                    f"CREATE DATABASE `{name.replace('`', '``')}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )
                return True
        except pymysql.err.MySQLError as exc:
            raise BackendError(
                f"cannot create database {name!r} (have an administrator run "
                f"CREATE DATABASE, then addonreg initdb again)",
                exc,
            ) from exc
        finally:
            conn.close()

    async def create_schema(self) -> None:
        async def work(conn: aiomysql.Connection) -> None:
            async with conn.cursor() as cur:
                with warnings.catch_warnings():
                    # "table already exists" notes are expected: it is idempotent.
                    warnings.simplefilter("ignore")
                    for statement in SCHEMA:
                        await cur.execute(statement)

        await self._run(self._write_pool, work, timeout=max(self.timeout or 30, 30))

    async def _records(
        self,
        source: str,
        params: Sequence[Any] = (),
        order: str = "",
        conn: Optional[aiomysql.Connection] = None,
    ) -> list[Record]:
        """The records of ``SELECT … FROM source`` (see :func:`.sqltext.packed`)."""

        async def work(conn: aiomysql.Connection) -> list[Record]:
            async with conn.cursor() as cur:
                await cur.execute(f"SELECT {packed(order)} FROM {source}", params)
                return unpack(await cur.fetchone())

        return await (work(conn) if conn else self._run(self._read_pool, work))

    async def get(self, addon_id: str, sha256: str) -> Optional[Record]:
        found = await self._records(
            "registrations WHERE addon_id = %s AND sha256 = UNHEX(%s)", (addon_id, sha256)
        )
        return found[0] if found else None

    async def _get_many(
        self, keys: list[Key], conn: Optional[aiomysql.Connection] = None
    ) -> dict[Key, Record]:
        found: dict[Key, Record] = {}
        for i in range(0, len(keys), _CHUNK):
            for record in await self._records(
                f"registrations WHERE (addon_id, sha256) IN ({key_list(keys[i : i + _CHUNK])})",
                conn=conn,
            ):
                found[record.key] = record
        return found

    async def get_many(self, keys: Iterable[Key]) -> dict[Key, Record]:
        keys = list(dict.fromkeys(keys))
        return await self._get_many(keys) if keys else {}

    async def list_files(self, addon_id: str) -> list[Record]:
        return await self._records(
            "registrations WHERE addon_id = %s", (addon_id,), " ORDER BY sha256"
        )

    async def changes(self, since: int, limit: int) -> list[Record]:
        return await self._records(
            "(SELECT * FROM registrations WHERE serial > %s ORDER BY serial LIMIT %s) page",
            (since, limit),
            " ORDER BY serial",
        )

    async def snapshot(self, page: int = 10_000) -> AsyncIterator[list[Record]]:
        """In primary-key order, a range scan, where the feed's serial order would
        look up every row at random (1M rows: 3–4 s against 16 s)."""
        after: Key = ("", "")
        while True:
            records = await self._records(
                "(SELECT * FROM registrations WHERE addon_id > %s OR (addon_id = %s AND "
                "sha256 > UNHEX(%s)) ORDER BY addon_id, sha256 LIMIT %s) page",
                (after[0], after[0], after[1], page),
            )
            if not records:
                return
            yield records
            after = max(r.key for r in records)

    async def last_serial(self) -> int:
        rows = await self._select("SELECT value FROM counters WHERE name = 'serial'")
        return int(rows[0][0]) if rows else 0

    async def _apply(
        self, conn: aiomysql.Connection, ops: Sequence[Operation], job_id: Optional[str]
    ) -> Optional[list[Applied]]:
        """The optimistic paths, when the last batch says they will do, then the general one."""
        try:
            if job_id is None and self._expect_same:
                # A batch that changes nothing (a re-import) needs no transaction:
                # every no-op takes effect at the instant of one consistent read.
                results, changed, _ = plan(
                    ops,
                    await self._get_many(list(dict.fromkeys(op.key for op in ops)), conn),
                    0,
                    now_us(),
                )
                if not changed:
                    return results
            distinct = len({op.key for op in ops}) == len(ops)
            if (
                job_id is None
                and self._expect_new
                and distinct
                and all(op.op == "register" for op in ops)
            ):
                new = await self._apply_new(conn, ops)
                if new is not None:
                    return new
            return await self._apply_general(conn, ops, job_id)
        except BaseException:
            conn.close()  # rolls back on the server; the pool drops it
            raise

    async def _apply_new(
        self, conn: aiomysql.Connection, ops: Sequence[Operation]
    ) -> Optional[list[Applied]]:
        """Registrations of distinct files, guessed all new (most are, and a PUT's
        answer waits for its batch's round trips): ONE round trip, a multi-statement
        ``UPDATE counters SET value = LAST_INSERT_ID(value + n)`` (the counter's
        lock and n serials, the new value back in the OK packet, the rows' serials
        written as ``LAST_INSERT_ID() - k``), a plain ``INSERT`` of every row,
        ``COMMIT``. A file already there fails the INSERT (duplicate key), the
        server runs nothing after it, and None sends the caller on."""
        n = len(ops)
        now = now_us()
        set_time, when = batch_time(now, n)
        statements = ["BEGIN"] + ([set_time] if set_time else [])
        counter = len(statements)  # the statement whose OK packet carries the serial
        statements.append(
            f"UPDATE counters SET value = LAST_INSERT_ID(value + {n}) WHERE name = 'serial'"
        )
        code = STATUS_CODE[REGISTERED]
        rows = [
            (op.addon_id, op.sha256, op.version, code, f"LAST_INSERT_ID()-{n - k}")
            for k, op in enumerate(ops, 1)
        ]
        for i in range(0, n, _CHUNK):
            statements.append(
                f"INSERT INTO registrations ({_COLUMNS}) VALUES "
                + row_values(rows[i : i + _CHUNK], when)
            )
        statements.append("COMMIT")
        # One packet when the batch fits one INSERT; a larger one goes a statement
        # at a time (no packet past max_allowed_packet).
        packets = [";".join(statements)] if n <= _CHUNK else statements
        taken = done = 0
        async with conn.cursor() as cur:
            try:
                for packet in packets:
                    self._commit_sent = packet.endswith("COMMIT")
                    await cur.execute(packet)
                    more = True
                    while more:  # one result per statement
                        if done == counter:
                            taken = cur.lastrowid  # the counter's new value: the last serial
                        done += 1
                        more = bool(await cur.nextset())
            except pymysql.err.IntegrityError as exc:
                if exc.args[0] != _DUPLICATE_KEY:
                    raise
                # The server stops a multi-statement at its first error: no COMMIT ran.
                self._commit_sent = False
                await conn.rollback()
                self._expect_new = False
                return None
        base = taken - n
        return [
            Applied(
                Record(op.addon_id, op.sha256, op.version, REGISTERED, base + k, now),
                created=True,
                changed=True,
            )
            for k, op in enumerate(ops, 1)
        ]

    async def _apply_general(
        self, conn: aiomysql.Connection, ops: Sequence[Operation], job_id: Optional[str]
    ) -> Optional[list[Applied]]:
        """Read the batch's files, plan (:func:`plan`), write the changes, commit."""
        await conn.begin()
        async with conn.cursor() as cur:
            if job_id is not None:
                await cur.execute("SELECT status FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
                row = await cur.fetchone()
                if row is None or row[0] != JOB_QUEUED:
                    await conn.rollback()
                    return None
            # The counter's row lock serialises writers until COMMIT, so the plain
            # read after it sees every earlier commit (and takes no gap locks).
            await cur.execute("SELECT value FROM counters WHERE name = 'serial' FOR UPDATE")
            last = int((await cur.fetchone())[0])
            current = await self._get_many(list(dict.fromkeys(op.key for op in ops)), conn)
            now = now_us()
            results, changed, new_last = plan(ops, current, last, now)
            # Would an optimistic path have done? Try it next time if so.
            self._expect_new, self._expect_same = not current, not changed
            if changed:
                rows = [
                    (r.addon_id, r.sha256, r.version, STATUS_CODE[r.status], r.serial)
                    for r in changed.values()
                ]
                set_time, when = batch_time(now, len(rows))
                if set_time:
                    await cur.execute(set_time)
                for i in range(0, len(rows), _CHUNK):
                    await cur.execute(
                        f"INSERT INTO registrations ({_COLUMNS}) VALUES "
                        + row_values(rows[i : i + _CHUNK], when)
                        + " ON DUPLICATE KEY UPDATE version = VALUES(version), "
                        "status = VALUES(status), serial = VALUES(serial), "
                        "updated_at = VALUES(updated_at)"
                    )
                await cur.execute(
                    "UPDATE counters SET value = %s WHERE name = 'serial'", (new_last,)
                )
            if job_id is not None:
                await cur.execute(
                    "UPDATE jobs SET status = %s, results = %s WHERE id = %s",
                    (JOB_DONE, encode_results(ops, results), job_id),
                )
        self._commit_sent = True
        await conn.commit()
        return results

    async def apply(
        self, ops: Sequence[Operation], job_id: Optional[str] = None
    ) -> Optional[list[Applied]]:
        """See :meth:`RegistrationStore.apply`; the commit gets ``2 × storage_timeout``,
        and its fate is told truthfully (see :meth:`_write`)."""
        return await self._write(lambda conn: self._apply(conn, ops, job_id), "commit")

    async def create_job(self, job_id: str, owner: str, ops: Sequence[Operation]) -> None:
        """Store a queued job: one autocommitted INSERT on the writer connection."""

        async def work(conn: aiomysql.Connection) -> None:
            self._commit_sent = True  # autocommit: once sent, its fate is unknown till answered
            async with conn.cursor() as cur:
                await cur.execute(
                    "INSERT INTO jobs (id, owner, status, operations, created_at) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (job_id, owner, JOB_QUEUED, encode_operations(ops), from_us(now_us())),
                )

        await self._write(work, "job")

    @staticmethod
    def _job(row: Sequence[Any]) -> Job:
        return Job(
            row[0],
            row[1],
            row[2],
            decode_operations(row[3]),
            json.loads(row[4]) if row[4] is not None else None,
        )

    async def get_job(self, job_id: str) -> Optional[Job]:
        rows = await self._select(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,))
        return self._job(rows[0]) if rows else None

    async def pending_jobs(self) -> list[Job]:
        rows = await self._select(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = %s ORDER BY created_at", (JOB_QUEUED,)
        )
        return [self._job(r) for r in rows]

    async def heartbeat(self) -> None:
        await self._select("SELECT 1")


def load_from_config(settings) -> MySQLStore:
    return MySQLStore(
        settings.storage, pool_size=settings.storage_pool_size, timeout=settings.storage_timeout
    )
