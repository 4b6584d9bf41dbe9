"""The MySQL/MariaDB store: one server, a Galera cluster, or a primary with replicas.

* **Writes** go to one node at a time (:attr:`MySQLStore.writer`): the first
  of the storage URL's node list that answers and accepts writes
  (``nodes.py``). When it is lost or stops accepting writes, the batch that
  found out is retried on the next such node if nothing of it was sent for
  commit; writes return to an earlier node of the list once it accepts
  writes again (spread over Galera nodes, writes to the one counter row
  would fail certification). The writer's connection never serves reads.
* **Reads** (cache misses, add-on lists, the change feed) go to the first
  healthy node of ``storage_read`` — reachable, replicating, no more than
  ``max_lag`` seconds behind as the engine reports it — and otherwise to the
  write node's read pool.
* **Never older than seen**: :attr:`seen` is the highest serial this process
  has seen (its own commits, the bus's messages, every read's node serial).
  Every read returns the node's serial from the same snapshot
  (:data:`.sql.NODE_SERIAL`); a read from a node behind :attr:`seen` is not
  used: a Galera node is asked again with a causal read
  (``wsrep_sync_wait``), a replica is given ``CATCH_UP`` seconds, then the
  read goes to the write node.
* **Truthful outcomes across a failover**: each batch writes a marker row
  (``batches``) in its own transaction (``batches.py``: what a batch sends on
  its connection). When the commit was sent but not confirmed
  (:meth:`MySQLStore._resolve`), the write node now chosen is asked for the
  marker — the same node behind the counter row's lock, a Galera node after
  a causal read — and the batch is answered as it is.
  :class:`OutcomeUnknown` only where no node can tell (an asynchronous
  replica without the marker).
* Serials come from ``counters``, locked inside the write transaction
  (``batches.py``): concurrent writers (several processes or hosts) take
  turns, and serial order is commit order, so a feed reader never sees a
  serial commit after a larger one.
* Time limits are per call to a node, not per operation (a read may try
  several nodes): each call (:meth:`MySQLStore._run`) goes through the base
  class's ``_call``, so a driver error, or a call that outlives
  ``storage_timeout``, becomes :class:`BackendError`; a connection
  interrupted mid-call is closed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, TypeVar

import aiomysql
import pymysql

from .. import (
    JOB_QUEUED,
    Applied,
    BackendError,
    DatabaseMissing,
    Job,
    Key,
    Operation,
    OutcomeUnknown,
    Record,
    RegistrationStore,
    decode_operations,
)
from .batches import (
    PRUNE_EVERY,
    Attempt,
    Expect,
    create_job,
    find_job,
    prune_markers,
    recover_batch,
    write_batch,
)
from .nodes import DRIVER_ERRORS, Node, NodeState, parse_url, unreachable
from .schema import SCHEMA
from .sql import CAUSAL, CHUNK, NODE_SERIAL, key_list, packed, unpack

if TYPE_CHECKING:
    from ...config import Settings

__all__ = ["MySQLStore", "load_from_config"]

log = logging.getLogger("addonreg.storage.mysql")

T = TypeVar("T")

_JOB_COLUMNS = "id, owner, status, operations, results"
_NO_DATABASE = 1049  # ER_BAD_DB_ERROR
CATCH_UP = 0.05  # seconds a replica behind what was seen is waited for, before the write node
# A Galera node's causal read normally waits milliseconds; one that cannot apply
# (desynced, a global read lock) would hold the read until storage_timeout.
CAUSAL_TIMEOUT = 0.25
WATCH_INTERVAL = 0.5  # seconds between two looks at the read nodes
RECHECK_INTERVAL = 5.0  # after a failover, seconds between two looks at earlier nodes


class MySQLStore(RegistrationStore):
    driver_errors = DRIVER_ERRORS
    unavailable = "MySQL unavailable"

    def __init__(
        self,
        url: str,
        pool_size: int = 8,
        timeout: float = 2.0,
        read_url: str = "",
        max_lag: float = 1.0,
    ) -> None:
        try:
            cluster = parse_url(url)
            readers = parse_url(read_url) if read_url else None
        except ValueError as exc:
            raise BackendError(f"bad MySQL URL: {exc}") from None
        self.pool_size = cluster.pool_size or pool_size
        self.database = cluster.database
        self.timeout: Optional[float] = timeout or None
        self.max_lag = max_lag
        self.nodes = [Node(cluster, a, self.pool_size, timeout) for a in cluster.nodes]
        self.read_nodes = (
            [Node(readers, a, readers.pool_size or self.pool_size, timeout) for a in readers.nodes]
            if readers
            else []
        )
        self.writer: Optional[Node] = None  # the node writes go to; None: choose again
        self._last_writer: Optional[Node] = None
        self.seen = 0
        self.counts: Dict[str, int] = dict.fromkeys(
            ("failovers", "read_fallbacks", "causal_waits", "outcomes_resolved"), 0
        )
        self._write_lock = asyncio.Lock()
        self._choosing = asyncio.Lock()
        self._batches = 0
        self._watcher: Optional[asyncio.Task] = None
        self._closed = False
        self._expect = Expect()  # which of write_batch's paths the next batch tries

    @property
    def operation_timeout(self) -> Optional[float]:
        """None: each call to a node is timed instead (:meth:`_run`). One read may
        ask a read node, then the write node, each within ``storage_timeout``;
        one limit on the whole would cut the fallback short."""
        return None

    # Opening, closing --------------------------------------------------------

    async def open(self) -> None:
        if self.read_nodes:
            await asyncio.gather(*(self._probe(node) for node in self.read_nodes))
        if self.read_nodes or len(self.nodes) > 1:
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch(), name="addonreg-mysql-watch"
            )

    async def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        for node in self.nodes + self.read_nodes:
            await node.close()

    async def _watch(self) -> None:
        """Look at the read nodes every WATCH_INTERVAL (reachable, replicating, lag),
        and after a failover at the earlier write nodes every RECHECK_INTERVAL."""
        rechecked = time.monotonic()
        while not self._closed:
            if time.monotonic() - rechecked >= RECHECK_INTERVAL:
                rechecked = time.monotonic()
                await self._recheck_writer()
            for node in self.read_nodes:
                before = self._healthy(node)
                await self._probe(node)
                if self._healthy(node) != before:
                    log.warning(
                        "read node %s %s",
                        node,
                        "serves reads again"
                        if not before
                        else f"left for the write node ({self._why_unhealthy(node.state)})",
                    )
            await asyncio.sleep(WATCH_INTERVAL)

    # Running work on a connection ---------------------------------------------

    async def _run(
        self,
        pool: aiomysql.Pool,
        work: Callable[[aiomysql.Connection], Awaitable[T]],
        timeout: Optional[float],
    ) -> T:
        """Run ``work`` on a pooled connection, had within ``storage_timeout``, the
        work then within ``timeout``: both through :meth:`_call`, so every driver
        failure or timeout is a BackendError. A connection interrupted mid-call
        is closed."""
        try:
            conn = await self._call(pool.acquire(), self.timeout)
        except BackendError as exc:
            cause = exc.original
            if isinstance(cause, pymysql.err.MySQLError) and cause.args[:1] == (_NO_DATABASE,):
                raise DatabaseMissing(f"MySQL database {self.database!r} does not exist") from cause
            raise
        try:
            result = await self._call(work(conn), timeout, "MySQL query failed")
        except BaseException:
            # Interrupted mid-call: the connection's state is unknown.
            conn.close()
            pool.release(conn)
            raise
        pool.release(conn)
        return result

    async def _probe(self, node: Node) -> NodeState:
        """Ask ``node`` what it is now (:meth:`.Node.ask`); never raises."""
        try:
            node.state = await self._run(await node.reads(), node.ask, self.timeout)
        except BackendError as exc:
            node.state = unreachable(exc)
        return node.state

    async def _row(
        self, node: Node, sql: str, params: Sequence[Any] = (), timeout: Optional[float] = None
    ) -> Any:
        """The one row of ``sql`` on ``node``'s read pool (within ``timeout``, default
        ``storage_timeout``)."""

        async def work(conn: aiomysql.Connection) -> Any:
            async with conn.cursor() as cur:
                await cur.execute(sql, params)
                return await cur.fetchone()

        return await self._run(await node.reads(), work, timeout or self.timeout)

    async def _rows(self, node: Node, sql: str, params: Sequence[Any] = ()) -> List[Any]:
        async def work(conn: aiomysql.Connection) -> List[Any]:
            async with conn.cursor() as cur:
                await cur.execute(sql, params)
                return list(await cur.fetchall())

        return await self._run(await node.reads(), work, self.timeout)

    # Choosing nodes --------------------------------------------------------------

    def observe(self, serial: int) -> None:
        if serial > self.seen:
            self.seen = serial

    def _healthy(self, node: Node) -> bool:
        state = node.state
        return (
            state.reachable and state.current and (state.lag is None or state.lag <= self.max_lag)
        )

    def _serving(self, node: Node) -> bool:
        return self._healthy(node) and node.wanted <= (node.state.serial or 0)

    def _why_unhealthy(self, state: NodeState) -> str:
        if not state.reachable:
            return f"unreachable: {state.error}"
        if not state.current:
            return "not replicating" if not state.galera else "not synced"
        return f"{state.lag:.1f} s behind (more than {self.max_lag} s)"

    async def _write_node(self) -> Node:
        """The node writes go to: the current one, or the first of the list that
        answers and accepts writes."""
        if self.writer is not None:
            return self.writer
        if len(self.nodes) == 1:
            # One server: nothing to choose, so nothing to ask it first (a probe is a
            # round trip that a stalled link would hold before every write).
            self.writer = self.nodes[0]
            return self.writer
        async with self._choosing:
            if self.writer is not None:
                return self.writer
            for candidate in self.nodes:
                if (await self._probe(candidate)).writable:
                    self._switch_writer(candidate)
                    return candidate
            if all(n.state.code == _NO_DATABASE for n in self.nodes):
                raise DatabaseMissing(f"MySQL database {self.database!r} does not exist")
            raise BackendError(
                "no MySQL node accepts writes ("
                + "; ".join(f"{n}: {self._refusal(n.state)}" for n in self.nodes)
                + ")"
            )

    def _switch_writer(self, node: Node) -> None:
        if self._last_writer is not None and node is not self._last_writer:
            self.counts["failovers"] += 1
            log.warning("writes go to MySQL node %s (were on %s)", node, self._last_writer)
        self.writer = self._last_writer = node

    async def _recheck_writer(self) -> None:
        """After a failover: back to an earlier node of the list once it accepts writes."""
        current = self.writer
        if current is None or current is self.nodes[0]:
            return
        for candidate in self.nodes[: self.nodes.index(current)]:
            if (await self._probe(candidate)).writable:
                if self.writer is current:  # nobody moved it meanwhile
                    self._switch_writer(candidate)
                return

    @staticmethod
    def _refusal(state: NodeState) -> str:
        if not state.reachable:
            return state.error
        return "not synced" if state.galera and not state.current else "read-only"

    def _lose_writer(self, node: Node, exc: BaseException) -> None:
        if self.writer is node:
            self.writer = None
            log.warning("MySQL node %s lost for writes: %s", node, exc)

    # Reads ----------------------------------------------------------------

    def _read_node(self) -> Optional[Node]:
        """The first healthy read node, unless it was found behind a serial this process
        needed and the watcher has not seen it get there since (see :meth:`_read`)."""
        for node in self.read_nodes:
            if self._serving(node):
                return node
        return None

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The one row of ``sql`` (whose last column is the node's serial), from the
        read node when it has caught up with :attr:`seen`, else the write node."""
        node = self._read_node()
        if node is not None:
            try:
                row = await self._row(node, sql, params)
                if row[-1] is None or row[-1] < self.seen:
                    row = await self._catch_up(node, sql, params)
                    if row is None:
                        # Behind: the next reads skip it until the watcher sees it past.
                        node.wanted = self.seen
            except BackendError as exc:
                node.state = unreachable(exc)
                log.warning("read node %s failed, reading from the write node: %s", node, exc)
                row = None
            if row is not None:
                self.observe(row[-1])
                return row
            self.counts["read_fallbacks"] += 1
        try:
            node, row = await self._on_write_node(lambda node: self._row(node, sql, params))
        except BackendError:
            # No write node (a primary lost, a replica not yet promoted): a read node
            # that is reachable and holds every change this process has seen still
            # answers truthfully, though it hears of nothing new.
            row = await self._read_without_writer(sql, params)
            if row is None:
                raise
            return row
        if row[-1] is not None and row[-1] < self.seen:
            if node.state.galera:
                self.counts["causal_waits"] += 1
                row = await self._row(node, CAUSAL + sql, params)
            if row[-1] < self.seen:
                # The write node has less than this process saw: history was lost
                # (an asynchronous replica promoted). It is the truth from now on;
                # the feed sees it went back and drops the cache.
                log.warning(
                    "the write node %s is at serial %d, behind serial %d seen here: "
                    "changes were lost in a failover",
                    node,
                    row[-1],
                    self.seen,
                )
                self.seen = row[-1]
        if row[-1] is not None:
            self.observe(row[-1])
        return row

    async def _on_write_node(self, call: Callable[[Node], Awaitable[T]]) -> Tuple[Node, T]:
        """``call(node)`` on the write node's read pool; when that node fails, it is
        lost for writes too and the call is made once more on the next one (a process
        that only reads follows a failover as a writing one does)."""
        node = await self._write_node()
        try:
            return node, await call(node)
        except BackendError as exc:
            self._lose_writer(node, exc)
            again = await self._write_node()
            if again is node:
                raise
            return again, await call(again)

    async def _read_without_writer(self, sql: str, params: Sequence[Any]) -> Optional[Any]:
        for node in self.read_nodes:
            try:
                row = await self._row(node, sql, params)
            except BackendError:
                continue
            if row[-1] is not None and row[-1] >= self.seen:
                self.observe(row[-1])
                return row
        return None

    async def _catch_up(self, node: Node, sql: str, params: Sequence[Any]) -> Optional[Any]:
        """``sql`` again on a read node behind :attr:`seen`: a causal read on Galera,
        a short wait on a replica; None if it is still behind."""
        self.counts["causal_waits"] += 1
        if node.state.galera:
            try:
                row = await self._row(node, CAUSAL + sql, params, timeout=CAUSAL_TIMEOUT)
            except BackendError:  # a node that cannot catch up soon (desynced, locked)
                return None
            return row if row[-1] is not None and row[-1] >= self.seen else None
        deadline = time.monotonic() + CATCH_UP
        while time.monotonic() < deadline:
            await asyncio.sleep(CATCH_UP / 5)
            (serial,) = await self._row(node, "SELECT value FROM counters WHERE name = 'serial'")
            if serial >= self.seen:
                row = await self._row(node, sql, params)
                return row if row[-1] >= self.seen else None
        return None

    async def _records(
        self, source: str, params: Sequence[Any] = (), order: str = ""
    ) -> List[Record]:
        """The records of ``SELECT … FROM source`` (see :func:`.sql.packed`)."""
        return unpack(
            await self._read(f"SELECT {packed(order)}, {NODE_SERIAL} FROM {source}", params)
        )

    async def _get(self, addon_id: str, sha256: str) -> Optional[Record]:
        found = await self._records(
            "registrations WHERE addon_id = %s AND sha256 = UNHEX(%s)", (addon_id, sha256)
        )
        return found[0] if found else None

    async def _get_many(self, keys: Iterable[Key]) -> Dict[Key, Record]:
        keys = list(dict.fromkeys(keys))
        found: Dict[Key, Record] = {}
        for i in range(0, len(keys), CHUNK):
            where = f"registrations WHERE (addon_id, sha256) IN ({key_list(keys[i : i + CHUNK])})"
            for record in await self._records(where):
                found[record.key] = record
        return found

    async def _list_files(self, addon_id: str) -> List[Record]:
        return await self._records(
            "registrations WHERE addon_id = %s", (addon_id,), " ORDER BY sha256"
        )

    async def _changes(self, since: int, limit: int) -> List[Record]:
        return await self._records(
            "(SELECT * FROM registrations WHERE serial > %s ORDER BY serial LIMIT %s) page",
            (since, limit),
            " ORDER BY serial",
        )

    async def _snapshot(self, page: int) -> AsyncGenerator[List[Record], None]:
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

    async def _last_serial(self) -> int:
        row = await self._read(f"SELECT {NODE_SERIAL}")
        return int(row[0] or 0)

    @staticmethod
    def _job(row: Sequence[Any]) -> Job:
        return Job(
            row[0],
            row[1],
            row[2],
            decode_operations(row[3]),
            json.loads(row[4]) if row[4] is not None else None,
        )

    # Jobs are read where they are written: a 202's job is found at once.
    async def _get_job(self, job_id: str) -> Optional[Job]:
        _, rows = await self._on_write_node(
            lambda node: self._rows(
                node, f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,)
            )
        )
        return self._job(rows[0]) if rows else None

    async def _pending_jobs(self) -> List[Job]:
        _, rows = await self._on_write_node(
            lambda node: self._rows(
                node,
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = %s ORDER BY created_at",
                (JOB_QUEUED,),
            )
        )
        return [self._job(r) for r in rows]

    async def _heartbeat(self) -> None:
        await self._on_write_node(lambda node: self._row(node, "SELECT 1"))

    async def _topology(self) -> List[Dict[str, Any]]:
        """Each configured node: its role, whether it answers, what it says (probed now);
        nothing for one server with no read node (the storage check says it all)."""
        every = self.nodes + self.read_nodes
        if len(every) == 1:
            return []
        states = await asyncio.gather(*(self._probe(node) for node in every))
        shown = []
        for node, state in zip(every, states):
            role = "read" if node in self.read_nodes else "write"
            entry: Dict[str, Any] = {"node": str(node), "role": role, **state.as_dict()}
            if role == "write":
                entry["current"] = node is self.writer
            else:
                entry["serving"] = self._serving(node)
            shown.append(entry)
        return shown

    def stats(self) -> Dict[str, Any]:
        lags = [n.state.lag for n in self.read_nodes if n.state.lag is not None]
        return dict(self.counts, read_lag=max(lags) if lags else 0.0, seen=self.seen)

    # Schema -----------------------------------------------------------------

    async def _create_database(self) -> bool:
        """``CREATE DATABASE`` when missing (on the write node; a cluster replicates
        it); BackendError naming the fix when not allowed."""
        node = await self._first_answering()
        name = str(node.connect_args()["db"])
        conn = await self._call(aiomysql.connect(**node.connect_args(db=None)), None)

        async def create() -> bool:
            async with conn.cursor() as cur:
                if await cur.execute("SHOW DATABASES LIKE %s", (name,)):
                    return False
                await cur.execute(
                    f"CREATE DATABASE `{name.replace('`', '``')}` "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )
                return True

        try:
            return await self._call(
                create(),
                None,
                f"cannot create database {name!r} (have an administrator run "
                f"CREATE DATABASE, then addonreg initdb again)",
            )
        finally:
            conn.close()

    async def _first_answering(self) -> Node:
        """Before the database exists no node can say it accepts writes: the first
        node that is not read-only, or the first node."""
        for node in self.nodes:
            try:
                conn = await aiomysql.connect(**node.connect_args(db=None))
            except DRIVER_ERRORS:
                continue
            try:
                async with conn.cursor() as cur:
                    await cur.execute("SELECT @@read_only")
                    if not (await cur.fetchone())[0]:
                        return node
            except pymysql.err.MySQLError:
                continue
            finally:
                conn.close()
        return self.nodes[0]

    async def _create_schema(self) -> None:
        async def work(conn: aiomysql.Connection) -> None:
            async with conn.cursor() as cur:
                with warnings.catch_warnings():
                    # "table already exists" notes are expected: it is idempotent.
                    warnings.simplefilter("ignore")
                    for statement in SCHEMA:
                        await cur.execute(statement)

        async with self._write_lock:
            node = await self._write_node()
            await self._run(await node.writer(), work, max(self.timeout or 30, 30))

    # Writes -------------------------------------------------------------------

    async def _write(
        self,
        work: Callable[..., Awaitable[T]],
        recover: Callable[[aiomysql.Connection, Node, bool], Awaitable[Optional[T]]],
        what: str,
    ) -> T:
        """``work`` on the write node's connection, within ``2 × storage_timeout``.

        A failure before the COMMIT was sent is retried on the next node that
        accepts writes (nothing was written); when no node does, BackendError.
        A failure after it is resolved by ``recover`` (see :meth:`_resolve`).
        """
        async with self._write_lock:
            budget = 2 * (self.timeout or 30)
            deadline = time.monotonic() + budget
            tries = 0
            while True:
                node = await self._write_node()
                attempt = Attempt()
                try:
                    result = await self._run(
                        await node.writer(),
                        functools.partial(work, attempt=attempt),
                        max(deadline - time.monotonic(), 0.001),
                    )
                except BackendError as exc:
                    self._lose_writer(node, exc)
                    if attempt.commit_sent:
                        return await self._resolve(node, exc, recover, what, deadline)
                    tries += 1
                    if tries > len(self.nodes) or time.monotonic() >= deadline:
                        raise
                    continue
                await self._maybe_prune(node)
                return result

    async def _resolve(
        self,
        failed: Node,
        exc: BackendError,
        recover: Callable[[aiomysql.Connection, Node, bool], Awaitable[Optional[T]]],
        what: str,
        deadline: float,
    ) -> T:
        """A commit sent but not confirmed: ask a node that can tell. The same node
        (its connection blipped) or a Galera node answers for certain; an
        asynchronous replica only when it has the batch's marker."""
        unknown = OutcomeUnknown(f"MySQL did not confirm the {what}", exc.original)
        # The node that can tell may be waiting for its cluster to re-form (Galera:
        # evs.suspect_timeout after a kill): up to 2 x storage_timeout more.
        remaining = max(deadline - time.monotonic(), 0.0) + 2 * (self.timeout or 30)
        try:
            async with asyncio.timeout(remaining):
                node = await self._write_node()
                same = node is failed

                async def ask(conn: aiomysql.Connection) -> Optional[T]:
                    return await recover(conn, node, same)

                result = await self._run(await node.writer(), ask, remaining)
        except (BackendError, TimeoutError):
            raise unknown from exc
        if result is None:
            raise BackendError(f"MySQL did not commit the {what}", exc.original) from exc
        self.counts["outcomes_resolved"] += 1
        log.warning("the %s on %s was committed (confirmed on %s)", what, failed, node)
        return result

    async def _maybe_prune(self, node: Node) -> None:
        self._batches += 1
        if self._batches % PRUNE_EVERY:
            return
        try:
            await self._run(await node.writer(), prune_markers, self.timeout)
        except BackendError as exc:
            log.info("pruning batch markers failed (next time, then): %s", exc)

    async def _apply(
        self, ops: Sequence[Operation], job_id: Optional[str]
    ) -> Optional[List[Applied]]:
        """See :meth:`RegistrationStore.apply`; the commit gets ``2 × storage_timeout``,
        and its fate is told truthfully (see :meth:`_write`)."""
        marker = os.urandom(16)

        async def work(conn: aiomysql.Connection, attempt: Attempt) -> Optional[List[Applied]]:
            return await write_batch(conn, attempt, ops, job_id, marker, self._expect)

        async def recover(
            conn: aiomysql.Connection, node: Node, same: bool
        ) -> Optional[List[Applied]]:
            return await recover_batch(conn, node, same, ops, marker)

        results = await self._write(work, recover, "commit")
        if results:
            self.observe(max((a.record.serial for a in results if a.record), default=0))
        return results

    async def _create_job(self, job_id: str, owner: str, ops: Sequence[Operation]) -> None:
        """Store a queued job (:func:`.batches.create_job`), truthfully (see :meth:`_write`)."""

        async def work(conn: aiomysql.Connection, attempt: Attempt) -> None:
            await create_job(conn, attempt, job_id, owner, ops)

        async def recover(conn: aiomysql.Connection, node: Node, same: bool) -> Optional[bool]:
            return await find_job(conn, node, same, job_id)

        await self._write(work, recover, "job")


def load_from_config(settings: Settings) -> MySQLStore:
    return MySQLStore(
        settings.storage,
        pool_size=settings.storage_pool_size,
        timeout=settings.storage_timeout,
        read_url=getattr(settings, "storage_read", ""),
        max_lag=getattr(settings, "storage_read_max_lag", 1.0),
    )
