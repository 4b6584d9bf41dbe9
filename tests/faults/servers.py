"""Private MariaDB and Redis servers for fault tests: kill, restart, pause, resume.

The shared MariaDB (3306) and Redis (6379) serve every other test and
session, and must never be stopped or signalled. A fault test starts its own:

* :class:`PrivateMariaDB` — ``mariadbd`` on a free loopback port over a
  datadir of its own, copied from a pristine one that
  :func:`make_pristine_datadir` builds once per test session
  (``mariadb-install-db``, then the ``addonreg`` database). Durable as in
  production (``innodb_flush_log_at_trx_commit=1``), small and quick
  otherwise (64 MB buffer pool, 4 MB redo log, no binary log). A start,
  crash recovery included, takes about 0.1 s here.
* :class:`PrivateRedis` — ``redis-server`` on a free port, nothing on disk.

Both offer ``start()`` (and again after a kill: the same port, the same
data, so a MariaDB start after ``kill9()`` is a crash recovery), ``kill9()``,
``stop()`` (a clean shutdown), ``pause()`` (``SIGSTOP``: the process holds
its sockets but answers nothing) and ``resume()`` (``SIGCONT``). Each
signals only the process it started, by its pid. ``start()`` returns the
seconds until the server answered.

:func:`need_programs` skips a test when a program is missing, or fails it
under ``ADDONREG_REQUIRE_SERVICES=1`` (the pattern of conftest's
``need_mysql``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence, TypeVar

import pymysql
import pytest
import redis

from tests.conftest import REQUIRE_SERVICES, free_port

__all__ = [
    "PrivateServer",
    "PrivateMariaDB",
    "PrivateRedis",
    "make_pristine_datadir",
    "need_programs",
    "unavailable",
    "find_program",
    "DATABASE",
]

DATABASE = "addonreg"
"""The database the pristine datadir holds (empty; ``addonreg serve`` makes the tables)."""

# Options the datadir is made with and every start repeats (a redo log size
# that differs from the datadir's would be resized on each start).
_INNODB = ["--innodb-log-file-size=4M", "--innodb-data-file-path=ibdata1:10M:autoextend"]
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")

S = TypeVar("S", bound="PrivateServer")


def find_program(name: str) -> Optional[str]:
    """The path of ``name`` on ``$PATH`` or in the sbin directories (mariadbd lives there)."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))


def need_programs(*names: str) -> None:
    """Skip (or fail, under ``ADDONREG_REQUIRE_SERVICES=1``) when a program is missing."""
    missing = [name for name in names if find_program(name) is None]
    if missing:
        unavailable(f"fault tests need {', '.join(missing)} (not installed)")


def unavailable(reason: str) -> None:
    """Skip the test for ``reason``, or fail it under ``ADDONREG_REQUIRE_SERVICES=1``."""
    if REQUIRE_SERVICES:
        pytest.fail(reason + " (ADDONREG_REQUIRE_SERVICES=1: not skipping)")
    pytest.skip(reason)


def _as_root() -> List[str]:
    # mariadbd refuses to run as root unless told to; as another user it runs as that user.
    return ["--user=root"] if os.geteuid() == 0 else []


class PrivateServer:
    """One server process of a test's own; see the module docstring.

    Subclasses give :meth:`command` and :meth:`answers` (a quick check that
    the server takes requests).
    """

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.log = workdir / f"{self.name}.log"

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc is not None else None
        return f"<{type(self).__name__} 127.0.0.1:{self.port} pid={pid}>"

    def command(self) -> List[str]:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process and return at once (:meth:`start` also waits for it to answer)."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )

    def start(self, timeout: float = 30) -> float:
        """Start (again), on the same port and data; the seconds until it answered."""
        started = time.monotonic()
        self.spawn()
        self.wait_answers(started, timeout)
        return time.monotonic() - started

    def wait_answers(self, started: float, timeout: float) -> None:
        """Wait until the spawned process answers; killed, with its log in the error,
        when it exits or ``timeout`` seconds after ``started`` (a liveness bound)."""
        assert self.proc is not None
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() - started > timeout:
                self.kill9()
                raise RuntimeError(
                    f"{self.name} did not start within {timeout} s:\n"
                    + self.log.read_text(errors="replace")[-3000:]
                )
            time.sleep(0.02)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self!r} is not running")
        self.proc.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def kill9(self) -> None:
        """SIGKILL and wait: no shutdown, whatever was not durable is lost."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> None:
        """A clean shutdown (SIGTERM), SIGKILL past ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a paused one too
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def close(self) -> None:
        """Gone, whatever its state (a paused process dies of SIGKILL too)."""
        self.kill9()

    def __enter__(self: S) -> S:
        """Started; closed when the block ends, however it ends."""
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def make_pristine_datadir(path: Path) -> Path:
    """A datadir made by ``mariadb-install-db``, with an empty ``addonreg`` database; ``path``.

    Root may connect over TCP without a password
    (``--auth-root-authentication-method=normal``: the default, unix_socket
    authentication, admits only local socket clients).
    """
    install = [
        find_program("mariadb-install-db") or "mariadb-install-db",
        "--no-defaults",
        f"--datadir={path}",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        *_as_root(),
        *_INNODB,
    ]
    result = subprocess.run(install, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError("mariadb-install-db failed:\n" + result.stdout + result.stderr)
    with PrivateMariaDB(path.parent, path) as server:
        server.query(f"CREATE DATABASE {DATABASE}", database=None)
        server.stop()  # cleanly: the copies start without crash recovery
    return path


class PrivateMariaDB(PrivateServer):
    """``mariadbd`` over ``datadir`` (see the module docstring); root, no password."""

    name = "mariadb"

    def __init__(
        self,
        workdir: Path,
        datadir: Path,
        options: Sequence[str] = (),
        socket_dir: Optional[Path] = None,
    ) -> None:
        """``options`` come last on the command line, so they override the defaults
        (``--log-bin`` after ``--skip-log-bin`` turns the binary log on); ``socket_dir``
        holds the socket and pid file (default: a short directory of its own under
        ``/tmp``, removed by :meth:`close`)."""
        super().__init__(workdir)
        self.datadir = datadir
        self.options = list(options)
        # A unix socket path must stay under ~100 bytes; pytest's tmp paths can be long.
        self._own_socket_dir = socket_dir is None
        self._socket_dir = str(socket_dir) if socket_dir else tempfile.mkdtemp(prefix="fh-mdb-")

    @classmethod
    def from_pristine(
        cls, pristine: Path, workdir: Path, options: Sequence[str] = ()
    ) -> "PrivateMariaDB":
        """A server over a fresh copy of ``pristine`` (a copy is quicker than an install)."""
        datadir = workdir / "datadir"
        shutil.copytree(pristine, datadir, symlinks=True)
        return cls(workdir, datadir, options)

    def url(self, port: Optional[int] = None) -> str:
        """The storage URL of ``addonreg serve`` for this server (or for ``port``, a link
        in front of it)."""
        return f"mysql://root@127.0.0.1:{port or self.port}/{DATABASE}"

    def command(self) -> List[str]:
        return [
            find_program("mariadbd") or "mariadbd",
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            f"--socket={self._socket_dir}/sock",
            f"--pid-file={self._socket_dir}/pid",
            # Its own tmpdir: a server deletes every #sql* file of its tmpdir as it starts,
            # and one sharing /tmp would delete other servers' temporary tables (10.11.19
            # then crashes in GROUP_CONCAT's create_tmp_table cleanup; see bench/results).
            f"--tmpdir={self._socket_dir}",
            "--bind-address=127.0.0.1",
            "--skip-networking=0",
            *_as_root(),
            *_INNODB,
            "--innodb-buffer-pool-size=64M",
            "--innodb-flush-log-at-trx-commit=1",
            "--skip-log-bin",
            "--max-connections=200",
            "--skip-name-resolve",
            *self.options,
        ]

    def connect(
        self, database: Optional[str] = DATABASE, timeout: float = 2, user: str = "root"
    ) -> pymysql.connections.Connection:
        """A pymysql connection as ``user`` (autocommit); the caller closes it."""
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user=user,
            password="",
            database=database,
            autocommit=True,
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
        )

    def answers(self) -> bool:
        try:
            self.connect(database=None, timeout=1).close()
            return True
        except pymysql.MySQLError:
            return False

    def query(self, sql: str, params: tuple = (), database: Optional[str] = DATABASE) -> list:
        """Rows of one statement, on a connection of its own."""
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()

    def close(self) -> None:
        super().close()
        if self._own_socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)


class PrivateRedis(PrivateServer):
    """``redis-server`` on a free port; no persistence (a restart starts empty)."""

    name = "redis"

    def command(self) -> List[str]:
        return [
            find_program("redis-server") or "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.workdir),
            "--protected-mode",
            "no",
        ]

    def url(self, port: Optional[int] = None) -> str:
        """A pub/sub URL on this server (or on ``port``, a link in front of it), with a
        channel of its own."""
        return f"redis://127.0.0.1:{port or self.port}/0?channel=faults-{self.port}"

    def answers(self) -> bool:
        client = redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1
        )
        try:
            return bool(client.ping())
        except (redis.exceptions.RedisError, OSError):
            return False
        finally:
            client.close()
