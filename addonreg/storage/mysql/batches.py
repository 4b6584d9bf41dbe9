"""Writing one batch on one connection, truthfully: what a write sends to MySQL.

The store (``store.py``) chooses the node, runs these on that node's writer
connection within its time limit, retries on the next node a batch that
failed before its COMMIT was sent, and asks a node that can tell when a
COMMIT was sent but not confirmed. What goes over the connection is here:

* **Serials** come from the ``counters`` row, locked inside the write
  transaction (``FOR UPDATE``, or the ``UPDATE`` of the optimistic path) —
  not from ``AUTO_INCREMENT``, whose values are handed out as rows are
  inserted, so a transaction holding a smaller one may commit after one
  holding a larger. The counter row's lock is held until COMMIT: concurrent
  writers (several processes or hosts) take turns, and serial order is
  commit order, so a feed reader never sees a serial commit after a larger
  one.
* **Optimistic paths**, tried when the last batch says they will do
  (:class:`Expect`): a batch that changes nothing is answered from one
  consistent read, with no transaction; registrations of files all new go in
  one round trip. Otherwise the general path locks the counter, reads the
  batch's files, plans (:func:`.plan`) and writes the changes.
* **Markers**: each batch writes a row in ``batches`` in its own
  transaction, with each operation's outcome (``c`` created, ``u`` changed,
  ``-`` the same). :class:`Attempt` says whether the COMMIT was sent; when it
  was and no answer came, :func:`recover_batch` (:func:`find_job` for a job)
  looks for the marker where a node can tell — the same node behind the
  counter row's lock, a Galera node after a causal read, an asynchronous
  replica only when the marker is there. Markers older than a day are
  deleted every :data:`PRUNE_EVERY` batches (:func:`prune_markers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Dict, List, Optional

import aiomysql
import pymysql

from ...status import REGISTERED, STATUS_CODE
from .. import (
    JOB_DONE,
    JOB_QUEUED,
    Applied,
    BackendError,
    Key,
    Operation,
    Record,
    encode_operations,
    encode_results,
    now_us,
    plan,
)
from .nodes import Node
from .sql import CAUSAL, CHUNK, batch_time, from_us, key_list, packed, row_values, unpack

__all__ = [
    "Attempt",
    "Expect",
    "write_batch",
    "recover_batch",
    "create_job",
    "find_job",
    "PRUNE_EVERY",
    "prune_markers",
]

_COLUMNS = "addon_id, sha256, version, status, serial, updated_at"
_DUPLICATE_KEY = 1062  # ER_DUP_ENTRY
PRUNE_EVERY = 1000  # batches between two prunings of old markers
_MARKER_DAYS = 1


class Attempt:
    """One try of a write on one node: whether its COMMIT was sent yet."""

    __slots__ = ("commit_sent",)

    def __init__(self) -> None:
        self.commit_sent = False


class Expect:
    """What the last batch says of the next: whether its files will all be new
    (``new``), whether it will change nothing (``same``)."""

    __slots__ = ("new", "same")

    def __init__(self) -> None:
        self.new, self.same = True, False


async def write_batch(
    conn: aiomysql.Connection,
    attempt: Attempt,
    ops: Sequence[Operation],
    job_id: Optional[str],
    marker: bytes,
    expect: Expect,
) -> Optional[List[Applied]]:
    """The optimistic paths, when the last batch says they will do, then the general one."""
    try:
        if job_id is None and expect.same:
            # A batch that changes nothing (a re-import) needs no transaction:
            # every no-op takes effect at the instant of one consistent read.
            current = await _current(conn, ops)
            results, changed, _ = plan(ops, current, 0, now_us())
            if not changed:
                return results
        distinct = len({op.key for op in ops}) == len(ops)
        if job_id is None and expect.new and distinct and all(op.op == "register" for op in ops):
            new = await _apply_new(conn, attempt, ops, marker, expect)
            if new is not None:
                return new
        return await _apply_general(conn, attempt, ops, job_id, marker, expect)
    except BaseException:
        conn.close()  # rolls back on the server; the pool drops it
        raise


async def _current(
    conn: aiomysql.Connection, ops: Sequence[Operation], lock: str = ""
) -> Dict[Key, Record]:
    """The stored records of the operations' files, read on ``conn``."""
    keys = list(dict.fromkeys(op.key for op in ops))
    found: Dict[Key, Record] = {}
    async with conn.cursor() as cur:
        for i in range(0, len(keys), CHUNK):
            await cur.execute(
                f"SELECT {packed()} FROM registrations WHERE (addon_id, sha256) IN "
                f"({key_list(keys[i : i + CHUNK])})"
            )
            for record in unpack(await cur.fetchone()):
                found[record.key] = record
    return found


async def _apply_new(
    conn: aiomysql.Connection,
    attempt: Attempt,
    ops: Sequence[Operation],
    marker: bytes,
    expect: Expect,
) -> Optional[List[Applied]]:
    """Registrations of distinct files, guessed all new (most are, and a PUT's
    answer waits for its batch's round trips): ONE round trip, a multi-statement
    ``UPDATE counters SET value = LAST_INSERT_ID(value + n)`` (the counter's
    lock and n serials, the new value back in the OK packet, the rows' serials
    written as ``LAST_INSERT_ID() - k``), a plain ``INSERT`` of every row, the
    batch's marker, ``COMMIT``. A file already there fails the INSERT
    (duplicate key), the server runs nothing after it, and None sends the
    caller on."""
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
    for i in range(0, n, CHUNK):
        statements.append(
            f"INSERT INTO registrations ({_COLUMNS}) VALUES "
            + row_values(rows[i : i + CHUNK], when)
        )
    statements.append(_marker_insert(marker, "c" * n, when))
    statements.append("COMMIT")
    # One packet when the batch fits one INSERT; a larger one goes a statement
    # at a time (no packet past max_allowed_packet).
    packets = [";".join(statements)] if n <= CHUNK else statements
    taken = done = 0
    async with conn.cursor() as cur:
        try:
            for packet in packets:
                attempt.commit_sent = packet.endswith("COMMIT")
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
            attempt.commit_sent = False
            await conn.rollback()
            expect.new = False
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
    conn: aiomysql.Connection,
    attempt: Attempt,
    ops: Sequence[Operation],
    job_id: Optional[str],
    marker: bytes,
    expect: Expect,
) -> Optional[List[Applied]]:
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
        current = await _current(conn, ops)
        now = now_us()
        results, changed, new_last = plan(ops, current, last, now)
        # Would an optimistic path have done? Try it next time if so.
        expect.new, expect.same = not current, not changed
        if not changed and job_id is None:
            await conn.rollback()  # nothing to write: nothing to confirm either
            return results
        set_time, when = batch_time(now, len(changed))
        if set_time:
            await cur.execute(set_time)
        if changed:
            rows = [
                (r.addon_id, r.sha256, r.version, STATUS_CODE[r.status], r.serial)
                for r in changed.values()
            ]
            for i in range(0, len(rows), CHUNK):
                await cur.execute(
                    f"INSERT INTO registrations ({_COLUMNS}) VALUES "
                    + row_values(rows[i : i + CHUNK], when)
                    + " ON DUPLICATE KEY UPDATE version = VALUES(version), "
                    "status = VALUES(status), serial = VALUES(serial), "
                    "updated_at = VALUES(updated_at)"
                )
            await cur.execute("UPDATE counters SET value = %s WHERE name = 'serial'", (new_last,))
        if job_id is not None:
            await cur.execute(
                "UPDATE jobs SET status = %s, results = %s WHERE id = %s",
                (JOB_DONE, encode_results(ops, results), job_id),
            )
        await cur.execute(_marker_insert(marker, _outcome(results), when))
    attempt.commit_sent = True
    await conn.commit()
    return results


async def recover_batch(
    conn: aiomysql.Connection,
    node: Node,
    same: bool,
    ops: Sequence[Operation],
    marker: bytes,
) -> Optional[List[Applied]]:
    """The batch's results if its marker is on ``node``; None if it certainly is
    not committed; BackendError if this node cannot tell."""
    outcome = await _find_marker(
        conn, node, same, "SELECT outcome FROM batches WHERE id = %s", marker
    )
    if outcome is None:
        return None
    current = await _current(conn, ops)
    return [
        Applied(current.get(op.key), created=flag == "c", changed=flag != "-")
        for op, flag in zip(ops, outcome[0])
    ]


async def create_job(
    conn: aiomysql.Connection,
    attempt: Attempt,
    job_id: str,
    owner: str,
    ops: Sequence[Operation],
) -> None:
    """Store a queued job: one autocommitted INSERT (the job's row is its own marker)."""
    attempt.commit_sent = True  # autocommit: once sent, its fate is unknown till answered
    async with conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO jobs (id, owner, status, operations, created_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            (job_id, owner, JOB_QUEUED, encode_operations(ops), from_us(now_us())),
        )


async def find_job(
    conn: aiomysql.Connection, node: Node, same: bool, job_id: str
) -> Optional[bool]:
    """True if the job is stored on ``node``; None if it certainly is not;
    BackendError if this node cannot tell."""
    found = await _find_marker(conn, node, same, "SELECT 1 FROM jobs WHERE id = %s", job_id)
    return True if found is not None else None


async def prune_markers(conn: aiomysql.Connection) -> None:
    """Delete up to 10,000 markers older than a day."""
    async with conn.cursor() as cur:
        await cur.execute(
            "DELETE FROM batches WHERE created_at < %s LIMIT 10000",
            (from_us(now_us() - _MARKER_DAYS * 86_400_000_000),),
        )


def _marker_insert(marker: bytes, outcome: str, when: str) -> str:
    return (
        f"INSERT INTO batches (id, outcome, created_at) VALUES (X'{marker.hex()}', '{outcome}', "
        f"{when})"
    )


def _outcome(results: Sequence[Applied]) -> str:
    """Each operation's outcome as one letter: c created, u changed, - the same."""
    return "".join("c" if a.created else "u" if a.changed else "-" for a in results)


async def _find_marker(
    conn: aiomysql.Connection, node: Node, same: bool, sql: str, marker: Any
) -> Optional[Any]:
    """The marker's row, or None when the node can say for certain it is not
    committed; BackendError when it cannot say.

    * The same node: behind the counter row's lock, which the unconfirmed
      transaction held until it committed or rolled back.
    * A Galera node: after a causal read, it has applied every transaction the
      cluster certified — and a transaction the cluster did not certify did
      not commit anywhere.
    * An asynchronous replica: the marker proves the commit; its absence
      proves nothing (the old primary may have committed and not sent it).
    """
    async with conn.cursor() as cur:
        if same:
            await conn.begin()
            await cur.execute("SELECT value FROM counters WHERE name = 'serial' FOR UPDATE")
            await cur.execute(sql, (marker,))
            row = await cur.fetchone()
            await conn.rollback()
            return row
        if node.state.galera:
            await cur.execute(CAUSAL + sql, (marker,))
            return await cur.fetchone()
        await cur.execute(sql, (marker,))
        row = await cur.fetchone()
    if row is None:
        raise BackendError(f"node {node} cannot tell whether the write committed")
    return row
