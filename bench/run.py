"""The benchmark suite of addonreg: one command, ``bench/run.py`` (``make bench``).

What it does
    1. Data set. ``--rows`` registrations (default 1,000,000) over ``--addons``
       add-ons (default 100,000), made by ``quick.make_dataset`` (ids
       ``addon-N@bench.example``, sha256 from hashlib: always the same), written
       as CSV and loaded with ``addonreg import --batch-size 5000`` (the real
       write path: batcher, one serial per row). With ``--storage mysql`` it goes
       into the MariaDB database ``addonreg_bench``, with a ``bench_dataset`` row
       saying what was loaded; a later run whose ``--rows``/``--addons`` match
       and whose row count checks out reuses it instead of seeding again
       (``--reseed`` forces it). With ``--storage sqlite`` the file is
       ``bench/.data/addonreg-bench-<rows>-<addons>.sqlite3``, reused the same way.
    2. Servers, all on 127.0.0.1, started here and stopped in ``finally``:
       ``--processes N`` ``addonreg serve`` processes on one port (SO_REUSEPORT),
       with ``ADDONREG_PUBSUB=redis://127.0.0.1:6379/0?channel=bench-<uuid>``
       when N > 1 (``local://`` for one), ``ADDONREG_CACHE_SIZE`` smaller than
       the data set (default rows / 10: 100,000 for 1M), Hawk credentials for the
       mixed run; and the baselines, at the same process count: N bare Tornado
       processes (``bench/baseline.py --reuse-port``: one handler, a fixed JSON
       body of the size of the service's single-file answer) and nginx
       (``/usr/sbin/nginx`` with a config of its own under a temporary prefix,
       ``daemon off``, N workers, ``reuseport``) serving a static file of that
       same size for every path and method (``try_files`` + ``error_page 405
       =200``, so POST and PUT get the file too). With N > 1 the hot GET
       scenario also runs against ONE extra service process and ONE extra
       Tornado process (``x1``), for the scaling figure in the same conditions.
    3. Read scenarios, each run ``--runs`` times per target (order rotated from
       run to run), ``--duration`` s each with ``wrk -t1 -c<connections>
       --latency --timeout 10s``, after one unrecorded ``--warmup`` run per
       target (which also warms the caches); medians are reported:

       * ``get-hot``: ``GET /v1/addons/{id}/files/{sha}`` round-robin over
         ``--hot`` (100) files spread over the set (``bench/replay.lua``);
       * ``get-uniform``: a uniformly random file of the WHOLE set for every
         request (``bench/replay.lua`` in random mode, over a file of all paths), so with the
         cache at 1/10 of the set ~90 % of requests miss and go to the database;
       * ``lookup-100``, ``lookup-1000``: ``POST /v1/lookup`` of 100 / 1,000
         registered files (10 different bodies each, 11,000 files in all, which
         fit in the cache); file checks/s = req/s x files;
       * ``old-addon``: the original ``POST /addon`` over the hot files;
       * ``mixed``: ``bench/mixed.lua``, hot GETs with every 20th request a
         pre-signed Hawk ``PUT`` of a new file (5 % writes), beside the same
         script with no writes; the script times reads and writes apart, so
         the read p50/p99 while writes flow stands next to the read-only one.
         Its PUTs go into the read database under ``mixed-N@bench.example``
         and are deleted after the scenario (and at start, should a run have
         been cut short), so the data set stays as seeded.

       Every answer of a read scenario must be a 200 and no socket error may
       occur (timeouts included), on every target: otherwise the scenario is
       marked FAILED with the reason and the server logs' tails, the others
       still run, and the exit code is 1.
    4. Write scenarios (MariaDB only), through ``bench/writes.py``'s ``Bench``:
       ``PUT`` of new files at 64 connections (service, bare Tornado, nginx),
       ``POST /v1/registrations`` of 1,000 and of 5,000 operations at 4
       connections (service), requests pre-signed before each run, each sent
       once. They run against a SEPARATE group of N service processes on the
       scratch database ``addonreg_bench_scratch``, whose tables are dropped
       and created again before every run (so the read data set is never
       touched). MariaDB's global ``Com_commit`` before and after gives
       writes per transaction.
    5. Resources: before every run the peak RSS (VmHWM) of each server process
       is reset (``/proc/PID/clear_refs`` ← 5) and read after it, so the peak
       of a scenario is its own; CPU time of each server process, of wrk
       (``RUSAGE_CHILDREN``) and of MariaDB, and the busy share of every CPU,
       over each run.
    6. Memory per cached entry: one more service process with
       ``ADDONREG_CACHE_SIZE=1100000``; its RSS after a small warm-up, then
       after 1,000 ``POST /v1/lookup`` of 1,000 distinct registered files each
       (every file of a 1M set once), the cache size read from
       ``/__metrics__`` (``addonreg_cache_entries{cache="files"}``): bytes per
       entry = RSS delta / entries added.
    7. Profiles: with ``--profile S`` (default 8), py-spy records every service
       process during one extra, unrecorded run of ``get-hot`` and of
       ``lookup-1000``; the hottest functions go to the report.
    8. Results: ``bench/results/<date>.json`` (every run's numbers, the
       machine), ``<date>.md`` (tables of medians, ratios to both baselines,
       p50/p99, peak RSS, the targets and where each stands, profiles) and
       ``<date>.png`` (throughput and p99 per scenario; needs matplotlib, the
       ``bench`` extra: ``pip install -e '.[bench]'``).

Pinning
    With taskset and at least two CPUs, wrk runs on the last CPU. Server
    process i (service, Tornado, nginx worker alike) runs on CPU i modulo the
    CPU count: with one process that is CPU 0 and wrk has the other CPU to
    itself; with two processes on a 2-CPU machine the second server shares the
    wrk CPU, so the two-process figure is NOT a measure of two free cores. The
    ``x1`` processes run on CPU 0. MariaDB and Redis are not pinned.
    ``--no-pin`` leaves everything to the scheduler.

Run: ``.venv/bin/python bench/run.py [--storage mysql|sqlite] [--processes N]
[--rows 1000000 --addons 100000] [--runs 5] [--duration 5]`` (``--help``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import hashlib
import http.client
import importlib.metadata
import json
import math
import os
import platform
import random
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(1, str(REPO_DIR))

import quick  # noqa: E402
import writes  # noqa: E402
from baseline import fixed_body  # noqa: E402
from quick import (  # noqa: E402
    BenchError,
    Row,
    Server,
    file_path,
    git_commit,
    hot_files,
    lookup_body,
    make_dataset,
    pinned,
    write_csv,
)
from writes import (  # noqa: E402
    CREDENTIAL_ID,
    SKEW,
    Bench,
    Case,
    Database,
    cpus_busy_s,
    find_mariadb_pid,
    process_cpu_s,
    put_body,
    signed,
    summarize_profile,
)

HOST = "127.0.0.1"
RESULTS_DIR = BENCH_DIR / "results"
DATA_DIR = BENCH_DIR / ".data"
REPLAY_LUA = BENCH_DIR / "replay.lua"
MIXED_LUA = BENCH_DIR / "mixed.lua"
SIGNED_LUA = BENCH_DIR / "signed.lua"
READS_MYSQL_URL = "mysql://root@127.0.0.1:3306/addonreg_bench"
SCRATCH_MYSQL_URL = "mysql://root@127.0.0.1:3306/addonreg_bench_scratch"
REDIS_URL = "redis://127.0.0.1:6379/0"
NGINX = "/usr/sbin/nginx"
DATASET_GENERATOR = "quick.make_dataset/1"
MIXED_PREFIX = "mixed-"
WRK_TIMEOUT = "10s"  # a request slower than this is a socket timeout, hence a failure
READY_SERVICE = r"addonreg listening on \S+:(?P<port>\d+) \(storage \w+, (?P<loop>\w+)\)"
MEMORY_ENTRIES = 1_000_000
LOOKUP_BODIES = 10  # different bodies per lookup scenario

TARGET_LABELS = {"service": "addonreg", "tornado": "bare Tornado", "nginx": "nginx",
                 "service-x1": "addonreg x1", "tornado-x1": "bare Tornado x1"}


class ScenarioFailed(Exception):
    """A scenario cannot be reported (errors, a dead server): the others go on."""


# Processes ---------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def proc_memory_kib(pid: int) -> Dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB (empty when it is gone)."""
    out: Dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0])
    except (OSError, ValueError):
        pass
    return out


def reset_peak_rss(pids: Sequence[int]) -> bool:
    """Reset VmHWM to the current RSS (``clear_refs`` 5, Linux >= 4.0); False if refused."""
    ok = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def children_of(pid: int) -> List[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        pass
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


class Group:
    """``count`` processes of one server sharing one port (SO_REUSEPORT).

    Quacks like :class:`quick.Server` where ``writes.Bench`` and this script
    need it (``name``, ``port``, ``proc``, ``url``, ``check_alive``,
    ``log_tail``), plus ``pids``."""

    def __init__(self, name: str, port: int, members: List[Server]) -> None:
        self.name = name
        self.port = port
        self.members = members

    @property
    def proc(self) -> Optional[subprocess.Popen]:
        return self.members[0].proc

    @property
    def pids(self) -> List[int]:
        return [m.proc.pid for m in self.members if m.proc is not None]

    @property
    def loop(self) -> str:
        return self.members[0].loop

    @property
    def process_names(self) -> List[str]:
        return [m.name for m in self.members]

    def url(self, path: str = "") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def start(self) -> "Group":
        for member in self.members:
            member.start()
            if member.port != self.port:
                raise BenchError(f"{member.name} listens on {member.port}, not {self.port}")
        return self

    def check_alive(self) -> None:
        for member in self.members:
            member.check_alive()

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(f"--- {m.name} ({m.log_path.name}):\n{m.log_tail(lines)}"
                         for m in self.members)

    def stop(self) -> None:
        for member in self.members:
            try:
                member.stop()
            except OSError as exc:
                print(f"bench: could not stop {member.name}: {exc}", file=sys.stderr)


class Nginx:
    """nginx serving one static file for every path and method, under a prefix of its own."""

    def __init__(self, prefix: Path, port: int, body: bytes, workers: int,
                 cpus: Optional[List[int]]) -> None:
        self.prefix = prefix
        self.port = port
        self.body = body
        self.workers = workers
        self.cpus = cpus
        self.name = f"nginx x{workers}"
        self.proc: Optional[subprocess.Popen] = None
        self.error_log = prefix / "logs" / "error.log"
        self.loop = "epoll"
        self._workers_seen: List[int] = []

    def config(self) -> str:
        p = self.prefix
        affinity = ""
        if self.cpus:
            width = max(os.cpu_count() or 1, max(self.cpus) + 1)
            masks = ["".join("1" if width - 1 - b == c else "0" for b in range(width))
                     for c in self.cpus]
            affinity = f"worker_cpu_affinity {' '.join(masks)};"
        return f"""# written by bench/run.py
worker_processes {self.workers};
{affinity}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    client_max_body_size 16m;
    client_body_buffer_size 1m;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    types {{ application/json json; }}
    default_type application/json;
    server {{
        listen {HOST}:{self.port} reuseport backlog=1024;
        root {p}/www;
        location / {{
            # Every path is the one file; POST and PUT (405 from the static
            # module) are answered with it too, as a 200.
            try_files /answer.json =404;
            error_page 405 =200 $uri;
        }}
    }}
}}
"""

    def start(self, timeout: float = 15.0) -> "Nginx":
        for sub in ("www", "logs", "tmp", "conf"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        (self.prefix / "www" / "answer.json").write_bytes(self.body)
        # Workers run as an unprivileged user when started as root: they must
        # be able to read the file (the temporary directory is 0700).
        for path in (self.prefix.parent, self.prefix, self.prefix / "www"):
            path.chmod(0o755)
        (self.prefix / "www" / "answer.json").chmod(0o644)
        conf = self.prefix / "conf" / "nginx.conf"
        conf.write_text(self.config())
        argv = [NGINX, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.error_log),
                "-g", f"daemon off; pid {self.prefix / 'nginx.pid'}; "
                      f"error_log {self.error_log} warn;"]
        with open(self.prefix / "logs" / "stdout.log", "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=self.prefix, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"nginx exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, body = quick.http(self.url("/"), timeout=2)
                if status == 200 and len(children_of(self.proc.pid)) >= self.workers:
                    self._workers_seen = children_of(self.proc.pid)
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise BenchError(f"nginx did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    @property
    def pids(self) -> List[int]:
        """The workers (they do the work), then the master."""
        if self.proc is None:
            return []
        return sorted(children_of(self.proc.pid)) + [self.proc.pid]

    @property
    def process_names(self) -> List[str]:
        return [f"nginx worker {i}" for i in range(self.workers)] + ["nginx master"]

    def url(self, path: str = "") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError(f"nginx is not running any more:\n{self.log_tail()}")
        if len(children_of(self.proc.pid)) < self.workers:
            raise BenchError(f"nginx lost a worker:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no error log)"

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        workers = set(self._workers_seen) | set(children_of(self.proc.pid))
        if self.proc.poll() is None:
            self.proc.terminate()  # nginx: fast shutdown, the workers with it
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in workers:  # only if the master died without them
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"nginx"):
                    os.kill(pid, signal.SIGKILL)


def stop_everything(stoppables: List[Any]) -> None:
    """Stop every server started (newest first), even when interrupted again meanwhile."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for item in reversed(stoppables):
            try:
                item.stop()
            except Exception as exc:  # keep stopping the others
                print(f"bench: could not stop {getattr(item, 'name', item)}: {exc}",
                      file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, previous)


# Pinning -----------------------------------------------------------------------

@dataclass
class Pinning:
    wrk: Optional[int]
    servers: Optional[List[int]]  # CPU of server process i (None: not pinned)
    description: str

    def server_cpu(self, i: int) -> Optional[int]:
        return None if self.servers is None else self.servers[i % len(self.servers)]

    def cpus_for(self, count: int) -> Optional[List[int]]:
        return None if self.servers is None else [self.server_cpu(i) for i in range(count)]


def choose_pinning(no_pin: bool, processes: int) -> Pinning:
    cpus = sorted(os.sched_getaffinity(0))
    if no_pin:
        return Pinning(None, None, "no pinning (--no-pin): wrk, servers, MariaDB all float")
    if shutil.which("taskset") is None or len(cpus) < 2:
        return Pinning(None, None, f"no pinning (taskset missing or CPUs {cpus} only)")
    wrk_cpu = cpus[-1]
    servers = cpus  # process i on cpus[i % len(cpus)]
    placed = ", ".join(f"process {i} on CPU {servers[i % len(servers)]}" for i in range(processes))
    shared = sorted({servers[i % len(servers)] for i in range(processes)} & {wrk_cpu})
    text = (f"taskset: wrk on CPU {wrk_cpu}; each server (addonreg, bare Tornado, nginx "
            f"worker): {placed}")
    if processes > 1:
        text += f"; 'x1' processes on CPU {servers[0]}"
    if shared:
        text += (f". The load generator SHARES CPU {shared[0]} with a server process: with "
                 f"{len(cpus)} CPUs it cannot be isolated, so the {processes}-process figures "
                 f"are a lower bound of what {processes} free cores would give")
    else:
        text += ". wrk has its CPU to itself"
    text += "; MariaDB and Redis not pinned (they float over all CPUs)"
    return Pinning(wrk_cpu, servers, text)


# Data set ----------------------------------------------------------------------

class ReadStore:
    """The read data set's storage: MariaDB database ``addonreg_bench`` or a SQLite file."""

    def __init__(self, kind: str, rows: int, addons: int) -> None:
        self.kind = kind
        self.rows = rows
        self.addons = addons
        if kind == "mysql":
            self.url = READS_MYSQL_URL
            self.path = None
        else:
            self.path = DATA_DIR / f"addonreg-bench-{rows}-{addons}.sqlite3"
            self.url = f"sqlite:///{self.path}"

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Any]:
        if self.kind == "mysql":
            conn = writes.mysql_connect(self.url)
            try:
                with conn.cursor() as cur:
                    cur.execute("CREATE DATABASE IF NOT EXISTS `addonreg_bench`")
                    cur.execute("USE `addonreg_bench`")
                    yield cur
            finally:
                conn.close()
        else:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                yield conn.cursor()
            finally:
                conn.close()

    def _has_table(self, cur, name: str) -> bool:
        if self.kind == "mysql":
            cur.execute("SELECT COUNT(*) FROM information_schema.tables "
                        "WHERE table_schema = 'addonreg_bench' AND table_name = %s", (name,))
        else:
            cur.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,))
        return cur.fetchone()[0] > 0

    def delete_mixed(self) -> int:
        """Delete the mixed scenario's writes (addon ids ``mixed-…``); how many."""
        if self.kind == "sqlite" and not self.path.exists():
            return 0
        with self._cursor() as cur:
            if not self._has_table(cur, "registrations"):
                return 0
            cur.execute("DELETE FROM registrations WHERE addon_id LIKE 'mixed-%'")
            return cur.rowcount

    def count_mixed(self) -> int:
        with self._cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM registrations WHERE addon_id LIKE 'mixed-%'")
            return int(cur.fetchone()[0])

    def cached(self) -> Tuple[bool, str, Dict[str, Any]]:
        """(usable as is, why, what the meta row says)."""
        if self.kind == "sqlite" and not self.path.exists():
            return False, f"no {self.path.relative_to(REPO_DIR)}", {}
        self.delete_mixed()
        with self._cursor() as cur:
            if not self._has_table(cur, "bench_dataset") or \
                    not self._has_table(cur, "registrations"):
                return False, "no data set recorded", {}
            cur.execute("SELECT rows_, addons, generator, seeded_at, seconds FROM bench_dataset")
            meta_row = cur.fetchone()
            if meta_row is None:
                return False, "no data set recorded", {}
            meta = dict(zip(("rows", "addons", "generator", "seeded_at", "seed_seconds"),
                            meta_row))
            meta["seeded_at"] = str(meta["seeded_at"])
            if (int(meta["rows"]), int(meta["addons"]), meta["generator"]) != \
                    (self.rows, self.addons, DATASET_GENERATOR):
                return False, (f"holds {meta['rows']} rows over {meta['addons']} add-ons "
                               f"({meta['generator']})"), meta
            cur.execute("SELECT COUNT(*) FROM registrations")
            count = int(cur.fetchone()[0])
            if count != self.rows:
                return False, f"registrations holds {count} rows, not {self.rows}", meta
        return True, f"{self.rows} rows seeded at {meta['seeded_at']}", meta

    def seed(self, rows: Sequence[Row], tmp: Path, env: Dict[str, str]) -> Dict[str, Any]:
        """Empty the storage, load ``rows`` with ``addonreg import``; timings."""
        if self.kind == "mysql":
            quick.reset_mysql(self.url)
        else:
            DATA_DIR.mkdir(exist_ok=True)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        csv_path = tmp / "seed.csv"
        started = time.monotonic()
        write_csv(rows, csv_path)
        csv_s = time.monotonic() - started
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "addonreg", "import", "--quiet", "--batch-size", "5000",
             str(csv_path)],
            env=dict(env, ADDONREG_STORAGE=self.url, ADDONREG_PUBSUB="local://"),
            cwd=REPO_DIR, capture_output=True, text=True, timeout=3600)
        import_s = time.monotonic() - started
        csv_path.unlink()
        if result.returncode != 0:
            raise BenchError(f"addonreg import failed ({result.returncode}): "
                             f"{result.stderr.strip()[-2000:] or result.stdout.strip()}")
        with self._cursor() as cur:
            mark = "%s" if self.kind == "mysql" else "?"
            cur.execute("DROP TABLE IF EXISTS bench_dataset")
            cur.execute("CREATE TABLE bench_dataset (rows_ BIGINT NOT NULL, addons BIGINT NOT "
                        "NULL, generator VARCHAR(64) NOT NULL, seeded_at VARCHAR(32) NOT NULL, "
                        "seconds DOUBLE NOT NULL)")
            cur.execute(f"INSERT INTO bench_dataset VALUES ({mark}, {mark}, {mark}, {mark}, "
                        f"{mark})", (len(rows), self.addons, DATASET_GENERATOR,
                                     datetime.datetime.now().isoformat(timespec="seconds"),
                                     round(import_s, 2)))
        return {"csv_seconds": round(csv_s, 2), "import_seconds": round(import_s, 2),
                "rows_per_s": round(len(rows) / import_s), "import_output": result.stdout.strip(),
                "method": "addonreg import --batch-size 5000 of a generated CSV"}


class MixedKeys:
    """New files for the mixed scenario's PUTs: ``mixed-N@bench.example``, never twice."""

    def __init__(self) -> None:
        self.salt = secrets.token_hex(4)
        self.next = 0

    def take(self, n: int) -> List[Row]:
        start, self.next = self.next, self.next + n
        return [(f"{MIXED_PREFIX}{i % 1000}@bench.example",
                 hashlib.sha256(f"addonreg-bench-mixed/{self.salt}/{i}".encode()).hexdigest(),
                 f"2.0.{i}") for i in range(start, start + n)]


# wrk ---------------------------------------------------------------------------

parse_wrk_common = quick.parse_wrk_common


_MIXED_LINE = re.compile(
    r"^mixed: reads (\d+) p50 (\d+) p90 (\d+) p99 (\d+) max (\d+); writes (\d+) p50 (\d+) "
    r"p90 (\d+) p99 (\d+) max (\d+); responses (\d+) non-2xx (\d+) unmatched (\d+) "
    r"writes_sent (\d+) of (\d+) exhausted (\d+) \((.*)\)$", re.MULTILINE)


def parse_mixed(output: str) -> Dict[str, Any]:
    numbers = parse_wrk_common(output)
    m = _MIXED_LINE.search(output)
    if not m:
        raise BenchError(f"no 'mixed:' line in wrk's output:\n{output}")
    g = [int(x) for x in m.groups()[:16]]
    numbers.update(
        reads=g[0], read_p50_ms=g[1] / 1e3, read_p90_ms=g[2] / 1e3, read_p99_ms=g[3] / 1e3,
        read_max_ms=g[4] / 1e3, writes=g[5], write_p50_ms=g[6] / 1e3, write_p90_ms=g[7] / 1e3,
        write_p99_ms=g[8] / 1e3, write_max_ms=g[9] / 1e3, responses=g[10], non_2xx=g[11],
        unmatched=g[12], writes_sent=g[13], writes_presigned=g[14], exhausted=g[15],
        statuses={k: int(v) for k, v in (i.split("=") for i in m[17].split())})
    numbers["reads_per_s"] = numbers["reads"] / numbers["duration_s"]
    numbers["writes_per_s"] = numbers["writes"] / numbers["duration_s"]
    return numbers


def run_wrk(argv: List[str], duration: int) -> Tuple[str, float]:
    """One bounded wrk run: its output and the CPU seconds it used."""
    return quick.wrk(argv, duration, margin=60)


class Meter:
    """CPU over one run: each server process, their sum, MariaDB, every CPU's busy share."""

    def __init__(self, pids: Sequence[int], mariadb_pid: Optional[int]) -> None:
        self.pids = list(pids)
        self.mariadb_pid = mariadb_pid

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.proc0 = [process_cpu_s(p) for p in self.pids]
        self.db0 = process_cpu_s(self.mariadb_pid)
        self.cpus0 = cpus_busy_s()

    def stop(self) -> Dict[str, Any]:
        elapsed = max(time.monotonic() - self.t0, 1e-6)
        per = []
        for pid, before in zip(self.pids, self.proc0):
            now = process_cpu_s(pid)
            per.append(None if now is None or before is None
                       else round(100 * (now - before) / elapsed, 1))
        out: Dict[str, Any] = {"elapsed_s": round(elapsed, 2), "per_process_cpu_pct": per,
                               "server_cpu_pct": round(sum(p or 0 for p in per), 1)}
        db = process_cpu_s(self.mariadb_pid)
        if db is not None and self.db0 is not None:
            out["mariadb_cpu_pct"] = round(100 * (db - self.db0) / elapsed, 1)
        for cpu, busy in cpus_busy_s().items():
            if cpu in self.cpus0:
                out[f"{cpu}_busy_pct"] = round(100 * (busy - self.cpus0[cpu]) / elapsed, 1)
        return out


# Scenarios ---------------------------------------------------------------------

class BaselineBench(Bench):
    """``writes.Bench``, except that the requests for the baselines (cases without a
    table: bare Tornado, nginx, which check nothing) carry one real signature copied
    rather than a new one each: nginx answers ~25,000 PUTs/s, and signing that many
    per run would take longer than Hawk's 60 s allow."""

    def write_requests(self, case: Case, count: int) -> Tuple[Path, float]:
        if case.table is not None:
            return super().write_requests(case, count)
        started = time.monotonic()
        port = case.server.port
        keys = self.keys.take(count)
        template = signed(self.hawk_key, port, "PUT", file_path(keys[0]), put_body(keys[0]))
        auth = template.split("\t")[2]
        lines = [f"PUT\t{file_path(k)}\t{auth}\t{put_body(k).decode()}" for k in keys]
        path = self.tmp / f"{case.scenario}-{case.target}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path, time.monotonic() - started


@dataclass
class ReadScenario:
    name: str
    description: str
    files_per_request: int
    script: Path
    script_args: List[str]
    targets: List[str]
    runs: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)
    failure: Optional[str] = None


def median(values: Sequence[Optional[float]]) -> Optional[float]:
    values = [float(v) for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: Sequence[Dict[str, Any]], keys: Sequence[str]) -> Dict[str, Any]:
    """Medians of ``keys``; min/max of req/s; peak RSS per process (max over runs)."""
    out: Dict[str, Any] = {}
    if not runs:
        return out
    for key in keys:
        out[f"{key}_median"] = median([r.get(key) for r in runs])
    rates = [r["requests_per_s"] for r in runs if r.get("requests_per_s") is not None]
    if rates:
        out["requests_per_s_min"], out["requests_per_s_max"] = min(rates), max(rates)
    for key in ("server_cpu_pct", "mariadb_cpu_pct"):
        out[f"{key}_median"] = median([r.get("cpu", {}).get(key) for r in runs])
    out["wrk_cpu_pct_median"] = median([r.get("wrk_cpu_pct") for r in runs])
    out["cache_hit_ratio_median"] = median([(r.get("cache") or {}).get("hit_ratio")
                                            for r in runs])
    peaks = [r.get("peak_rss_kib") or [] for r in runs]
    width = max((len(p) for p in peaks), default=0)
    out["peak_rss_kib"] = [max((p[i] for p in peaks if i < len(p) and p[i] is not None),
                               default=None) for i in range(width)]
    return out


class Suite:
    """Everything one run of the benchmark holds: servers, scenarios, results."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.started = datetime.datetime.now()
        self.t0 = time.monotonic()
        self.stem = f"{self.started:%Y-%m-%d-%H%M%S}"
        self.stoppables: List[Any] = []
        self.targets: Dict[str, Any] = {}
        self.pinning = choose_pinning(args.no_pin, args.processes)
        self.mariadb_pid = find_mariadb_pid()
        self.hawk_key = secrets.token_urlsafe(24)
        self.read_scenarios: List[ReadScenario] = []
        self.mixed: Dict[str, Any] = {"runs": {"read-only": [], "5% writes": []}}
        self.writes: Dict[str, Any] = {}
        self.memory: Dict[str, Any] = {}
        self.profiles: Dict[str, Any] = {}
        self.failures: Dict[str, str] = {}
        self.peak_reset_ok = True
        self.rng = random.Random()
        self.started_at_commit: Dict[str, str] = {}
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("ADDONREG_") and k != "PROMETHEUS_MULTIPROC_DIR"}
        self.env.update(ADDONREG_HOST=HOST, ADDONREG_EVENT_LOOP=args.event_loop,
                        ADDONREG_LOG_LEVEL="INFO", ADDONREG_ACCESS_LOG="false",
                        ADDONREG_HAWK_CREDENTIALS=f"{CREDENTIAL_ID}:{self.hawk_key}")
        self.store = ReadStore(args.storage, args.rows, args.addons)
        self.loadavg_start = os.getloadavg()
        self.commit_start = git_commit()  # what the servers load

    # Servers -----------------------------------------------------------------

    def pubsub_url(self) -> str:
        if self.args.processes > 1:
            return f"{REDIS_URL}?channel=bench-{uuid.uuid4().hex}"
        return "local://"

    def start_services(self, name: str, count: int, env: Dict[str, str],
                       first_cpu_index: int = 0) -> Group:
        port = free_port()
        env = dict(env, ADDONREG_PORT=str(port))
        slug = re.sub(r"\W+", "-", name).strip("-")
        members = [Server(f"{name}[{i}]" if count > 1 else name,
                          pinned([sys.executable, "-m", "addonreg", "serve"],
                                 self.pinning.server_cpu(first_cpu_index + i)),
                          env, self.tmp / f"{slug}-{i}.log", re.compile(READY_SERVICE))
                   for i in range(count)]
        group = Group(name, port, members)
        self.stoppables.append(group)
        self.started_at_commit[name] = git_commit()
        return group.start()

    def start_tornado(self, name: str, count: int, size: int) -> Group:
        port = free_port()
        slug = re.sub(r"\W+", "-", name).strip("-")
        members = [quick.baseline_server(f"{name}[{i}]" if count > 1 else name, size,
                                         self.args.event_loop, self.pinning.server_cpu(i),
                                         self.env, self.tmp / f"{slug}-{i}.log", port=port,
                                         reuse_port=True)
                   for i in range(count)]
        group = Group(name, port, members)
        self.stoppables.append(group)
        return group.start()

    def start_nginx(self, count: int, body: bytes) -> Nginx:
        nginx = Nginx(self.tmp / "nginx", free_port(), body, count,
                      self.pinning.cpus_for(count))
        self.stoppables.append(nginx)
        return nginx.start()

    # Measuring ---------------------------------------------------------------

    def wrk_argv(self, target: Any, script: Path, script_args: Sequence[str], duration: int
                 ) -> List[str]:
        return pinned(["wrk", "-t1", f"-c{self.args.connections}", f"-d{duration}s",
                       "--latency", "--timeout", WRK_TIMEOUT, "-s", str(script), target.url(),
                       "--", *script_args], self.pinning.wrk)

    @contextlib.contextmanager
    def resources(self, target: Any, into: Dict[str, Any]) -> Iterator[None]:
        """Peak RSS reset before, read after; CPU of the target, wrk, MariaDB, the CPUs."""
        pids = list(target.pids)
        if not reset_peak_rss(pids):
            self.peak_reset_ok = False
        meter = Meter(pids, self.mariadb_pid)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        meter.start()
        yield
        into["cpu"] = meter.stop()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        into["wrk_cpu_pct"] = round(100 * ((after.ru_utime + after.ru_stime)
                                           - (before.ru_utime + before.ru_stime))
                                    / into["cpu"]["elapsed_s"], 1)
        memory = [proc_memory_kib(p) for p in pids]
        into["pids"] = pids
        into["peak_rss_kib"] = [m.get("VmHWM") for m in memory]
        into["rss_kib"] = [m.get("VmRSS") for m in memory]

    def cache_counters(self, name: str) -> Optional[Dict[str, float]]:
        """Files-cache hits and misses of a ONE-process service target, from /__metrics__
        (with several processes a scrape answers for whichever process it reaches)."""
        target = self.targets[name]
        if not name.startswith("service") or len(target.pids) != 1:
            return None
        try:
            status, body = quick.http(target.url("/__metrics__"), timeout=5)
        except OSError:
            return None
        text = body.decode(errors="replace")
        out = {}
        for key in ("hits", "misses"):
            m = re.search(rf'^addonreg_cache_{key}_total\{{cache="files"\}} (\S+)$', text,
                          re.MULTILINE)
            if status != 200 or not m:
                return None
            out[key] = float(m[1])
        return out

    def measure_read(self, sc: ReadScenario, name: str, duration: int) -> Dict[str, Any]:
        target = self.targets[name]
        target.check_alive()
        extra: Dict[str, Any] = {}
        # A new random sequence every run (replay.lua random): replaying the same one would
        # find the files of the previous run in the cache.
        seed = str(self.rng.randrange(1, 2 ** 31))
        script_args = [a.replace("{seed}", seed) for a in sc.script_args]
        counters = self.cache_counters(name)
        with self.resources(target, extra):
            output, _ = run_wrk(self.wrk_argv(target, sc.script, script_args, duration),
                                duration)
        numbers = quick.parse_wrk(output)
        numbers.update(extra)
        if "{seed}" in "".join(sc.script_args):
            numbers["seed"] = int(seed)
        after = self.cache_counters(name)
        if counters and after:
            delta = {k: after[k] - counters[k] for k in counters}
            looked = delta["hits"] + delta["misses"]
            numbers["cache"] = dict(delta, hit_ratio=round(delta["hits"] / looked, 4)
                                    if looked else None)
        numbers["files_per_s"] = numbers["requests_per_s"] * sc.files_per_request
        problems = []
        if numbers["non_200"]:
            problems.append(f"{numbers['non_200']} of {numbers['responses']} answers were not "
                            f"200 ({numbers['non_200_statuses']})")
        errors = {k: v for k, v in numbers["socket_errors"].items() if v}
        if errors:
            problems.append(f"socket errors {errors}")
        if not numbers["responses"]:
            problems.append("no answer at all")
        if problems:
            raise ScenarioFailed(f"{sc.name} on {TARGET_LABELS[name]} ({target.name}): "
                                 + "; ".join(problems) + f"\nwrk:\n{output}\nserver log:\n"
                                 + target.log_tail())
        return numbers

    def run_read_scenario(self, sc: ReadScenario) -> None:
        a = self.args
        print(f"\n## {sc.name}: {sc.description}", flush=True)
        try:
            if a.warmup:
                for name in sc.targets:
                    self.measure_read(sc, name, a.warmup)
            for i in range(a.runs):
                shift = i % len(sc.targets)
                for name in sc.targets[shift:] + sc.targets[:shift]:
                    numbers = self.measure_read(sc, name, a.duration)
                    sc.runs.setdefault(name, []).append(numbers)
                    print(f"  run {i + 1} {TARGET_LABELS[name]:16} "
                          f"{numbers['requests_per_s']:9,.0f} req/s"
                          + (f" ({numbers['files_per_s']:,.0f} files/s)"
                             if sc.files_per_request > 1 else "")
                          + f"  p50 {numbers['p50_ms']:7.2f} ms  p99 {numbers['p99_ms']:7.2f} ms"
                          f"  CPU server {numbers['cpu']['server_cpu_pct']:5.1f}% "
                          f"wrk {numbers['wrk_cpu_pct']:5.1f}%  peak RSS "
                          + "/".join(f"{(k or 0) / 1024:.0f}" for k in numbers["peak_rss_kib"])
                          + " MiB", flush=True)
        except (ScenarioFailed, BenchError) as exc:
            sc.failure = str(exc)
            self.failures[sc.name] = str(exc)
            print(f"\n!!! SCENARIO {sc.name} FAILED: {exc}\n", file=sys.stderr, flush=True)

    # Mixed -------------------------------------------------------------------

    def run_mixed(self, reads_file: Path, every: int, rate_guess: float) -> None:
        a = self.args
        service = self.targets["service"]
        keys = MixedKeys()
        rate = {"value": rate_guess}
        print(f"\n## mixed: hot GETs with every {every}th request a pre-signed PUT of a new "
              f"file ({100 / every:.0f} % writes), beside the same script with no writes",
              flush=True)

        def once(write_every: int, duration: int, label: str) -> Dict[str, Any]:
            for attempt in range(4):
                service.check_alive()
                signed_file = self.tmp / "mixed-signed.txt"
                sign_s = 0.0
                count = 0
                if write_every:
                    count = math.ceil(rate["value"] * duration / write_every * 2) \
                        + 2 * a.connections + 10
                    t0 = time.monotonic()
                    lines = [signed(self.hawk_key, service.port, "PUT", file_path(k),
                                    put_body(k)) for k in keys.take(count)]
                    signed_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
                    sign_s = time.monotonic() - t0
                    if sign_s + duration + 10 > SKEW:
                        raise ScenarioFailed(f"mixed: signing {count} requests took "
                                             f"{sign_s:.1f} s; too long for Hawk's {SKEW} s")
                else:
                    signed_file.write_text("")
                extra: Dict[str, Any] = {}
                with self.resources(service, extra):
                    output, _ = run_wrk(self.wrk_argv(
                        service, MIXED_LUA, [str(reads_file), str(signed_file),
                                             f"{HOST}:{service.port}", str(write_every)],
                        duration), duration)
                numbers = parse_mixed(output)
                numbers.update(extra, signing_s=round(sign_s, 2), presigned=count,
                               attempt=attempt + 1)
                rate["value"] = max(rate["value"], numbers["requests_per_s"])
                if numbers["exhausted"] and numbers["non_2xx"] <= numbers["exhausted"]:
                    print(f"  {label}: the {count} pre-signed PUTs ran out; again with more",
                          flush=True)
                    rate["value"] *= 2
                    continue
                problems = []
                if numbers["non_2xx"]:
                    problems.append(f"{numbers['non_2xx']} answers not 2xx "
                                    f"({numbers['statuses']})")
                errors = {k: v for k, v in numbers["socket_errors"].items() if v}
                if errors:
                    problems.append(f"socket errors {errors}")
                if not numbers["reads"]:
                    problems.append("no read answered")
                if write_every and numbers["statuses"].get("201", 0) != numbers["writes"]:
                    problems.append(f"{numbers['writes']} writes answered but "
                                    f"{numbers['statuses'].get('201', 0)} were 201 (new files)")
                if numbers["unmatched"]:
                    problems.append(f"{numbers['unmatched']} answers could not be matched to "
                                    "their request")
                if problems:
                    raise ScenarioFailed("mixed (" + label + "): " + "; ".join(problems)
                                         + f"\nwrk:\n{output}\nserver log:\n"
                                         + service.log_tail())
                return numbers
            raise ScenarioFailed("mixed: ran out of pre-signed requests four times")

        variants = (("read-only", 0), ("5% writes", every))
        try:
            self.store.delete_mixed()
            if a.warmup:
                for label, write_every in variants:
                    once(write_every, a.warmup, f"warm-up {label}")
            for i in range(a.runs):
                order = variants if i % 2 == 0 else variants[::-1]
                for label, write_every in order:
                    numbers = once(write_every, a.duration, label)
                    self.mixed["runs"][label].append(numbers)
                    print(f"  run {i + 1} {label:10} reads {numbers['reads_per_s']:8,.0f}/s "
                          f"p50 {numbers['read_p50_ms']:6.2f} ms p99 "
                          f"{numbers['read_p99_ms']:6.2f} ms | writes "
                          f"{numbers['writes_per_s']:6,.0f}/s p50 "
                          f"{numbers['write_p50_ms']:6.2f} ms p99 "
                          f"{numbers['write_p99_ms']:6.2f} ms | wrk all p99 "
                          f"{numbers['p99_ms']:6.2f} ms", flush=True)
            acknowledged = sum(r["writes"] for r in self.mixed["runs"]["5% writes"])
            self.mixed["rows_written"] = self.store.count_mixed()
            self.mixed["acknowledged_in_recorded_runs"] = acknowledged
            if self.mixed["rows_written"] < acknowledged:
                raise ScenarioFailed(f"mixed: {acknowledged} PUTs acknowledged with 201 but "
                                     f"only {self.mixed['rows_written']} rows written")
        except (ScenarioFailed, BenchError) as exc:
            self.mixed["failure"] = str(exc)
            self.failures["mixed"] = str(exc)
            print(f"\n!!! SCENARIO mixed FAILED: {exc}\n", file=sys.stderr, flush=True)
        finally:
            with contextlib.suppress(Exception):
                self.mixed["rows_deleted_after"] = self.store.delete_mixed()

    # Writes ------------------------------------------------------------------

    def run_writes(self, answer_size: int) -> None:
        a = self.args
        print("\n## writes: PUT of new files (64 connections) and POST /v1/registrations of "
              "1,000 / 5,000 operations (4 connections), pre-signed, into the scratch database "
              f"{SCRATCH_MYSQL_URL.rsplit('/', 1)[1]} (tables dropped and created before every "
              "run)", flush=True)
        db = Database(SCRATCH_MYSQL_URL)
        try:
            db.reset()
            env = dict(self.env, ADDONREG_STORAGE=SCRATCH_MYSQL_URL,
                       ADDONREG_PUBSUB=self.pubsub_url())
            group = self.start_services(f"addonreg serve x{a.processes} (writes)",
                                        a.processes, env)
            bench = BaselineBench(a, self.tmp, db, self.hawk_key, self.pinning.wrk)
            put_size = writes.check_writer(group, bench.keys, self.hawk_key)
            writes.check_bulk(group, bench.keys, self.hawk_key)
            cases = [Case("put", "service", group, "put", 1, a.connections, "registrations",
                          3000.0),
                     Case("put", "tornado", self.targets["tornado"], "put", 1, a.connections,
                          None, 3000.0),
                     Case("put", "nginx", self.targets["nginx"], "put", 1, a.connections,
                          None, 10000.0)]
            cases += [Case(f"bulk-{n}", "service", group, "bulk", n, a.bulk_connections,
                           "registrations", 60_000 / n) for n in (1000, 5000)]

            def measure(case: Case, seconds: int, label: str) -> Dict[str, Any]:
                box: Dict[str, Any] = {}
                numbers = bench.measure(case, seconds, label,
                                        lambda: self.resources(case.server, box))
                numbers.update({k: box[k] for k in ("pids", "peak_rss_kib", "rss_kib",
                                                    "wrk_cpu_pct") if k in box})
                numbers["cpu_detail"] = box.get("cpu")
                return numbers

            if a.warmup:
                print("  warm-up (not recorded; calibrates how many requests to sign):")
                for case in cases:
                    seconds = max(a.warmup, 3) if case.kind == "bulk" else a.warmup
                    numbers = measure(case, seconds, "warm-up")
                    print(f"    {case.name:18} {numbers['registrations_per_s']:10,.0f} reg/s",
                          flush=True)
            for i in range(a.runs):
                shift = i % len(cases)
                for case in cases[shift:] + cases[:shift]:
                    numbers = measure(case, a.duration, f"round {i + 1}")
                    case.runs.append(numbers)
                    wpc = numbers["writes_per_commit"]
                    print(f"  run {i + 1} {case.name:18} {numbers['registrations_per_s']:10,.0f}"
                          f" reg/s {numbers['requests_per_s']:9,.1f} req/s  p50 "
                          f"{numbers['p50_ms']:7.1f} ms  p99 {numbers['p99_ms']:7.1f} ms  "
                          f"ΔCom_commit {numbers['delta_Com_commit']:6}  writes/COMMIT "
                          f"{'—' if wpc is None else f'{wpc:,.1f}'}  CPU server "
                          f"{numbers['cpu'].get('server_cpu_pct', 0):5.1f}%", flush=True)
            background = [r["delta_Com_commit"] for c in cases if c.table is None
                          for r in c.runs]
            self.writes = {
                "database": SCRATCH_MYSQL_URL, "put_answer_bytes": put_size,
                "baseline_answer_bytes": answer_size,
                "background_delta_Com_commit_in_baseline_runs": background,
                "cases": {c.name: {"scenario": c.scenario, "target": c.target,
                                   "kind": c.kind, "ops_per_request": c.ops_per_request,
                                   "connections": c.connections, "table": c.table,
                                   "processes": c.server.process_names,
                                   "summary": dict(c.summary(), **{
                                       k: v for k, v in summarize(c.runs, ()).items()
                                       if k in ("peak_rss_kib", "wrk_cpu_pct_median")}),
                                   "runs": c.runs} for c in cases}}
        except (ScenarioFailed, BenchError) as exc:
            self.writes["failure"] = str(exc)
            self.failures["writes"] = str(exc)
            print(f"\n!!! SCENARIO writes FAILED: {exc}\n", file=sys.stderr, flush=True)
        finally:
            for item in list(self.stoppables):
                if isinstance(item, Group) and item.name.endswith("(writes)"):
                    item.stop()
                    self.stoppables.remove(item)
            db.close()

    # Profiles ----------------------------------------------------------------

    def run_profile(self, sc: ReadScenario, seconds: int) -> None:
        py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) \
            or shutil.which("py-spy")
        if py_spy is None:
            self.profiles[sc.name] = {"error": "py-spy not found"}
            return
        service = self.targets["service"]
        try:
            service.check_alive()
            run_wrk(self.wrk_argv(service, sc.script, sc.script_args, max(self.args.warmup, 2)),
                    max(self.args.warmup, 2))
            raws = [self.tmp / f"profile-{sc.name}-{pid}.txt" for pid in service.pids]
            spies = [subprocess.Popen(
                [py_spy, "record", "--pid", str(pid), "--rate", "250", "--duration",
                 str(seconds), "--format", "raw", "--nonblocking", "--output", str(raw)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                text=True) for pid, raw in zip(service.pids, raws)]
            try:
                time.sleep(0.5)  # let py-spy attach
                output, _ = run_wrk(self.wrk_argv(service, sc.script, sc.script_args, seconds),
                                    seconds)
                errors = []
                for spy in spies:
                    _, err = spy.communicate(timeout=60)
                    if spy.returncode != 0:
                        errors.append(err.strip()[-300:])
            finally:
                for spy in spies:
                    if spy.poll() is None:
                        spy.kill()
                        spy.wait()
            merged = RESULTS_DIR / f"{self.stem}-profile-{sc.name}.txt"
            RESULTS_DIR.mkdir(exist_ok=True)
            with open(merged, "w") as out:
                for raw in raws:
                    if raw.exists():
                        out.write(raw.read_text(errors="replace"))
            summary = summarize_profile(merged)
            summary["run"] = {k: v for k, v in quick.parse_wrk(output).items()
                              if k in ("requests_per_s", "p50_ms", "p99_ms")}
            summary["processes"] = len(raws)
            if errors:
                summary["py_spy_errors"] = errors
            self.profiles[sc.name] = summary
            print(f"\n## profile {sc.name} (py-spy, {seconds} s, every service process; "
                  f"{summary['samples']} samples, {summary['file']}):")
            for frame, share in summary["self"][:10]:
                print(f"    self      {share:5.1f}%  {frame}")
            for frame, share in below_outer(summary["inclusive"])[:12]:
                print(f"    inclusive {share:5.1f}%  {frame}")
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            self.profiles[sc.name] = {"error": str(exc)}
            print(f"  profile {sc.name}: {exc}", file=sys.stderr)

    # Memory per cached entry ---------------------------------------------------

    def run_memory(self, rows: Sequence[Row]) -> None:
        entries = min(MEMORY_ENTRIES, len(rows))
        cache_size = max(MEMORY_ENTRIES, entries) + 100_000
        print(f"\n## memory per cached entry: one service process, cache_size {cache_size:,}, "
              f"{entries:,} distinct files looked up 1,000 per POST /v1/lookup", flush=True)
        env = dict(self.env, ADDONREG_STORAGE=self.store.url, ADDONREG_PUBSUB="local://",
                   ADDONREG_CACHE_SIZE=str(cache_size))
        group = None
        try:
            group = self.start_services("addonreg serve (memory)", 1, env)
            pid = group.pids[0]
            chunks = [rows[i:i + 1000] for i in range(0, entries, 1000)]
            bodies = [lookup_body(c).encode() for c in chunks]
            warm, rest = bodies[:5], bodies[5:]

            def post(connection: http.client.HTTPConnection, body: bytes) -> int:
                connection.request("POST", "/v1/lookup", body,
                                   {"Content-Type": "application/json"})
                answer = connection.getresponse()
                data = answer.read()
                if answer.status != 200:
                    raise BenchError(f"memory: POST /v1/lookup answered {answer.status}: "
                                     f"{data[:300]!r}")
                results = json.loads(data)["results"]
                registered = sum(r["status"] == "registered" for r in results)
                if registered != len(results):
                    raise BenchError(f"memory: {len(results) - registered} files of a lookup "
                                     "not registered")
                return registered

            def cache_entries() -> int:
                status, body = quick.http(group.url("/__metrics__"))
                m = re.search(r'^addonreg_cache_entries\{cache="files"\} (\S+)$',
                              body.decode(errors="replace"), re.MULTILINE)
                if status != 200 or not m:
                    raise BenchError("memory: no addonreg_cache_entries{cache=\"files\"} in "
                                     "/__metrics__")
                return int(float(m[1]))

            rss_start = proc_memory_kib(pid)
            conn = http.client.HTTPConnection(HOST, group.port, timeout=120)
            for body in warm:
                post(conn, body)
            conn.close()
            time.sleep(0.5)
            before = proc_memory_kib(pid)
            entries_before = cache_entries()
            t0 = time.monotonic()

            def worker(part: Sequence[bytes]) -> int:
                c = http.client.HTTPConnection(HOST, group.port, timeout=120)
                try:
                    return sum(post(c, b) for b in part)
                finally:
                    c.close()

            parts = [rest[i::4] for i in range(4)]
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                filled = sum(pool.map(worker, parts))
            fill_s = time.monotonic() - t0
            time.sleep(0.5)
            after = proc_memory_kib(pid)
            entries_after = cache_entries()
            added = entries_after - entries_before
            delta_kib = after["VmRSS"] - before["VmRSS"]
            self.memory = {
                "cache_size": cache_size, "lookups": len(bodies), "files_per_lookup": 1000,
                "entries_before": entries_before, "entries_after": entries_after,
                "entries_added": added, "rss_start_kib": rss_start.get("VmRSS"),
                "rss_before_kib": before["VmRSS"], "rss_after_kib": after["VmRSS"],
                "peak_rss_kib": after.get("VmHWM"), "rss_delta_kib": delta_kib,
                "bytes_per_entry": round(delta_kib * 1024 / added, 1) if added else None,
                "fill_seconds": round(fill_s, 1),
                "fill_files_per_s": round(filled / fill_s) if fill_s else None,
            }
            print(f"  RSS {before['VmRSS'] / 1024:,.1f} MiB with {entries_before:,} entries -> "
                  f"{after['VmRSS'] / 1024:,.1f} MiB with {entries_after:,} entries: "
                  f"{self.memory['bytes_per_entry']} bytes per entry (filled in {fill_s:.1f} s, "
                  f"misses from the database)", flush=True)
            if entries_after < entries:
                raise BenchError(f"memory: the cache holds {entries_after:,} entries, "
                                 f"not {entries:,}")
        except (BenchError, OSError) as exc:
            self.memory["failure"] = str(exc)
            self.failures["memory"] = str(exc)
            print(f"\n!!! memory per entry FAILED: {exc}\n", file=sys.stderr, flush=True)
        finally:
            if group is not None:
                group.stop()
                self.stoppables.remove(group)


# Main flow ---------------------------------------------------------------------

def estimate_minutes(args: argparse.Namespace) -> float:
    reads = 5 * 3 + (2 if args.processes > 1 else 0)  # scenario x target pairs
    per_run = args.duration + 1.5
    seconds = reads * (args.runs * per_run + args.warmup + 1.5)
    seconds += 2 * (args.runs * per_run + args.warmup + 1)  # mixed
    if args.storage == "mysql" and not args.no_writes:
        seconds += 5 * (args.runs + 1) * (args.duration + 6)
    if args.profile:
        seconds += 2 * (args.profile + 5)
    if not args.no_memory:
        seconds += 90
    return seconds / 60


def run(args: argparse.Namespace, tmp: Path) -> int:
    suite = Suite(args, tmp)
    a = args
    print(f"bench/run.py: {a.processes} process(es), storage {a.storage}, {a.rows:,} rows over "
          f"{a.addons:,} add-ons, {a.runs} runs x {a.duration} s per target and scenario; "
          f"about {estimate_minutes(a):.0f} min (plus seeding when the data set is not cached)",
          flush=True)
    print(f"pinning: {suite.pinning.description}", flush=True)

    # 1. Data set.
    t0 = time.monotonic()
    rows = make_dataset(a.rows, a.addons)
    dataset: Dict[str, Any] = {"rows": a.rows, "addons": a.addons,
                               "generator": DATASET_GENERATOR, "storage": suite.store.url,
                               "generate_seconds": round(time.monotonic() - t0, 2)}
    usable, why, meta = (False, "--reseed", {}) if a.reseed else suite.store.cached()
    if usable:
        print(f"data set: cached in {suite.store.url} ({why}; originally imported in "
              f"{meta.get('seed_seconds')} s)", flush=True)
        dataset.update(seeded_this_run=False, cached=meta)
    else:
        print(f"data set: seeding {suite.store.url} ({why})...", flush=True)
        seeding = suite.store.seed(rows, tmp, suite.env)
        print(f"data set: {seeding['import_output']} (CSV written in "
              f"{seeding['csv_seconds']} s)", flush=True)
        dataset.update(seeded_this_run=True, seeding=seeding)
        usable, why, meta = suite.store.cached()
        if not usable:
            raise BenchError(f"after seeding: {why}")
        dataset["cached"] = meta
    cache_size = a.cache_size or max(a.rows // 10, min(20_000, a.rows // 2))
    dataset["service_cache_size"] = cache_size

    hot = hot_files(rows, a.hot)
    rng = random.Random(20261127)
    lookup_sets = {n: [rows[i] for i in rng.sample(range(len(rows)), min(n * LOOKUP_BODIES,
                                                                         len(rows)))]
                   for n in (100, 1000)}
    try:
        # 2. Servers.
        env = dict(suite.env, ADDONREG_STORAGE=suite.store.url,
                   ADDONREG_CACHE_SIZE=str(cache_size), ADDONREG_PUBSUB=suite.pubsub_url())
        service = suite.start_services(f"addonreg serve x{a.processes}", a.processes, env)
        suite.targets["service"] = service
        answer_size = quick.check_service(service, hot, lookup_sets[100][:100])
        body = fixed_body(answer_size)
        suite.targets["tornado"] = suite.start_tornado(f"bare Tornado x{a.processes}",
                                                       a.processes, answer_size)
        suite.targets["nginx"] = suite.start_nginx(a.processes, body)
        if a.processes > 1:
            suite.targets["service-x1"] = suite.start_services("addonreg serve x1", 1, env)
            suite.targets["tornado-x1"] = suite.start_tornado("bare Tornado x1", 1, answer_size)
        loops = {name: t.loop for name, t in suite.targets.items() if name != "nginx"}
        if len(set(loops.values())) != 1:
            raise BenchError(f"event loops differ: {loops}")
        for name in ("tornado", "nginx"):
            for method, path, data in (("GET", file_path(hot[0]), None),
                                       ("POST", "/v1/lookup", lookup_body(hot[:2]).encode())):
                status, answer = quick.http(suite.targets[name].url(path), data)
                if status != 200 or len(answer) != len(body):
                    raise BenchError(f"{name}: {method} {path} answered {status} with "
                                     f"{len(answer)} bytes, not 200 with {len(body)}")
        status, facts = quick.http(service.url("/v1/"))
        service_settings = json.loads(facts).get("settings", {}) if status == 200 else {}
        print(f"servers: {service.name} pids {service.pids} port {service.port} (cache_size "
              f"{cache_size:,}, pubsub {env['ADDONREG_PUBSUB']}); "
              + "; ".join(f"{t.name} pids {t.pids} port {t.port}"
                          for n, t in suite.targets.items() if n != "service")
              + f"; event loop {service.loop}; single-file answer {answer_size} bytes",
              flush=True)

        # 3. Request files and their checks (every request once on the service).
        reads_file = quick.write_requests(tmp / "get-hot.txt",
                                          [f"GET\t{file_path(r)}" for r in hot])
        hot_paths = tmp / "hot-paths.txt"
        hot_paths.write_text("".join(file_path(r) + "\n" for r in hot))
        paths_file = tmp / "all-paths.txt"
        with open(paths_file, "w") as fh:
            for r in rows:
                fh.write(f"/v1/addons/{r[0]}/files/{r[1]}\n")
        lookups = {}
        for n, files in lookup_sets.items():
            chunks = [files[i:i + n] for i in range(0, len(files), n)]
            for chunk in chunks:
                status, answer = quick.http(service.url("/v1/lookup"), lookup_body(chunk).encode(),
                                            timeout=60)
                results = json.loads(answer).get("results", []) if status == 200 else []
                if len(results) != len(chunk) or any(r["status"] != "registered"
                                                     for r in results):
                    raise BenchError(f"POST /v1/lookup of {n} files answered {status}: "
                                     f"{answer[:300]!r}")
            lookups[n] = quick.write_requests(tmp / f"lookup-{n}.txt",
                                              [f"POST\t/v1/lookup\t{lookup_body(c)}"
                                               for c in chunks])
        old_lines = []
        for r in hot:
            data = json.dumps({"id": r[0], "sha256": r[1]}, separators=(",", ":"))
            status, answer = quick.http(service.url("/addon"), data.encode())
            if status != 200 or json.loads(answer).get("registered") is not True:
                raise BenchError(f"POST /addon answered {status}: {answer[:300]!r}")
            old_lines.append(f"POST\t/addon\t{data}")
        old_file = quick.write_requests(tmp / "old-addon.txt", old_lines)
        for r in random.Random(1).sample(rows, min(100, len(rows))):
            status, answer = quick.http(service.url(file_path(r)))
            if status != 200:
                raise BenchError(f"GET {file_path(r)} answered {status}: {answer[:300]!r}")

        base = ["tornado", "nginx", "service"]
        hot_targets = base + (["tornado-x1", "service-x1"] if a.processes > 1 else [])
        suite.read_scenarios = [
            ReadScenario("get-hot", f"GET /v1/addons/{{id}}/files/{{sha}}, {len(hot)} popular "
                         "files round-robin, warm cache", 1, REPLAY_LUA, [str(reads_file)],
                         hot_targets),
            ReadScenario("lookup-100", f"POST /v1/lookup, 100 registered files per request "
                         f"({LOOKUP_BODIES} bodies), from cache", 100, REPLAY_LUA,
                         [str(lookups[100])], base),
            ReadScenario("lookup-1000", f"POST /v1/lookup, 1,000 registered files per request "
                         f"({LOOKUP_BODIES} bodies), from cache", 1000, REPLAY_LUA,
                         [str(lookups[1000])], base),
            ReadScenario("old-addon", f"POST /addon (2013 API) over the {len(hot)} popular "
                         "files", 1, REPLAY_LUA, [str(old_file)], base),
            ReadScenario("get-uniform", f"GET of a uniformly random file of all {len(rows):,} "
                         f"(cache {cache_size:,} entries: misses go to {a.storage})", 1,
                         REPLAY_LUA, [str(paths_file), "random", "{seed}"], base),
        ]
        print(f"load: wrk -t1 -c{a.connections} --latency --timeout {WRK_TIMEOUT}; {a.runs} "
              f"runs x {a.duration} s per target and scenario, order rotated, {a.warmup} s "
              "warm-up per target; 127.0.0.1 only", flush=True)

        by_name = {sc.name: sc for sc in suite.read_scenarios}
        for name in ("get-hot", "lookup-100", "lookup-1000", "old-addon"):
            suite.run_read_scenario(by_name[name])
        hot_rate = median([r["requests_per_s"] for r in by_name["get-hot"].runs.get(
            "service", [])]) or 2000.0
        suite.run_mixed(hot_paths, a.write_every, hot_rate)
        suite.run_read_scenario(by_name["get-uniform"])
        if a.profile:
            for name in ("get-hot", "lookup-1000"):
                suite.run_profile(by_name[name], a.profile)
        if a.storage == "mysql" and not a.no_writes:
            suite.run_writes(answer_size)
        elif a.no_writes:
            suite.writes = {"skipped": "--no-writes"}
        else:
            suite.writes = {"skipped": "the write scenarios count MariaDB's Com_commit "
                                       "(bench/writes.py): run with --storage mysql"}
        if not a.no_memory:
            suite.run_memory(rows)
        else:
            suite.memory = {"skipped": "--no-memory"}
        for t in suite.targets.values():
            with contextlib.suppress(BenchError):
                t.check_alive()
    finally:
        stop_everything(suite.stoppables)

    # 4. Report.
    report = build_report(suite, dataset, answer_size, service_settings)
    RESULTS_DIR.mkdir(exist_ok=True)
    json_path = RESULTS_DIR / f"{suite.stem}.json"
    md_path = RESULTS_DIR / f"{suite.stem}.md"
    png_path = RESULTS_DIR / f"{suite.stem}.png"
    plot_note = write_plot(report, png_path)
    report["plot"] = plot_note
    markdown = render_markdown(report)
    tmp_json = json_path.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp_json.replace(json_path)
    md_path.write_text(markdown)
    print("\n" + markdown)
    print(f"results: {json_path.relative_to(REPO_DIR)}, {md_path.relative_to(REPO_DIR)}, "
          f"{png_path.relative_to(REPO_DIR) if png_path.exists() else plot_note}")
    if suite.failures:
        print(f"\nbench: FAILED scenarios: {', '.join(suite.failures)} (see above and the "
              "report)", file=sys.stderr)
        return 1
    return 0


# Report ------------------------------------------------------------------------

def machine_info() -> Dict[str, Any]:
    def first_line(argv: List[str]) -> str:
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (result.stdout + result.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return "unknown"

    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    mariadb = "unreachable"
    mariadb_vars: Dict[str, str] = {}
    with contextlib.suppress(Exception):
        conn = writes.mysql_connect(READS_MYSQL_URL)
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            mariadb = cur.fetchone()[0]
            cur.execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN "
                        "('innodb_buffer_pool_size', 'innodb_flush_log_at_trx_commit')")
            mariadb_vars = dict(cur.fetchall())
        conn.close()

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    import tornado
    return {"cores": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
            "cpu_model": model, "kernel": platform.release(), "platform": platform.platform(),
            "memory_gib": round(mem_kib / 1024 ** 2, 1) if mem_kib else None,
            "python": platform.python_version(), "tornado": tornado.version,
            "uvloop": version("uvloop"), "aiomysql": version("aiomysql"),
            "mariadb": mariadb, "mariadb_settings": mariadb_vars,
            "nginx": first_line([NGINX, "-v"]), "wrk": first_line(["wrk", "-v"]),
            "py_spy": version("py-spy"), "commit": git_commit()}


def read_summary(sc: ReadScenario) -> Dict[str, Any]:
    out = {name: summarize(runs, ("requests_per_s", "files_per_s", "p50_ms", "p90_ms",
                                  "p99_ms"))
           for name, runs in sc.runs.items()}
    svc = out.get("service", {}).get("requests_per_s_median")
    for base in ("tornado", "nginx"):
        b = out.get(base, {}).get("requests_per_s_median")
        out[f"ratio_service_{base}"] = svc / b if svc and b else None
    x1 = out.get("service-x1", {}).get("requests_per_s_median")
    out["ratio_service_x1"] = svc / x1 if svc and x1 else None
    tx = out.get("tornado", {}).get("requests_per_s_median")
    t1 = out.get("tornado-x1", {}).get("requests_per_s_median")
    out["ratio_tornado_x1"] = tx / t1 if tx and t1 else None
    return out


def below_outer(inclusive: Sequence[Tuple[str, float]]) -> List[Tuple[str, float]]:
    """Inclusive shares without the outer frames every busy sample has (runpy, main,
    the event loop's run): those at the top share."""
    if not inclusive:
        return []
    top = max(share for _, share in inclusive)
    return [(f, s) for f, s in inclusive if s < top - 0.05]


def previous_run(processes: int, rows: int, storage: str, exclude: str
                 ) -> Optional[Dict[str, Any]]:
    """The newest results file of bench/run.py with that process count and data set."""
    for path in sorted(RESULTS_DIR.glob("20*.json"), reverse=True):
        if path.stem == exclude:
            continue
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text())
            if data.get("benchmark") == "bench/run.py" and \
                    data["options"]["processes"] == processes and \
                    data["options"]["rows"] == rows and data["options"]["storage"] == storage \
                    and not data.get("failures", {}).get("get-hot"):
                data["_file"] = str(path.relative_to(REPO_DIR))
                return data
    return None


def build_report(suite: Suite, dataset: Dict[str, Any], answer_size: int,
                 service_settings: Dict[str, Any]) -> Dict[str, Any]:
    a = suite.args
    scenarios = {}
    for sc in suite.read_scenarios:
        scenarios[sc.name] = {"description": sc.description,
                              "files_per_request": sc.files_per_request,
                              "targets": {n: suite.targets[n].name for n in sc.targets},
                              "processes": {n: suite.targets[n].process_names
                                            for n in sc.targets},
                              "failure": sc.failure, "summary": read_summary(sc),
                              "runs": sc.runs}
    mixed = dict(suite.mixed)
    mixed["processes"] = suite.targets["service"].process_names \
        if "service" in suite.targets else []
    mixed["summary"] = {label: summarize(runs, (
        "reads_per_s", "writes_per_s", "read_p50_ms", "read_p90_ms", "read_p99_ms",
        "write_p50_ms", "write_p99_ms", "requests_per_s", "p50_ms", "p99_ms"))
        for label, runs in suite.mixed["runs"].items()}
    report = {
        "benchmark": "bench/run.py",
        "stem": suite.stem,
        "started": suite.started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "runtime_s": round(time.monotonic() - suite.t0, 1),
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": dict(machine_info(), commit=suite.commit_start,
                        commit_at_end=git_commit(), loadavg_start=suite.loadavg_start,
                        loadavg_end=os.getloadavg()),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "pinning": {"description": suite.pinning.description, "wrk_cpu": suite.pinning.wrk,
                    "server_cpus": suite.pinning.servers},
        "peak_rss_reset_per_run": suite.peak_reset_ok,
        "event_loop": suite.targets["service"].loop if "service" in suite.targets else None,
        "single_file_answer_bytes": answer_size,
        "service_settings": service_settings,
        "dataset": dataset,
        "scenarios": scenarios,
        "mixed": mixed,
        "writes": suite.writes,
        "memory_per_entry": suite.memory,
        "profiles": suite.profiles,
        "failures": suite.failures,
        "started_at_commit": suite.started_at_commit,
    }
    report["targets"] = evaluate_targets(report, suite.stem)
    return report


def _get(d: Dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or d.get(key) is None:
            return None
        d = d[key]
    return d


def evaluate_targets(report: Dict[str, Any], stem: str) -> List[Dict[str, Any]]:
    n = report["options"]["processes"]
    sc = report["scenarios"]
    out = []

    def add(target: str, measured: Optional[str], ok: Optional[bool], note: str = "") -> None:
        out.append({"target": target, "measured": measured or "not measured",
                    "status": "n/a" if ok is None else ("met" if ok else "NOT met"),
                    "note": note})

    hot = _get(sc, "get-hot", "summary")
    ratio = _get(hot, "ratio_service_tornado") if hot else None
    add(f"hot single GET ≥ 85 % of bare Tornado at the same process count ({n})",
        f"{ratio:.0%} ({_get(hot, 'service', 'requests_per_s_median'):,.0f} vs "
        f"{_get(hot, 'tornado', 'requests_per_s_median'):,.0f} req/s)" if ratio else None,
        None if ratio is None else ratio >= 0.85)
    files = _get(sc, "lookup-1000", "summary", "service", "files_per_s_median")
    per = files / n if files else None
    add("POST /v1/lookup of 1,000 files ≥ 250,000 file checks/s per process from cache",
        f"{per:,.0f} file checks/s per process ({files / 1000:,.0f} req/s x 1,000 / {n})"
        if per else None, None if per is None else per >= 250_000)
    uni = _get(sc, "get-uniform", "summary", "service", "requests_per_s_median")
    hot_rate = _get(hot, "service", "requests_per_s_median") if hot else None
    add("uniform GET over the whole set, with misses, ≥ 50 % of the hot figure",
        f"{uni / hot_rate:.0%} ({uni:,.0f} vs {hot_rate:,.0f} req/s)" if uni and hot_rate
        else None, None if not (uni and hot_rate) else uni / hot_rate >= 0.5)
    p99 = _get(hot, "service", "p99_ms_median") if hot else None
    conns = report["options"]["connections"]
    tornado_p99 = _get(hot, "tornado", "p99_ms_median") if hot else None
    add(f"cached p99 ≤ 25 ms at {conns} connections (hot GET)",
        f"{p99:.1f} ms (bare Tornado {tornado_p99:.1f} ms)" if p99 and tornado_p99 else None,
        None if p99 is None else p99 <= 25,
        "closed loop: mean latency ≈ connections / throughput, so at 64 connections p99 ≤ "
        "25 ms needs well above 2,560 req/s" if p99 and p99 > 25 else "")
    bpe = _get(report, "memory_per_entry", "bytes_per_entry")
    add("≤ 250 bytes RSS per cached entry", f"{bpe:,.0f} bytes" if bpe else None,
        None if bpe is None else bpe <= 250)
    if n > 1:
        x1 = _get(hot, "ratio_service_x1") if hot else None
        tx1 = _get(hot, "ratio_tornado_x1") if hot else None
        prev = previous_run(1, report["options"]["rows"], report["options"]["storage"], stem)
        prev_rate = _get(prev, "scenarios", "get-hot", "summary", "service",
                         "requests_per_s_median") if prev else None
        text = (f"{x1:.2f}x in this run (addonreg x{n} vs addonreg x1 alternated; bare "
                f"Tornado {tx1:.2f}x)" if x1 and tx1 else None)
        if text and prev_rate and hot_rate:
            text += (f"; {hot_rate / prev_rate:.2f}x the 1-process run {prev['_file']} "
                     f"({prev_rate:,.0f} req/s)")
        add(f"{n} processes ≥ 1.7x one process (hot GET), load generator on other cores",
            text, None if x1 is None else x1 >= 1.7,
            "cannot be isolated here: " + report["pinning"]["description"])
    else:
        prev = previous_run(2, report["options"]["rows"], report["options"]["storage"], stem)
        x1 = _get(prev, "scenarios", "get-hot", "summary", "ratio_service_x1") if prev else None
        add("two processes ≥ 1.7x one process", f"{x1:.2f}x in {prev['_file']}" if x1 else None,
            None, "measured by a --processes 2 run (this one has 1 process)")
    return out


def fmt(value: Any, spec: str = ",.0f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def mib(kib_list: Optional[Sequence[Optional[int]]]) -> str:
    if not kib_list:
        return "—"
    return " / ".join("—" if k is None else f"{k / 1024:.0f}" for k in kib_list) + " MiB"


def render_markdown(r: Dict[str, Any]) -> str:
    m, o, d = r["machine"], r["options"], r["dataset"]
    n = o["processes"]
    lines = [f"# addonreg benchmark — {r['started']}", ""]
    lines += [f"- command: `{r['command']}` (total runtime {r['runtime_s'] / 60:.1f} min)",
              f"- commit: `{m['commit']}` at start; processes started at: "
              + ", ".join(f"{k} `{v[:12]}`" for k, v in r.get("started_at_commit", {}).items())
              + (
                  f" (HEAD moved to `{m['commit_at_end']}` during the run: processes started "
                  "later may run newer code)" if m["commit_at_end"] != m["commit"] else ""),
              f"- machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, kernel "
              f"{m['kernel']}; Python {m['python']}, Tornado {m['tornado']}, uvloop "
              f"{m['uvloop']}, MariaDB {m['mariadb']} (buffer pool "
              f"{int(m['mariadb_settings'].get('innodb_buffer_pool_size', 0)) // 2 ** 20} MiB, "
              f"flush_log_at_trx_commit "
              f"{m['mariadb_settings'].get('innodb_flush_log_at_trx_commit', '?')}), "
              f"{m['nginx']}, {m['wrk']}; load average {m['loadavg_start'][0]:.2f} at start, "
              f"{m['loadavg_end'][0]:.2f} at end (other work shares this machine)",
              f"- service: {n} `addonreg serve` process(es) on one port, storage {o['storage']} "
              f"(`{d['storage']}`), cache_size {d['service_cache_size']:,}, event loop "
              f"{r['event_loop']}, access log off; single-file answer "
              f"{r['single_file_answer_bytes']} bytes; baselines at the same process count: "
              f"bare Tornado (`bench/baseline.py`, same body size) and nginx (static file of "
              f"that size)",
              f"- data set: {d['rows']:,} registrations over {d['addons']:,} add-ons; "
              + (f"seeded by this run: {d['seeding']['method']} in "
                 f"{d['seeding']['import_seconds']} s ({d['seeding']['rows_per_s']:,} rows/s)"
                 if d.get("seeded_this_run") else
                 f"cached from an earlier run (seeded {d['cached'].get('seeded_at')}, import "
                 f"took {d['cached'].get('seed_seconds')} s), not seeded again"),
              f"- load: `wrk -t1 -c{o['connections']} --latency --timeout {WRK_TIMEOUT}`, "
              f"{o['runs']} runs x {o['duration']} s per target and scenario, targets "
              f"alternated (order rotated), {o['warmup']} s warm-up each; medians below; "
              "127.0.0.1 only",
              f"- pinning: {r['pinning']['description']}", ""]
    if r["failures"]:
        lines += ["## FAILED", ""]
        for name, text in r["failures"].items():
            lines += [f"- **{name}**: " + text.splitlines()[0]]
        lines += [""]

    # Reads.
    lines += ["## Reads", "",
              "| scenario | addonreg req/s (min–max) | files/s | bare Tornado req/s | nginx "
              "req/s | vs Tornado | vs nginx | addonreg p50 / p99 | Tornado p50 / p99 | nginx "
              "p50 / p99 | addonreg peak RSS per process | addonreg CPU | wrk CPU |",
              "|" + "---|" * 13]
    for name, sc in r["scenarios"].items():
        s = sc["summary"]
        svc, tor, ngx = s.get("service", {}), s.get("tornado", {}), s.get("nginx", {})
        if sc["failure"]:
            lines.append(f"| {name} | **FAILED** (see above) |" + " |" * 11)
            continue
        lines.append(
            f"| {name} | {fmt(svc.get('requests_per_s_median'))} "
            f"({fmt(svc.get('requests_per_s_min'))}–{fmt(svc.get('requests_per_s_max'))}) "
            f"| {fmt(svc.get('files_per_s_median'))} | {fmt(tor.get('requests_per_s_median'))} "
            f"| {fmt(ngx.get('requests_per_s_median'))} "
            f"| {fmt(s.get('ratio_service_tornado'), '.0%')} "
            f"| {fmt(s.get('ratio_service_nginx'), '.1%')} "
            f"| {fmt(svc.get('p50_ms_median'), '.1f')} / {fmt(svc.get('p99_ms_median'), '.1f')} ms "
            f"| {fmt(tor.get('p50_ms_median'), '.1f')} / {fmt(tor.get('p99_ms_median'), '.1f')} ms "
            f"| {fmt(ngx.get('p50_ms_median'), '.1f')} / {fmt(ngx.get('p99_ms_median'), '.1f')} ms "
            f"| {mib(svc.get('peak_rss_kib'))} | {fmt(svc.get('server_cpu_pct_median'), '.0f', ' %')}"
            f" | {fmt(svc.get('wrk_cpu_pct_median'), '.0f', ' %')} |")
        if "service-x1" in s:
            x1, t1 = s["service-x1"], s["tornado-x1"]
            lines.append(
                f"| {name}, 1 process | {fmt(x1.get('requests_per_s_median'))} "
                f"({fmt(x1.get('requests_per_s_min'))}–{fmt(x1.get('requests_per_s_max'))}) | "
                f"| {fmt(t1.get('requests_per_s_median'))} | | "
                f"{fmt(x1.get('requests_per_s_median') / t1['requests_per_s_median'] if x1.get('requests_per_s_median') and t1.get('requests_per_s_median') else None, '.0%')} | "
                f"| {fmt(x1.get('p50_ms_median'), '.1f')} / {fmt(x1.get('p99_ms_median'), '.1f')} ms "
                f"| {fmt(t1.get('p50_ms_median'), '.1f')} / {fmt(t1.get('p99_ms_median'), '.1f')} ms "
                f"| | {mib(x1.get('peak_rss_kib'))} | "
                f"{fmt(x1.get('server_cpu_pct_median'), '.0f', ' %')} | "
                f"{fmt(x1.get('wrk_cpu_pct_median'), '.0f', ' %')} |")
    scaling = ""
    if n > 1:
        hot_s = _get(r, "scenarios", "get-hot", "summary") or {}
        scaling = (f" get-hot with {n} processes vs 1 (alternated in this run): addonreg "
                   f"{fmt(hot_s.get('ratio_service_x1'), '.2f')}x, bare Tornado "
                   f"{fmt(hot_s.get('ratio_tornado_x1'), '.2f')}x.")
    lines += ["", "files/s = req/s x files per request. addonreg CPU = CPU time of all its "
              "processes / wall time (100 % = one core). Ratios are of the medians. The "
              "baselines answer the single-file body to every request, the lookups included."
              + scaling, ""]
    uni = _get(r, "scenarios", "get-uniform", "summary", "service")
    if uni:
        ratio = uni.get("cache_hit_ratio_median")
        lines += ["get-uniform: every run draws a new random sequence over the whole set; "
                  + (f"cache hit ratio {ratio:.1%} (median, from /__metrics__), so "
                     f"{1 - ratio:.1%} of the requests went to {o['storage']}; "
                     if ratio is not None else
                     "(hit ratio not measured with several processes: a /__metrics__ scrape "
                     "answers for one of them); ")
                  + f"MariaDB used {fmt(uni.get('mariadb_cpu_pct_median'), '.0f')} % of a core "
                  f"(median), addonreg {fmt(uni.get('server_cpu_pct_median'), '.0f')} %.", ""]

    # Mixed.
    mx = r["mixed"]
    lines += ["## Mixed: 95 % hot GETs, 5 % PUTs (read latency while writes flow)", ""]
    if mx.get("failure"):
        lines += [f"**FAILED**: {mx['failure'].splitlines()[0]}", ""]
    lines += ["| variant | reads/s | writes/s | read p50 | read p90 | read p99 | write p50 | "
              "write p99 | all requests p99 (wrk) | addonreg CPU | peak RSS per process |",
              "|" + "---|" * 11]
    for label, s in mx["summary"].items():
        if not s:
            continue
        lines.append(
            f"| {label} | {fmt(s.get('reads_per_s_median'))} | "
            f"{fmt(s.get('writes_per_s_median'))} | {fmt(s.get('read_p50_ms_median'), '.1f', ' ms')} "
            f"| {fmt(s.get('read_p90_ms_median'), '.1f', ' ms')} "
            f"| {fmt(s.get('read_p99_ms_median'), '.1f', ' ms')} "
            f"| {fmt(s.get('write_p50_ms_median') if label != 'read-only' else None, '.1f', ' ms')} "
            f"| {fmt(s.get('write_p99_ms_median') if label != 'read-only' else None, '.1f', ' ms')} "
            f"| {fmt(s.get('p99_ms_median'), '.1f', ' ms')} "
            f"| {fmt(s.get('server_cpu_pct_median'), '.0f', ' %')} | {mib(s.get('peak_rss_kib'))} |")
    lines += ["", "Same Lua script (`bench/mixed.lua`) for both variants; read and write "
              "latencies are timed by the script apart (wrk's own histogram mixes them). The "
              f"PUTs go into the read database as `mixed-N@bench.example` and are deleted after "
              f"({mx.get('rows_deleted_after', '?')} rows deleted). A PUT of a new file commits "
              "in one round trip to MariaDB, but its way through the process takes several "
              "turns of the event loop (the batcher waking, the write window, the database's "
              "answer, the handler resuming), and with 64 connections of reads in flight a "
              "turn handles many requests: the likely reason (not profiled) why a write takes "
              "far longer here than in the write scenarios.", ""]

    # Writes.
    w = r["writes"]
    lines += ["## Writes", ""]
    if w.get("skipped"):
        lines += [f"Skipped: {w['skipped']}.", ""]
    elif w.get("failure") and not w.get("cases"):
        lines += [f"**FAILED**: {w['failure'].splitlines()[0]}", ""]
    else:
        put = {c["target"]: c["summary"] for c in w["cases"].values() if c["scenario"] == "put"}
        lines += ["| scenario | target | conns | registrations/s (min–max) | req/s | vs Tornado "
                  "| vs nginx | p50 | p99 | writes / COMMIT | server CPU | peak RSS per process |",
                  "|" + "---|" * 12]
        for c in w["cases"].values():
            s = c["summary"]
            vs_t = vs_n = None
            if c["scenario"] == "put" and c["target"] == "service":
                vs_t = s["requests_per_s_median"] / put["tornado"]["requests_per_s_median"] \
                    if put.get("tornado", {}).get("requests_per_s_median") else None
                vs_n = s["requests_per_s_median"] / put["nginx"]["requests_per_s_median"] \
                    if put.get("nginx", {}).get("requests_per_s_median") else None
            lines.append(
                f"| {c['scenario']} | {TARGET_LABELS[c['target']]} | {c['connections']} "
                f"| {fmt(s.get('registrations_per_s_median'))} "
                f"({fmt(s.get('registrations_per_s_min'))}–{fmt(s.get('registrations_per_s_max'))}) "
                f"| {fmt(s.get('requests_per_s_median'), ',.1f')} | {fmt(vs_t, '.0%')} "
                f"| {fmt(vs_n, '.1%')} | {fmt(s.get('p50_ms_median'), '.1f', ' ms')} "
                f"| {fmt(s.get('p99_ms_median'), '.1f', ' ms')} "
                f"| {fmt(s.get('writes_per_commit_median'), ',.1f')} "
                f"| {fmt(s.get('server_cpu_pct_median'), '.0f', ' %')} "
                f"| {mib(s.get('peak_rss_kib'))} |")
        lines += ["", f"Into `{w['database']}` through a separate group of {n} service "
                  "process(es) (the read data set is not touched); tables dropped and created "
                  "before every run, every request pre-signed (Hawk) and sent once; "
                  "registrations/s = req/s x operations per request; writes / COMMIT = rows "
                  "committed / Δ global Com_commit (the service commits each batch once). "
                  "Δ Com_commit during the baseline runs (someone else's commits on the shared "
                  f"MariaDB): {w.get('background_delta_Com_commit_in_baseline_runs')}.", ""]
        if w.get("failure"):
            lines += [f"**FAILED** part-way: {w['failure'].splitlines()[0]}", ""]

    # Memory.
    mem = r["memory_per_entry"]
    lines += ["## Memory per cached entry", ""]
    if mem.get("skipped"):
        lines += [f"Skipped: {mem['skipped']}.", ""]
    elif mem.get("failure"):
        lines += [f"**FAILED**: {mem['failure']}", ""]
    else:
        lines += [f"One process, cache_size {mem['cache_size']:,}: RSS "
                  f"{mem['rss_before_kib'] / 1024:,.1f} MiB with {mem['entries_before']:,} "
                  f"entries, {mem['rss_after_kib'] / 1024:,.1f} MiB with "
                  f"{mem['entries_after']:,} (`addonreg_cache_entries{{cache=\"files\"}}` from "
                  f"/__metrics__) after {mem['lookups']:,} POST /v1/lookup of 1,000 distinct "
                  f"registered files: **{mem['bytes_per_entry']:,.0f} bytes per entry** "
                  f"(RSS delta {mem['rss_delta_kib'] / 1024:,.1f} MiB / "
                  f"{mem['entries_added']:,} entries). Peak RSS {mem['peak_rss_kib'] / 1024:,.1f} "
                  f"MiB. Filling took {mem['fill_seconds']} s ({mem['fill_files_per_s']:,} "
                  "files/s, every one a miss to the database).", ""]

    # Peak RSS per process.
    lines += ["## Peak RSS per process (VmHWM, reset before each run; max over the runs)", "",
              "| scenario | target | processes | peak RSS per process |", "|---|---|---|---|"]
    for name, sc in r["scenarios"].items():
        for t, s in sc["summary"].items():
            if isinstance(s, dict) and s.get("peak_rss_kib"):
                lines.append(f"| {name} | {TARGET_LABELS[t]} | "
                             f"{', '.join(sc['processes'][t])} | {mib(s['peak_rss_kib'])} |")
    for label, s in mx["summary"].items():
        if s.get("peak_rss_kib"):
            lines.append(f"| mixed {label} | addonreg | {', '.join(mx.get('processes', []))} "
                         f"| {mib(s['peak_rss_kib'])} |")
    for c in (w.get("cases") or {}).values():
        if c["summary"].get("peak_rss_kib"):
            lines.append(f"| {c['scenario']} (writes) | {TARGET_LABELS[c['target']]} | "
                         f"{', '.join(c.get('processes', []))} | "
                         f"{mib(c['summary']['peak_rss_kib'])} |")
    if not r["peak_rss_reset_per_run"]:
        lines += ["", "(VmHWM could not be reset: peaks are since process start.)"]
    lines += [""]

    # Targets.
    lines += ["## Targets", "", "| target | measured | status | note |", "|---|---|---|---|"]
    for t in r["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | **{t['status']}** | {t['note']} |")
    lines += [""]

    # Profiles.
    if r["profiles"]:
        lines += ["## Profiles (py-spy, every service process, one extra unrecorded run)", "",
                  "py-spy sees Python frames only: self time of `Runner.run` (asyncio/runners.py) "
                  "is time spent inside uvloop's C event loop under it (epoll, socket reads and "
                  "writes, callbacks' C parts).", ""]
        for name, p in r["profiles"].items():
            if p.get("error"):
                lines += [f"- {name}: {p['error']}"]
                continue
            lines += [f"### {name}: {p['samples']} samples, "
                      f"{fmt(_get(p, 'run', 'requests_per_s'))} req/s during the profile; raw "
                      f"stacks `{p['file']}`", "", "| self % | function |", "|---|---|"]
            lines += [f"| {share} | `{frame}` |" for frame, share in p["self"][:12]]
            lines += ["", "| inclusive % | function |", "|---|---|"]
            lines += [f"| {share} | `{frame}` |" for frame, share in
                      below_outer(p["inclusive"])[:15]]
            lines += [""]
    lines += ["## Notes", "",
              "- Closed-loop load (wrk keeps every connection busy): latency and throughput are "
              "two faces of one number (mean latency ≈ connections / req/s).",
              "- The machine is shared and noisy (see load average); the baselines run "
              "alternated with the service in the same minutes, so the ratios are steadier than "
              "the absolute req/s.",
              f"- Every run's numbers: `bench/results/{r['stem']}.json`; the plot: "
              f"`bench/results/{r['stem']}.png`.", ""]
    return "\n".join(lines)


def write_plot(report: Dict[str, Any], path: Path) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install -e '.[bench]')"
    n = report["options"]["processes"]
    cats: List[str] = []
    series = {"addonreg": [], "bare Tornado": [], "nginx": []}
    p99 = {"addonreg": [], "bare Tornado": [], "nginx": []}
    notes: List[str] = []

    def add(cat: str, values: Dict[str, Optional[float]], lat: Dict[str, Optional[float]],
            note: str = "") -> None:
        cats.append(cat)
        for key in series:
            series[key].append(values.get(key))
            p99[key].append(lat.get(key))
        notes.append(note)

    for name, sc in report["scenarios"].items():
        s = sc["summary"]
        if sc["failure"]:
            continue
        get = lambda t, k: s.get(t, {}).get(k)  # noqa: E731
        note = ""
        if sc["files_per_request"] > 1 and get("service", "files_per_s_median"):
            note = f"{get('service', 'files_per_s_median') / 1000:,.0f}k files/s"
        add(name, {"addonreg": get("service", "requests_per_s_median"),
                   "bare Tornado": get("tornado", "requests_per_s_median"),
                   "nginx": get("nginx", "requests_per_s_median")},
            {"addonreg": get("service", "p99_ms_median"),
             "bare Tornado": get("tornado", "p99_ms_median"),
             "nginx": get("nginx", "p99_ms_median")}, note)
        if "service-x1" in s:
            add(f"{name}\n1 process", {"addonreg": get("service-x1", "requests_per_s_median"),
                                       "bare Tornado": get("tornado-x1", "requests_per_s_median")},
                {"addonreg": get("service-x1", "p99_ms_median"),
                 "bare Tornado": get("tornado-x1", "p99_ms_median")})
    for label, s in report["mixed"]["summary"].items():
        if s:
            add(f"mixed\n{label}\n(reads)", {"addonreg": s.get("reads_per_s_median")},
                {"addonreg": s.get("read_p99_ms_median")})
    w = report["writes"].get("cases") or {}
    puts = {c["target"]: c["summary"] for c in w.values() if c["scenario"] == "put"}
    if puts:
        add("PUT\n(writes)", {"addonreg": _get(puts, "service", "requests_per_s_median"),
                              "bare Tornado": _get(puts, "tornado", "requests_per_s_median"),
                              "nginx": _get(puts, "nginx", "requests_per_s_median")},
            {"addonreg": _get(puts, "service", "p99_ms_median"),
             "bare Tornado": _get(puts, "tornado", "p99_ms_median"),
             "nginx": _get(puts, "nginx", "p99_ms_median")})
    for c in w.values():
        if c["kind"] == "bulk":
            s = c["summary"]
            add(f"{c['scenario']}\n(writes)", {"addonreg": s.get("requests_per_s_median")},
                {"addonreg": s.get("p99_ms_median")},
                f"{(s.get('registrations_per_s_median') or 0) / 1000:,.1f}k reg/s")
    if not cats:
        return "no plot: no scenario succeeded"
    colors = {"addonreg": "#1f77b4", "bare Tornado": "#ff7f0e", "nginx": "#2ca02c"}
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(12, 1.25 * len(cats)), 10), sharex=True)
    width = 0.27
    xs = list(range(len(cats)))
    for j, key in enumerate(series):
        offs = [x + (j - 1) * width for x in xs]
        for ax, data in ((ax1, series[key]), (ax2, p99[key])):
            vals = [v if v else 0 for v in data]
            bars = ax.bar(offs, vals, width, label=key, color=colors[key])
            for bar, v in zip(bars, data):
                if v:
                    ax.annotate(f"{v:,.0f}" if ax is ax1 else f"{v:,.1f}",
                                (bar.get_x() + bar.get_width() / 2, v), ha="center",
                                va="bottom", fontsize=7, rotation=90, xytext=(0, 2),
                                textcoords="offset points")
    ax1.set_yscale("log")
    top = max((v for vals in series.values() for v in vals if v), default=10)
    ax1.set_ylim(top=top * 6)
    ax1.set_ylabel("requests/s (median, log scale)")
    ax1.set_title(f"addonreg x{n} ({report['options']['storage']}, "
                  f"{report['dataset']['rows']:,} rows) vs bare Tornado x{n} and nginx x{n} — "
                  f"wrk -c{report['options']['connections']}, median of "
                  f"{report['options']['runs']} x {report['options']['duration']} s — "
                  f"{report['started']}", fontsize=10)
    ax1.legend(loc="upper center", ncol=3, fontsize=8)
    ax1.grid(axis="y", which="both", alpha=0.3)
    ax2.set_yscale("log")
    ax2.set_ylabel("p99 latency, ms (median, log scale)")
    top = max((v for vals in p99.values() for v in vals if v), default=10)
    ax2.set_ylim(top=top * 6)
    ax2.axhline(25, color="red", linestyle="--", linewidth=1,
                label="target: cached p99 ≤ 25 ms")
    ax2.legend(loc="upper center", ncol=4, fontsize=8)
    ax2.grid(axis="y", which="both", alpha=0.3)
    ax2.set_xticks(xs)
    ax2.set_xticklabels([f"{c}\n{note}" if note else c for c, note in zip(cats, notes)],
                        fontsize=8)
    m = report["machine"]
    footer = (f"{m['cores']} cores {m['cpu_model']}, kernel {m['kernel']}, Python {m['python']}, "
              f"Tornado {m['tornado']}, MariaDB {m['mariadb']}; pinning: "
              f"{report['pinning']['description']}")
    fig.text(0.01, 0.005, "\n".join(textwrap.wrap(footer, 230)), fontsize=6.5, va="bottom")
    fig.tight_layout(rect=(0, 0.045, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.relative_to(REPO_DIR)) if path.is_relative_to(REPO_DIR) else str(path)


# Command line --------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="addonreg's benchmark suite (see the module docstring): reads, mixed, "
                    "writes, memory per entry, against bare Tornado and nginx.")
    parser.add_argument("--storage", choices=("mysql", "sqlite"), default="mysql")
    parser.add_argument("--processes", type=int, default=1,
                        help="addonreg serve processes on one port (and baseline processes)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="registrations in the set")
    parser.add_argument("--addons", type=int, default=100_000, help="add-ons in the set")
    parser.add_argument("--reseed", action="store_true", help="seed even if the set is cached")
    parser.add_argument("--cache-size", type=int, default=0,
                        help="ADDONREG_CACHE_SIZE of the read service (default: rows / 10)")
    parser.add_argument("--runs", type=int, default=5, help="runs per target and scenario")
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of unrecorded load per target and scenario (0: none)")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c (reads, PUT)")
    parser.add_argument("--bulk-connections", type=int, default=4,
                        help="wrk -c of the bulk write scenarios")
    parser.add_argument("--hot", type=int, default=100, help="files in the hot set")
    parser.add_argument("--write-every", type=int, default=20,
                        help="mixed: one PUT every N requests (20: 5 %%)")
    parser.add_argument("--profile", type=int, default=8, metavar="SECONDS",
                        help="py-spy of get-hot and lookup-1000 for this long (0: none)")
    parser.add_argument("--no-writes", action="store_true", help="skip the write scenarios")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the memory-per-entry measurement")
    parser.add_argument("--event-loop", choices=("auto", "asyncio", "uvloop"),
                        default=os.environ.get("ADDONREG_EVENT_LOOP", "auto").lower())
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    args = parser.parse_args(argv)
    for name in ("processes", "rows", "addons", "runs", "duration", "connections",
                 "bulk_connections", "hot", "write_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.addons > args.rows or args.hot > args.rows:
        parser.error("--addons and --hot must not exceed --rows")
    if args.rows < 1000 * LOOKUP_BODIES:
        parser.error(f"--rows must be at least {1000 * LOOKUP_BODIES} (the lookup-1000 bodies)")
    return args



def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    missing = [tool for tool in ("wrk",) if shutil.which(tool) is None]
    if not os.access(NGINX, os.X_OK):
        missing.append(NGINX)
    if missing:
        print(f"bench: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("bench: warning: matplotlib is not installed, there will be no plot "
              "(.venv/bin/pip install -e '.[bench]')", file=sys.stderr)
    return quick.run_with_cleanup(run, args, "addonreg-bench-run-")


if __name__ == "__main__":
    sys.exit(main())
