"""Private MariaDB clusters on loopback: a Galera cluster; a primary with a GTID replica.

Both are built from :class:`~tests.faults.servers.PrivateMariaDB` servers of
the tests' own (own datadirs, free ports below the ephemeral range: see
:func:`quiet_ports`; never the shared 3306), and both
start from the session's pristine datadir
(:func:`~tests.faults.servers.make_pristine_datadir`: root over TCP with
no password, an empty ``addonreg`` database).

* :class:`GaleraCluster` — ``n`` ``mariadbd`` nodes with wsrep on (the
  ``galera-4`` provider), state transfer by rsync, each node with its own
  ports for SQL, group communication, IST and SST (:class:`GaleraNode`
  writes its option file). Node 0 bootstraps the cluster from a copy of
  the pristine datadir; the others join with empty datadirs and receive a
  full state transfer (SST) from a synced node. A node killed with
  ``kill -9`` and started again receives what it missed from another node's
  write-set cache (IST). Timeouts of group communication are shortened for
  tests (:data:`GALERA_PROVIDER_OPTIONS`): the survivors of a killed node
  form a new primary component in 3.0-3.4 s here instead of about 5 s with
  the defaults; writes on them stall meanwhile. ``heal()`` restarts killed
  nodes (or builds a new cluster on the same ports when no primary
  component is left).
* :class:`ReplicaSet` — a primary with a binary log and one replica
  following it by GTID (``MASTER_USE_GTID=slave_pos``), ``read_only``,
  optionally semi-synchronous (``AFTER_SYNC``). Offers the replica's SQL
  thread stopped and started, the primary killed, the runbook's promotion
  of the replica, GTID positions and a wait until the replica caught up.
  Its URLs name :data:`APP_USER`, an account that ``read_only`` stops
  (root bypasses ``read_only``).

Nodes are numbered from 0 in the order of the cluster's URL list.

Galera's rsync state transfer refuses to run as root, so when the tests
run as root the nodes run as the ``mysql`` user (``user=mysql``: mariadbd
drops root itself) in a directory under ``/var/tmp`` owned by that user
(pytest's temporary directories are root's only). The replica set runs as
root like the other private servers.

Every wait polls one helper, :func:`poll`, with a liveness bound, for an
event the servers report (``wsrep_local_state_comment`` = ``Synced``,
``wsrep_cluster_size``, ``MASTER_GTID_WAIT``), never a fixed sleep.
:func:`need_galera` and :func:`need_replication` skip a test when the
programs are missing, or fail it under ``ADDONREG_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import pwd
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, TypeVar

import pymysql

from tests.faults.servers import (
    _INNODB,
    DATABASE,
    PrivateMariaDB,
    find_program,
    need_programs,
    unavailable,
)

__all__ = [
    "APP_USER",
    "GALERA_PROVIDER",
    "GALERA_PROVIDER_OPTIONS",
    "GaleraCluster",
    "GaleraNode",
    "LIVENESS",
    "QUORUM",
    "ReplicaSet",
    "need_galera",
    "need_replication",
    "poll",
    "quiet_ports",
]

GALERA_PROVIDER = "/usr/lib/galera/libgalera_smm.so"
"""The wsrep provider of Debian's ``galera-4`` package."""

GALERA_PROVIDER_OPTIONS = {
    # Shorter than Galera's defaults so that a kill -9 scenario is short: a silent
    # peer is suspected after 2 s (default 5 s) and declared dead after 3 s
    # (default 15 s); a view change gives up after 3 s (default 7.5 s). The
    # survivors of a kill -9 form a new primary component in 2-3 s here, and
    # writes on them wait that long. Keepalives go every 0.5 s (default 1 s),
    # checked every 0.5 s (the default), well within the suspect timeout.
    # Production keeps the defaults (docs/operations.md).
    "evs.suspect_timeout": "PT2S",
    "evs.inactive_timeout": "PT3S",
    "evs.install_timeout": "PT3S",
    "evs.keepalive_period": "PT0.5S",
    "evs.inactive_check_period": "PT0.5S",
    # The write-set cache IST is served from: a rejoining node catches up from
    # it instead of a full copy (default 128 MB, preallocated per node).
    "gcache.size": "32M",
}
"""Galera provider options of every node, besides its addresses (see the comments)."""

LIVENESS = 60.0
"""Liveness bound of a node's start (SST or IST included) and of each wait, in seconds."""

APP_USER = "addonreg"
"""The replica set's account for the service: no password, every privilege on the
``addonreg`` database and the monitoring ones (replica status, binary log
positions), but not ``READ ONLY ADMIN``: ``read_only`` stops its writes. Root
holds every privilege, so ``read_only`` does not stop root (MariaDB 10.11)."""

APP_GRANTS = (
    f"CREATE USER '{APP_USER}'@'127.0.0.1'",
    f"GRANT ALL PRIVILEGES ON `{DATABASE}`.* TO '{APP_USER}'@'127.0.0.1'",
    f"GRANT SLAVE MONITOR, BINLOG MONITOR ON *.* TO '{APP_USER}'@'127.0.0.1'",
)

QUORUM = 10.0
"""Liveness bound of the survivors of a kill forming a new primary component, in
seconds (3.0-3.4 s measured here with :data:`GALERA_PROVIDER_OPTIONS`)."""

MYSQL_USER = "mysql"
"""The user the Galera nodes run as when the tests run as root."""

T = TypeVar("T")


def poll(
    predicate: Callable[[], Optional[T]],
    what: str,
    timeout: float = LIVENESS,
    every: float = 0.05,
    alive: Callable[[], bool] = lambda: True,
) -> T:
    """Call ``predicate()`` until it returns a true value, and return it.

    ``timeout`` is a liveness bound (the wait fails past it), not a latency;
    ``alive()`` false (a server process exited) fails the wait at once.
    A ``pymysql`` error raised by ``predicate`` counts as "not yet".
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except pymysql.MySQLError:
            value = None
        if value:
            return value
        if not alive():
            raise RuntimeError(f"a server exited while waiting for: {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s (liveness bound): {what}")
        time.sleep(every)


def quiet_ports(n: int) -> List[int]:
    """``n`` distinct loopback ports free now, below the ephemeral range.

    ``free_port()`` (``bind(0)``) hands out ephemeral ports, which any
    outgoing connection on the machine may also take; a cluster node binds
    its IST and SST ports only when it rejoins, maybe minutes later. Ports
    below ``ip_local_port_range`` are taken only by listeners that chose them.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    candidates = list(range(max(1024, low - 12000), low))
    random.shuffle(candidates)
    held: List[socket.socket] = []
    try:
        for port in candidates:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            held.append(sock)  # held until all are chosen: distinct
            if len(held) == n:
                return [s.getsockname()[1] for s in held]
    finally:
        for sock in held:
            sock.close()
    raise RuntimeError(f"not {n} free ports below {low}")


def need_galera() -> None:
    """Skip (or fail under ``ADDONREG_REQUIRE_SERVICES=1``) without mariadbd, rsync
    (the state transfer), ss or lsof (which the state transfer script needs) or the
    galera-4 provider."""
    need_programs("mariadb-install-db", "mariadbd", "rsync")
    if find_program("ss") is None and find_program("lsof") is None:
        unavailable("Galera's rsync state transfer needs ss (iproute2) or lsof")
    if not os.path.exists(GALERA_PROVIDER):
        unavailable(f"Galera tests need {GALERA_PROVIDER} (galera-4, not installed)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(MYSQL_USER)
        except KeyError:
            unavailable(f"Galera nodes run as the {MYSQL_USER!r} user when tests run as root")


def need_replication() -> None:
    """Skip (or fail) without mariadbd."""
    need_programs("mariadb-install-db", "mariadbd")


def _owned_dir(prefix: str) -> Path:
    """A new directory under /var/tmp that the nodes' user may enter and write to."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    _give_to_node_user(path)
    return path


def _give_to_node_user(path: Path) -> None:
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam(MYSQL_USER)
    os.chown(path, user.pw_uid, user.pw_gid)
    for parent, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), user.pw_uid, user.pw_gid, follow_symlinks=False)


def _log_tails(servers: Sequence[PrivateMariaDB], size: int = 2000) -> str:
    """The end of each server's log, for an error that would otherwise lose it."""
    parts = []
    for server in servers:
        text = server.log.read_text(errors="replace") if server.log.exists() else "(no log)"
        parts.append(f"--- {server!r} {server.log}:\n{text[-size:]}")
    return "\n".join(parts)


def _variables(server: PrivateMariaDB, sql: str) -> Dict[str, str]:
    """``SHOW … VARIABLES/STATUS`` rows as a dict."""
    return {name: value for name, value in server.query(sql, database=None)}


class GaleraNode(PrivateMariaDB):
    """One node of a :class:`GaleraCluster`; its options in ``<workdir>/node.cnf``.

    The option file is what the rsync state transfer script reads too
    (``--defaults-file``), so nothing of the machine's ``/etc/mysql`` applies.
    """

    name = "galera"

    def __init__(self, workdir: Path, index: int, ports: Sequence[int]) -> None:
        """``ports``: SQL, group communication, IST, SST."""
        workdir.mkdir()
        super().__init__(workdir, workdir / "datadir", socket_dir=workdir)
        self.datadir.mkdir()
        self.index = index
        self.port, self.gcomm_port, self.ist_port, self.sst_port = ports
        self.config = workdir / "node.cnf"
        self.bootstrap = False
        self.start_position: Optional[str] = None

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc is not None else None
        return f"<GaleraNode {self.index} 127.0.0.1:{self.port} gcomm:{self.gcomm_port} pid={pid}>"

    def write_config(self, cluster_name: str, gcomm_ports: Iterable[int]) -> None:
        provider_options = {
            "gmcast.listen_addr": f"tcp://127.0.0.1:{self.gcomm_port}",
            "ist.recv_addr": f"127.0.0.1:{self.ist_port}",
            **GALERA_PROVIDER_OPTIONS,
        }
        options = {
            "datadir": self.datadir,
            "port": self.port,
            "socket": f"{self._socket_dir}/sock",
            "pid-file": f"{self._socket_dir}/pid",
            "tmpdir": self._socket_dir,  # not /tmp: see PrivateMariaDB.command
            "bind-address": "127.0.0.1",
            "skip-name-resolve": "1",
            "skip-log-bin": "1",
            "innodb_log_file_size": _INNODB[0].split("=", 1)[1],
            "innodb_data_file_path": _INNODB[1].split("=", 1)[1],
            "innodb_buffer_pool_size": "64M",
            "innodb_flush_log_at_trx_commit": "1",
            "max_connections": "200",
            # What Galera requires of the server.
            "binlog_format": "ROW",
            "default_storage_engine": "InnoDB",
            "innodb_autoinc_lock_mode": "2",
            "wsrep_on": "ON",
            "wsrep_provider": GALERA_PROVIDER,
            "wsrep_cluster_name": cluster_name,
            "wsrep_cluster_address": "gcomm://"
            + ",".join(f"127.0.0.1:{port}" for port in gcomm_ports),
            "wsrep_node_name": f"node{self.index}",
            "wsrep_node_address": f"127.0.0.1:{self.gcomm_port}",
            "wsrep_node_incoming_address": f"127.0.0.1:{self.port}",
            "wsrep_sst_method": "rsync",
            "wsrep_sst_receive_address": f"127.0.0.1:{self.sst_port}",
            "wsrep_provider_options": '"'
            + "; ".join(f"{k}={v}" for k, v in provider_options.items())
            + '"',
        }
        if os.geteuid() == 0:
            options["user"] = MYSQL_USER
        lines = ["[mysqld]"] + [f"{name} = {value}" for name, value in options.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def command(self) -> List[str]:
        extra = ["--wsrep-new-cluster"] if self.bootstrap else []
        if self.start_position:
            extra.append(f"--wsrep-start-position={self.start_position}")
        return [find_program("mariadbd") or "mariadbd", f"--defaults-file={self.config}", *extra]

    def spawn(self) -> None:
        # As Debian's service does (galera_recovery): a node that ran before
        # recovers its position from InnoDB first, so that it asks for the
        # write-sets it missed (IST) rather than a full copy (SST). A killed
        # node's grastate.dat says seqno -1, and mariadbd does not look further.
        self.start_position = None
        if not self.bootstrap and (self.datadir / "grastate.dat").exists():
            self.start_position = self.recover_position()
        super().spawn()

    def recover_position(self) -> Optional[str]:
        """``uuid:seqno`` of the last transaction committed in this node's InnoDB
        (``mariadbd --wsrep-recover``), or None when it cannot tell."""
        command = [find_program("mariadbd") or "mariadbd", f"--defaults-file={self.config}"]
        result = subprocess.run(
            [*command, "--wsrep-recover"],
            capture_output=True,
            text=True,
            timeout=LIVENESS,
            cwd=self.workdir,
        )
        with open(self.log, "a") as log:
            log.write(result.stdout + result.stderr)
        found = re.search(r"WSREP: Recovered position: (\S+:-?\d+)", result.stderr + result.stdout)
        if found is None or found.group(1).endswith(":-1"):
            return None
        return found.group(1)

    def status(self) -> Dict[str, str]:
        """The node's ``wsrep_%`` status variables."""
        return _variables(self, "SHOW GLOBAL STATUS LIKE 'wsrep%%'")

    def synced(self, size: int) -> bool:
        """Ready for SQL, synced, in a primary component of ``size`` nodes."""
        status = self.status()
        return (
            status.get("wsrep_ready") == "ON"
            and status.get("wsrep_local_state_comment") == "Synced"
            and status.get("wsrep_cluster_status") == "Primary"
            and status.get("wsrep_cluster_size") == str(size)
        )


class GaleraCluster:
    """``n`` Galera nodes on loopback; see the module docstring.

    ``start()`` bootstraps node 0, then joins the others (all at once) and
    returns when every node is synced in one component of ``n``;
    ``close()`` kills every node and removes the directory, whatever the
    state. Usable as a context manager (started, then closed).
    """

    def __init__(self, pristine: Path, n: int = 3) -> None:
        self.pristine = pristine
        self.timings: Dict[str, float] = {}
        """Seconds of the last :meth:`start` (``up``) and :meth:`start_node` (``node<i>``)."""
        self._build(n)

    def _build(self, n: int, like: Sequence[GaleraNode] = ()) -> None:
        # New directories and nodes; on the ports of ``like`` when given.
        self.root = _owned_dir("addonreg-galera-")
        if like:
            ports = [p for n in like for p in (n.port, n.gcomm_port, n.ist_port, n.sst_port)]
        else:
            ports = quiet_ports(4 * n)
        self.nodes = [
            GaleraNode(self.root / f"node{i}", i, ports[4 * i : 4 * i + 4]) for i in range(n)
        ]
        name = f"addonreg-test-{self.nodes[0].gcomm_port}"
        for node in self.nodes:
            node.write_config(name, [n.gcomm_port for n in self.nodes])
        _give_to_node_user(self.root)

    def __repr__(self) -> str:
        return f"<GaleraCluster {self.nodes}>"

    # -- URLs

    def url(self, nodes: Optional[Sequence[int]] = None) -> str:
        """The storage URL listing ``nodes`` (default: all, in order)."""
        indices = range(len(self.nodes)) if nodes is None else nodes
        hosts = ",".join(f"127.0.0.1:{self.nodes[i].port}" for i in indices)
        return f"mysql://root@{hosts}/{DATABASE}"

    def node_url(self, i: int) -> str:
        """The storage URL of node ``i`` alone."""
        return self.nodes[i].url()

    # -- life cycle

    def start(self) -> float:
        """Bootstrap node 0, join the others; seconds until all were synced."""
        started = time.monotonic()
        first = self.nodes[0]
        shutil.copytree(self.pristine, first.datadir, symlinks=True, dirs_exist_ok=True)
        _give_to_node_user(first.datadir)
        first.bootstrap = True
        try:
            first.start(LIVENESS)
        finally:
            first.bootstrap = False  # a restart of node 0 joins the running cluster
        self.wait_synced([0], size=1)
        self._grant_root_over_tcp()
        for node in self.nodes[1:]:
            node.spawn()
        for node in self.nodes[1:]:
            node.wait_answers(started, LIVENESS)
        self.wait_synced()
        self.timings["up"] = time.monotonic() - started
        return self.timings["up"]

    def _grant_root_over_tcp(self) -> None:
        # The pristine datadir admits root over TCP already; stated here so that
        # the cluster does not depend on it. On the bootstrap node only: Galera
        # replicates account statements to every node, joiners get them by SST.
        first = self.nodes[0]
        for host in ("127.0.0.1", "localhost"):
            first.query(f"CREATE USER IF NOT EXISTS 'root'@'{host}'", database=None)
            first.query(
                f"GRANT ALL PRIVILEGES ON *.* TO 'root'@'{host}' WITH GRANT OPTION", database=None
            )

    def kill(self, i: int) -> None:
        """``kill -9`` node ``i`` (the survivors re-form without it; see :meth:`wait_synced`)."""
        self.nodes[i].kill9()

    def stop(self, i: int) -> None:
        """A clean shutdown of node ``i`` (it leaves the cluster at once)."""
        self.nodes[i].stop()

    def start_node(self, i: int) -> float:
        """Start node ``i`` again (it rejoins: IST, or SST if it must); seconds until
        every running node is synced in a component of them all."""
        started = time.monotonic()
        self.nodes[i].start(LIVENESS)
        self.wait_synced()
        self.timings[f"node{i}"] = time.monotonic() - started
        return self.timings[f"node{i}"]

    def heal(self) -> None:
        """Every node running and synced: start those that are not; when that does not
        bring the cluster back (no primary component left), a new cluster on the same
        ports (empty but for the pristine datadir)."""
        try:
            # A node killed just before may still be counted by the others: wait
            # until they form a component of the running nodes, and a primary one.
            self.wait_synced(timeout=QUORUM)
            for i, node in enumerate(self.nodes):
                if not node.running:
                    self.start_node(i)
            self.wait_synced(size=len(self.nodes))
        except (RuntimeError, TimeoutError):
            self.rebuild()

    def rebuild(self) -> float:
        """A new cluster on the same ports (:meth:`close`, then :meth:`start`)."""
        self.close()
        self._build(len(self.nodes), self.nodes)
        return self.start()

    def close(self) -> None:
        """Kill every node, remove every file; safe to call in any state."""
        for node in self.nodes:
            node.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "GaleraCluster":
        try:
            self.start()
        except BaseException as exc:
            exc.add_note(_log_tails(self.nodes))
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- state

    def status(self, i: int) -> Dict[str, str]:
        """Node ``i``'s ``wsrep_%`` status variables."""
        return self.nodes[i].status()

    def running(self) -> List[int]:
        return [i for i, node in enumerate(self.nodes) if node.running]

    def wait_synced(
        self,
        nodes: Optional[Sequence[int]] = None,
        size: Optional[int] = None,
        timeout: float = LIVENESS,
    ) -> float:
        """Wait until each of ``nodes`` (default: the running ones) is synced in a
        primary component of ``size`` nodes (default: as many as are running); the
        seconds it took. Raises ``TimeoutError`` past ``timeout`` (none running: at once)."""
        started = time.monotonic()
        indices = self.running() if nodes is None else list(nodes)
        if not indices:
            raise TimeoutError("no node is running")
        expected = len(self.running()) if size is None else size
        targets = [self.nodes[i] for i in indices]
        try:
            poll(
                lambda: all(node.synced(expected) for node in targets),
                f"nodes {indices} synced in a primary component of {expected}",
                timeout=timeout,
                alive=lambda: all(node.running for node in targets),
            )
        except (RuntimeError, TimeoutError) as exc:
            exc.add_note(_log_tails(targets))
            raise
        return time.monotonic() - started


class ReplicaSet:
    """A primary and one replica following it by GTID; see the module docstring.

    Both run with a binary log (``log_slave_updates`` too: a promoted
    replica serves the same history), ``gtid_strict_mode`` and
    ``sync_binlog=1``; the replica with ``read_only=1``. With
    ``semi_sync=True`` they start semi-synchronous (``AFTER_SYNC``): the
    primary answers a commit once the replica has the transaction in its
    relay log, or after ``semi_sync_timeout_ms`` without an answer, when it
    falls back to asynchronous replication without telling its clients
    (``Rpl_semi_sync_master_status`` turns ``OFF``).

    ``close()`` kills both and removes the directory. A context manager.
    """

    def __init__(
        self, pristine: Path, semi_sync: bool = False, semi_sync_timeout_ms: int = 1000
    ) -> None:
        self.pristine = pristine
        self.initial_semi_sync = semi_sync
        self.semi_sync_timeout_ms = semi_sync_timeout_ms
        self.timings: Dict[str, float] = {}
        """Seconds of the last :meth:`start` (``up``)."""
        self._build()

    def _build(self, ports: Sequence[int] = ()) -> None:
        # New directories and servers; on ``ports`` (primary, replica) when given.
        self.root = Path(tempfile.mkdtemp(prefix="addonreg-replicas-", dir="/var/tmp"))
        common = [
            "--log-bin=mariadb-bin",
            "--log-slave-updates=1",
            "--binlog-format=ROW",
            "--sync-binlog=1",
            "--gtid-strict-mode=1",
            "--rpl-semi-sync-master-wait-point=AFTER_SYNC",
            f"--rpl-semi-sync-master-timeout={self.semi_sync_timeout_ms}",
        ]
        if self.initial_semi_sync:
            common += ["--rpl-semi-sync-master-enabled=1", "--rpl-semi-sync-slave-enabled=1"]
        self.primary = self._server("primary", [*common, "--server-id=1"])
        self.replica = self._server("replica", [*common, "--server-id=2", "--read-only=1"])
        for server, port in zip((self.primary, self.replica), ports or quiet_ports(2)):
            server.port = port
        self.promoted = False

    def _server(self, name: str, options: List[str]) -> PrivateMariaDB:
        workdir = self.root / name
        workdir.mkdir()
        return PrivateMariaDB.from_pristine(self.pristine, workdir, options)

    def __repr__(self) -> str:
        return f"<ReplicaSet primary={self.primary!r} replica={self.replica!r}>"

    # -- URLs

    def url(self, user: str = APP_USER) -> str:
        """The storage URL listing the primary, then the replica (the writer's list),
        as ``user`` (default :data:`APP_USER`, whom ``read_only`` stops; root is not)."""
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.replica.port}"
        return f"mysql://{user}@{hosts}/{DATABASE}"

    def read_url(self, user: str = APP_USER) -> str:
        """The storage URL of the replica alone (a read node), as ``user``."""
        return f"mysql://{user}@127.0.0.1:{self.replica.port}/{DATABASE}"

    # -- life cycle

    def start(self) -> float:
        """Start both, point the replica at the primary, wait until it replicates;
        the seconds it took."""
        started = time.monotonic()
        for server in (self.primary, self.replica):
            server.spawn()
        for server in (self.primary, self.replica):
            server.wait_answers(started, LIVENESS)
        # On the primary and in its binary log: the replica creates the same account
        # by replicating it. (An account made on the replica alone would need
        # SET sql_log_bin=0: under gtid_strict_mode, a local transaction in the
        # replica's binary log stops its SQL thread at the primary's next one.)
        for sql in APP_GRANTS:
            self.primary.query(sql, database=None)
        self.replica.query(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, MASTER_USER='root',"
            " MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
            (self.primary.port,),
            database=None,
        )
        self.replica.query("START SLAVE", database=None)
        poll(
            lambda: self.replication_running(),
            "the replica's IO and SQL threads running",
            alive=self._alive,
        )
        if self.semi_sync():
            poll(
                lambda: self.semi_sync_status() == "ON",
                "semi-synchronous replication on",
                alive=self._alive,
            )
        self.wait_caught_up()
        self.timings["up"] = time.monotonic() - started
        return self.timings["up"]

    def _alive(self) -> bool:
        if not (self.primary.running and self.replica.running):
            return False
        # A replica whose SQL thread stopped on an error will not start by waiting.
        try:
            errno = self.replica_status().get("Last_SQL_Errno")
        except pymysql.MySQLError:
            return True  # running, not answering now: the wait's bound decides
        if errno:
            raise RuntimeError(f"the replica's SQL thread stopped: error {errno}")
        return True

    def heal(self) -> None:
        """Back to how :meth:`start` left it: replicating, caught up, semi-synchronous
        as configured; after a promotion or a server lost, a new set on the same ports
        (empty but for the pristine datadir)."""
        try:
            if self.promoted or not self._alive():
                raise RuntimeError("rebuild")
            if not self.replication_running():
                self.replica.query("START SLAVE", database=None)
                poll(self.replication_running, "the replica replicating", alive=self._alive)
            if self.semi_sync() != self.initial_semi_sync:
                self.set_semi_sync(self.initial_semi_sync)
            self.wait_caught_up()
        except (RuntimeError, TimeoutError, pymysql.MySQLError):
            self.rebuild()

    def rebuild(self) -> float:
        """A new set on the same ports (:meth:`close`, then :meth:`start`)."""
        self.close()
        self._build((self.primary.port, self.replica.port))
        return self.start()

    def close(self) -> None:
        """Kill both, remove every file; safe in any state."""
        for server in (self.primary, self.replica):
            server.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "ReplicaSet":
        try:
            self.start()
        except BaseException as exc:
            exc.add_note(_log_tails([self.primary, self.replica]))
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- faults and the runbook

    def stop_sql_thread(self) -> None:
        """The replica stops applying (it still receives: its relay log grows)."""
        self.replica.query("STOP SLAVE SQL_THREAD", database=None)

    def start_sql_thread(self) -> None:
        self.replica.query("START SLAVE SQL_THREAD", database=None)

    def kill_primary(self) -> None:
        """``kill -9`` the primary."""
        self.primary.kill9()

    def promote(self, timeout: float = LIVENESS) -> None:
        """The runbook's promotion of the replica. The caller has chosen it (the
        replica with the highest GTID received) and stopped writes to the old
        primary (or it is dead).

        First the replica applies everything it received (``START SLAVE
        SQL_THREAD``, then ``MASTER_GTID_WAIT`` up to ``Gtid_IO_Pos``): a
        semi-synchronous primary acknowledges a commit once the replica has it
        in its relay log, applied or not, and ``RESET SLAVE ALL`` deletes the
        relay log. Then ``STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=0``.
        """
        received = self.replica_status().get("Gtid_IO_Pos", "")
        self.replica.query("START SLAVE SQL_THREAD", database=None)  # a note if running
        if received:
            self._gtid_wait(received, timeout)
        for sql in ("STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only=0"):
            self.replica.query(sql, database=None)
        self.promoted = True

    def set_semi_sync(self, on: bool) -> None:
        """Semi-synchronous (``AFTER_SYNC``) replication on or off, on both servers;
        the replica's IO thread restarts to tell the primary."""
        value = 1 if on else 0
        self.primary.query("SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_SYNC", database=None)
        self.primary.query(
            "SET GLOBAL rpl_semi_sync_master_timeout = %s",
            (self.semi_sync_timeout_ms,),
            database=None,
        )
        self.primary.query("SET GLOBAL rpl_semi_sync_master_enabled = %s", (value,), None)
        self.replica.query("SET GLOBAL rpl_semi_sync_slave_enabled = %s", (value,), None)
        self.replica.query("STOP SLAVE IO_THREAD", database=None)
        self.replica.query("START SLAVE IO_THREAD", database=None)
        poll(
            lambda: self.semi_sync_status() == ("ON" if on else "OFF"),
            f"semi-synchronous replication {'on' if on else 'off'}",
            alive=self._alive,
        )

    # -- state

    def semi_sync(self) -> bool:
        """Whether the primary is configured semi-synchronous (whatever its status)."""
        value = _variables(
            self.primary, "SHOW GLOBAL VARIABLES LIKE 'rpl_semi_sync_master_enabled'"
        )
        return value.get("rpl_semi_sync_master_enabled") == "ON"

    def semi_sync_status(self) -> str:
        """The primary's ``Rpl_semi_sync_master_status``: ``ON`` while it waits for the
        replica, ``OFF`` when disabled or fallen back to asynchronous."""
        status = _variables(self.primary, "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'")
        return status.get("Rpl_semi_sync_master_status", "OFF")

    def replica_status(self) -> Dict[str, Any]:
        """The replica's ``SHOW SLAVE STATUS`` as a dict (empty once promoted)."""
        conn = self.replica.connect(database=None)
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute("SHOW SLAVE STATUS")
                row = cur.fetchone()
                return dict(row) if row else {}
        finally:
            conn.close()

    def replication_running(self) -> bool:
        status = self.replica_status()
        return status.get("Slave_IO_Running") == "Yes" and status.get("Slave_SQL_Running") == "Yes"

    def primary_gtid(self) -> str:
        """The primary's ``gtid_binlog_pos``: the last transaction it wrote."""
        return self.primary.query("SELECT @@GLOBAL.gtid_binlog_pos", database=None)[0][0]

    def replica_gtid(self) -> str:
        """The replica's ``gtid_slave_pos``: the last transaction it applied."""
        return self.replica.query("SELECT @@GLOBAL.gtid_slave_pos", database=None)[0][0]

    def wait_caught_up(self, timeout: float = LIVENESS) -> None:
        """Wait until the replica has applied everything the primary has written."""
        self._gtid_wait(self.primary_gtid(), timeout)

    def _gtid_wait(self, target: str, timeout: float) -> None:
        # Up to ``target`` applied on the replica, or TimeoutError.
        conn = self.replica.connect(database=None, timeout=timeout + 5)
        try:
            with conn.cursor() as cur:
                # The server's own wait: returns 0 once applied, -1 past the timeout.
                cur.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (target, timeout))
                (result,) = cur.fetchone()
        finally:
            conn.close()
        if result != 0:
            raise TimeoutError(
                f"not within {timeout} s (liveness bound): the replica at {target}"
                f" (it is at {self.replica_gtid()!r})"
            )
