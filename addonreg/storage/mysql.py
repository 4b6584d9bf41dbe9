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
* Every driver error, and a call that outlives ``storage_timeout``, becomes
  :class:`BackendError`; a connection interrupted mid-call is closed, not
  returned to its pool.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import re
import warnings
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
)
from urllib.parse import parse_qs, unquote, urlsplit

import aiomysql
import pymysql

from . import (
    JOB_DONE,
    JOB_QUEUED,
    REGISTERED,
    REVOKED,
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

__all__ = ["MySQLStore", "load_from_config"]

T = TypeVar("T")

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS registrations (
        addon_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        sha256 BINARY(32) NOT NULL,
        version VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
        status TINYINT UNSIGNED NOT NULL COMMENT '1 registered, 2 revoked',
        serial BIGINT UNSIGNED NOT NULL,
        updated_at DATETIME(6) NOT NULL COMMENT 'UTC',
        PRIMARY KEY (addon_id, sha256),
        UNIQUE KEY registrations_serial (serial)
    ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS counters (
        name VARCHAR(32) CHARACTER SET ascii NOT NULL PRIMARY KEY,
        value BIGINT UNSIGNED NOT NULL
    ) ENGINE=InnoDB""",
    "INSERT IGNORE INTO counters (name, value) VALUES ('serial', 0)",
    """CREATE TABLE IF NOT EXISTS jobs (
        id CHAR(32) CHARACTER SET ascii NOT NULL PRIMARY KEY,
        owner VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
        status VARCHAR(8) CHARACTER SET ascii NOT NULL,
        operations LONGTEXT CHARACTER SET utf8mb4 NOT NULL,
        results LONGTEXT CHARACTER SET utf8mb4 NULL,
        created_at DATETIME(6) NOT NULL,
        KEY jobs_status (status, created_at)
    ) ENGINE=InnoDB""",
]
_COLUMNS = "addon_id, sha256, version, status, serial, updated_at"
_STATUS_CODE = {REGISTERED: 1, REVOKED: 2}
_STATUS_NAME = {1: REGISTERED, 2: REVOKED}
_EPOCH = datetime.datetime(1970, 1, 1)
_CHUNK = 5000  # rows per statement: one statement for a full batch
_DUPLICATE_KEY = 1062  # ER_DUP_ENTRY
_DRIVER_ERRORS = (pymysql.err.MySQLError, OSError, asyncio.TimeoutError, RuntimeError)


def _to_us(dt: datetime.datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_us(us: int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(microseconds=us)


def _record(row: Sequence[Any]) -> Record:
    return Record(row[0], row[1].hex(), row[2], _STATUS_NAME[row[3]], row[4], _to_us(row[5]))


# The one exception to parameterised SQL. Batches are written as SQL literals
# built here rather than through the driver's per-parameter escaping, which
# was the largest cost of a bulk write (bench/writes.py: 32k -> 62k
# registrations/s with this and the optimistic path). Nothing is escaped:
# text made only of plainly safe characters is quoted as it is, anything else
# goes in as the hex of its UTF-8 under a charset introducer, which no quote,
# backslash, NUL or sql_mode can change the meaning of. Hashes go in as
# X'…' after a check that they are lowercase hex. tests/storage/
# test_mysql_literals.py sends arbitrary text through it into MariaDB and back.
_PLAIN = re.compile(r"[0-9A-Za-z._@{}+ -]*").fullmatch
_HEX = frozenset("0123456789abcdef")


def sql_text(value: Optional[str]) -> str:
    """``value`` as a MariaDB string literal (``NULL`` for None)."""
    if value is None:
        return "NULL"
    if _PLAIN(value) is not None:
        return f"'{value}'"
    return f"_utf8mb4 X'{value.encode('utf-8').hex()}'"


def _hashes(keys: Iterable[str]) -> None:
    """Refuse anything but 64 lowercase hex digits (they are spliced into SQL as X'…')."""
    joined = "".join(keys)
    if len(joined) % 64 or not _HEX.issuperset(joined):
        raise ValueError("sha256 must be 64 lowercase hex digits")


def _key_list(keys: Sequence[Key]) -> str:
    """``(addon_id, sha256) IN (…)`` items for ``keys``."""
    _hashes(sha for _, sha in keys)
    return ",".join([f"({sql_text(a)},X'{h}')" for a, h in keys])


Row = Tuple[str, str, Optional[str], int, Any]
"""A row to insert: addon_id, sha256 (hex), version, status code, serial (an int
or an SQL expression)."""


def _row_values(rows: Sequence[Row], when: str) -> str:
    """``VALUES`` rows for ``registrations``; ``when`` is the batch's time (an SQL expression)."""
    _hashes(row[1] for row in rows)
    return ",".join([f"({sql_text(addon_id)},X'{sha}',{sql_text(version)},"
                     f"{status},{serial},{when})"
                     for addon_id, sha, version, status, serial in rows])


_INLINE_TIME_ROWS = 200
"""Up to this many rows, the batch's time is written in each row; above, it is
set once as ``@addonreg_now`` (one more statement, far less SQL to parse)."""


def _batch_time(now: int, rows: int) -> Tuple[Optional[str], str]:
    """For a batch of ``rows`` rows at ``now``: the statement to run first (or None),
    and the SQL expression of the batch's time."""
    literal = "'" + _from_us(now).isoformat(" ", "microseconds") + "'"
    if rows <= _INLINE_TIME_ROWS:
        return None, literal
    return f"SET @addonreg_now = {literal}", "@addonreg_now"


def _only_new_registrations(ops: Sequence[Operation]) -> bool:
    """Registrations only, of distinct files: the optimistic path may apply."""
    return all(op.op == "register" for op in ops) and \
        len({(op.addon_id, op.sha256) for op in ops}) == len(ops)


class MySQLStore(RegistrationStore):
    def __init__(self, url: str, pool_size: int = 8, timeout: float = 2.0) -> None:
        parts = urlsplit(url)
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self._connect_args = dict(
            host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
            user=unquote(parts.username or "root"), password=unquote(parts.password or ""),
            db=parts.path.strip("/"), charset="utf8mb4", autocommit=True,
            connect_timeout=max(timeout, 1.0),
        )
        self.pool_size = int(options.get("pool_size", pool_size))
        self.timeout = timeout or None
        self._read_pool: Optional[aiomysql.Pool] = None
        self._write_pool: Optional[aiomysql.Pool] = None
        self._write_lock = asyncio.Lock()
        self._expect_new = True  # see _apply_new
        self._commit_sent = False  # of the write in progress (under _write_lock)

    async def open(self) -> None:
        # minsize=0: the service starts (and answers from cache, or 503) even
        # while the database is down; connections are made on first use.
        try:
            self._read_pool = await aiomysql.create_pool(
                minsize=0, maxsize=self.pool_size, pool_recycle=3600, **self._connect_args)
            # A lock left by a writer cut off mid-transaction is waited for at
            # most as long as a commit may take, not InnoDB's 50 s default.
            wait = max(1, math.ceil(2 * (self.timeout or 30)))
            self._write_pool = await aiomysql.create_pool(
                minsize=0, maxsize=1, pool_recycle=3600, **self._connect_args,
                init_command=f"SET SESSION innodb_lock_wait_timeout = {wait}")
        except _DRIVER_ERRORS as exc:
            raise BackendError("MySQL unavailable", exc) from exc

    async def close(self) -> None:
        for pool in (self._read_pool, self._write_pool):
            if pool is not None:
                pool.close()
                await pool.wait_closed()
        self._read_pool = self._write_pool = None

    async def _run(self, pool: Optional[aiomysql.Pool],
                   work: Callable[[aiomysql.Connection], Awaitable[T]],
                   timeout: Optional[float] = -1) -> T:
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

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> Callable[[Any], Awaitable[List[Any]]]:
        async def work(conn: aiomysql.Connection) -> List[Any]:
            async with conn.cursor() as cur:
                await cur.execute(sql, params)
                return await cur.fetchall()
        return work

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
                await cur.execute(f"CREATE DATABASE `{name.replace('`', '``')}` "
                                  "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                return True
        except pymysql.err.MySQLError as exc:
            raise BackendError(f"cannot create database {name!r} (have an administrator run "
                               f"CREATE DATABASE, then addonreg initdb again)", exc) from exc
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

    async def get(self, addon_id: str, sha256: str) -> Optional[Record]:
        rows = await self._run(self._read_pool, self._fetch(
            f"SELECT {_COLUMNS} FROM registrations WHERE addon_id = %s AND sha256 = UNHEX(%s)",
            (addon_id, sha256)))
        return _record(rows[0]) if rows else None

    @staticmethod
    async def _get_many(conn: aiomysql.Connection, keys: List[Key],
                        suffix: str = "") -> Dict[Key, Record]:
        found: Dict[Key, Record] = {}
        async with conn.cursor() as cur:
            for i in range(0, len(keys), _CHUNK):
                await cur.execute(f"SELECT {_COLUMNS} FROM registrations WHERE (addon_id, sha256) "
                                  f"IN ({_key_list(keys[i:i + _CHUNK])}){suffix}")
                for row in await cur.fetchall():
                    record = _record(row)
                    found[record.key] = record
        return found

    async def get_many(self, keys: Iterable[Key]) -> Dict[Key, Record]:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        return await self._run(self._read_pool, lambda conn: self._get_many(conn, keys))

    async def list_files(self, addon_id: str) -> List[Record]:
        rows = await self._run(self._read_pool, self._fetch(
            f"SELECT {_COLUMNS} FROM registrations WHERE addon_id = %s ORDER BY sha256",
            (addon_id,)))
        return [_record(r) for r in rows]

    async def changes(self, since: int, limit: int) -> List[Record]:
        rows = await self._run(self._read_pool, self._fetch(
            f"SELECT {_COLUMNS} FROM registrations WHERE serial > %s ORDER BY serial LIMIT %s",
            (since, limit)))
        return [_record(r) for r in rows]

    async def last_serial(self) -> int:
        rows = await self._run(self._read_pool, self._fetch(
            "SELECT value FROM counters WHERE name = 'serial'"))
        return int(rows[0][0]) if rows else 0

    async def _apply(self, conn: aiomysql.Connection, ops: Sequence[Operation],
                     job_id: Optional[str]) -> Optional[List[Applied]]:
        try:
            if job_id is None and self._expect_new and _only_new_registrations(ops):
                results = await self._apply_new(conn, ops)
                if results is not None:
                    return results
            return await self._apply_general(conn, ops, job_id)
        except BaseException:
            conn.close()  # rolls back on the server; the pool drops it
            raise

    async def _apply_new(self, conn: aiomysql.Connection,
                         ops: Sequence[Operation]) -> Optional[List[Applied]]:
        """The optimistic path for a batch of registrations of distinct files.

        Most registrations are of files never seen before, and a single PUT's
        answer waits for its batch's round trips (with many concurrent PUTs
        the process has nothing else to do meanwhile). So the whole
        transaction goes in ONE round trip, as one multi-statement:

        * ``UPDATE counters SET value = LAST_INSERT_ID(value + n)`` takes the
          counter's lock and the batch's n serials; the new value comes back
          in the statement's OK packet, and the rows' serials are written as
          ``LAST_INSERT_ID() - k``, so they need not be known beforehand;
        * a plain ``INSERT`` of all rows, planned as if none of the files
          existed (the guess);
        * ``COMMIT``.

        If a file was already there the INSERT fails with a duplicate key,
        the server runs nothing after it, the transaction is rolled back,
        None is returned (the caller takes the general path), and guessing
        stops until a batch read by the general path is all new again.
        """
        n = len(ops)
        now = now_us()
        set_time, when = _batch_time(now, n)
        statements = ["BEGIN"] + ([set_time] if set_time else [])
        counter = len(statements)  # the statement whose OK packet carries the serial
        statements.append(f"UPDATE counters SET value = LAST_INSERT_ID(value + {n}) "
                          "WHERE name = 'serial'")
        code = _STATUS_CODE[REGISTERED]
        rows = [(op.addon_id, op.sha256, op.version, code, f"LAST_INSERT_ID()-{n - k}")
                for k, op in enumerate(ops, 1)]
        for i in range(0, n, _CHUNK):
            statements.append(f"INSERT INTO registrations ({_COLUMNS}) VALUES "
                              + _row_values(rows[i:i + _CHUNK], when))
        statements.append("COMMIT")
        # One packet when the batch fits one INSERT; a larger one (an import
        # with a big write_batch_size) goes a statement at a time, so no
        # packet grows past what one INSERT of _CHUNK rows needs
        # (max_allowed_packet).
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
        return [Applied(Record(op.addon_id, op.sha256, op.version, REGISTERED, base + k, now),
                        created=True, changed=True) for k, op in enumerate(ops, 1)]

    async def _apply_general(self, conn: aiomysql.Connection, ops: Sequence[Operation],
                             job_id: Optional[str]) -> Optional[List[Applied]]:
        """Read the batch's files, plan (:func:`plan`), write the changes, commit."""
        await conn.begin()
        async with conn.cursor() as cur:
            if job_id is not None:
                await cur.execute("SELECT status FROM jobs WHERE id = %s FOR UPDATE",
                                  (job_id,))
                row = await cur.fetchone()
                if row is None or row[0] != JOB_QUEUED:
                    await conn.rollback()
                    return None
            # The counter's row lock serialises writers until COMMIT.
            await cur.execute("SELECT value FROM counters WHERE name = 'serial' FOR UPDATE")
            last = int((await cur.fetchone())[0])
            # A plain read is enough: every writer holds the counter lock until
            # it commits, so this sees every earlier commit, and it takes no
            # gap locks on absent keys.
            current = await self._get_many(conn, list(dict.fromkeys(op.key for op in ops)))
            # Would the optimistic path have done? Try it next time if so.
            self._expect_new = not current
            now = now_us()
            results, changed, new_last = plan(ops, current, last, now)
            if changed:
                rows = [(r.addon_id, r.sha256, r.version, _STATUS_CODE[r.status], r.serial)
                        for r in changed.values()]
                set_time, when = _batch_time(now, len(rows))
                if set_time:
                    await cur.execute(set_time)
                for i in range(0, len(rows), _CHUNK):
                    await cur.execute(
                        f"INSERT INTO registrations ({_COLUMNS}) VALUES "
                        + _row_values(rows[i:i + _CHUNK], when)
                        + " ON DUPLICATE KEY UPDATE version = VALUES(version), "
                          "status = VALUES(status), serial = VALUES(serial), "
                          "updated_at = VALUES(updated_at)")
                await cur.execute("UPDATE counters SET value = %s WHERE name = 'serial'",
                                  (new_last,))
            if job_id is not None:
                await cur.execute("UPDATE jobs SET status = %s, results = %s WHERE id = %s",
                                  (JOB_DONE, encode_results(ops, results), job_id))
        self._commit_sent = True
        await conn.commit()
        return results

    async def apply(self, ops: Sequence[Operation], job_id: Optional[str] = None
                    ) -> Optional[List[Applied]]:
        """See :meth:`RegistrationStore.apply`; the commit gets ``2 × storage_timeout``.

        A failure before the COMMIT was sent is a :class:`BackendError` (the
        connection is closed, so the server rolls back: nothing written); one
        after it, :class:`OutcomeUnknown`.
        """
        async with self._write_lock:
            self._commit_sent = False
            try:
                return await self._run(self._write_pool,
                                       lambda conn: self._apply(conn, ops, job_id),
                                       timeout=2 * (self.timeout or 30))
            except BackendError as exc:
                if self._commit_sent:
                    raise OutcomeUnknown("MySQL did not confirm the commit", exc.original) \
                        from exc
                raise

    async def create_job(self, job_id: str, owner: str, ops: Sequence[Operation]) -> None:
        """Store a queued job (one autocommitted INSERT: once sent, its fate is unknown
        until answered, so a failure then is :class:`OutcomeUnknown`)."""
        async def work(conn: aiomysql.Connection) -> None:
            self._commit_sent = True
            async with conn.cursor() as cur:
                await cur.execute(
                    "INSERT INTO jobs (id, owner, status, operations, created_at) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (job_id, owner, JOB_QUEUED, encode_operations(ops), _from_us(now_us())))
        # The write pool: a job is a write, and must not take a read connection.
        async with self._write_lock:
            self._commit_sent = False
            try:
                await self._run(self._write_pool, work)
            except BackendError as exc:
                if self._commit_sent:
                    raise OutcomeUnknown("MySQL did not confirm the job", exc.original) from exc
                raise

    @staticmethod
    def _job(row: Sequence[Any]) -> Job:
        return Job(row[0], row[1], row[2], decode_operations(row[3]),
                   json.loads(row[4]) if row[4] is not None else None)

    async def get_job(self, job_id: str) -> Optional[Job]:
        rows = await self._run(self._read_pool, self._fetch(
            "SELECT id, owner, status, operations, results FROM jobs WHERE id = %s", (job_id,)))
        return self._job(rows[0]) if rows else None

    async def pending_jobs(self) -> List[Job]:
        rows = await self._run(self._read_pool, self._fetch(
            "SELECT id, owner, status, operations, results FROM jobs WHERE status = %s "
            "ORDER BY created_at", (JOB_QUEUED,)))
        return [self._job(r) for r in rows]

    async def heartbeat(self) -> None:
        await self._run(self._read_pool, self._fetch("SELECT 1"))


def load_from_config(settings) -> MySQLStore:
    return MySQLStore(settings.storage, pool_size=settings.storage_pool_size,
                      timeout=settings.storage_timeout)
