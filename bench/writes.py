"""Write benchmark: registrations/s through addonreg's HTTP API into MariaDB.

What it measures
    ONE ``addonreg serve`` process on MariaDB (database ``addonreg_bench_writes``
    by default), Hawk-authenticated writes of new, distinct files:

    * ``bulk-1000``, ``bulk-5000``: ``POST /v1/registrations`` with 1,000 and
      5,000 ``register`` operations per request, over a few connections
      (``--bulk-connections``, default 4); registrations/s = requests/s x
      operations per request.
    * ``put``: ``PUT /v1/addons/{id}/files/{sha}`` with ``{"version": …}``,
      ``--connections`` (default 64) at once; registrations/s = requests/s.
      The same load goes, in the same rounds, to

      - ``naive``: ``bench/naive_server.py``, plain Tornado + aiomysql with
        the same Hawk check (``HawkAuthenticator`` + ``MemoryNonceStore``) and
        ONE ``INSERT … ON DUPLICATE KEY UPDATE`` + ``COMMIT`` per request (no
        batching), into a table of the same shape;
      - ``baseline``: ``bench/baseline.py``, bare Tornado answering a fixed
        JSON body of the size of the service's answer (no auth, no storage):
        the ceiling; the table gives ``req/s / baseline req/s``.

    For every run MariaDB's global ``Com_commit`` and ``Handler_commit`` (and
    ``Innodb_data_fsyncs``, ``Com_begin``…) are read before and after; writes
    per transaction = registrations committed (rows in the table after the
    run) / delta. The service commits each batch with one ``COMMIT``, so for
    it the delta of ``Com_commit`` is its number of batches. These are global
    counters: anything else using the same MariaDB meanwhile is counted too;
    the baseline runs (which touch no database) show that background.

How
    1. The database is created if missing; before EVERY run (warm-up ones
       too) all its tables are dropped and the schemas (addonreg's
       ``storage.mysql.SCHEMA`` and the naive server's table) created again,
       so each run starts empty. The three servers run throughout, started as
       subprocesses on 127.0.0.1, port 0, the port read from their log line;
       each is checked once (a signed write is accepted, an unsigned one is
       refused with 401) before any load.
    2. Hawk needs an HMAC per request, which wrk's Lua cannot do: right
       before each run (outside the timed window) a file of requests is signed
       with ``addonreg.auth.sign`` (unique nonce, fresh timestamp, payload
       hash), enough for the run (2 x the highest rate seen so far x the
       duration, plus the connections). ``bench/signed.lua`` sends each of them
       exactly once and counts the answers by status; should the list run
       out, it starts over and counts the repeats ("exhausted"), and the run is
       done again with more requests. Signatures are good for 60 s of clock
       skew: signing plus the run must fit in that, and is checked.
    3. Load: ``wrk -t1 -c<connections> --latency``; one unrecorded warm-up run
       (``--warmup`` s) per scenario and server, which also calibrates the
       request count, then ``--runs`` rounds, each running every scenario x
       server once (order rotated from round to round), ``--duration``
       seconds each. Every answer must be 2xx (201 for a new PUT), with no
       socket error, and every acknowledged registration must be in the table
       afterwards, or the benchmark stops with the reason. When ``taskset``
       exists and two CPUs are available, wrk is pinned to one CPU and the
       three servers to the other (MariaDB is not pinned).
    4. A markdown table of medians is printed; every run's numbers go to
       ``bench/results/writes-<date>-<time>.json``. With ``--profile SECONDS``,
       ``py-spy`` (when installed in the environment) records the service
       during one extra, unrecorded run per service scenario at the end, and
       the hottest functions are printed (the profiles go next to the JSON).

All processes are stopped at the end, on error and on Ctrl-C/SIGTERM; every
wrk run and every wait is bounded in time.

Run: ``.venv/bin/python bench/writes.py [--runs 3] [--duration 5]
[--connections 64]`` (``--help`` for the rest).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import hashlib
import json
import math
import os
import platform
import re
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(1, str(REPO_DIR))

import naive_server  # noqa: E402
import quick  # noqa: E402
from quick import BenchError, Server, choose_cpus, git_commit, pinned, reset_mysql, stop_all  # noqa: E402

from addonreg.hawk import sign  # noqa: E402
from addonreg.storage.mysql import SCHEMA as ADDONREG_SCHEMA  # noqa: E402

SIGNED_LUA = BENCH_DIR / "signed.lua"
NAIVE_PY = BENCH_DIR / "naive_server.py"
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"
DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/addonreg_bench_writes"
CREDENTIAL_ID = "bench"
SKEW = 60  # seconds a Hawk timestamp stays acceptable
STATUS_VARIABLES = ("Com_commit", "Handler_commit", "Com_begin", "Com_rollback",
                    "Handler_rollback", "Innodb_data_fsyncs", "Innodb_log_writes")

Key = Tuple[str, str, str]  # addon_id, sha256, version


# Keys and signed requests ------------------------------------------------------

class Keys:
    """New, distinct files, never the same twice in one benchmark."""

    def __init__(self, addons: int = 1000) -> None:
        self.addons = addons
        self.salt = secrets.token_hex(4)
        self.next = 0

    def take(self, n: int) -> List[Key]:
        start, self.next = self.next, self.next + n
        out = []
        for i in range(start, start + n):
            sha = hashlib.sha256(f"addonreg-bench-writes/{self.salt}/{i}".encode()).hexdigest()
            out.append((f"addon-{i % self.addons}@writes.bench.example", sha, f"1.0.{i}"))
        return out


def file_path(key: Key) -> str:
    return f"/v1/addons/{key[0]}/files/{key[1]}"


def put_body(key: Key) -> bytes:
    return json.dumps({"version": key[2]}, separators=(",", ":")).encode()


def bulk_body(keys: Sequence[Key]) -> bytes:
    ops = ",".join(f'{{"op":"register","addon_id":"{a}","sha256":"{s}","version":"{v}"}}'
                   for a, s, v in keys)
    return f'{{"operations":[{ops}]}}'.encode()


def signed(hawk_key: str, port: int, method: str, path: str, body: bytes) -> str:
    """The request-file line: METHOD, path, Authorization, body (tab-separated)."""
    auth = sign(CREDENTIAL_ID, hawk_key, method, f"http://{HOST}:{port}{path}", content=body)
    if "\t" in auth or "\n" in auth or b"\t" in body or b"\n" in body:
        raise BenchError("a request does not fit on one line of the requests file")
    return f"{method}\t{path}\t{auth}\t{body.decode()}"


# MariaDB -----------------------------------------------------------------------

def mysql_connect(url: str, database: Optional[str] = None):
    import pymysql

    parts = urlsplit(url)
    try:
        return pymysql.connect(host=parts.hostname or HOST, port=parts.port or 3306,
                               user=parts.username or "root", password=parts.password or "",
                               database=database, autocommit=True, connect_timeout=5,
                               read_timeout=60, write_timeout=60)
    except pymysql.MySQLError as exc:
        raise BenchError(f"cannot reach MariaDB at {parts.hostname}:{parts.port}: {exc}") from None


class Database:
    """The benchmark's database, and MariaDB's global counters, on one connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = urlsplit(url).path.strip("/")
        if not re.fullmatch(r"\w+", self.name):
            raise BenchError(f"unexpected database name {self.name!r}")
        self.conn = None

    def reset(self) -> None:
        """Drop every table of the database (creating it if missing), create both schemas."""
        reset_mysql(self.url)
        if self.conn is None:
            self.conn = mysql_connect(self.url, self.name)
        with self.conn.cursor() as cur:
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for statement in [*ADDONREG_SCHEMA, naive_server.SCHEMA]:
                    cur.execute(statement)

    def status(self) -> Dict[str, int]:
        with self.conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN ("
                        + ",".join(["%s"] * len(STATUS_VARIABLES)) + ")", STATUS_VARIABLES)
            values = {name: int(value) for name, value in cur.fetchall()}
        missing = set(STATUS_VARIABLES) - set(values)
        if {"Com_commit", "Handler_commit"} & missing:
            raise BenchError(f"SHOW GLOBAL STATUS lacks {sorted(missing)}")
        return values

    def rows(self, table: str) -> int:
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM `{table}`")
            return int(cur.fetchone()[0])

    def settle(self, table: Optional[str], server_pid, timeout: float = 60.0,
               background_after: float = 10.0) -> Tuple[Dict[str, int], int, int]:
        """Wait until the requests still in flight when wrk stopped are done: ``Com_commit``
        and the row count unchanged, and the server using (almost) no CPU, over two
        0.3 s intervals in a row (a large request can parse for a second before it
        commits anything). Returns (status, rows, own) where ``own`` is the number of
        ``COUNT(*)`` queries run here before that status was read (each is one
        ``Handler_commit``). The InnoDB counters are not watched: its background
        threads keep them moving. When only ``Com_commit`` keeps moving (someone
        else commits on the same MariaDB: it is a global counter) while the rows
        and the server are still, that is accepted after ``background_after``
        seconds rather than waited out."""
        started = time.monotonic()
        deadline = started + timeout
        last = None
        quiet = own = still = 0
        while True:
            rows = self.rows(table) if table else 0
            own += 1 if table else 0
            status = self.status()
            cpu = process_cpu_s(server_pid) or 0.0
            now = (status["Com_commit"], rows)
            if last is not None and now == last[0] and cpu - last[1] < 0.02:
                quiet += 1
                if quiet == 2:
                    return status, rows, own
            else:
                quiet = 0
            if last is not None and rows == last[0][1] and cpu - last[1] < 0.02:
                still += 1
                if still >= 3 and time.monotonic() - started > background_after:
                    return status, rows, own
            else:
                still = 0
            if time.monotonic() > deadline:
                raise BenchError(f"the server or MariaDB still busy {timeout:.0f} s after the "
                                 f"run (table {table})")
            last = (now, cpu)
            time.sleep(0.3)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# CPU accounting ----------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid) -> Optional[float]:
    """User + system CPU seconds of a process so far (None when it cannot be read).

    ``pid`` may also be a list of pids (the processes of one server): their sum."""
    if pid is None:
        return None
    if isinstance(pid, (list, tuple)):
        values = [process_cpu_s(p) for p in pid]
        return None if not values or None in values else sum(values)
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return None


def server_pids(server) -> List[int]:
    """The pids of a server: ``server.pids`` when it has several processes
    (bench/run.py's groups, nginx), else its one process."""
    pids = getattr(server, "pids", None)
    return list(pids) if pids else [server.proc.pid]


def cpus_busy_s() -> Dict[str, float]:
    """Busy (not idle, not iowait) seconds of every CPU so far, from /proc/stat."""
    out = {}
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *values = line.split()
                ticks = [int(v) for v in values[:8]]
                out[name] = (sum(ticks) - ticks[3] - ticks[4]) / _TICK
    except (OSError, ValueError):
        pass
    return out


def find_mariadb_pid() -> Optional[int]:
    """The local MariaDB server's pid, only to read its CPU time (None if not found)."""
    for name in ("mariadbd", "mysqld"):
        try:
            found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True,
                                   timeout=5).stdout.split()
        except (OSError, subprocess.SubprocessError):
            return None
        if len(found) == 1:
            return int(found[0])
    return None


class CpuMeter:
    """CPU used during a run: the server, MariaDB, and every CPU (busy %)."""

    def __init__(self, server_pid: Optional[int], mariadb_pid: Optional[int]) -> None:
        self.pids = {"server": server_pid, "mariadb": mariadb_pid}

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.proc0 = {k: process_cpu_s(p) for k, p in self.pids.items()}
        self.cpus0 = cpus_busy_s()

    def stop(self) -> Dict[str, float]:
        elapsed = time.monotonic() - self.t0
        out: Dict[str, float] = {}
        for k, p in self.pids.items():
            now = process_cpu_s(p)
            if now is not None and self.proc0[k] is not None:
                out[f"{k}_cpu_pct"] = round(100 * (now - self.proc0[k]) / elapsed, 1)
        for cpu, busy in cpus_busy_s().items():
            if cpu in self.cpus0:
                out[f"{cpu}_busy_pct"] = round(100 * (busy - self.cpus0[cpu]) / elapsed, 1)
        return out


# HTTP checks -------------------------------------------------------------------

def request(server: Server, method: str, path: str, body: bytes = b"",
            hawk_key: Optional[str] = None, timeout: float = 10.0) -> Tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body else {}
    if hawk_key is not None:
        headers["Authorization"] = sign(CREDENTIAL_ID, hawk_key, method, server.url(path),
                                        content=body)
    req = urllib.request.Request(server.url(path), data=body or None, headers=headers,
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def expect(server: Server, what: str, answer: Tuple[int, bytes], status: int) -> bytes:
    if answer[0] != status:
        raise BenchError(f"{server.name}: {what} answered {answer[0]}, not {status}: "
                         f"{answer[1][:300]!r}\n{server.log_tail()}")
    return answer[1]


def check_writer(server: Server, keys: Keys, hawk_key: str) -> int:
    """A signed PUT of a new file is 201, again 200, unsigned 401; the 201 body's size."""
    key = keys.take(1)[0]
    body = expect(server, "a signed PUT", request(server, "PUT", file_path(key), put_body(key),
                                                  hawk_key), 201)
    if json.loads(body).get("status") != "registered":
        raise BenchError(f"{server.name}: PUT answered {body[:300]!r}")
    expect(server, "a signed PUT of the same file",
           request(server, "PUT", file_path(key), put_body(key), hawk_key), 200)
    other = keys.take(1)[0]
    expect(server, "an unsigned PUT", request(server, "PUT", file_path(other), put_body(other)),
           401)
    return len(body)


def check_bulk(server: Server, keys: Keys, hawk_key: str) -> None:
    batch = keys.take(3)
    body = expect(server, "a signed POST /v1/registrations",
                  request(server, "POST", "/v1/registrations", bulk_body(batch), hawk_key), 200)
    results = json.loads(body)["results"]
    if len(results) != 3 or any(r["status"] != "registered" for r in results):
        raise BenchError(f"{server.name}: POST /v1/registrations answered {body[:300]!r}")


# wrk ---------------------------------------------------------------------------

def parse_wrk(output: str) -> Dict[str, object]:
    """The numbers of ``wrk --latency`` output plus the line of ``signed.lua``."""
    replay = re.search(r"^signed: (\d+) responses, (\d+) non-2xx, (\d+) sent of (\d+) "
                       r"pre-signed, (\d+) exhausted \((.*)\)$", output, re.MULTILINE)
    if not replay:
        raise BenchError(f"no 'signed:' line in wrk output:\n{output}")
    statuses = dict(item.split("=") for item in replay[6].split())
    return {
        **quick.parse_wrk_common(output),
        "responses": int(replay[1]),
        "non_2xx": int(replay[2]),
        "sent": int(replay[3]),
        "presigned": int(replay[4]),
        "exhausted": int(replay[5]),
        "statuses": {k: int(v) for k, v in statuses.items()},
    }


def run_wrk(server: Server, requests_file: Path, duration: int, connections: int,
            cpu: Optional[int]) -> Tuple[Dict[str, object], str]:
    """One bounded wrk run: its parsed numbers and its output."""
    argv = pinned(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
                   "--timeout", "20s", "-s", str(SIGNED_LUA), server.url(), "--",
                   str(requests_file), f"{HOST}:{server.port}"], cpu)
    output, _ = quick.wrk(argv, duration, margin=60)
    return parse_wrk(output), output


# Cases -------------------------------------------------------------------------

@dataclass
class Case:
    """One scenario against one server, measured once per round."""

    scenario: str
    target: str  # service, naive or baseline
    server: Server
    kind: str  # put or bulk
    ops_per_request: int
    connections: int
    table: Optional[str]  # where its registrations land (None: the baseline writes nothing)
    rate: float  # requests/s: a first guess, then the highest seen
    calibrated: bool = False
    runs: List[Dict[str, object]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.scenario}/{self.target}"

    def requests_needed(self, duration: float) -> int:
        return math.ceil(self.rate * duration * 2) + 2 * self.connections + 4

    def median(self, key: str) -> Optional[float]:
        values = [float(run[key]) for run in self.runs if run.get(key) is not None]
        return statistics.median(values) if values else None

    def summary(self) -> Dict[str, Optional[float]]:
        out: Dict[str, Optional[float]] = {}
        for key in ("requests_per_s", "registrations_per_s", "p50_ms", "p99_ms",
                    "writes_per_commit", "writes_per_handler_commit", "writes_per_fsync",
                    "delta_Com_commit", "delta_Handler_commit", "rows"):
            out[f"{key}_median"] = self.median(key)
        for key in ("server_cpu_pct", "mariadb_cpu_pct"):
            values = [run["cpu"][key] for run in self.runs if key in run.get("cpu", {})]
            out[f"{key}_median"] = statistics.median(values) if values else None
        values = [float(run["registrations_per_s"]) for run in self.runs]
        out["registrations_per_s_min"] = min(values) if values else None
        out["registrations_per_s_max"] = max(values) if values else None
        return out


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, db: Database, hawk_key: str,
                 wrk_cpu: Optional[int]) -> None:
        self.args = args
        self.tmp = tmp
        self.db = db
        self.hawk_key = hawk_key
        self.wrk_cpu = wrk_cpu
        self.keys = Keys()
        self.mariadb_pid = find_mariadb_pid()

    def write_requests(self, case: Case, count: int) -> Tuple[Path, float]:
        """Sign ``count`` requests for ``case`` into a file; (path, seconds it took)."""
        started = time.monotonic()
        port = case.server.port
        lines = []
        if case.kind == "put":
            for key in self.keys.take(count):
                lines.append(signed(self.hawk_key, port, "PUT", file_path(key), put_body(key)))
        else:
            for _ in range(count):
                body = bulk_body(self.keys.take(case.ops_per_request))
                lines.append(signed(self.hawk_key, port, "POST", "/v1/registrations", body))
        path = self.tmp / f"{case.scenario}-{case.target}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path, time.monotonic() - started

    def measure(self, case: Case, duration: int, label: str,
                around_load: Optional[Callable[[], ContextManager[None]]] = None
                ) -> Dict[str, object]:
        """One valid run of ``case`` on empty tables (runs again with more requests
        if the pre-signed ones ran out); its numbers. ``around_load`` (a context
        manager factory) is entered just before wrk starts and left when it ends."""
        for attempt in range(4):
            case.server.check_alive()
            self.db.reset()
            count = case.requests_needed(duration)
            requests_file, sign_s = self.write_requests(case, count)
            if sign_s + duration + 10 > SKEW:
                raise BenchError(
                    f"{case.name}: signing {count} requests took {sign_s:.1f} s; with a "
                    f"{duration} s run the first signatures would be older than the "
                    f"{SKEW} s Hawk allows. Use a shorter --duration.")
            meter = CpuMeter(server_pids(case.server), self.mariadb_pid)
            before = self.db.status()
            with (around_load or contextlib.nullcontext)():
                meter.start()
                numbers, output = run_wrk(case.server, requests_file, duration,
                                          case.connections, self.wrk_cpu)
                cpu = meter.stop()
            after, rows, own = self.db.settle(case.table, server_pids(case.server))
            after["Handler_commit"] -= own  # our own COUNT(*) queries
            requests_file.unlink()
            # The first run replaces the first guess; later ones can only raise it.
            observed = numbers["sent"] / duration
            case.rate = max(case.rate, observed) if case.calibrated else observed
            case.calibrated = True
            # Requests sent a second time are refused (replayed nonce); more refusals
            # than that is a real failure, reported at once.
            if numbers["exhausted"] and numbers["non_2xx"] <= numbers["exhausted"]:
                print(f"  {label} {case.name}: the {count} pre-signed requests ran out "
                      f"({numbers['exhausted']} sent again); running it again with more",
                      flush=True)
                case.rate *= 2
                continue
            self.validate(case, numbers, output, rows)
            deltas = {name: after.get(name, 0) - before.get(name, 0) for name in after}
            registrations = rows if case.table else 0
            numbers.update(
                attempt=attempt + 1, signing_s=round(sign_s, 3), cpu=cpu,
                registrations_per_s=numbers["requests_per_s"] * case.ops_per_request,
                acknowledged=numbers["responses"] * case.ops_per_request,
                rows=rows if case.table else None,
                deltas=deltas,
                delta_Com_commit=deltas["Com_commit"],
                delta_Handler_commit=deltas["Handler_commit"],
                writes_per_commit=(registrations / deltas["Com_commit"]
                                   if case.table and deltas["Com_commit"] else None),
                writes_per_handler_commit=(registrations / deltas["Handler_commit"]
                                           if case.table and deltas["Handler_commit"] else None),
                writes_per_fsync=(registrations / deltas["Innodb_data_fsyncs"]
                                  if case.table and deltas.get("Innodb_data_fsyncs") else None))
            return numbers
        raise BenchError(f"{case.name}: ran out of pre-signed requests four times")

    @staticmethod
    def validate(case: Case, numbers: Dict[str, object], output: str, rows: int) -> None:
        if numbers["non_2xx"]:
            raise BenchError(
                f"{case.name}: {numbers['non_2xx']} of {numbers['responses']} answers were not "
                f"2xx ({numbers['statuses']}); a 401 means the signing went wrong, a 503 an "
                f"overloaded or failing service. Not benchmarking errors.\n"
                f"{case.server.name} log:\n{case.server.log_tail()}")
        if any(numbers["socket_errors"].values()):
            raise BenchError(f"{case.name}: socket errors {numbers['socket_errors']}:\n{output}\n"
                             f"{case.server.name} log:\n{case.server.log_tail()}")
        if numbers["responses"] == 0:
            raise BenchError(f"{case.name}: no answer at all:\n{output}")
        # Only a real writer (one with a table) answers 201; the baselines answer 200.
        if case.kind == "put" and case.table \
                and numbers["statuses"].get("201", 0) != numbers["responses"]:
            raise BenchError(f"{case.name}: every PUT was of a new file, yet the answers were "
                             f"{numbers['statuses']} (not all 201)")
        if case.table:
            acknowledged = numbers["responses"] * case.ops_per_request
            sent = numbers["sent"] * case.ops_per_request
            if not acknowledged <= rows <= sent:
                raise BenchError(f"{case.name}: {acknowledged} registrations acknowledged and "
                                 f"{sent} sent, but {rows} rows in {case.table}")


# Report ------------------------------------------------------------------------

def fmt(value: Optional[float], spec: str, suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def markdown_table(cases: Sequence[Case], baseline: Case) -> str:
    head = ("| scenario | server | conns | registrations/s | req/s | vs baseline | p50 | p99 "
            "| writes / COMMIT | writes / Handler_commit | writes / fsync | server CPU |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    base = baseline.median("requests_per_s")
    for case in cases:
        s = case.summary()
        ratio = (f"{s['requests_per_s_median'] / base:.0%}"
                 if case.kind == "put" and case.target != "baseline" and base else "—")
        lines.append(
            f"| {case.scenario} | {case.target} | {case.connections} "
            f"| {fmt(s['registrations_per_s_median'], ',.0f')} "
            f"({fmt(s['registrations_per_s_min'], ',.0f')}–"
            f"{fmt(s['registrations_per_s_max'], ',.0f')}) "
            f"| {fmt(s['requests_per_s_median'], ',.1f')} | {ratio} "
            f"| {fmt(s['p50_ms_median'], '.1f', ' ms')} | {fmt(s['p99_ms_median'], '.1f', ' ms')} "
            f"| {fmt(s['writes_per_commit_median'], ',.1f')} "
            f"| {fmt(s['writes_per_handler_commit_median'], ',.1f')} "
            f"| {fmt(s['writes_per_fsync_median'], ',.1f')} "
            f"| {fmt(s['server_cpu_pct_median'], '.0f', ' %')} |")
    return "\n".join(lines)


def write_results(report: Dict[str, object], started: datetime.datetime) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"writes-{started:%Y-%m-%d-%H%M%S}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


# Profiling ---------------------------------------------------------------------

def profile_case(bench: Bench, case: Case, seconds: int, out_dir: Path,
                 stem: str) -> Optional[Dict[str, object]]:
    """One extra, unrecorded run of ``case`` with py-spy recording the server
    (attached once the requests are signed, for the length of the load)."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) \
        or shutil.which("py-spy")
    if py_spy is None:
        print("  profile: py-spy not found (pip install py-spy into the venv)")
        return None
    raw = out_dir / f"{stem}-{case.scenario}.txt"
    failure: List[str] = []

    @contextlib.contextmanager
    def recording() -> Iterator[None]:
        raw.unlink(missing_ok=True)
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(case.server.proc.pid), "--rate", "250",
             "--duration", str(seconds), "--format", "raw", "--nonblocking",
             "--output", str(raw)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        try:
            time.sleep(0.3)  # let py-spy attach
            yield
            _, err = spy.communicate(timeout=30)
            if spy.returncode != 0:
                failure.append(f"py-spy exited with {spy.returncode}: {err.strip()[-300:]}")
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()

    numbers = bench.measure(case, seconds, "profile", recording)
    if failure or not raw.exists():
        print(f"  profile: {failure[0] if failure else 'py-spy wrote nothing'}")
        return None
    summary = summarize_profile(raw)
    summary["run"] = {k: numbers[k] for k in ("registrations_per_s", "requests_per_s", "cpu")}
    return summary


def summarize_profile(raw: Path, top: int = 15) -> Dict[str, object]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: Dict[str, int] = collections.Counter()
    inclusive: Dict[str, int] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]  # function, not line
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return {"file": str(raw.relative_to(REPO_DIR)) if raw.is_relative_to(REPO_DIR) else str(raw),
            "samples": total,
            "self": [(f, round(100 * n / total, 1)) for f, n in own.most_common(top)] if total else [],
            "inclusive": [(f, round(100 * n / total, 1))
                          for f, n in inclusive.most_common(top * 2)] if total else []}


# Main --------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Write benchmark of addonreg on MariaDB against a naive server and bare "
                    "Tornado (see the module docstring).")
    parser.add_argument("--runs", type=int, default=3, help="rounds (runs per scenario and server)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c for the PUT scenario")
    parser.add_argument("--bulk-connections", type=int, default=4,
                        help="wrk -c for the bulk scenarios (default 4)")
    parser.add_argument("--bulk-sizes", default="1000,5000",
                        help="operations per POST /v1/registrations, comma-separated")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of unrecorded load per scenario and server (0: none)")
    parser.add_argument("--mysql-url", default=DEFAULT_MYSQL_URL,
                        help=f"database (default {DEFAULT_MYSQL_URL}); its tables are dropped")
    parser.add_argument("--naive-pool-size", type=int, default=8,
                        help="MySQL connections of the naive server (default 8, like "
                             "addonreg's storage_pool_size)")
    parser.add_argument("--event-loop", choices=("auto", "asyncio", "uvloop"),
                        default=os.environ.get("ADDONREG_EVENT_LOOP", "auto").lower(),
                        help="for all servers (default $ADDONREG_EVENT_LOOP or auto)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--profile", type=int, default=0, metavar="SECONDS",
                        help="after the runs, profile the service with py-spy during one extra "
                             "run of this length per service scenario (0: no profile)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting of the service (e.g. write_window=0), as if from "
                             "ADDONREG_<NAME>; repeatable")
    args = parser.parse_args(argv)
    try:
        args.set = dict(item.split("=", 1) for item in args.set)
    except ValueError:
        parser.error("--set takes NAME=VALUE")
    for name in ("runs", "duration", "connections", "bulk_connections", "naive_pool_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        args.bulk_sizes = [int(x) for x in args.bulk_sizes.split(",") if x.strip()]
    except ValueError:
        parser.error("--bulk-sizes must be integers separated by commas")
    if any(not 1 <= n <= 5000 for n in args.bulk_sizes):
        parser.error("--bulk-sizes must be from 1 to 5000 (the service's max_write)")
    if urlsplit(args.mysql_url).scheme != "mysql":
        parser.error("--mysql-url must be mysql://user:pass@host:port/db")
    return args



def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed", file=sys.stderr)
        return 2
    return quick.run_with_cleanup(run, args, "addonreg-bench-writes-")


def run(args: argparse.Namespace, tmp: Path) -> int:
    """Start, check, load, report; the servers are stopped whatever happens."""
    started = datetime.datetime.now()
    loadavg_at_start = os.getloadavg()
    commit = git_commit()  # what the servers are about to load
    servers: List[Server] = []
    wrk_cpu, server_cpu, pinning = choose_cpus(args.no_pin)
    if wrk_cpu is not None:
        pinning = pinning.replace("both servers", "all three servers") + " (MariaDB not pinned)"
    hawk_key = secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADDONREG_")}
    env.update(ADDONREG_HOST=HOST, ADDONREG_PORT="0", ADDONREG_EVENT_LOOP=args.event_loop,
               ADDONREG_LOG_LEVEL="INFO", ADDONREG_ACCESS_LOG="false",
               ADDONREG_STORAGE=args.mysql_url, ADDONREG_PUBSUB="local://",
               ADDONREG_HAWK_CREDENTIALS=f"{CREDENTIAL_ID}:{hawk_key}")
    service_env = dict(env, **{f"ADDONREG_{k.upper()}": v for k, v in args.set.items()})
    db = Database(args.mysql_url)
    profiles: Dict[str, object] = {}
    try:
        db.reset()
        service = Server(
            "addonreg serve", pinned([sys.executable, "-m", "addonreg", "serve"], server_cpu),
            service_env, tmp / "service.log",
            re.compile(r"addonreg listening on \S+:(?P<port>\d+) \(storage \w+, (?P<loop>\w+)\)"))
        servers.append(service)
        service.start()
        naive = Server(
            "naive server", pinned([sys.executable, str(NAIVE_PY), "--host", HOST, "--port", "0",
                                    "--mysql-url", args.mysql_url,
                                    "--pool-size", str(args.naive_pool_size),
                                    "--event-loop", args.event_loop], server_cpu),
            env, tmp / "naive.log",
            re.compile(r"naive listening on \S+:(?P<port>\d+) \((?P<loop>\w+),"))
        servers.append(naive)
        naive.start()

        bench = Bench(args, tmp, db, hawk_key, wrk_cpu)
        answer_size = check_writer(service, bench.keys, hawk_key)
        check_bulk(service, bench.keys, hawk_key)
        check_writer(naive, bench.keys, hawk_key)
        baseline = quick.baseline_server("baseline", answer_size, args.event_loop, server_cpu,
                                         env, tmp / "baseline.log")
        servers.append(baseline)
        baseline.start()
        key = bench.keys.take(1)[0]
        expect(baseline, "a PUT", request(baseline, "PUT", file_path(key), put_body(key)), 200)
        loops = {s.name: s.loop for s in servers}
        if len(set(loops.values())) != 1:
            raise BenchError(f"event loops differ: {loops}")
        status, facts = request(service, "GET", "/v1/")
        service_settings = json.loads(facts).get("settings", {}) if status == 200 else {}

        print(f"servers: addonreg pid {service.proc.pid} port {service.port}, naive pid "
              f"{naive.proc.pid} port {naive.port} (pool {args.naive_pool_size}), baseline pid "
              f"{baseline.proc.pid} port {baseline.port}; event loop {service.loop}; "
              f"PUT answer {answer_size} bytes")
        print(f"storage: {args.mysql_url} (tables dropped and created before every run)")
        print(f"pinning: {pinning}")
        print(f"load: wrk -t1, PUT -c{args.connections}, bulk -c{args.bulk_connections}; "
              f"{args.runs} rounds x {args.duration} s per scenario and server, order rotated; "
              f"{args.warmup} s warm-up each; requests pre-signed before each run, each sent "
              f"once; 127.0.0.1 only", flush=True)

        put_cases = [Case("put", target, server, "put", 1, args.connections, table, 3000.0)
                     for target, server, table in (
                         ("baseline", baseline, None),
                         ("naive", naive, naive_server.TABLE),
                         ("service", service, "registrations"))]
        bulk_cases = [Case(f"bulk-{n}", "service", service, "bulk", n, args.bulk_connections,
                           "registrations", 60_000 / n) for n in args.bulk_sizes]
        cases = put_cases + bulk_cases

        if args.warmup:
            print("\nwarm-up (not recorded):")
            for case in cases:
                # A bulk request may take over a second: give it time to answer a few.
                seconds = max(args.warmup, 3) if case.kind == "bulk" else args.warmup
                numbers = bench.measure(case, seconds, "warm-up")
                print(f"  {case.name:22} {numbers['registrations_per_s']:10,.0f} reg/s "
                      f"({seconds} s)", flush=True)

        for i in range(1, args.runs + 1):
            print(f"\nround {i}:")
            shift = (i - 1) % len(cases)
            for case in cases[shift:] + cases[:shift]:
                numbers = bench.measure(case, args.duration, f"round {i}")
                case.runs.append(numbers)
                wpc = numbers["writes_per_commit"]
                print(f"  {case.name:22} {numbers['registrations_per_s']:10,.0f} reg/s "
                      f"{numbers['requests_per_s']:9,.1f} req/s ({numbers['requests']:6} req)  p50 {numbers['p50_ms']:7.1f} ms  "
                      f"p99 {numbers['p99_ms']:7.1f} ms  ΔCom_commit {numbers['delta_Com_commit']:6} "
                      f"ΔHandler_commit {numbers['delta_Handler_commit']:6}  rows "
                      f"{numbers['rows'] if numbers['rows'] is not None else '-':>7}  "
                      f"writes/COMMIT {fmt(wpc, ',.1f')}  CPU % {numbers['cpu']}", flush=True)

        if args.profile:
            stem = f"writes-{started:%Y-%m-%d-%H%M%S}-profile"
            RESULTS_DIR.mkdir(exist_ok=True)
            print(f"\nprofiles of the service (py-spy, {args.profile} s extra run each, "
                  "not recorded above):")
            for case in cases:
                if case.target != "service":
                    continue
                summary = profile_case(bench, case, args.profile, RESULTS_DIR, stem)
                if summary:
                    profiles[case.scenario] = summary
                    print(f"  {case.scenario}: {summary['samples']} samples, {summary['file']}")
                    for frame, share in summary["self"][:10]:
                        print(f"    self      {share:5.1f}%  {frame}")
                    shown = 0
                    for frame, share in summary["inclusive"]:
                        if share < 90 and shown < 12:  # below the event loop's own frames
                            print(f"    inclusive {share:5.1f}%  {frame}")
                            shown += 1
    finally:
        stop_all(servers)
        db.close()

    # Report.
    background = [run["delta_Com_commit"] for run in put_cases[0].runs]
    print(f"\n{markdown_table(cases, put_cases[0])}\n")
    # Each round runs every case once: a ratio within a round compares runs
    # made seconds apart, which the ratio of medians does not.
    per_round = {case.target: [r["requests_per_s"] / b["requests_per_s"]
                               for r, b in zip(case.runs, put_cases[0].runs)]
                 for case in put_cases[1:]}
    for target, ratios in per_round.items():
        print(f"PUT {target} / baseline, round by round: "
              f"{', '.join(f'{x:.0%}' for x in ratios)}; median {statistics.median(ratios):.1%}")
    print()
    print(f"Medians of {args.runs} runs of {args.duration} s (min–max of registrations/s in "
          f"brackets); registrations/s = req/s x operations per request; 'vs baseline' = "
          f"PUT req/s / bare Tornado PUT req/s; writes / COMMIT = rows committed / Δ global "
          f"Com_commit (explicit COMMITs = transactions; for the service, its batches); "
          f"Handler_commit also counts each statement's commit inside a transaction, so it "
          f"is statements rather than transactions; writes / fsync = rows / Δ "
          f"Innodb_data_fsyncs; server CPU = the server process's CPU time / wall time "
          f"(100 % = its whole core). Δ Com_commit during the baseline runs (background, "
          f"nothing of ours writes then): {background}. {pinning}; event loop "
          f"{service.loop}; MariaDB {args.mysql_url}; load average "
          f"{loadavg_at_start[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end.")
    report = {
        "benchmark": "bench/writes.py",
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "git_commit": commit,
        "machine": {"cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_at_start": loadavg_at_start, "loadavg_at_end": os.getloadavg()},
        "options": vars(args),
        "pinning": {"description": pinning, "wrk_cpu": wrk_cpu, "servers_cpu": server_cpu},
        "event_loop": service.loop,
        "put_answer_bytes": answer_size,
        "service_settings": service_settings,
        "cases": {case.name: {"scenario": case.scenario, "server": case.target,
                              "kind": case.kind, "ops_per_request": case.ops_per_request,
                              "connections": case.connections, "table": case.table,
                              "summary": case.summary(), "runs": case.runs}
                  for case in cases},
        "ratio_service_put_to_baseline": (
            put_cases[2].median("requests_per_s") / put_cases[0].median("requests_per_s")),
        "ratio_naive_put_to_baseline": (
            put_cases[1].median("requests_per_s") / put_cases[0].median("requests_per_s")),
        "ratio_put_to_baseline_per_round": per_round,
        "profiles": profiles,
    }
    print(f"raw numbers: {write_results(report, started).relative_to(REPO_DIR)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
