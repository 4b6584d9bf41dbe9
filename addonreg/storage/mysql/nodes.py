"""The nodes of a MySQL deployment: their addresses, pools, and what they say of themselves.

A storage URL names one node or a list of them, in the order writes should
prefer them::

    mysql://user:password@host1:3306,host2:3306,host3:3306/database[?pool_size=N]

Each :class:`Node` owns two connection pools, made on first use (a node
that is never used costs nothing): ``reads`` (``pool_size`` autocommit
connections, so none keeps an old snapshot) and ``writer`` (one connection,
with a short lock wait). :meth:`Node.ask` asks the server what it is (the
store runs it on the read pool, within ``storage_timeout``: ``_probe``):

* a **Galera** node (``@@wsrep_on``) accepts writes and serves current reads
  while ``wsrep_ready`` is on, it is ``Synced`` and its component is
  ``Primary``;
* any other server accepts writes while ``@@read_only`` is off; a replica
  reports its replication threads and ``Seconds_Behind_Master`` (the
  account needs the ``SLAVE MONITOR`` or ``REPLICATION CLIENT`` privilege;
  without it, only the node's serial tells how far behind it is).

Every node also reports its **serial**: the ``counters`` row, which every
write transaction updates under its row lock. Replication applies
transactions in commit order, so a node whose serial is ``s`` holds every
change up to ``s`` and none after: that is how the store knows whether a
read node has caught up with what a process has already seen.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import warnings
from typing import Any, Dict, Optional, Tuple
from urllib.parse import parse_qsl, unquote

import aiomysql
import pymysql

from .. import BackendError
from .sql import GROUP_CONCAT_MAX_LEN

__all__ = [
    "NodeAddress",
    "ClusterURL",
    "parse_url",
    "NodeState",
    "Node",
    "DRIVER_ERRORS",
    "unreachable",
]

DRIVER_ERRORS = (pymysql.err.MySQLError, OSError, asyncio.TimeoutError, RuntimeError)

_EXPECTED = "mysql://user:password@host:port[,host:port…]/database[?pool_size=N]"


@dataclasses.dataclass(frozen=True)
class NodeAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class ClusterURL:
    """A parsed ``mysql://`` URL: one account and database over one or more nodes."""

    user: str
    password: str
    nodes: Tuple[NodeAddress, ...]
    database: str
    pool_size: Optional[int] = None


def _address(text: str) -> NodeAddress:
    host, colon, port = text.rpartition(":")
    if not colon:
        host, port = text, "3306"
    host = host.strip("[]")  # [::1]:3306
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad node {text!r} (expected host:port)")
    return NodeAddress(host, int(port))


def parse_url(url: str) -> ClusterURL:
    """The parts of a ``mysql://`` storage URL; ValueError naming what is wrong."""
    scheme, sep, rest = url.partition("://")
    if scheme != "mysql" or not sep:
        raise ValueError(f"expected {_EXPECTED}")
    rest, _, query = rest.partition("?")
    netloc, slash, database = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    if not database.strip("/") or not hosts:
        raise ValueError(f"expected {_EXPECTED}")
    nodes = tuple(_address(part) for part in hosts.split(","))
    if len(set(nodes)) != len(nodes):
        raise ValueError("a node is named twice")
    options = dict(parse_qsl(query, keep_blank_values=True))
    pool_size = options.pop("pool_size", None)
    if options:
        raise ValueError(f"unknown option {next(iter(options))!r} (expected pool_size)")
    if pool_size is not None and (not pool_size.isdigit() or not 1 <= int(pool_size) <= 1000):
        raise ValueError("pool_size must be an integer from 1 to 1000")
    return ClusterURL(
        unquote(user) if at else "root",
        unquote(password),
        nodes,
        unquote(database.strip("/")),
        int(pool_size) if pool_size else None,
    )


@dataclasses.dataclass(frozen=True)
class NodeState:
    """What a node said of itself when last asked (:meth:`Node.ask`)."""

    reachable: bool
    galera: bool = False
    writable: bool = False
    # Galera: synced, ready, in the primary component. Otherwise: not a replica,
    # or a replica whose threads both run. False also for a Galera node that
    # is joining or donating: its data may be behind.
    current: bool = False
    lag: Optional[float] = None  # seconds, as the engine reports it (None: unknown)
    serial: Optional[int] = None
    error: str = ""
    code: Optional[int] = None  # the server's error number, when it gave one

    def as_dict(self) -> Dict[str, Any]:
        shown: Dict[str, Any] = {"reachable": self.reachable}
        if self.reachable:
            shown.update(
                engine="galera" if self.galera else "mysql",
                writable=self.writable,
                lag=self.lag,
                serial=self.serial,
            )
        else:
            shown["error"] = self.error
        return shown


UNREACHABLE = NodeState(False, error="not asked yet")


class Node:
    """One server of the deployment, its pools, and its last :class:`NodeState`."""

    def __init__(self, url: ClusterURL, address: NodeAddress, pool_size: int, timeout: float):
        self.address = address
        self.pool_size = pool_size
        self.timeout = timeout
        self.state = UNREACHABLE
        # A serial this node was found behind when a read needed it: reads skip the
        # node until a look (store.py, _probe) finds it past (store.py, _read_node).
        self.wanted = 0
        self._connect_args = dict(
            host=address.host,
            port=address.port,
            user=url.user,
            password=url.password,
            db=url.database,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=max(timeout, 1.0),
        )
        self._session = f"SET SESSION group_concat_max_len = {GROUP_CONCAT_MAX_LEN}"
        self._reads: Optional[aiomysql.Pool] = None
        self._writer: Optional[aiomysql.Pool] = None
        self._opening = asyncio.Lock()

    def __str__(self) -> str:
        return str(self.address)

    async def reads(self) -> aiomysql.Pool:
        """The read pool (``pool_size`` autocommit connections, made on demand)."""
        if self._reads is None:
            async with self._opening:
                if self._reads is None:
                    self._reads = await self._pool(self.pool_size, self._session)
        return self._reads

    async def writer(self) -> aiomysql.Pool:
        """The writer's pool: one connection. A lock left by a writer cut off
        mid-transaction is waited for at most as long as a commit may take, not
        InnoDB's 50 s default."""
        if self._writer is None:
            async with self._opening:
                if self._writer is None:
                    wait = max(1, math.ceil(2 * (self.timeout or 30)))
                    self._writer = await self._pool(
                        1, f"{self._session}, innodb_lock_wait_timeout = {wait}"
                    )
        return self._writer

    async def _pool(self, size: int, init: str) -> aiomysql.Pool:
        # minsize=0: the service starts (and answers from cache, or 503) even
        # while the node is down; connections are made on first use.
        try:
            return await aiomysql.create_pool(
                minsize=0, maxsize=size, pool_recycle=3600, init_command=init, **self._connect_args
            )
        except DRIVER_ERRORS as exc:
            raise BackendError(f"MySQL node {self} unavailable", exc) from exc

    def connect_args(self, **changes: Any) -> Dict[str, Any]:
        return dict(self._connect_args, **changes)

    async def ask(self, conn: aiomysql.Connection) -> NodeState:
        """What the node is now, asked on ``conn`` (see the module doc)."""
        lag: Optional[float]
        async with conn.cursor() as cur:
            await cur.execute("SELECT @@read_only, @@wsrep_on")
            read_only, wsrep_on = await cur.fetchone()
            serial: Optional[int] = None
            try:
                await cur.execute("SELECT value FROM counters WHERE name = 'serial'")
                row = await cur.fetchone()
                serial = int(row[0]) if row else 0
            except pymysql.err.ProgrammingError:
                pass  # no schema yet (initdb creates it)
            if wsrep_on:
                await cur.execute(
                    "SHOW GLOBAL STATUS WHERE Variable_name IN "
                    "('wsrep_ready', 'wsrep_local_state', 'wsrep_cluster_status')"
                )
                status = {name.lower(): str(value) for name, value in await cur.fetchall()}
                current = (
                    status.get("wsrep_ready", "").upper() == "ON"
                    and status.get("wsrep_local_state") == "4"  # Synced
                    and status.get("wsrep_cluster_status", "").lower() == "primary"
                )
                return NodeState(
                    True, True, current and not read_only, current, 0.0 if current else None, serial
                )
            current, lag = True, 0.0
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # PyMySQL: a deprecation note on some servers
                    await cur.execute("SHOW SLAVE STATUS")
                    row = await cur.fetchone()
                    names = [d[0] for d in cur.description or ()]
            except pymysql.err.OperationalError:  # no privilege: the serial says enough
                row, lag = None, None
            if row is not None:
                replica = dict(zip(names, row))
                running = (
                    replica.get("Slave_SQL_Running") == "Yes"
                    and replica.get("Slave_IO_Running") == "Yes"
                )
                behind = replica.get("Seconds_Behind_Master")
                current = running and behind is not None
                lag = float(behind) if current and behind is not None else None
            return NodeState(True, False, not read_only, current, lag, serial)

    async def close(self) -> None:
        for pool in (self._reads, self._writer):
            if pool is not None:
                pool.close()
                await pool.wait_closed()
        self._reads = self._writer = None


def unreachable(exc: BaseException) -> NodeState:
    """Why a node did not answer, shown on ``/__heartbeat__``: a kind and a code,
    never the driver's text (it may name hosts, users, SQL)."""
    if isinstance(exc, BackendError):
        # The driver's exception: its original, or its cause (DatabaseMissing's).
        exc = exc.original or exc.__cause__ or exc
    if isinstance(exc, asyncio.TimeoutError):
        return NodeState(False, error="timed out")
    if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return NodeState(False, error=f"MySQL error {exc.args[0]}", code=exc.args[0])
    return NodeState(False, error=exc.__class__.__name__)
