"""The addonreg benchmark: one scenario table, one runner, one report per family.

Runs the real ``addonreg serve`` under ``wrk`` beside a baseline in the same run (bare
Tornado answering as many bytes, a plain multi-row INSERT, or nginx proxying to the
service) for each line of ``SCENARIOS``: req/s, p50, p99, server CPU-ms per request,
RSS, ratio to the baseline; and two probes (RSS per cached entry; how soon a second
process sees a write). Target and baseline alternate round by round; medians of
``--rounds``. An answer of another status, or a socket error, makes the scenario
FAILED with the server's log tail (the rest still runs, exit 1). Servers on CPU 0, wrk
on CPU 1; every child is stopped at the end, on error and on SIGTERM. Reports go to
``bench/results/runs/<date>/`` and, with ``--save``, to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import http.client
import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import filter as filterbench
import mohawk
import msgpack
import psutil
import pymysql
import report

from addonreg.filter.follow import generate_key

BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # the venv's console scripts: addonreg, py-spy
HOST = "127.0.0.1"
HAWK_ID = "bench"
FAMILIES = ("reads", "writes", "static", "memory", "feed", "filter", "cluster")
DATA = Path("/var/tmp/addonreg-bench")  # the SQLite data sets, kept from run to run


class BenchError(Exception):
    """This scenario cannot be measured: it is FAILED and the run goes on."""


Row = tuple[str, str, str]  # addon_id, sha256, version


def row(i: int, addons: int) -> Row:
    """Registration ``i`` of every data set: always the same for a given ``addons``."""
    return (
        f"addon-{i % addons}@bench.example",
        hashlib.sha256(b"bench/%d" % i).hexdigest(),
        f"1.0.{i // addons}",
    )


def file_path(r: Row) -> str:
    return f"/v1/addons/{r[0]}/files/{r[1]}"


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Req:
    """One request of a requests file (its method is the scenario's)."""

    path: str
    body: bytes = b""
    headers: tuple[str, ...] = ()

    def line(self, method: str) -> str:
        body = self.body.decode("utf-8", "replace")
        if body.encode() != self.body or re.search(r"[\t\n]|^hex:", body):
            body = "hex:" + self.body.hex()  # binary (msgpack): replay.lua decodes it
        return "\t".join((method, self.path, body, *self.headers))


Generator = Callable[["Bench", "Scenario", int], list[Req]]


@dataclass(frozen=True)
class Scenario:
    """One line of the table. "cycle" replays ``requests`` round-robin; "once" sends each once,
    n new ones per round (n from ``rate``, then from the rate measured). A probe replaces wrk."""

    name: str
    family: str
    target: str = ""
    method: str = "GET"
    requests: Generator | None = None
    connections: int = 64
    baseline: str = "tornado"
    status: int = 200
    files: int = 1
    mode: str = "cycle"
    rate: float = 0.0
    reject: bytes = b"unknown"  # an answer containing this is wrong (an unknown file)
    probe: Callable[[Bench, Scenario], dict[str, Any]] | None = None


def spread(b: Bench, family: str, count: int) -> list[Row]:
    """``count`` registered files spread over the family's whole data set."""
    rows, addons = b.sizes[family]
    return [row(i * (rows // count), addons) for i in range(count)]


def gets(b: Bench, sc: Scenario, n: int) -> list[Req]:
    """GETs of the 100 hot files ("cycle"), or of n files drawn from the whole set ("once")."""
    rows, addons = b.sizes[sc.family]
    return [
        Req(file_path(r))
        for r in (
            spread(b, sc.family, 100)
            if sc.mode == "cycle"
            else (row(b.uniform.randrange(rows), addons) for _ in range(n))
        )
    ]


def posts(api: str, files: int, packed: bool = False) -> Generator:
    """POSTs of cached files: 10 bodies of ``files`` each, or (1) one body per hot file."""
    path, ident, wrap = {
        "lookup": ("/v1/lookup", "addon_id", "files"),
        "addon": ("/addon", "id", ""),
        "addons": ("/addons", "id", "addons"),
    }[api]
    kind = "application/msgpack" if packed else "application/json"

    def make(b: Bench, sc: Scenario, n: int) -> list[Req]:
        # At most half the cache is asked for, so that every file stays cached; seeded
        # by name: the check that warms the cache sees the very requests wrk replays.
        pool, rnd = spread(b, "reads", min(5000, b.cache_size // 2)), random.Random(sc.name)
        groups = (
            [rnd.sample(pool, files) for _ in range(10)]
            if files > 1
            else [[r] for r in spread(b, "reads", 100)]
        )
        bodies = [[{ident: a, "sha256": s} for a, s, _ in group] for group in groups]
        return [
            Req(
                path,
                msgpack.packb(body) if packed else dumps(body),
                (f"Content-Type: {kind}", f"Accept: {kind}"),
            )
            for body in ({wrap: items} if wrap else items[0] for items in bodies)
        ]

    return make


def signed(b: Bench, method: str, path: str, body: bytes, port: int = 0) -> Req:
    """Hawk-signed JSON for the writer, or the process on ``port`` (the port is signed);
    72-bit nonces: mohawk's 36 repeat."""
    url, kind = f"http://{HOST}:{port or b.targets['writer'].port}{path}", "application/json"
    sender = mohawk.Sender(
        {"id": HAWK_ID, "key": b.hawk_key, "algorithm": "sha256"},
        url,
        method,
        content=body,
        content_type=kind,
        nonce=secrets.token_urlsafe(9),
    )
    return Req(path, body, (f"Authorization: {sender.request_header}", f"Content-Type: {kind}"))


def new_key(b: Bench) -> Row:
    n = next(b.keys)
    return f"w{n % 1000}@bench.example", hashlib.sha256(b"write/%d" % n).hexdigest(), "1.0"


def writes(size: int) -> Generator:
    """Signed registrations of new files: one PUT each (size 0), or bulk POSTs of ``size``."""

    def make(b: Bench, sc: Scenario, n: int) -> list[Req]:
        if not size:
            return [
                signed(b, "PUT", file_path(k), dumps({"version": k[2]}))
                for k in (new_key(b) for _ in range(n))
            ]
        return [
            signed(
                b,
                "POST",
                "/v1/registrations",
                dumps(
                    {
                        "operations": [
                            {"op": "register", "addon_id": a, "sha256": s, "version": v}
                            for a, s, v in (new_key(b) for _ in range(size))
                        ]
                    }
                ),
            )
            for _ in range(n)
        ]

    return make


def cache_memory(b: Bench, sc: Scenario) -> dict[str, Any]:
    """RSS per cached entry: a cache of 1M entries filled by one lookup of each file."""
    addons, n = b.args.addons, min(b.args.rows, 1_000_000)
    t = b.start_service("memory", b.seed("reads"), cache=max(1_100_000, n + n // 10))
    bodies = [
        dumps(
            {
                "files": [
                    {"addon_id": a, "sha256": s}
                    for a, s, _ in (row(i, addons) for i in range(start, min(start + 1000, n)))
                ]
            }
        )
        for start in range(0, n, 1000)
    ]

    def post(body: bytes) -> None:
        status, answer = http_request(t.port, "POST", Req("/v1/lookup", body))
        if status != 200 or b'"unknown"' in answer:
            raise BenchError(f"POST /v1/lookup answered {status}: {answer[:200]!r}")

    for _ in range(20):  # warm-up (buffers, code paths) with 1,000 entries only
        post(bodies[0])
    rss0, entries0, started = t.rss(), cache_entries(t.port), time.monotonic()
    with ThreadPoolExecutor(4) as threads:
        list(threads.map(post, bodies[1:]))
    seconds, rss1, entries1 = time.monotonic() - started, t.rss(), cache_entries(t.port)
    return {
        "entries_before": entries0,
        "entries": entries1,
        "rss_before_mib": rss0 / 2**20,
        "rss_after_mib": rss1 / 2**20,
        "fill_seconds": seconds,
        "bytes_per_entry": (rss1 - rss0) / max(entries1 - entries0, 1),
    }


def cache_entries(port: int) -> int:
    text = http_request(port, "GET", Req("/__metrics__"))[1]
    match = re.search(rb'^addonreg_cache_entries{cache="files"} ([\d.e+]+)$', text, re.MULTILINE)
    return int(float(match[1])) if match else 0


def feed_freshness(b: Bench, sc: Scenario) -> dict[str, Any]:
    """Two processes over one MariaDB: write on A, time until B answers the new state."""
    a, storage = b.args, b.reset_mysql(b.args.scratch_db)
    writer = b.start_service("writer", storage, pubsub=a.feed_pubsub)
    reader = b.start_service("feed-reader", storage, pubsub=a.feed_pubsub)
    lags: list[float] = []
    for i in range(a.feed_writes + 1):  # the first one only shows that B sees A's writes
        key = new_key(b)
        http_request(reader.port, "GET", Req(file_path(key)))  # B caches "unknown" first
        put = signed(b, "PUT", file_path(key), dumps({"version": key[2]}))
        if http_request(writer.port, "PUT", put)[0] != 201:
            raise BenchError(f"a PUT on the writer did not answer 201:\n{writer.tail()}")
        written = time.monotonic()
        while http_request(reader.port, "GET", Req(file_path(key)))[0] != 200:
            if time.monotonic() - written > 5:
                return {
                    "skipped": f"ADDONREG_PUBSUB={a.feed_pubsub}: write {i + 1} not seen by "
                    "the other process in 5 s (local:// never sees the other's)"
                }
            time.sleep(0.001)
        lags.append((time.monotonic() - written) * 1000)
    procs, queries = writer.processes() + reader.processes(), b.global_status("Questions")
    cpu = [cpu_seconds([p]) for p in procs]
    time.sleep(a.duration)  # idle: what keeping up with the feed costs
    cuts = statistics.quantiles(lags[1:], n=100)
    return {
        "writes": len(lags) - 1,
        "p50_ms": cuts[49],
        "p99_ms": cuts[98],
        "idle_cpu_pct_per_process": [
            100 * (cpu_seconds([p]) - c) / a.duration for p, c in zip(procs, cpu)
        ],
        "idle_mariadb_queries_per_s_all_clients": (b.global_status("Questions") - queries)
        / a.duration,
    }


def filter_build(b: Bench, sc: Scenario) -> dict[str, Any]:
    """bench/filter.py's sizes; ``addonreg filter`` of the read set from storage, end to end."""
    results = filterbench.measure([int(n) for n in b.args.filter_sizes.split(",")])
    storage, started = b.seed("reads"), time.monotonic()
    b.addonreg(storage, "filter", str(b.tmp / "filter"), ADDONREG_FILTER_KEY=generate_key()[0])
    return {
        **filterbench.figures(results),
        "end_to_end_s": time.monotonic() - started,
        "end_to_end_files": b.sizes["reads"][0],
        "markdown": filterbench.markdown(results),
    }


def cluster_probe(name: str) -> Callable[[Bench, Scenario], dict[str, Any]]:
    """A probe of bench/cluster.py, imported when first run: it uses this module's helpers,
    as ``run`` (this file is run as ``__main__``: the alias makes it that one module)."""

    def probe(b: Bench, sc: Scenario) -> dict[str, Any]:
        sys.modules.setdefault("run", sys.modules[__name__])
        import cluster

        result: dict[str, Any] = getattr(cluster, name)(b, sc)
        return result

    return probe


SCENARIOS: list[Scenario] = [
    Scenario("get-hot", "reads", "addonreg", "GET", gets),
    Scenario("get-uniform", "reads", "addonreg", "GET", gets, mode="once", rate=15_000),
    Scenario("lookup-10", "reads", "addonreg", "POST", posts("lookup", 10), files=10),
    Scenario("lookup-100", "reads", "addonreg", "POST", posts("lookup", 100), files=100),
    Scenario("lookup-1000", "reads", "addonreg", "POST", posts("lookup", 1000), files=1000),
    Scenario(
        "lookup-100-msgpack",
        "reads",
        "addonreg",
        "POST",
        posts("lookup", 100, packed=True),
        files=100,
    ),
    Scenario("legacy-addon", "reads", "addonreg", "POST", posts("addon", 1), reject=b"false"),
    Scenario(
        "legacy-addons-100",
        "reads",
        "addonreg",
        "POST",
        posts("addons", 100),
        files=100,
        reject=b"false",
    ),
    Scenario("put-64", "writes", "writer", "PUT", writes(0), status=201, mode="once", rate=5000),
    Scenario(
        "bulk-1000",
        "writes",
        "writer",
        "POST",
        writes(1000),
        connections=4,
        baseline="insert",
        files=1000,
        mode="once",
        rate=60,
    ),
    Scenario(
        "bulk-5000",
        "writes",
        "writer",
        "POST",
        writes(5000),
        connections=4,
        baseline="insert",
        files=5000,
        mode="once",
        rate=12,
    ),
    Scenario("static-get-hot", "static", "static", "GET", gets, baseline="proxy"),
    Scenario("cache-1m", "memory", probe=cache_memory),
    Scenario("feed-freshness", "feed", probe=feed_freshness),
    Scenario("filter", "filter", probe=filter_build),
    Scenario("cluster-read-spread", "cluster", probe=cluster_probe("read_spread")),
    Scenario("cluster-write-failover", "cluster", probe=cluster_probe("write_failover")),
    Scenario("cluster-causal-cost", "cluster", probe=cluster_probe("causal_cost")),
    Scenario("cluster-freshness", "cluster", probe=cluster_probe("freshness")),
    Scenario("cluster-async-loss", "cluster", probe=cluster_probe("async_loss")),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_request(port: int, method: str, req: Req) -> tuple[int, bytes]:
    with closing(http.client.HTTPConnection(HOST, port, timeout=60)) as conn:
        headers = dict(h.split(": ", 1) for h in req.headers)
        conn.request(method, req.path, req.body or None, headers)
        answer = conn.getresponse()
        return answer.status, answer.read()


def cpu_seconds(procs: Sequence[psutil.Process]) -> float:
    return sum(t.user + t.system for t in (p.cpu_times() for p in procs))


@dataclass
class Target:
    """Server processes under load (or, ``fixed``, MariaDB under bench/insert.py)."""

    name: str
    port: int = 0
    popens: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    fixed: list[psutil.Process] = field(default_factory=list)

    def processes(self) -> list[psutil.Process]:
        procs = [psutil.Process(p.pid) for p in self.popens]  # and nginx's workers
        return self.fixed + procs + [c for p in procs for c in p.children(recursive=True)]

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self.processes())

    def tail(self, lines: int = 25) -> str:
        return "\n".join(
            f"{log.name}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
            for log in self.logs
        )


class Bench:
    """The state of one run: options, data sets, running targets, results."""

    def __init__(self, args: argparse.Namespace, out: Path, tmp: Path) -> None:
        self.args, self.out, self.tmp = args, out, tmp
        self.sizes = {
            "reads": (args.rows, args.addons),
            "static": (args.static_rows, max(args.static_rows // 10, 1)),
        }
        self.cache_size = args.cache_size or max(args.rows // 10, 1000)
        self.targets: dict[str, Target] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.datasets: dict[str, dict[str, Any]] = {}
        self.extras: dict[str, dict[str, Any]] = {}
        self.hawk_key, self.channel = secrets.token_hex(16), f"bench-{secrets.token_hex(4)}"
        self.uniform = random.Random(20261201)  # get-uniform's draws: new ones every round
        self.keys, self.inserted = itertools.count(), 0  # inserted: rows insert.py wrote
        self.rates: dict[tuple[str, str], float] = {}
        # A family's own servers (bench/cluster.py's clusters), closed when it ends.
        self.resources: dict[str, Any] = {}
        self.cleanups: list[Callable[[], object]] = []
        port = urlsplit(args.mysql_url).port or 3306  # the server we use, not a test's own
        self.mariadb = [
            psutil.Process(c.pid)
            for c in psutil.net_connections("tcp")
            if c.status == "LISTEN" and c.laddr.port == port and c.pid
        ][:1]
        cpus = sorted(os.sched_getaffinity(0))
        pin = len(cpus) >= 2 and shutil.which("taskset")
        self.server_cpu = cpus[0] if pin and args.processes == 1 else None
        self.wrk_cpu = cpus[1] if pin else None
        self.pinning = (
            "no CPU pinning (one CPU)"
            if not pin
            else (
                f"taskset: wrk on CPU {cpus[1]}, servers on "
                + (f"CPU {cpus[0]}" if self.server_cpu is not None else "any CPU")
                + "; MariaDB and Redis unpinned"
            )
        )

    def pin(self, argv: list[str], cpu: int | None) -> list[str]:
        return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]

    def start(
        self,
        t: Target,
        argv: list[str],
        count: int = 1,
        env: dict[str, str] | None = None,
        line: bool = True,
    ) -> Target:
        """``count`` processes, until each logged its listening line (nginx: the port accepts)."""
        self.targets[t.name] = t
        for i in range(count):
            logs = self.out / "logs"  # numbered: the feed's "writer" is not the writes' one
            t.logs.append(logs / f"{len(list(logs.iterdir())):02d}-{t.name}-{i}.log")
            with open(t.logs[-1], "wb") as fh:
                t.popens.append(
                    subprocess.Popen(
                        self.pin(argv, self.server_cpu),
                        env=env,
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + 60
        for popen, log in zip(t.popens, t.logs):
            while not (
                re.search(rb"listening on [\d.]+:\d+", log.read_bytes())
                if line
                else socket.socket().connect_ex((HOST, t.port)) == 0
            ):
                if popen.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"{t.name} did not start (exit {popen.poll()}):\n{t.tail()}")
                time.sleep(0.05)
        return t

    def stop(self, *names: str) -> None:
        popens = [
            p
            for name in names or list(self.targets)
            for p in self.targets.pop(name, Target(name)).popens
        ]
        for p in popens:
            p.terminate()
        for p in popens:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        while not names and self.cleanups:
            self.cleanups.pop()()
        if not names:
            self.resources.clear()

    def start_service(
        self,
        name: str,
        storage: str,
        cache: int = 0,
        processes: int = 1,
        pubsub: str = "",
        env: dict[str, str] | None = None,
    ) -> Target:
        t, url = Target(name, free_port()), self.args.redis_url
        if not pubsub:  # several processes keep their caches in step through Redis
            pubsub = (
                f"{url}{'&' if '?' in url else '?'}channel={self.channel}"
                if processes > 1 or self.args.pubsub == "redis"
                else "local://"
            )
        settings = dict(
            os.environ,
            ADDONREG_STORAGE=storage,
            ADDONREG_PUBSUB=pubsub,
            ADDONREG_HOST=HOST,
            ADDONREG_PORT=str(t.port),
            ADDONREG_CACHE_SIZE=str(cache or self.cache_size),
            ADDONREG_HAWK_CREDENTIALS=f"{HAWK_ID}:{self.hawk_key}",
            ADDONREG_LOG_FORMAT="text",
            ADDONREG_LOG_LEVEL="INFO",
            ADDONREG_ACCESS_LOG="false",
            ADDONREG_BUS_KEY=self.hawk_key,
            ADDONREG_REUSE_PORT="true",
            **(env or {}),
        )  # --processes > 1 share the port
        return self.start(t, [str(BIN / "addonreg"), "serve"], processes, settings)

    def start_baseline(self, sc: Scenario, size: int) -> Target:
        if sc.baseline == "insert":
            self.targets["insert"] = Target("insert", fixed=self.mariadb)
        elif sc.baseline == "tornado":
            t = Target("tornado", free_port())
            self.start(
                t,
                [sys.executable, str(BENCH / "baseline.py"), str(t.port), str(size)],
                self.args.processes,
            )
        return self.targets[sc.baseline]

    def start_nginx(self, name: str, http_block: str, location: str) -> Target:
        t, prefix = Target(name, free_port()), self.tmp / name
        prefix.mkdir()
        temp = " ".join(
            f"{kind}_temp_path {prefix}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (prefix / "nginx.conf").write_text(
            # user root: the published tree is under a 0700 temporary directory.
            f"worker_processes 1; user root; pid {prefix}/nginx.pid;\n"
            f"events {{ worker_connections 4096; }}\nhttp {{ access_log off; {temp} {http_block}"
            f"\n server {{ listen {HOST}:{t.port}; location / {{ {location} }} }} }}\n"
        )
        return self.start(
            t,
            [
                shutil.which("nginx") or "/usr/sbin/nginx",
                "-p",
                str(prefix),
                "-e",
                str(prefix / "error.log"),
                "-c",
                str(prefix / "nginx.conf"),
                "-g",
                "daemon off;",
            ],
            line=False,
        )

    def sql(
        self, query: str, args: tuple[Any, ...] = (), database: str | None = None
    ) -> list[tuple[Any, ...]]:
        u = urlsplit(self.args.mysql_url)
        with (
            pymysql.connect(
                host=u.hostname,
                port=u.port or 3306,
                user=u.username or "root",
                password=u.password or "",
                database=database,
                autocommit=True,
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(query, args)
            return list(cur.fetchall())

    def reset_mysql(self, database: str) -> str:
        """The database (its storage URL), created if missing, with no tables."""
        self.sql(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        for (table,) in self.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (database,)
        ):
            self.sql(f"DROP TABLE `{database}`.`{table}`")
        return f"{self.args.mysql_url.rstrip('/')}/{database}"

    def global_status(self, name: str) -> int:
        return int(self.sql("SHOW GLOBAL STATUS LIKE %s", (name,))[0][1])

    def seed(self, family: str) -> str:
        """The family's data set (its storage URL): reused when it has the rows and add-ons
        asked for (``row`` always builds the same; a broken import lacks some), else imported."""
        rows, addons = self.sizes[family]
        mysql, db = family == "reads" and self.args.storage == "mysql", self.args.reads_db
        path = DATA / f"{family}-{rows}x{addons}.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        url = f"{self.args.mysql_url.rstrip('/')}/{db}" if mysql else f"sqlite:///{path}"
        count = "SELECT COUNT(*), COUNT(DISTINCT addon_id) FROM registrations"
        try:
            found = tuple(
                self.sql(count, database=db)[0]
                if mysql
                else sqlite3.connect(path).execute(count).fetchone()
            )
        except (pymysql.MySQLError, sqlite3.Error):
            found = ()
        self.datasets[family] = {
            "storage": url,
            "rows": rows,
            "addons": addons,
            "reused": found == (rows, addons),
        }
        if found == (rows, addons):
            return url
        self.reset_mysql(db) if mysql else path.unlink(missing_ok=True)
        print(f"seeding {rows:,} registrations, {addons:,} add-ons: {url}", file=sys.stderr)
        with open(self.tmp / f"{family}.csv", "w", newline="") as fh:
            csv.writer(fh).writerows(
                [("addon_id", "sha256", "version")] + [row(i, addons) for i in range(rows)]
            )
        started = time.monotonic()
        self.addonreg(url, "import", fh.name, "--batch-size", "5000", "--quiet")
        self.datasets[family]["import_seconds"] = time.monotonic() - started
        return url

    def addonreg(self, storage: str, *argv: str, **env: str) -> None:
        done = subprocess.run(
            [str(BIN / "addonreg"), *argv],
            capture_output=True,
            text=True,
            env=dict(os.environ, ADDONREG_STORAGE=storage, **env),
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(f"addonreg {argv[0]} failed:\n{done.stderr[-2000:]}")

    def check(self, t: Target, sc: Scenario) -> int:
        """Each distinct request once (or one new one): status and body; the last answer's size."""
        for req in sc.requests(self, sc, 1) if sc.requests else ():
            status, body = http_request(t.port, sc.method, req)
            if status != sc.status or (sc.reject and sc.reject in body):
                raise BenchError(
                    f"{t.name}: {sc.method} {req.path} answered {status} "
                    f"(expected {sc.status}): {body[:300]!r}\n{t.tail()}"
                )
        return len(body)

    def load(
        self, sc: Scenario, t: Target, duration: int, ready: Callable[[], object] = lambda: None
    ) -> dict[str, Any]:
        """One wrk run (or insert.py run), ``ready()`` once its requests are built: its numbers."""
        if t.name == "insert":
            argv = [
                sys.executable,
                str(BENCH / "insert.py"),
                "--mysql-url",
                f"{self.args.mysql_url.rstrip('/')}/{self.args.scratch_db}",
                "--table",
                "bench_insert",
                "--rows",
                str(sc.files),
                "--connections",
                str(sc.connections),
                "--duration",
                str(duration),
                "--first",
                str(self.inserted),
            ]
        else:
            path = self.tmp / f"{sc.name}-{t.name}.txt"
            if sc.mode == "once" or not path.exists():
                count = int(self.rates.get((sc.name, t.name), sc.rate) * duration * 1.5) + 10
                lines = (f"{r.line(sc.method)}\n" for r in sc.requests(self, sc, count))
                path.write_text("".join(lines))
            argv = [
                "wrk",
                "-t1",
                f"-c{sc.connections}",
                f"-d{duration}s",
                "--latency",
                "--timeout",
                "10s",
                "-s",
                str(BENCH / "replay.lua"),
                f"http://{HOST}:{t.port}",
                "--",
                str(path),
                sc.mode,
                str(sc.status),
            ]
        ready()
        done = subprocess.run(
            self.pin(argv, self.wrk_cpu),
            capture_output=True,
            text=True,
            timeout=duration + 300,
            check=False,
        )
        match = re.search(r"^(?:replay|insert) (\{.*\})$", done.stdout, re.MULTILINE)
        if not match:
            raise BenchError(
                f"{argv[0]} gave no result:\n{done.stdout[-1000:]}{done.stderr[-1000:]}"
            )
        result = json.loads(match[1])
        self.inserted += result.get("rows", 0)
        rate = result["requests"] / (result["duration_us"] / 1e6)  # the highest: speed drifts
        self.rates[sc.name, t.name] = max(self.rates.get((sc.name, t.name), 0.0), rate)
        return result

    def round(self, sc: Scenario, t: Target) -> dict[str, Any]:
        """One measured round of ``t``: its numbers with CPU and COMMIT deltas."""
        procs, writes = t.processes(), sc.family == "writes"
        for _ in range(3):  # a "once" round that ran out of requests runs again, with more
            cpu0, commits0 = cpu_seconds(procs), self.global_status("Com_commit") if writes else 0
            r = self.load(sc, t, self.args.duration)
            cpu, commits = (
                cpu_seconds(procs) - cpu0,
                (self.global_status("Com_commit") - commits0 if writes else 0),
            )
            if not r.get("exhausted"):
                break
            # Not the rate measured: replayed requests' quick 401s inflate it.
            self.rates[sc.name, t.name] = 2 * r["lines"] / self.args.duration
        else:
            raise BenchError(f"{t.name}: ran out of pre-built requests three times")
        if r.get("socket_errors") or r.get("bad"):
            raise BenchError(
                f"{t.name}: {r.get('bad')} answers not {sc.status} "
                f"({r.get('statuses')}), {r.get('socket_errors')} socket errors "
                f"in {r['requests']} requests\n{t.tail()}"
            )
        n = max(r["requests"], 1)
        return {
            "req_s": r["requests"] / (r["duration_us"] / 1e6),
            "requests": r["requests"],
            "p50_ms": r["p50_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000,
            "cpu_ms": cpu * 1000 / n,
            "rss_mib": t.rss() / 2**20 if t.popens else None,
            "writes_per_commit": n * sc.files / commits
            if commits and t.name != "tornado"
            else None,
        }

    def measure(self, sc: Scenario) -> dict[str, Any]:
        """Check, then ``--rounds`` rounds alternating target and baseline; medians."""
        target = self.targets[sc.target]
        baseline = self.start_baseline(sc, self.check(target, sc))
        if sc.baseline == "proxy":
            self.check(baseline, sc)
        pair = [("target", target), ("baseline", baseline)]
        if self.args.rounds > 1 and sc.mode == "cycle":
            for _, t in pair:  # warm-up, not recorded
                self.load(sc, t, 1)
        rounds: dict[str, list[dict[str, Any]]] = {"target": [], "baseline": []}
        for i in range(self.args.rounds):
            for role, t in pair if i % 2 == 0 else pair[::-1]:
                rounds[role].append(self.round(sc, t))
                print(
                    f"  {sc.name} {t.name}: {rounds[role][-1]['req_s']:,.0f} req/s", file=sys.stderr
                )
        result: dict[str, Any] = {"rounds": rounds, "baseline": sc.baseline}
        for role, values in rounds.items():
            result[role] = {
                key: statistics.median(v[key] for v in values)
                for key in values[0]
                if all(v[key] is not None for v in values)
            }
        # Each round over its neighbour baseline round: steadier, as the machine's speed drifts.
        result["ratio"] = statistics.median(
            t["req_s"] / b["req_s"] for t, b in zip(rounds["target"], rounds["baseline"])
        )
        result["p99_ratio"] = result["target"]["p99_ms"] / result["baseline"]["p99_ms"]
        if sc.files > 1:
            files = result["files_per_s"] = result["target"]["req_s"] * sc.files
            result["files_per_s_per_process"] = files / self.args.processes
            result["files_per_baseline_request"] = files / result["baseline"]["req_s"]
        if self.args.profile and sc.family != "static":
            result["profile"] = self.profile(sc, target)
        return result

    def profile(self, sc: Scenario, t: Target) -> dict[str, Any]:
        """py-spy of every service process during one extra wrk run: the hottest functions."""
        seconds = self.args.profile
        outs = [self.out / f"profile-{sc.name}-{i}.txt" for i in range(len(t.popens))]
        spies: list[subprocess.Popen[bytes]] = []

        def attach() -> None:  # once the requests are built: py-spy sees wrk's run only
            spies.extend(
                subprocess.Popen(
                    [
                        str(BIN / "py-spy"),
                        "record",
                        "--pid",
                        str(p.pid),
                        "--duration",
                        str(seconds),
                        "--rate",
                        "200",
                        "--format",
                        "raw",
                        "--function",
                        "--nonblocking",
                        "-o",
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for p, out in zip(t.popens, outs)
            )
            time.sleep(0.5)  # py-spy attaches

        self.load(sc, t, seconds, attach)
        own, inclusive = Counter[str](), Counter[str]()
        for spy, out in zip(spies, outs):
            spy.wait(seconds + 60)
            for line in out.read_text(errors="replace").split("\n") if out.exists() else []:
                stack, _, count = line.rpartition(" ")
                if not count.isdigit():  # py-spy writes an empty or garbled line now and then
                    continue
                # "f (/venv/lib/python3.11/site-packages/tornado/web.py:12)" -> "f (tornado/web.py)"
                frames = [
                    re.sub(
                        r" \((.*?)(?::\d+)?\)$",
                        lambda m: " ({})".format("/".join(m[1].split("/")[-2:])),
                        f,
                    )
                    for f in stack.split(";")
                ]
                own[frames[-1]] += int(count)
                inclusive.update(dict.fromkeys(frames, int(count)))
        total = max(own.total(), 1)
        return {
            "samples": total,
            "seconds": seconds,
            **{  # not the roots (module, main, run...)
                name: [
                    (round(100 * n / total, 1), f)
                    for f, n in counts.most_common(20)
                    if n < max(inclusive.values())
                ][:10]
                for name, counts in (("self", own), ("inclusive", inclusive))
            },
        }


def start_writes(b: Bench) -> None:
    b.start_service("writer", b.reset_mysql(b.args.scratch_db), processes=b.args.processes)
    # The INSERT baseline's table: the service's own schema and indexes.
    b.sql("CREATE TABLE bench_insert LIKE registrations", database=b.args.scratch_db)


def start_static(b: Bench) -> None:
    storage, rows, tree = b.seed("static"), b.sizes["static"][0], b.tmp / "tree"
    started = time.monotonic()
    b.addonreg(storage, "publish", str(tree), "--rebuild", "--quiet")
    seconds, stats = (
        time.monotonic() - started,
        [p.stat() for p in (tree / "current").resolve().rglob("*") if p.is_file()],
    )
    b.extras["static"] = {
        "registrations": rows,
        "publish_seconds": seconds,
        "files": len(stats),
        "files_per_registration": len(stats) / rows,
        "bytes_per_registration_on_disk": sum(s.st_blocks * 512 for s in stats) / rows,
        "bytes_per_registration_apparent": sum(s.st_size for s in stats) / rows,
    }
    service = b.start_service("static-service", storage)
    b.start_nginx(
        "static",
        'types { } default_type "application/json; charset=UTF-8";',
        f"root {tree}/current; try_files $uri $uri/index.json =404;",
    )
    b.start_nginx(
        "proxy",
        f"upstream service {{ server {HOST}:{service.port}; keepalive 32; }}",
        'proxy_pass http://service; proxy_http_version 1.1; proxy_set_header Connection "";',
    )


SETUP: dict[str, Callable[[Bench], None]] = {
    "reads": lambda b: b.start_service("addonreg", b.seed("reads"), processes=b.args.processes),
    "writes": start_writes,
    "static": start_static,
}


def estimate_seconds(args: argparse.Namespace, scenarios: Sequence[Scenario]) -> float:
    """From this machine's runs (2 cores): a wrk scenario takes its rounds plus ~1 s, 2 s of
    warm-up, the profile; writes sign ~1.2 s per second of wrk; the 1M cache fill ~60 s."""
    a, families = args, {sc.family for sc in scenarios}
    return sum(
        1
        + a.rounds * 2 * a.duration * (2.2 if sc.family == "writes" else 1)
        + 2 * (a.rounds > 1)
        + (a.profile + 1) * bool(a.profile) * (sc.family != "static")
        for sc in scenarios
        if not sc.probe
    ) + (
        10
        + 6 * ("feed" in families)
        + (a.rows * 6e-5 + 6) * ("memory" in families)
        + (a.static_rows / 7000 + 3) * ("static" in families)
        + 25e-6 * sum(map(int, a.filter_sizes.split(","))) * ("filter" in families)
        # Galera up ~12 s; a kill and the node's return ~12 s; a replica-set round ~3 s + load.
        + (
            30
            + 12 * a.cluster_kills
            + 0.004 * a.cluster_calls
            + 0.08 * a.cluster_writes
            + 2 * a.cluster_loss_rounds * (a.cluster_load_s + 3)
        )
        * ("cluster" in families)
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--family", help=f"comma-separated, of {', '.join(FAMILIES)} (default: all)")
    add("--only", help="comma-separated scenario names")
    add("--rounds", type=int, default=5)
    add("--duration", type=int, default=5, help="seconds per round")
    add("--rows", type=int, default=1_000_000, help="registrations of the read set")
    add("--addons", type=int, default=100_000)
    add("--cache-size", type=int, default=0, help="entries (default: rows / 10)")
    add("--static-rows", type=int, default=100_000)
    add("--storage", choices=("mysql", "sqlite"), default="mysql", help="of the reads")
    add("--mysql-url", default="mysql://root@127.0.0.1:3306")
    add("--reads-db", default="", help="default addonreg_bench (smoke: addonreg_bench_smoke)")
    add("--scratch-db", default="addonreg_bench_scratch", help="writes, feed: tables dropped")
    add("--redis-url", default="redis://127.0.0.1:6379/0")
    add("--pubsub", choices=("local", "redis"), default="local", help="redis when --processes > 1")
    add("--processes", type=int, default=1, help="addonreg serve processes on one port")
    add("--profile", type=int, default=0, metavar="S", help="py-spy of one extra S-second run")
    add("--feed-pubsub", default="feed://")
    add("--feed-writes", type=int, default=50)
    add("--filter-sizes", default="1000000,10000000", help="files, comma-separated")
    add("--cluster-misses", type=int, default=500, help="misses per process (cluster)")
    add("--cluster-idle", type=float, default=3.0, help="seconds of feed polls alone (cluster)")
    add("--cluster-kills", type=int, default=5, help="kills of the Galera write node")
    add("--cluster-clients", type=int, default=4, help="PUT clients during kills (cluster)")
    add("--cluster-calls", type=int, default=2000, help="reads timed, each kind (cluster)")
    add("--cluster-writes", type=int, default=100, help="writes timed per bus (cluster)")
    add("--cluster-loss-rounds", type=int, default=3, help="primary kills per replication mode")
    add("--cluster-load-s", type=float, default=3.0, help="seconds of PUTs before each kill")
    add("--cluster-storage-timeout", type=float, default=2.0, help="of the cluster's processes")
    add("--smoke", action="store_true", help="20,000 rows, 1 round of 2 s, every scenario")
    add("--save", action="store_true", help="also copy the reports to bench/results/")
    args = p.parse_args(argv)
    if args.smoke:
        args.rows, args.addons, args.static_rows = 20_000, 2_000, 20_000
        args.rounds, args.duration, args.feed_writes, args.filter_sizes = 1, 2, 10, "100000"
        args.cluster_misses, args.cluster_idle, args.cluster_kills = 100, 1.0, 2
        args.cluster_calls, args.cluster_writes, args.cluster_loss_rounds = 300, 20, 1
        args.cluster_load_s = 1.5
    args.reads_db = args.reads_db or ("addonreg_bench_smoke" if args.smoke else "addonreg_bench")
    return args


def run_one(b: Bench, sc: Scenario) -> dict[str, Any]:
    started = time.monotonic()
    try:
        result = sc.probe(b, sc) if sc.probe else b.measure(sc)
    except Exception as exc:  # noqa: BLE001 - a dead server or a bench bug fails this one only
        result = {"failed": str(exc) if isinstance(exc, BenchError) else traceback.format_exc()}
    finally:
        b.stop("tornado", "insert", "memory", "feed-reader")
    result["seconds"] = time.monotonic() - started
    status = "FAILED" if "failed" in result else "skipped" if "skipped" in result else "done"
    print(f"  {sc.name}: {status} in {result['seconds']:.0f} s", file=sys.stderr)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    families = args.family.split(",") if args.family else list(FAMILIES)
    only = set(args.only.split(",")) if args.only else None
    unknown = (set(families) - set(FAMILIES)) | (only or set()) - {sc.name for sc in SCENARIOS}
    if unknown:
        sys.exit(f"bench/run.py: unknown family or scenario: {', '.join(sorted(unknown))}")
    chosen = [sc for sc in SCENARIOS if sc.family in families and (not only or sc.name in only)]
    started = datetime.datetime.now()
    out = BENCH / "results" / "runs" / started.strftime("%Y-%m-%d-%H%M%S")
    (out / "logs").mkdir(parents=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops all
    print(
        f"bench: {len(chosen)} scenarios, about {estimate_seconds(args, chosen) / 60:.1f} min"
        + (
            f" (plus {args.rows / 25_000 / 60:.1f} min if the read set must be seeded)"
            if {"reads", "memory"} & {sc.family for sc in chosen}
            else ""
        )
        + f"; results in {out}",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory(prefix="addonreg-bench-") as tmp:
        b = Bench(args, out, Path(tmp))
        meta = report.machine(b, started, sys.argv)
        for family in FAMILIES:
            scenarios = [sc for sc in chosen if sc.family == family]
            if not scenarios:
                continue
            print(f"{family}:", file=sys.stderr)
            try:
                SETUP.get(family, lambda b: None)(b)
                for sc in scenarios:
                    b.results[sc.name] = run_one(b, sc)
            except BenchError as exc:
                for sc in scenarios:
                    b.results.setdefault(sc.name, {"failed": f"set-up: {exc}"})
            finally:  # also on SIGTERM (SystemExit) and Ctrl-C
                b.stop()
            report.write(b, family, scenarios, meta, out)
            for path in out.glob(f"{family}.*") if args.save else ():
                shutil.copy(path, BENCH / "results" / path.name)
    failed = [name for name, r in b.results.items() if "failed" in r]
    print(
        f"bench: done in {(datetime.datetime.now() - started).total_seconds() / 60:.1f} min; "
        f"reports in {out}" + (f"; FAILED: {', '.join(failed)}" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
