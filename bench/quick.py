"""Quick benchmark: addonreg's cached read path against a bare Tornado baseline.

What it measures
    Throughput (requests/s, and file checks/s) and latency (p50, p99) of ONE
    ``addonreg serve`` process answering registered files from its warm cache,
    next to ONE bare Tornado process (``bench/baseline.py``: one handler, a
    fixed ~200-byte JSON answer, same event loop). The ratio service/baseline
    is the share of plain Tornado throughput the service keeps; on a noisy
    machine it is a steadier number than req/s alone.

    Scenarios (each request of each run must answer 200, or the run fails):

    * ``get-hot``: ``GET /v1/addons/{id}/files/{sha}`` round-robin over ~100
      popular registered files (cache warmed first).
    * ``lookup-100``: ``POST /v1/lookup`` with 100 registered files per
      request (body pre-built); reported as requests/s and file checks/s.

How
    1. A deterministic seed set (default 10,000 registrations over 1,000
       add-ons, ids ``addon-N@bench.example``, sha256 from hashlib) is written
       as CSV and loaded with ``addonreg import`` into a temporary SQLite file,
       or with ``--storage mysql`` into the ``addonreg_bench`` MariaDB database
       (created if missing, its tables dropped first, left in place after).
    2. Both servers start as subprocesses on 127.0.0.1, port 0; the port is read
       from their log line. Every file of both scenarios is checked (and the
       service's cache warmed) with one request each before any load.
    3. Load comes from ``wrk -t1 -c<connections> --latency`` with
       ``bench/replay.lua``, which replays the pre-built requests round-robin
       and counts non-200 answers. After a short unrecorded warm-up of each
       server, each scenario runs ``--runs`` times alternating baseline and
       service, ``--duration`` seconds each (wrk is killed if it overruns).
       When ``taskset`` exists and two CPUs are available, wrk is pinned to
       one CPU and both servers to the other.
    4. A markdown table of medians is printed; every run's numbers go to
       ``bench/results/quick-<date>-<time>.json``.

All processes are stopped at the end, on error and on Ctrl-C/SIGTERM.

Run: ``.venv/bin/python bench/quick.py [--storage sqlite|mysql] [--runs 5]
[--duration 5] [--connections 64]`` (``--help`` for the rest).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
REPLAY_LUA = BENCH_DIR / "replay.lua"
BASELINE_PY = BENCH_DIR / "baseline.py"
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"
DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/addonreg_bench"

Row = Tuple[str, str, str]  # addon_id, sha256, version


# Dataset -----------------------------------------------------------------------

def make_dataset(files: int, addons: int) -> List[Row]:
    """``files`` registrations spread evenly over ``addons`` add-ons; always the same."""
    rows = []
    for i in range(files):
        addon, number = i % addons, i // addons
        addon_id = f"addon-{addon}@bench.example"
        sha256 = hashlib.sha256(f"addonreg-bench/{addon_id}/file-{number}".encode()).hexdigest()
        rows.append((addon_id, sha256, f"1.0.{number}"))
    return rows


def hot_files(rows: Sequence[Row], count: int) -> List[Row]:
    """``count`` popular files, spread over the whole set (every n-th row)."""
    step = max(len(rows) // count, 1)
    return list(rows[::step][:count])


def lookup_files(rows: Sequence[Row], count: int) -> List[Row]:
    return random.Random(20261127).sample(list(rows), count)


def write_csv(rows: Sequence[Row], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["addon_id", "sha256", "version"])
        writer.writerows(rows)


def file_path(row: Row) -> str:
    return f"/v1/addons/{row[0]}/files/{row[1]}"


def lookup_body(rows: Sequence[Row]) -> str:
    return json.dumps({"files": [{"addon_id": a, "sha256": s} for a, s, _ in rows]},
                      separators=(",", ":"))


# Storage -----------------------------------------------------------------------

def reset_mysql(url: str) -> None:
    """Create the database of ``url`` if missing and drop every table in it."""
    import pymysql

    parts = urlsplit(url)
    database = parts.path.strip("/")
    try:
        conn = pymysql.connect(host=parts.hostname or HOST, port=parts.port or 3306,
                               user=parts.username or "root", password=parts.password or "",
                               autocommit=True)
    except pymysql.MySQLError as exc:
        raise BenchError(f"cannot reach MariaDB at {parts.hostname}:{parts.port}: {exc}") from None
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            cur.execute("SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = %s", (database,))
            tables = [row[0] for row in cur.fetchall()]
            if tables:
                cur.execute("SET FOREIGN_KEY_CHECKS = 0")
                cur.execute("DROP TABLE " + ", ".join(f"`{database}`.`{t}`" for t in tables))
    finally:
        conn.close()


def import_rows(storage_url: str, csv_path: Path, env: Dict[str, str]) -> str:
    """``addonreg import``; its summary line."""
    result = subprocess.run(
        [sys.executable, "-m", "addonreg", "import", "--quiet", str(csv_path)],
        env=dict(env, ADDONREG_STORAGE=storage_url), capture_output=True, text=True,
        timeout=600)
    if result.returncode != 0:
        raise BenchError(f"addonreg import failed ({result.returncode}): "
                         f"{result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip()


# Processes ---------------------------------------------------------------------

class BenchError(Exception):
    """The benchmark cannot go on (or its numbers would not mean anything)."""


@dataclass
class Server:
    """A server subprocess whose output goes to a log file."""

    name: str
    argv: List[str]
    env: Dict[str, str]
    log_path: Path
    ready: "re.Pattern[str]"  # group "port", optional group "loop"
    proc: Optional[subprocess.Popen] = None
    port: int = 0
    loop: str = "?"

    def start(self, timeout: float = 30.0) -> "Server":
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO_DIR,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = self.ready.search(self.log_path.read_text(errors="replace"))
            if match:
                self.port = int(match["port"])
                self.loop = match.groupdict().get("loop") or "?"
                return self
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.05)
        raise BenchError(f"{self.name} did not log its port within {timeout:.0f} s:\n"
                         f"{self.log_tail()}")

    def url(self, path: str = "") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise BenchError(f"{self.name} is not running any more:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def pinned(argv: List[str], cpu: Optional[int]) -> List[str]:
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


def choose_cpus(no_pin: bool) -> Tuple[Optional[int], Optional[int], str]:
    """(wrk CPU, servers CPU, description); CPUs are None when not pinning."""
    cpus = sorted(os.sched_getaffinity(0))
    if no_pin:
        return None, None, "no pinning (--no-pin)"
    if shutil.which("taskset") is None:
        return None, None, "no pinning (taskset not found)"
    if len(cpus) < 2:
        return None, None, f"no pinning (only CPU {cpus} available)"
    return (cpus[-1], cpus[0],
            f"taskset: wrk on CPU {cpus[-1]}, both servers on CPU {cpus[0]}")


# Checks ------------------------------------------------------------------------

def http(url: str, body: Optional[bytes] = None, timeout: float = 10.0) -> Tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def check_service(service: Server, hot: Sequence[Row], lookup: Sequence[Row]) -> int:
    """One request per file of both scenarios: all 200 and registered; warms the cache.

    Returns the size of a single-file answer, for the baseline's body.
    """
    size = 0
    for row in hot:
        status, body = http(service.url(file_path(row)))
        if status != 200 or json.loads(body).get("status") != "registered":
            raise BenchError(f"GET {file_path(row)} answered {status}: {body[:300]!r}")
        size = max(size, len(body))
    status, body = http(service.url("/v1/lookup"), lookup_body(lookup).encode())
    if status != 200:
        raise BenchError(f"POST /v1/lookup answered {status}: {body[:300]!r}")
    results = json.loads(body)["results"]
    if len(results) != len(lookup) or any(r["status"] != "registered" for r in results):
        raise BenchError("POST /v1/lookup: not every file of the body is registered")
    return size


READY_BASELINE = re.compile(r"baseline listening on \S+:(?P<port>\d+) \((?P<loop>\w+),")


def baseline_server(name: str, size: int, event_loop: str, cpu: Optional[int],
                    env: Dict[str, str], log_path: Path, port: int = 0,
                    reuse_port: bool = False) -> Server:
    """bench/baseline.py (bare Tornado answering ``size`` bytes), not yet started."""
    argv = [sys.executable, str(BASELINE_PY), "--host", HOST, "--port", str(port),
            "--size", str(size), "--event-loop", event_loop]
    if reuse_port:
        argv.append("--reuse-port")
    return Server(name, pinned(argv, cpu), env, log_path, READY_BASELINE)


def check_baseline(baseline: Server, hot: Sequence[Row], lookup: Sequence[Row]) -> None:
    for path, body in ((file_path(hot[0]), None),
                       ("/v1/lookup", lookup_body(lookup).encode())):
        status, answer = http(baseline.url(path), body)
        if status != 200:
            raise BenchError(f"baseline answered {status} to {path}: {answer[:300]!r}")


# wrk ---------------------------------------------------------------------------

_TIME_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _TIME_UNITS_MS[match[2]]


def parse_wrk_common(output: str) -> Dict[str, object]:
    """req/s, request count, duration, latency percentiles and socket errors of ``wrk --latency``.

    The one reader of wrk's own lines; each benchmark adds its Lua script's line.
    """
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s+(\d+) requests in ([\d.]+\w+), ", output, re.MULTILINE)
    if not rate or not total:
        raise BenchError(f"cannot read wrk's output:\n{output}")
    latency = {f"p{m[1]}_ms": _ms(m[2])
               for m in re.finditer(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", output, re.MULTILINE)}
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     output)
    return {"requests_per_s": float(rate[1]), "requests": int(total[1]),
            "duration_s": _ms(total[2]) / 1e3, **latency,
            "socket_errors": dict(zip(("connect", "read", "write", "timeout"),
                                      map(int, sock.groups()))) if sock else {}}


def parse_wrk(output: str) -> Dict[str, object]:
    """The numbers of ``wrk --latency`` output plus the line of ``replay.lua``."""
    replay = re.search(r"^replay: (\d+) responses, (\d+) non-200(?: \((.*)\))?$", output,
                       re.MULTILINE)
    if not replay:
        raise BenchError(f"no 'replay:' line in wrk output:\n{output}")
    numbers = parse_wrk_common(output)
    if "p50_ms" not in numbers or "p99_ms" not in numbers:
        raise BenchError(f"no latency distribution in wrk output:\n{output}")
    return {**numbers, "responses": int(replay[1]), "non_200": int(replay[2]),
            "non_200_statuses": replay[3] or ""}


def wrk(argv: List[str], duration: int, margin: int = 30) -> Tuple[str, float]:
    """Run wrk (``argv``) for at most ``duration + margin`` s: its output and CPU seconds.

    The one place every benchmark starts wrk: killed when it overruns, and a
    non-zero exit fails the benchmark with wrk's output.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=duration + margin)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk ran past {duration + margin} s and was killed") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise BenchError(f"wrk exited with {proc.returncode}:\n{output}")
    return output, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def run_wrk(url: str, requests_file: Path, duration: int, connections: int,
            cpu: Optional[int]) -> Dict[str, object]:
    """One bounded wrk run; its parsed numbers. A non-200 answer fails the benchmark."""
    output, _ = wrk(pinned(["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
                            "-s", str(REPLAY_LUA), url, "--", str(requests_file)], cpu),
                    duration)
    numbers = parse_wrk(output)
    if numbers["non_200"]:
        raise BenchError(f"{url}: {numbers['non_200']} of {numbers['responses']} answers were "
                         f"not 200 ({numbers['non_200_statuses']}); not benchmarking errors")
    if numbers["responses"] == 0:
        raise BenchError(f"{url}: no answer at all:\n{output}")
    return numbers


# Scenarios and report ----------------------------------------------------------

@dataclass
class Scenario:
    name: str
    description: str
    files_per_request: int
    requests_file: Path
    runs: Dict[str, List[Dict[str, object]]] = field(
        default_factory=lambda: {"baseline": [], "service": []})

    def median(self, target: str, key: str) -> float:
        return statistics.median(float(run[key]) for run in self.runs[target])

    def summary(self) -> Dict[str, float]:
        out: Dict[str, float] = {}
        for target in ("service", "baseline"):
            for key in ("requests_per_s", "p50_ms", "p99_ms"):
                out[f"{target}_{key}_median"] = self.median(target, key)
            values = [float(run["requests_per_s"]) for run in self.runs[target]]
            out[f"{target}_requests_per_s_min"] = min(values)
            out[f"{target}_requests_per_s_max"] = max(values)
        out["service_files_per_s_median"] = (out["service_requests_per_s_median"]
                                             * self.files_per_request)
        out["ratio_service_baseline"] = (out["service_requests_per_s_median"]
                                         / out["baseline_requests_per_s_median"])
        return out


def write_requests(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def markdown_table(scenarios: Sequence[Scenario]) -> str:
    head = ("| scenario | service req/s | baseline req/s | service/baseline | "
            "service files/s | service p50 | service p99 | baseline p50 | baseline p99 |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for sc in scenarios:
        s = sc.summary()
        lines.append(
            f"| {sc.name} | {s['service_requests_per_s_median']:,.0f} "
            f"| {s['baseline_requests_per_s_median']:,.0f} "
            f"| {s['ratio_service_baseline']:.2f} "
            f"| {s['service_files_per_s_median']:,.0f} "
            f"| {s['service_p50_ms_median']:.2f} ms | {s['service_p99_ms_median']:.2f} ms "
            f"| {s['baseline_p50_ms_median']:.2f} ms | {s['baseline_p99_ms_median']:.2f} ms |")
    return "\n".join(lines)


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_DIR), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("-dirty" if dirty else "")


def write_results(report: Dict[str, object], started: datetime.datetime) -> Path:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"quick-{started:%Y-%m-%d-%H%M%S}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


# Main --------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Quick benchmark of addonreg's cached reads against bare Tornado "
                    "(see the module docstring).")
    parser.add_argument("--storage", choices=("sqlite", "mysql"), default="sqlite")
    parser.add_argument("--mysql-url", default=DEFAULT_MYSQL_URL,
                        help=f"database for --storage mysql (default {DEFAULT_MYSQL_URL}); "
                             "its tables are dropped")
    parser.add_argument("--runs", type=int, default=5, help="runs per scenario and server")
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of unrecorded load per server and scenario (0: none)")
    parser.add_argument("--files", type=int, default=10_000, help="registrations in the seed set")
    parser.add_argument("--addons", type=int, default=1_000, help="add-ons in the seed set")
    parser.add_argument("--hot", type=int, default=100, help="files in the hot GET set")
    parser.add_argument("--lookup-size", type=int, default=100, help="files per POST /v1/lookup")
    parser.add_argument("--event-loop", choices=("auto", "asyncio", "uvloop"),
                        default=os.environ.get("ADDONREG_EVENT_LOOP", "auto").lower(),
                        help="for both servers (default $ADDONREG_EVENT_LOOP or auto)")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    args = parser.parse_args(argv)
    for name in ("runs", "duration", "connections", "files", "addons", "hot", "lookup_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.hot > args.files or args.lookup_size > args.files or args.addons > args.files:
        parser.error("--hot, --lookup-size and --addons must not exceed --files")
    return args


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def run_with_cleanup(run, args: argparse.Namespace, prefix: str) -> int:
    """``run(args, tmp)`` in a temporary directory; the exit code of a bench command.

    Ctrl-C and SIGTERM both end up in ``run``'s finally blocks (which stop the
    servers), even when the shell started us with SIGINT ignored (a
    background job). Shared by bench/quick.py, bench/writes.py and bench/run.py.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            return run(args, Path(tmp))
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed", file=sys.stderr)
        return 2
    return run_with_cleanup(run, args, "addonreg-bench-")


def run(args: argparse.Namespace, tmp: Path) -> int:
    """Seed, start, check, load, report; the servers are stopped whatever happens."""
    started = datetime.datetime.now()
    servers: List[Server] = []
    wrk_cpu, server_cpu, pinning = choose_cpus(args.no_pin)
    env = {k: v for k, v in os.environ.items() if k != "ADDONREG_STORAGE"}
    env.update(ADDONREG_HOST=HOST, ADDONREG_PORT="0", ADDONREG_EVENT_LOOP=args.event_loop,
               ADDONREG_LOG_LEVEL="INFO", ADDONREG_ACCESS_LOG="false")

    # 1. Seed set.
    rows = make_dataset(args.files, args.addons)
    hot, lookup = hot_files(rows, args.hot), lookup_files(rows, args.lookup_size)
    write_csv(rows, tmp / "seed.csv")
    if args.storage == "mysql":
        storage_url = args.mysql_url
        reset_mysql(storage_url)
    else:
        storage_url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    print(f"seed: {import_rows(storage_url, tmp / 'seed.csv', env)} "
          f"[{args.storage}: {args.files} files, {args.addons} add-ons]")

    # 2. Servers, checked and warmed before any load.
    try:
        service = Server(
            "addonreg serve", pinned([sys.executable, "-m", "addonreg", "serve"], server_cpu),
            dict(env, ADDONREG_STORAGE=storage_url), tmp / "service.log",
            re.compile(r"addonreg listening on \S+:(?P<port>\d+) \(storage \w+, (?P<loop>\w+)\)"))
        servers.append(service)
        service.start()
        answer_size = check_service(service, hot, lookup)
        baseline = baseline_server("baseline", answer_size, args.event_loop, server_cpu, env,
                                   tmp / "baseline.log")
        servers.append(baseline)
        baseline.start()
        check_baseline(baseline, hot, lookup)
        if service.loop != baseline.loop:
            raise BenchError(f"event loops differ: service {service.loop}, "
                             f"baseline {baseline.loop}")
        status, facts = http(service.url("/v1/"))
        service_settings = json.loads(facts).get("settings", {}) if status == 200 else {}

        print(f"servers: addonreg pid {service.proc.pid} port {service.port}, "
              f"baseline pid {baseline.proc.pid} port {baseline.port}; "
              f"event loop {service.loop}; single-file answer {answer_size} bytes")
        print(f"pinning: {pinning}")
        print(f"load: wrk -t1 -c{args.connections}, {args.runs} x {args.duration} s per server "
              f"and scenario, alternating baseline/service, {args.warmup} s warm-up; "
              f"127.0.0.1 only")

        scenarios = [
            Scenario("get-hot", f"GET /v1/addons/{{id}}/files/{{sha}}, {len(hot)} hot files "
                                "round-robin, warm cache", 1,
                     write_requests(tmp / "get-hot.txt", [f"GET\t{file_path(r)}" for r in hot])),
            Scenario(f"lookup-{len(lookup)}", f"POST /v1/lookup, {len(lookup)} registered "
                                              "files per request", len(lookup),
                     write_requests(tmp / "lookup.txt",
                                    [f"POST\t/v1/lookup\t{lookup_body(lookup)}"])),
        ]

        # 3. Load.
        targets = (("baseline", baseline), ("service", service))
        for sc in scenarios:
            print(f"\n## {sc.name}: {sc.description}")
            if args.warmup:
                for _, server in targets:
                    run_wrk(server.url(), sc.requests_file, args.warmup, args.connections,
                            wrk_cpu)
            for i in range(1, args.runs + 1):
                for target, server in targets:
                    server.check_alive()
                    numbers = run_wrk(server.url(), sc.requests_file, args.duration,
                                      args.connections, wrk_cpu)
                    sc.runs[target].append(numbers)
                    errors = sum(numbers["socket_errors"].values())
                    print(f"  run {i} {target:8} {numbers['requests_per_s']:9,.0f} req/s  "
                          f"p50 {numbers['p50_ms']:6.2f} ms  p99 {numbers['p99_ms']:6.2f} ms"
                          + (f"  socket errors {numbers['socket_errors']}" if errors else ""),
                          flush=True)
    finally:
        stop_all(servers)

    # 4. Report.
    print(f"\n{markdown_table(scenarios)}\n")
    print(f"Medians of {args.runs} runs of {args.duration} s; files/s = req/s x files per "
          f"request; {pinning}; storage {args.storage}; event loop {service.loop}.")
    report = {
        "benchmark": "bench/quick.py",
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "git_commit": git_commit(),
        "machine": {"cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_at_end": os.getloadavg()},
        "options": vars(args),
        "pinning": {"description": pinning, "wrk_cpu": wrk_cpu, "servers_cpu": server_cpu},
        "event_loop": service.loop,
        "single_file_answer_bytes": answer_size,
        "service_settings": service_settings,
        "dataset": {"files": args.files, "addons": args.addons, "hot_files": len(hot),
                    "lookup_files": len(lookup)},
        "scenarios": {sc.name: {"description": sc.description,
                                "files_per_request": sc.files_per_request,
                                "summary": sc.summary(), "runs": sc.runs}
                      for sc in scenarios},
    }
    print(f"raw numbers: {write_results(report, started).relative_to(REPO_DIR)}")
    return 0


def stop_all(servers: List[Server]) -> None:
    """Stop every server, even when interrupted again while doing so (bounded by timeouts)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for server in servers:
            try:
                server.stop()
            except OSError as exc:
                print(f"bench: could not stop {server.name}: {exc}", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())
